"""``daemon.cli.oneshot``: the blocking, plain-JSON control session of ``daemon status``
speaks the same protocol as the full client and gets the same answer.

A real daemon process (``Cli.start``) with an agent from ``agents.toml``; the full
client (``ProtocolClient``, asyncio and pydantic) asks the same daemon."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.cli.common import control_client
from daemon.cli.oneshot import PROTOCOL, ask
from daemon.errors import DaemonError, NotRunning
from daemon.paths import Paths
from daemon.runtime import RuntimeInfo, write_runtime
from protocol.codec import decode
from protocol.errors import RequestFailed
from protocol.frames import PROTOCOL_VERSION, Status
from tests.support.cli import Cli, cli_harness
from tests.support.fake_daemon import scripted_peer

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    with cli_harness(tmp_path) as harness:
        yield harness


AGENTS = """
[[agents]]
id = "notes"
name = "Notes"
kind = "local_directory"
schedule_cron = "0 9 * * 1"
directory_paths = ["{root}"]

[[agents]]
id = "broken"
name = "Broken"
kind = "local_directory"
schedule_cron = "0 9 * * 8"
directory_paths = ["{root}"]
"""


def test_it_speaks_the_protocol_version_of_the_frames() -> None:
    assert PROTOCOL == PROTOCOL_VERSION


async def _full_status(paths: Paths) -> Status:
    client = await control_client(paths)
    try:
        status: Status = await client.status()
        return status
    finally:
        await client.close()


@posix_only
def test_its_status_is_the_full_clients(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    agents = cli.home / "config" / "agents.toml"
    agents.parent.mkdir(parents=True, exist_ok=True)
    agents.write_text(AGENTS.format(root=tmp_path / "notes"), encoding="utf-8")
    proc = cli.start()
    paths = Paths.under(cli.home)
    answer = ask(paths, {"type": "status_request"})
    frame = decode(json.dumps(answer))  # the daemon's own frame, whole
    assert isinstance(frame, Status) and answer["id"].startswith("cli-")
    full = asyncio.run(_full_status(paths))
    assert frame.model_dump(exclude={"id"}) == full.model_dump(exclude={"id"})
    assert [a.id for a in full.agents] == ["notes"], full.rejected_agents
    assert [r.id for r in full.rejected_agents] == ["broken"]
    assert full.daemon is not None
    assert full.daemon.pid == proc.pid
    # an error answer is RequestFailed with the daemon's code
    with pytest.raises(RequestFailed) as failed:
        ask(paths, {"type": "cancel", "target": "no-such-run"})
    assert failed.value.code == "not_found"
    assert proc.stop() == 0


def test_without_a_daemon_it_is_not_running(cli: Cli) -> None:
    with pytest.raises(NotRunning, match="daemon run"):
        ask(Paths.under(cli.home), {"type": "status_request"})


@posix_only
def test_a_daemon_that_does_not_answer_in_time_is_a_clear_error(cli: Cli) -> None:
    proc = cli.start()
    proc.popen.send_signal(signal.SIGSTOP)  # the port is open, nobody answers
    try:
        with pytest.raises(DaemonError) as err:
            ask(Paths.under(cli.home), {"type": "status_request"}, timeout=1.0)
    finally:
        proc.popen.send_signal(signal.SIGCONT)
    assert not isinstance(err.value, NotRunning)
    assert f"(pid {proc.pid}, port {proc.port}) is running but did not answer within 1 s" in (
        str(err.value)
    )
    assert proc.stop() == 0


def test_a_peer_that_is_not_tether_is_a_clear_error(cli: Cli) -> None:
    paths = Paths.under(cli.home).ensure()
    with scripted_peer(["this is not json"]) as port:
        write_runtime(
            paths,
            RuntimeInfo.for_this_process(port=port, host="127.0.0.1", version="x", protocol=1),
        )
        with pytest.raises(DaemonError, match="not a frame"):
            ask(paths, {"type": "status_request"}, timeout=5.0)
    with scripted_peer(
        ['{"type": "error", "code": "unauthorized", "message": "no token"}']
    ) as port:
        write_runtime(
            paths,
            RuntimeInfo.for_this_process(port=port, host="127.0.0.1", version="x", protocol=1),
        )
        with pytest.raises(DaemonError, match="refused the CLI's pairing token"):
            ask(paths, {"type": "status_request"}, timeout=5.0)

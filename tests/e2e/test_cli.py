"""The ``daemon`` command end to end: real subprocesses, each with its own TETHER_HOME.

operations.md: ``daemon run --port 0 --ready-json`` prints one ready line, writes a
private runtime file, holds the single-instance lock, stops cleanly on SIGTERM and
when its ``--parent-pid`` dies; ``daemon status`` exits 3 when nothing runs; ``daemon
pair`` shows and rotates the token; CLI verbs never import litellm.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocol.frames import Error
from protocol.reference import HandshakeRefused, ProtocolClient, ReferenceClient
from tests.support.cli import Cli, cli_harness, mode

POSIX = os.name == "posix"
posix_only = pytest.mark.skipif(not POSIX, reason="POSIX signals and file modes")


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    with cli_harness(tmp_path) as harness:
        yield harness


# --- daemon run ------------------------------------------------------------------------


@posix_only
def test_run_prints_one_ready_line_and_stops_cleanly_on_sigterm(cli: Cli) -> None:
    proc = cli.start()
    ready = proc.ready
    assert set(ready) == {"event", "port", "pid", "token_file"}
    assert ready["event"] == "ready"
    assert isinstance(ready["port"], int) and 0 < ready["port"] < 65536
    assert ready["pid"] == proc.pid
    assert Path(ready["token_file"]) == cli.token_file
    assert cli.token_file.exists() and mode(cli.token_file) == 0o600

    runtime = json.loads(cli.runtime_file.read_text(encoding="utf-8"))
    assert mode(cli.runtime_file) == 0o600
    assert runtime["port"] == ready["port"]
    assert runtime["pid"] == proc.pid
    assert runtime["protocol"] == 1

    started = time.monotonic()
    assert proc.stop() == 0
    assert time.monotonic() - started < 5.0
    assert not cli.runtime_file.exists()
    assert proc.rest_of_stdout() == []  # exactly one line on stdout, ever
    # the token file outlives the process: the app pairs once
    assert cli.token_file.exists()


@posix_only
async def test_reference_client_connects_with_the_token_file(cli: Cli, tmp_path: Path) -> None:
    proc = cli.start()
    assert Path(proc.ready["token_file"]) == cli.token_file
    token = cli.token()
    assert token
    client = ReferenceClient(
        f"ws://127.0.0.1:{proc.port}/", token, db=str(tmp_path / "app.db"), device_id="e2e-app"
    )
    try:
        ack = await client.connect()
        assert ack.protocol == 1
        assert ack.daemon.pid == proc.pid and ack.daemon.port == proc.port
        status = await client.status()
        assert status.device_online and status.devices == ["e2e-app"]
        # `daemon status` sees the connected app
        result = await asyncio.to_thread(cli.run, "status")
        assert result.returncode == 0, result.stderr
        assert "e2e-app" in result.stdout
    finally:
        await client.close()
    wrong = ReferenceClient(f"ws://127.0.0.1:{proc.port}/", token + "x", db=":memory:")
    with pytest.raises(HandshakeRefused) as info:
        await wrong.connect()
    assert info.value.code == 4401
    assert proc.stop() == 0


@posix_only
def test_second_run_exits_at_once_naming_pid_and_port(cli: Cli) -> None:
    first = cli.start()
    runtime_before = cli.runtime_file.read_text(encoding="utf-8")
    started = time.monotonic()
    second = cli.run("run", "--port", "0", "--ready-json", timeout=30)
    elapsed = time.monotonic() - started
    assert second.returncode != 0
    assert elapsed < 10.0, f"second instance took {elapsed:.1f}s to give up"
    assert f"pid {first.pid}" in second.stderr
    assert f"port {first.port}" in second.stderr
    assert "already running" in second.stderr
    assert "ready" not in second.stdout
    # the first one is untouched and still serving
    assert first.popen.poll() is None
    assert cli.runtime_file.read_text(encoding="utf-8") == runtime_before
    status = cli.run("status")
    assert status.returncode == 0, status.stderr
    assert first.stop() == 0


@posix_only
def test_status_of_a_running_daemon(cli: Cli) -> None:
    proc = cli.start()
    result = cli.run("status")
    assert result.returncode == 0, result.stderr
    assert f"pid {proc.pid}" in result.stdout
    assert f"port {proc.port}" in result.stdout
    assert "not connected" in result.stdout  # no desktop app yet
    as_json = cli.run("status", "--json")
    assert as_json.returncode == 0
    frame = json.loads(as_json.stdout)
    assert frame["type"] == "status"
    assert frame["daemon"]["pid"] == proc.pid and frame["daemon"]["port"] == proc.port
    assert frame["device_online"] is False
    assert proc.stop() == 0


def test_status_with_nothing_running_exits_3(cli: Cli) -> None:
    result = cli.run("status")
    assert result.returncode == 3
    assert "not running" in result.stdout + result.stderr
    as_json = cli.run("status", "--json")
    assert as_json.returncode == 3
    assert json.loads(as_json.stdout) == {"running": False}


def test_status_ignores_a_stale_runtime_file(cli: Cli) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # reaped: its pid no longer exists
    cli.runtime_file.parent.mkdir(parents=True, exist_ok=True)
    cli.runtime_file.write_text(
        json.dumps(
            {
                "pid": gone.pid,
                "port": 1,
                "host": "127.0.0.1",
                "version": "0.1.0",
                "protocol": 1,
                "started_at": "2025-01-01T00:00:00Z",
            }
        ),
        encoding="utf-8",
    )
    result = cli.run("status")
    assert result.returncode == 3
    assert "not running" in result.stdout


@posix_only
def test_daemon_exits_when_its_parent_dies(cli: Cli) -> None:
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1)"])
    try:
        proc = cli.start("--parent-pid", str(parent.pid))
        assert proc.popen.poll() is None
    finally:
        parent.wait(10)  # reap it, or the pid lives on as a zombie
    started = time.monotonic()
    assert proc.popen.wait(6) == 0, proc.stderr()
    assert time.monotonic() - started < 5.0
    assert not cli.runtime_file.exists()


# --- daemon pair -------------------------------------------------------------------------


@posix_only
def test_pair_shows_the_token_file_and_rotate_changes_it(cli: Cli) -> None:
    shown = cli.run("pair")
    assert shown.returncode == 0, shown.stderr
    assert str(cli.token_file) in shown.stdout
    assert mode(cli.token_file) == 0o600
    token = cli.token_file.read_text(encoding="utf-8").strip()
    assert token and token not in shown.stdout  # the token itself only with --show

    again = cli.run("pair", "--show")
    assert again.returncode == 0
    assert token in again.stdout.split()  # the same token, not a new one

    rotated = cli.run("pair", "--rotate")
    assert rotated.returncode == 0, rotated.stderr
    assert str(cli.token_file) in rotated.stdout
    new = cli.token_file.read_text(encoding="utf-8").strip()
    assert new and new != token
    assert mode(cli.token_file) == 0o600

    from_env = cli.run("pair", "--rotate", env={**cli.env, "TETHER_TOKEN": "from-the-app"})
    assert from_env.returncode == 1
    assert "TETHER_TOKEN" in from_env.stdout
    assert cli.token() == new


@posix_only
async def test_rotate_closes_sessions_paired_with_the_old_token(cli: Cli, tmp_path: Path) -> None:
    proc = cli.start()
    url = f"ws://127.0.0.1:{proc.port}/"
    old = cli.token()
    app = ReferenceClient(url, old, db=str(tmp_path / "app.db"), device_id="e2e-app")
    try:
        await app.connect()
        rotated = await asyncio.to_thread(cli.run, "pair", "--rotate")
        assert rotated.returncode == 0, rotated.stderr
        assert "running daemon" in rotated.stdout
        deadline = time.monotonic() + 6.0  # the daemon polls the token file every 2 s
        while app.connected:
            assert time.monotonic() < deadline, "the session paired with the old token is open"
            await asyncio.sleep(0.05)
        assert app.close_code == 4401
    finally:
        await app.close()
    new = cli.token()
    fresh = ReferenceClient(url, new, db=str(tmp_path / "app.db"), device_id="e2e-app")
    try:
        assert (await fresh.connect()).protocol == 1
    finally:
        await fresh.close()
    stale = ReferenceClient(url, old, db=":memory:")
    with pytest.raises(HandshakeRefused) as info:
        await stale.connect()
    assert info.value.code == 4401
    assert proc.stop() == 0


@posix_only
@pytest.mark.parametrize("source", ["token file", "TETHER_TOKEN"])
async def test_the_pairing_token_never_appears_in_the_log(cli: Cli, source: str) -> None:
    """A client that echoes its token: daemon.log and stderr show *** instead."""
    if source == "TETHER_TOKEN":
        cli.env["TETHER_TOKEN"] = "token-from-the-app-0123456789abcdef"
    proc = cli.start("--log-stderr")
    token = cli.env.get("TETHER_TOKEN") or cli.token()
    client = ProtocolClient(f"ws://127.0.0.1:{proc.port}/", token, client_name="e2e")
    try:
        await client.connect()
        await client.send(Error(code="internal", message=f"the app echoed its token {token}"))
        await client.status()  # read after the error frame, which was logged when read
    finally:
        await client.close()
    assert proc.stop() == 0
    log = (cli.home / "log" / "daemon.log").read_text(encoding="utf-8")
    assert "client reported an error: internal the app echoed its token ***" in log
    assert "the app echoed its token ***" in proc.stderr()
    assert token not in log and token not in proc.stderr()


# --- import discipline -------------------------------------------------------------------

_NO_LITELLM = (
    "import sys\n"
    "from daemon.cli import main\n"
    "imported_early = 'litellm' in sys.modules\n"
    "rc = main(sys.argv[1:])\n"
    "print('LITELLM', imported_early, 'litellm' in sys.modules, rc, file=sys.stderr)\n"
)


def _report(result: subprocess.CompletedProcess[str], tag: str = "LITELLM") -> list[str]:
    """The words after ``tag`` in the script's report line on stderr."""
    line = [ln for ln in result.stderr.splitlines() if ln.startswith(tag + " ")]
    assert line, result.stderr
    return line[-1].split()[1:]


def test_schema_and_status_do_not_import_litellm(cli: Cli) -> None:
    schema = cli.python(_NO_LITELLM, "schema")
    assert _report(schema) == ["False", "False", "0"]
    assert json.loads(schema.stdout)["title"].startswith("Tether wire protocol")
    status = cli.python(_NO_LITELLM, "status")
    assert _report(status) == ["False", "False", "3"]
    for verb, code in (
        (["logs"], "0"),
        (["autostart", "status"], "1"),  # not enabled
        (["doctor", "--no-llm-call"], "1"),  # no model configured
        (["agents", "list"], "0"),
        (["runs"], "0"),
    ):
        result = cli.python(_NO_LITELLM, *verb)
        assert _report(result) == ["False", "False", code], (verb, result.stderr)


@posix_only
def test_status_of_a_running_daemon_does_not_import_litellm(cli: Cli) -> None:
    proc = cli.start()
    status = cli.python(_NO_LITELLM, "status")
    assert _report(status) == ["False", "False", "0"]
    assert f"port {proc.port}" in status.stdout
    assert proc.stop() == 0


# (what the interpreter loaded first, e.g. coverage's sqlite3 under the README's
# command, is not the verb's)
_MODULES_OF_A_VERB = (
    "import sys\nbefore = set(sys.modules)\n"
    + _NO_LITELLM
    + (
        "loaded = sorted(m for m in sys.modules if m.startswith('daemon.cli.'))\n"
        "heavy = ('sqlite3', 'pydantic', 'protocol.frames', 'protocol.reference.sqlite_store',"
        " 'daemon.state')\n"
        "heavy = sorted(m for m in heavy if m in sys.modules and m not in before)\n"
        "print('MODULES', rc, ','.join(loaded) or '-', ','.join(heavy) or '-', file=sys.stderr)\n"
    )
)


@posix_only
def test_a_verb_imports_its_own_module_only(cli: Cli) -> None:
    """Start-up time of ``daemon status`` (footprint bench): the CLI imports the verb
    being run, not the fifteen others, and status needs no SQLite, no store and no
    pydantic (``daemon.cli.oneshot``)."""
    proc = cli.start()
    status = cli.python(_MODULES_OF_A_VERB, "--debug", "status")
    assert f"port {proc.port}" in status.stdout
    assert _report(status, "MODULES") == [
        "0",
        "daemon.cli.common,daemon.cli.oneshot,daemon.cli.status",
        "-",  # plain JSON over a blocking socket: no models, no SQLite
    ]
    assert proc.stop() == 0


def test_daemon_help_lists_every_verb_without_importing_them(cli: Cli) -> None:
    code = (
        "import sys\n"
        "from daemon.cli import VERBS, build_parser\n"
        "build_parser([]).format_help()\n"
        "print(sorted(m for m in sys.modules if m.startswith('daemon.cli.') or m == 'pydantic'))\n"
    )
    result = cli.python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"

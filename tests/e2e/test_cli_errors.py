"""No traceback reaches a user: each failure the issue found, over real processes,
ends with one line that says what to do and a documented exit code (daemon.cli)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon.state import StateStore
from protocol.reference import ReferenceClient
from tests.support.cli import REPO, Cli, cli_harness
from tests.support.llm_server import FakeLLMServer, Hang

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX pipes and signals")
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    with cli_harness(tmp_path) as harness:
        yield harness


def one_clear_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("daemon: ")
    return lines[0]


@posix_only
def test_run_on_a_taken_port_says_which_and_what_to_do(cli: Cli, tmp_path: Path) -> None:
    first = cli.start()
    with cli_harness(tmp_path / "other") as other:
        result = other.run("run", "--port", str(first.port))
    assert result.returncode == 1
    line = one_clear_line(result.stderr)
    assert f"port {first.port} on 127.0.0.1 is already in use" in line
    assert "--port 0" in line and "config.toml" in line
    assert first.stop() == 0


@posix_only
def test_dev_client_with_a_wrong_token_says_so(cli: Cli) -> None:
    proc = cli.start()
    env = {**cli.env, "TETHER_TOKEN": "not-the-token-at-all"}
    result = cli.run("dev-client", "--db", str(cli.tmp / "app.db"), env=env)
    assert result.returncode == 1
    line = one_clear_line(result.stderr)
    assert "refused the pairing token" in line and "TETHER_TOKEN" in line
    assert proc.stop() == 0


def test_dev_client_without_a_daemon_exits_3(cli: Cli) -> None:
    result = cli.run("dev-client", "--db", str(cli.tmp / "app.db"))
    assert result.returncode == 3
    assert "daemon run" in one_clear_line(result.stderr)


@posix_only
def test_runs_into_a_closed_pipe_exits_141_with_one_line(cli: Cli) -> None:
    cli.home.joinpath("state").mkdir(parents=True)
    now = datetime.now(UTC)
    with StateStore.open(cli.home / "state" / "state.db") as state:
        for i in range(3000):  # far more than a pipe buffer holds (one agent's would coalesce)
            state.record_skipped(uuid.uuid4().hex, f"agent-{i}", "schedule", now, "device offline")
    stderr_path = cli.tmp / "runs.stderr"
    with stderr_path.open("w") as stderr:
        popen = subprocess.Popen(
            [sys.executable, "-m", "daemon", "runs", "--limit", "5000"],
            cwd=REPO,
            env=cli.env,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    assert popen.stdout is not None
    assert popen.stdout.readline()  # `| head -1`
    popen.stdout.close()
    assert popen.wait(30) == 141
    assert "output was closed" in one_clear_line(stderr_path.read_text())


def test_usage_errors_exit_2(cli: Cli) -> None:
    result = cli.run("no-such-verb")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_a_bad_config_is_one_line_naming_the_key(cli: Cli) -> None:
    config = cli.home / "config" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("prot = 1\n")
    result = cli.run("run", "--port", "0")
    assert result.returncode == 1
    line = one_clear_line(result.stderr)
    assert "configuration error" in line and "did you mean 'port'" in line


# --- trigger --wait that times out ------------------------------------------------------


@posix_only
async def test_trigger_wait_timeout_says_the_run_goes_on_and_how_to_cancel(
    cli: Cli, tmp_path: Path
) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.md").write_text("TASK: Call the bank\n")
    config = cli.home / "config"
    config.mkdir(parents=True)
    (config / "agents.toml").write_text(
        '[[agents]]\nid = "notes"\nname = "Notes"\nkind = "local_directory"\n'
        f'schedule_cron = "0 9 1 1 *"\nenabled = false\ndirectory_paths = ["{notes}"]\n'
    )
    with FakeLLMServer(responder=lambda body: Hang(8.0)) as llm:
        cli.env.update(TETHER_MODEL="openai/fake", TETHER_API_BASE=llm.base_url)
        cli.env["TETHER_API_KEY"] = "sk-test-key-1234"
        proc = cli.start()
        app = ReferenceClient(
            f"ws://127.0.0.1:{proc.port}/", cli.token(), db=str(tmp_path / "app.db")
        )
        await app.connect()
        try:
            result = await asyncio.to_thread(
                cli.run, "trigger", "notes", "--wait", "--timeout", "2"
            )
            assert result.returncode == 4, result.stderr
            run_id = result.stdout.split()[1]
            assert "Traceback" not in result.stderr
            *progress, line = result.stderr.strip().splitlines()
            assert all(not p.startswith("daemon:") for p in progress)  # phase lines
            assert line.startswith("daemon: still running after 2 s")
            assert "the run goes on" in line
            assert f"daemon logs --follow --run {run_id}" in line
            assert f"daemon cancel {run_id}" in line

            cancelled = await asyncio.to_thread(cli.run, "cancel", run_id)
            assert cancelled.returncode == 0, cancelled.stderr
            done = await app.wait_run(run_id, timeout=60)
            assert done.status == "cancelled"
            again = await asyncio.to_thread(cli.run, "cancel", run_id)
            assert again.returncode == 1
            assert "nothing to cancel" in one_clear_line(again.stderr)

            # every log line of the run carries its run id; `daemon logs --run` finds them
            raw = (cli.home / "log" / "daemon.log").read_text().splitlines()
            records = [json.loads(ln) for ln in raw]
            mentioning = [r for r in records if run_id in r["msg"]]
            assert len(mentioning) >= 2
            assert all(r.get("run_id") == run_id for r in mentioning)
            logs = await asyncio.to_thread(cli.run, "logs", "--run", run_id, "-n", "0")
            assert logs.returncode == 0, logs.stderr
            shown = logs.stdout.splitlines()
            tagged = [r for r in records if r.get("run_id") == run_id]
            assert len([ln for ln in shown if f"run={run_id[:12]}" in ln]) == len(tagged)
            warnings = await asyncio.to_thread(cli.run, "logs", "--level", "error")
            assert all(" INFO " not in ln for ln in warnings.stdout.splitlines())
        finally:
            await app.close()
            proc.stop()


@posix_only
def test_status_with_a_wrong_token_says_what_to_do(cli: Cli) -> None:
    proc = cli.start()
    env = {**cli.env, "TETHER_TOKEN": "not-the-token-at-all"}
    result = cli.run("status", env=env)
    assert result.returncode == 1
    line = one_clear_line(result.stderr)
    assert f"running (pid {proc.pid}, port {proc.port}) but refused the CLI's pairing token" in line
    assert "TETHER_TOKEN" in line
    assert proc.stop() == 0


@posix_only
def test_status_without_the_apps_token_says_to_set_it(cli: Cli) -> None:
    """The app starts the daemon with TETHER_TOKEN: no token file, and a CLI without the
    variable is refused after its hello (4401), not at the upgrade."""
    cli.env["TETHER_TOKEN"] = "token-from-the-app-0123456789abcdef"
    proc = cli.start()
    env = {k: v for k, v in cli.env.items() if k != "TETHER_TOKEN"}
    result = cli.run("status", env=env)
    assert result.returncode == 1
    line = one_clear_line(result.stderr)
    assert "refused the CLI's pairing token" in line and "set the same TETHER_TOKEN" in line
    assert proc.stop() == 0

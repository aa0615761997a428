"""``daemon estimate`` and ``daemon cancel`` over real processes: a ``daemon run``
subprocess, the reference client as the app, the local fake LLM."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from protocol.frames import RunStarted
from protocol.reference import ReferenceClient
from tests.e2e.test_cli import Cli, cli  # noqa: F401  (the fixture)
from tests.support.llm_server import FakeLLMServer, Hang

AGENTS_TOML = """
[[agents]]
id = "docs"
name = "Docs"
kind = "local_directory"
schedule_cron = "0 3 * * *"
enabled = false
directory_paths = ["{root}"]
"""


def setup(cli: Cli, server: FakeLLMServer, root: Path, toml: str = AGENTS_TOML) -> None:  # noqa: F811
    (cli.home / "config").mkdir(parents=True, exist_ok=True)
    (cli.home / "config" / "agents.toml").write_text(toml.format(root=root), encoding="utf-8")
    cli.env["TETHER_MODEL"] = "openai/office"
    cli.env["TETHER_API_BASE"] = server.base_url


@pytest.mark.slow
async def test_estimate_prints_the_counts_and_a_bad_agent_fails_cleanly(
    cli: Cli,  # noqa: F811
    tmp_path: Path,
) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    for n in range(3):
        (root / f"n{n}.md").write_text(f"TASK: Item {n}\n" + "words " * 300)
    with FakeLLMServer() as server:
        setup(cli, server, root)
        cli.start()
        out = await asyncio.to_thread(cli.run, "estimate", "docs")
        assert out.returncode == 0, out.stderr
        assert "3 new, 0 changed, 0 unchanged, 0 moved" in out.stdout
        assert "prompt tokens" in out.stdout and "estimated cost: unknown" in out.stdout
        assert server.calls == 0
        bad = await asyncio.to_thread(cli.run, "estimate", "nope")
        assert bad.returncode == 1 and "no agent 'nope'" in bad.stderr
        assert "Traceback" not in bad.stderr


@pytest.mark.slow
async def test_cancel_stops_a_running_run_from_the_cli(
    cli: Cli,  # noqa: F811
    tmp_path: Path,
) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    (root / "a.md").write_text("TASK: Something\n" + "words " * 300)
    with FakeLLMServer(responder=lambda body: Hang(60)) as server:
        setup(cli, server, root)
        proc = cli.start()
        app = ReferenceClient(
            f"ws://127.0.0.1:{proc.port}/", cli.token(), db=str(tmp_path / "a.db")
        )
        await app.connect()
        try:
            ack = await app.trigger("docs")
            await app.next_event(RunStarted, timeout=10)
            out = await asyncio.to_thread(cli.run, "cancel", "docs")
            assert out.returncode == 0, out.stderr
            done = await app.wait_run(ack.run_id, timeout=2.0)
            assert done.status == "cancelled"
            runs = await asyncio.to_thread(cli.run, "runs", "--agent", "docs")
            assert "cancelled" in runs.stdout
            nothing = await asyncio.to_thread(cli.run, "cancel", "docs")
            assert nothing.returncode == 1 and "nothing to cancel" in nothing.stderr
        finally:
            await app.close()

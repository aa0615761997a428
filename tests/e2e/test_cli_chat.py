"""``daemon chat "question"`` end to end: real processes, the app in this process.

What must hold (issue 11, deliverable 5): the answer is printed as it streams (a
first chunk is on stdout while the model still holds the rest), then the changes
the request made; with no app connected the CLI says so and exits non-zero without
asking the model; a failed answer is one line on stderr, never a traceback.

Real parts: ``daemon run`` and ``daemon chat`` are subprocesses with their own
TETHER_HOME, the app is the reference client serving a real SQLite file in this
process, the model is the local fake (``tests/support/llm_server.py``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from protocol.reference import ReferenceClient, SqliteStore
from tests.e2e.test_cli import Cli, cli  # noqa: F401  (the fixture)
from tests.support.llm_server import Call, Error, FakeLLMServer, Text, ToolCalls

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.skipif(os.name != "posix", reason="spawns daemon processes"),
    pytest.mark.timeout(90),
]


@pytest.fixture
def daemon(cli: Cli, llm_server: FakeLLMServer) -> Iterator[Any]:  # noqa: F811
    cli.env.update(TETHER_MODEL="openai/fake", TETHER_API_BASE=llm_server.base_url)
    proc = cli.start()
    yield proc
    proc.stop()


@pytest.fixture
async def app(
    cli: Cli,  # noqa: F811
    daemon: Any,
    tmp_path: Path,
) -> AsyncIterator[ReferenceClient]:
    db = tmp_path / "app.db"
    with SqliteStore(db) as store:
        store.handle("insert", "tasks", data={"title": "Send invoice"})
    client = ReferenceClient(
        f"ws://127.0.0.1:{daemon.port}/", cli.token(), db=str(db), device_id="desk"
    )
    await client.connect()
    yield client
    await client.close()


async def chat(cli: Cli, *args: str) -> subprocess.CompletedProcess[str]:  # noqa: F811
    # In a thread: the app in this process must keep serving the daemon's tool calls.
    return await asyncio.to_thread(cli.run, "chat", *args, timeout=60)


def test_without_the_app_it_says_so_and_asks_nothing(
    cli: Cli,  # noqa: F811
    daemon: Any,
    llm_server: FakeLLMServer,
) -> None:
    result = cli.run("chat", "what is due today?")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "desktop app is not connected" in result.stderr and "Traceback" not in result.stderr
    assert llm_server.calls == 0


def test_without_a_daemon_it_says_so(cli: Cli) -> None:  # noqa: F811
    result = cli.run("chat", "hello")
    assert result.returncode == 3
    assert "not running" in result.stderr and "Traceback" not in result.stderr


async def test_the_answer_then_the_changes(
    cli: Cli,  # noqa: F811
    app: ReferenceClient,
    llm_server: FakeLLMServer,
) -> None:
    task = app.store.rows("tasks")[0]
    llm_server.script(
        ToolCalls(
            [
                Call("create_task", {"title": "Call the bank"}),
                Call("update_task", {"task_id": task["id"], "status": "done"}),
            ]
        ),
        Text("Added the call and closed the invoice task.", chunk_size=5),
    )
    result = await chat(cli, "add a task to call the bank and close the invoice one")

    assert result.returncode == 0, result.stderr
    created = next(r for r in app.store.rows("tasks") if r["title"] == "Call the bank")
    assert result.stdout == (
        "Added the call and closed the invoice task.\n"
        "changes:\n"
        f"  + tasks {created['id']}: Call the bank\n"
        f"  ~ tasks {task['id']}: status=done\n"
    )
    assert result.stderr == ""
    # The question went as a home_request: the model saw it as the user's turn.
    first = llm_server.requests[0]["messages"]
    assert first[-1] == {
        "role": "user",
        "content": "add a task to call the bank and close the invoice one",
    }


async def test_json_output(
    cli: Cli,  # noqa: F811
    app: ReferenceClient,
    llm_server: FakeLLMServer,
) -> None:
    llm_server.script(ToolCalls([Call("create_task", {"title": "Renew domain"})]), Text("Done."))
    result = await chat(cli, "--json", "remind me to renew the domain")

    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["text"] == "Done." and payload["error"] is None
    [mutation] = payload["mutations"]
    assert (mutation["action"], mutation["table"]) == ("insert", "tasks")
    assert mutation["data"]["title"] == "Renew domain"
    assert payload["request_id"].startswith("cli-")


async def test_a_failed_answer_is_one_line_on_stderr(
    cli: Cli,  # noqa: F811
    app: ReferenceClient,
    llm_server: FakeLLMServer,
) -> None:
    llm_server.script(Error(401, {"error": {"message": "bad key", "type": "auth"}}))
    result = await chat(cli, "hello")

    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("daemon: the chat failed: ")


async def test_the_answer_is_printed_as_it_streams(
    cli: Cli,  # noqa: F811
    app: ReferenceClient,
    llm_server: FakeLLMServer,
) -> None:
    """The first chunk reaches stdout while the model still holds the rest of the
    answer: the CLI prints as it comes, not when the stream ends."""
    held = threading.Event()
    llm_server.script(Text("First part. Then the rest.", chunk_size=12, hold=held))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "daemon",
        "chat",
        "tell me",
        cwd=REPO,
        env=cli.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        try:
            first = await asyncio.wait_for(proc.stdout.read(1024), 30)
            assert first == b"First part. "
            assert proc.returncode is None  # still waiting for the rest
        finally:
            held.set()
        rest = await asyncio.wait_for(proc.stdout.read(), 30)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        assert first + rest == b"First part. Then the rest.\n"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_ctrl_c_cancels_and_exits_130(
    cli: Cli,  # noqa: F811
    app: ReferenceClient,
    llm_server: FakeLLMServer,
) -> None:
    held = threading.Event()
    llm_server.script(Text("Thinking about it. More.", chunk_size=19, hold=held))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "daemon",
        "chat",
        "think hard",
        cwd=REPO,
        env=cli.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        first = await asyncio.wait_for(proc.stdout.read(1024), 30)
        assert first == b"Thinking about it. "
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 130
        assert b"Traceback" not in await proc.stderr.read()
    finally:
        held.set()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    # The daemon and the app go on: the next question is answered.
    llm_server.script(Text("Still here."))
    result = await chat(cli, "are you there?")
    assert result.returncode == 0 and result.stdout == "Still here.\n"

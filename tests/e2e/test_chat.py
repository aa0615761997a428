"""End to end: chat (``home_request`` / ``floating_request``) through the real daemon,
the reference client with SQLite, and real litellm against the local test model.

What the issue "Agent engine" asks of chat: the stream's frames in order, the
mutations in ``stream_end``, rows the user asked for (not AI suggestions), invalid
tool calls that never reach the client, the floating domain, concurrent requests
on one session, cancel (a write already sent is still reported), LLM failures
in words the user can act on, a slow OS keyring that must not stall the daemon,
the step budget, the conversation history, and litellm never imported at daemon
start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keyring
import keyring.backend
import keyring.errors
import pytest

from agents.loop import FINAL_NUDGE
from protocol.frames import FloatingDomain, StreamEnd, StreamStart, StreamText, ToolCall
from protocol.reference import ChatResult, ProtocolClient, ReferenceClient, SqliteStore
from tests.conftest import DaemonFactory, DaemonHarness, wait_until
from tests.support.llm_server import Call, Error, FakeLLMServer, Hang, Reply, Text, ToolCalls

REPO = Path(__file__).resolve().parents[2]
ChatFrame = StreamStart | StreamText | FloatingDomain | StreamEnd


class _Recorder(ProtocolClient):
    """Keeps every chat frame the client receives, in arrival order, by request_id."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.chat_frames: dict[str, list[ChatFrame]] = {}

    def _on_chat_frame(self, frame: ChatFrame) -> None:
        self.chat_frames.setdefault(frame.request_id, []).append(frame)
        super()._on_chat_frame(frame)

    def kinds(self, request_id: str) -> list[str]:
        return [f.type for f in self.chat_frames.get(request_id, [])]


class RecordingClient(_Recorder, ReferenceClient):
    """The reference client (the desktop app), recording chat frames."""


class RecordingControl(_Recorder):
    """A control session (the CLI), recording chat frames."""


class SlowKeyring(keyring.backend.KeyringBackend):
    """A real keyring backend holding no key, answering after ``delay`` seconds.

    Its priority is below keyring's "fail" backend, so keyring's own discovery
    never picks it: it is used only where a test installs it (``set_keyring``)."""

    priority = -1

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.delay = 0.0
        self.lookups = 0

    def get_password(self, service: str, username: str) -> str | None:
        self.lookups += 1
        if self.delay:
            threading.Event().wait(self.delay)
        return None

    def set_password(self, service: str, username: str, password: str) -> None:
        raise keyring.errors.PasswordSetError("read-only test keyring")

    def delete_password(self, service: str, username: str) -> None:
        raise keyring.errors.PasswordDeleteError("read-only test keyring")


@pytest.fixture(autouse=True)
def os_keyring() -> Iterator[SlowKeyring]:
    """No API key is configured, so each chat request asks the keyring: never the
    developer's real one (nor a backend another test module registered)."""
    previous = keyring.get_keyring()
    backend = SlowKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


@pytest.fixture
def app_db(tmp_path: Path) -> Path:
    """The app's SQLite file with one project, one task and one note."""
    path = tmp_path / "app.db"
    with SqliteStore(path) as db:
        project = db.handle("insert", "projects", data={"name": "Website"})["row"]
        db.handle("insert", "tasks", data={"title": "Send invoice", "projectId": project["id"]})
        db.handle("insert", "notes", data={"title": "Call notes", "content": "Client likes blue"})
    return path


@pytest.fixture
async def daemon(make_daemon: DaemonFactory, llm_server: FakeLLMServer) -> DaemonHarness:
    return await make_daemon(llm__model="openai/fake", llm__api_base=llm_server.base_url)


async def connect(harness: DaemonHarness, db: Path) -> RecordingClient:
    """A device with no agents (nothing runs by itself), recording chat frames."""
    client = RecordingClient(harness.url, harness.token, db=str(db))
    harness.clients.append(client)
    await client.connect()
    return client


@pytest.fixture
async def app(daemon: DaemonHarness, app_db: Path) -> RecordingClient:
    return await connect(daemon, app_db)


def rows(client: ReferenceClient, table: str) -> list[dict[str, Any]]:
    return list(client.store.handle("select", table)["rows"])


def the_task(client: ReferenceClient, title: str) -> dict[str, Any]:
    found = [r for r in rows(client, "tasks") if r["title"] == title]
    assert len(found) == 1, found
    return found[0]


def tool_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in body["messages"] if m["role"] == "tool"]


def assert_stream_shape(
    client: RecordingClient, result: ChatResult, *, floating: bool = False
) -> None:
    """[floating_domain], stream_start, stream_text..., stream_end; nothing else, once each
    (a floating answer opens with its domain: the shipping app expects it first)."""
    kinds = client.kinds(result.request_id)
    head = ["floating_domain", "stream_start"] if floating else ["stream_start"]
    assert kinds[: len(head)] == head, kinds
    assert kinds[-1] == "stream_end", kinds
    middle = kinds[len(head) : -1]
    assert middle and set(middle) == {"stream_text"}, kinds
    assert result.started


async def assert_session_alive(client: ReferenceClient) -> None:
    status = await asyncio.wait_for(client.status(), 5)
    assert status.device_online


# --- writes ---------------------------------------------------------------------------


async def test_create_task_streams_and_reports_the_insert(
    app: RecordingClient, llm_server: FakeLLMServer
) -> None:
    llm_server.script(
        ToolCalls([Call("create_task", {"title": "X"})]),
        Text("Created the task <task>[X]</task>.", chunk_size=6),
    )
    result = await app.home("create a task called X")

    assert result.error is None
    assert result.text == "Created the task <task>[X]</task>."
    assert_stream_shape(app, result)
    row = the_task(app, "X")
    # Typed by the user: stored as the app's own row, not an AI suggestion to approve.
    assert row["isAiSuggested"] == 0 and row["isApproved"] == 1
    inserts = [c for c in app.tool_calls if c.action == "insert"]
    assert len(inserts) == 1 and "isAiSuggested" not in (inserts[0].data or {})
    assert len(result.mutations) == 1
    mutation = result.mutations[0]
    assert (mutation.action, mutation.table) == ("insert", "tasks")
    assert mutation.data["id"] == row["id"] and mutation.data["title"] == "X"
    # The model saw the tool's result before answering.
    assert "created" in tool_messages(llm_server.requests[1])[0]["content"]


async def test_deletes_are_available_in_chat(
    app: RecordingClient, llm_server: FakeLLMServer
) -> None:
    task = the_task(app, "Send invoice")
    llm_server.script(ToolCalls([Call("delete_task", {"task_id": task["id"]})]), Text("Deleted."))
    result = await app.home("delete the invoice task")

    assert result.error is None and result.text == "Deleted."
    assert rows(app, "tasks") == []
    assert [(m.action, m.table, m.data) for m in result.mutations] == [
        ("delete", "tasks", {"id": task["id"]})
    ]
    assert "delete_task" in {t["function"]["name"] for t in llm_server.requests[0]["tools"]}


# --- reads ----------------------------------------------------------------------------


async def test_a_question_reads_data_and_streams_the_answer(
    app: RecordingClient, llm_server: FakeLLMServer
) -> None:
    task = the_task(app, "Send invoice")
    answer = f"You have one open task: Send invoice <task>[{task['id']}]</task>."
    llm_server.script(ToolCalls([Call("list_tasks", {})]), Text(answer, chunk_size=3))
    seen: list[str] = []
    result = await app.home("what do I have to do?", on_text=seen.append)

    assert result.error is None and result.mutations == []
    assert len(result.chunks) > 1 and seen == result.chunks
    assert result.text == answer
    assert_stream_shape(app, result)
    assert len(llm_server.requests) == 2
    second = llm_server.requests[1]
    call_id = second["messages"][-2]["tool_calls"][0]["id"]
    results = tool_messages(second)
    assert len(results) == 1 and results[0]["tool_call_id"] == call_id
    assert task["id"] in results[0]["content"] and "Send invoice" in results[0]["content"]
    assert [c.action for c in app.tool_calls] == ["select"]


async def test_invalid_tool_calls_never_reach_the_client(
    app: RecordingClient, llm_server: FakeLLMServer
) -> None:
    llm_server.script(
        ToolCalls(
            [
                Call("create_task", {"title": "Ship it", "status": "urgent"}),
                Call("create_task", {"priority": "high"}),
                Call("launch_rocket", {"when": "now"}),
            ]
        ),
        Text("I could not create those tasks."),
    )
    result = await app.home("create an urgent task")

    assert result.error is None and result.text == "I could not create those tasks."
    assert result.mutations == []
    assert app.tool_calls == []  # validation happens before anything is sent
    assert [r["title"] for r in rows(app, "tasks")] == ["Send invoice"]
    bad_enum, missing, unknown = (m["content"] for m in tool_messages(llm_server.requests[1]))
    assert "invalid arguments for create_task" in bad_enum and "status" in bad_enum
    assert "urgent" in bad_enum
    assert "invalid arguments for create_task" in missing and "title" in missing
    assert "unknown tool 'launch_rocket'" in unknown
    assert len(llm_server.requests) == 2


# --- floating requests ----------------------------------------------------------------


async def test_floating_domain_comes_from_the_first_tool(
    app: RecordingClient, llm_server: FakeLLMServer
) -> None:
    llm_server.script(
        ToolCalls([Call("list_notes", {})], content=""),
        ToolCalls([Call("list_tasks", {})]),
        Text("One note: Call notes."),
    )
    result = await app.floating("what did the client say?", scope={"type": "tasks"})

    assert result.error is None and result.text == "One note: Call notes."
    assert result.domain == "notes"
    assert_stream_shape(app, result, floating=True)
    assert app.kinds(result.request_id).count("floating_domain") == 1


@pytest.mark.parametrize(("scope", "domain"), [("timelines", "timelines"), ("calendar", "tasks")])
async def test_floating_domain_without_tools_comes_from_the_scope(
    app: RecordingClient, llm_server: FakeLLMServer, scope: str, domain: str
) -> None:
    llm_server.script(Text("Nothing is due this week.", chunk_size=5))
    result = await app.floating("anything due?", scope={"type": scope, "id": "x1"})

    assert result.error is None and result.text == "Nothing is due this week."
    assert result.domain == domain
    assert_stream_shape(app, result, floating=True)
    # The scope reaches the model.
    assert scope in llm_server.requests[0]["messages"][0]["content"]


# --- concurrency and cancel -----------------------------------------------------------


async def test_concurrent_requests_on_one_session(
    app: RecordingClient, llm_server: FakeLLMServer
) -> None:
    both_asked = threading.Barrier(2)

    def responder(body: dict[str, Any]) -> Reply:
        question = body["messages"][-1]["content"]
        if question != "warm":
            # Each answer waits for the other question: only requests in flight at the
            # same time get past this (one after the other, the first gives up at 10 s).
            with contextlib.suppress(threading.BrokenBarrierError):
                both_asked.wait(timeout=10)
        return Text(f"answer to {question}", chunk_size=3)

    llm_server.responder = responder
    await app.home("warm")
    first, second = await asyncio.gather(
        app.home("alpha", request_id="req-alpha"), app.home("beta", request_id="req-beta")
    )

    assert (first.request_id, first.text, first.error) == ("req-alpha", "answer to alpha", None)
    assert (second.request_id, second.text, second.error) == ("req-beta", "answer to beta", None)
    assert_stream_shape(app, first)
    assert_stream_shape(app, second)
    assert llm_server.calls == 3
    assert llm_server.max_in_flight == 2, "the two requests ran one after the other"


async def test_cancel_a_request_waiting_for_the_model(
    app: RecordingClient, llm_server: FakeLLMServer
) -> None:
    loop = asyncio.get_running_loop()
    asked = asyncio.Event()

    def hang(body: dict[str, Any]) -> Reply:
        loop.call_soon_threadsafe(asked.set)
        return Hang(5.0)

    llm_server.responder = hang
    pending = asyncio.create_task(app.home("think hard", request_id="slow"))
    await asyncio.wait_for(asked.wait(), 10)
    start = time.perf_counter()
    await app.cancel("slow")
    result = await asyncio.wait_for(pending, 3)

    assert time.perf_counter() - start < 3
    assert result.error == "cancelled" and result.mutations == []
    assert app.kinds("slow")[0] == "stream_start" and app.kinds("slow")[-1] == "stream_end"
    await assert_session_alive(app)
    llm_server.responder = lambda body: Text("still here")
    assert (await app.home("hello?")).text == "still here"


async def test_cancel_a_request_while_it_streams(
    app: RecordingClient, llm_server: FakeLLMServer
) -> None:
    long_answer = "word " * 100
    llm_server.script(Text(long_answer, chunk_size=5, chunk_delay_s=0.05))  # ~5 s in all
    first_text = asyncio.Event()
    pending = asyncio.create_task(
        app.home("tell me a story", request_id="story", on_text=lambda _: first_text.set())
    )
    await asyncio.wait_for(first_text.wait(), 10)
    start = time.perf_counter()
    await app.cancel("story")
    result = await asyncio.wait_for(pending, 3)

    assert time.perf_counter() - start < 3
    assert result.error == "cancelled"
    assert 0 < len(result.text) < len(long_answer)
    assert app.kinds("story")[-1] == "stream_end"
    await assert_session_alive(app)


async def test_cancel_during_a_write_reports_the_write(
    daemon: DaemonHarness, app_db: Path, llm_server: FakeLLMServer
) -> None:
    """A batch of tool calls, once started, finishes: the row the app stored is in
    ``stream_end.mutations`` (so the app refreshes), and the model is not asked again."""
    inserting = asyncio.Event()

    async def slow_insert(call: ToolCall) -> None:
        if call.action == "insert":
            inserting.set()
            await asyncio.sleep(0.3)

    client = RecordingClient(daemon.url, daemon.token, db=str(app_db), before_tool_call=slow_insert)
    daemon.clients.append(client)
    await client.connect()
    llm_server.script(ToolCalls([Call("create_task", {"title": "Y"})]), Text("never asked for"))
    pending = asyncio.create_task(client.home("create Y", request_id="write"))
    await asyncio.wait_for(inserting.wait(), 10)
    await client.cancel("write")
    result = await asyncio.wait_for(pending, 3)

    assert result.error == "cancelled"
    row = the_task(client, "Y")
    assert [(m.action, m.table, m.data["id"]) for m in result.mutations] == [
        ("insert", "tasks", row["id"])
    ]
    assert llm_server.calls == 1
    await assert_session_alive(client)


# --- LLM failures ---------------------------------------------------------------------


async def test_provider_that_keeps_failing(app: RecordingClient, llm_server: FakeLLMServer) -> None:
    llm_server.script(Text("warm"))
    await app.home("warm")  # litellm's import is not part of the time measured below
    llm_server.reset()
    llm_server.script(*(Error(500) for _ in range(5)))
    start = time.perf_counter()
    result = await app.home("what's up?")
    elapsed = time.perf_counter() - start

    assert result.error is not None and "kept failing" in result.error
    assert "500" in result.error and "5 attempts" in result.error
    assert llm_server.calls == 5
    assert result.chunks == [] and result.mutations == []
    assert elapsed < 10
    await assert_session_alive(app)


async def test_rate_limit_is_waited_out(app: RecordingClient, llm_server: FakeLLMServer) -> None:
    llm_server.script(Text("warm"))
    await app.home("warm")
    llm_server.script(Error(429, retry_after=1), Text("back again"))
    start = time.perf_counter()
    result = await app.home("hello")
    elapsed = time.perf_counter() - start

    assert result.error is None and result.text == "back again"
    assert 0.9 <= elapsed < 5, elapsed  # Retry-After: 1 was honoured
    assert llm_server.calls == 3
    await assert_session_alive(app)


async def test_no_model_configured(make_daemon: DaemonFactory, app_db: Path) -> None:
    harness = await make_daemon()
    client = await connect(harness, app_db)
    result = await client.home("create a task called X")

    assert result.error is not None
    assert "no model configured" in result.error and "TETHER_MODEL" in result.error
    assert client.kinds(result.request_id) == ["stream_start", "stream_end"]
    assert [r["title"] for r in rows(client, "tasks")] == ["Send invoice"]
    await assert_session_alive(client)


async def test_chat_from_a_control_session_without_an_app(daemon: DaemonHarness) -> None:
    control = RecordingControl(daemon.url, daemon.token, client_name="test-cli")
    daemon.clients.append(control)
    await control.connect()
    result = await control.home("create a task called X", request_id="cli-1")

    assert result.error is not None and "no desktop app is connected" in result.error
    assert control.kinds("cli-1") == ["stream_start", "stream_end"]
    assert (await control.status()).device_online is False
    floating = await control.floating("and this?", scope={"type": "Note"}, request_id="cli-2")
    assert floating.error is not None and floating.domain == "notes"
    assert control.kinds("cli-2") == ["floating_domain", "stream_start", "stream_end"]


async def test_a_slow_keyring_does_not_stall_the_daemon(
    app: RecordingClient, llm_server: FakeLLMServer, os_keyring: SlowKeyring
) -> None:
    """Without a configured key each request asks the OS keyring (D-Bus can take
    seconds); meanwhile the daemon's event loop keeps serving every session."""
    llm_server.responder = lambda body: Text("answer")
    await app.home("warm")  # litellm's import and first-call set-up are not measured
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    os_keyring.delay = 0.6
    ticking = asyncio.create_task(ticker())
    try:
        result = await app.home("hello")
    finally:
        ticking.cancel()
    assert result.error is None and result.text == "answer"
    assert os_keyring.lookups == 2
    assert max(gaps) < 0.3, f"the event loop stalled for {max(gaps):.2f} s"
    await assert_session_alive(app)


# --- budgets and history --------------------------------------------------------------


async def test_step_budget_forces_one_final_answer(
    app: RecordingClient, llm_server: FakeLLMServer, daemon: DaemonHarness
) -> None:
    def responder(body: dict[str, Any]) -> Reply:
        if body.get("tools"):
            return ToolCalls([Call("list_tasks", {})])
        return Text("Here is what I found so far.")

    llm_server.responder = responder
    result = await app.home("look at everything")

    max_steps = daemon.daemon.chat.limits.max_steps
    assert max_steps == 10
    assert result.error is None and result.text == "Here is what I found so far."
    assert_stream_shape(app, result)
    requests = llm_server.requests
    assert len(requests) == max_steps + 1
    assert all(r.get("tools") for r in requests[:-1])
    assert not requests[-1].get("tools")
    assert requests[-1]["messages"][-1] == {"role": "user", "content": FINAL_NUDGE}
    assert len(tool_messages(requests[-1])) == max_steps


async def test_conversation_history_reaches_the_model(
    app: RecordingClient, llm_server: FakeLLMServer
) -> None:
    history = [
        {"role": "user", "content": "which project is late?"},
        {"role": "assistant", "content": "Website is two days late."},
    ]
    llm_server.script(Text("Send the invoice first."))
    result = await app.home("what should I do about it?", history=history)

    assert result.error is None and result.text == "Send the invoice first."
    messages = llm_server.requests[0]["messages"]
    assert messages[0]["role"] == "system"
    assert messages[1:] == [*history, {"role": "user", "content": "what should I do about it?"}]


# --- litellm stays out of start-up ----------------------------------------------------

_START_AND_STOP = textwrap.dedent(
    """
    import asyncio, os, sys
    sys.path.insert(0, {repo!r})
    import daemon.app, daemon.cli
    print("after import", "litellm" in sys.modules)

    from daemon.app import Daemon
    from daemon.config import load_config, paths_from_env
    from daemon.state import StateStore
    from protocol.reference import ProtocolClient, ReferenceClient

    async def main():
        paths = paths_from_env(os.environ).ensure()
        config = load_config(paths, {{}}, overrides={{"port": 0}})
        d = Daemon(config=config, paths=paths, token="t", state=StateStore.open(paths.state_db),
                   pid=os.getpid())
        port = await d.start()
        url = f"ws://127.0.0.1:{{port}}/"
        control = ProtocolClient(url, "t")
        await control.connect()
        await control.status()
        app = ReferenceClient(url, "t", db={db!r})
        await app.connect()
        result = await app.home("hello")  # no model configured: refused before any import
        assert "no model configured" in (result.error or ""), result
        await control.status()
        await app.close()
        await control.close()
        await d.stop()

    asyncio.run(main())
    print("after a daemon ran", "litellm" in sys.modules)
    """
)


def test_litellm_is_not_imported_at_daemon_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env["TETHER_HOME"] = str(tmp_path / "home")
    env["PYTHON_KEYRING_BACKEND"] = "keyring.backends.null.Keyring"  # not the host's keyring
    code = _START_AND_STOP.format(repo=str(REPO), db=str(tmp_path / "app.db"))
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["after import False", "after a daemon ran False"], (
        done.stdout,
        done.stderr,
    )


# --- bounded per session --------------------------------------------------------------


async def test_a_hundred_concurrent_chats_on_one_session_stay_within_the_cap(
    app: RecordingClient, llm_server: FakeLLMServer
) -> None:
    llm_server.responder = lambda body: Text("fine", chunk_size=2, delay_s=0.02)
    results = await asyncio.gather(
        *(app.home(f"question {n}", request_id=f"q{n}") for n in range(100))
    )
    assert sorted(r.request_id for r in results) == sorted(f"q{n}" for n in range(100))
    # Every chat ends: answered, or refused "busy:" when 4 answer and 64 wait already
    # (how many arrive while the queue is full depends on the machine's speed).
    answered = [r for r in results if r.error is None]
    refused = [r.error for r in results if r.error is not None]
    assert all(r.text == "fine" for r in answered)
    assert all(e.startswith("busy:") for e in refused), refused
    assert len(answered) >= 4 + 64 and llm_server.calls == len(answered)
    assert 1 < llm_server.max_in_flight <= 4, llm_server.max_in_flight  # the default cap


async def test_past_the_queue_a_chat_is_refused_busy_and_a_waiting_one_can_be_cancelled(
    make_daemon: DaemonFactory, llm_server: FakeLLMServer, app_db: Path
) -> None:
    harness = await make_daemon(
        llm__model="openai/fake",
        llm__api_base=llm_server.base_url,
        max_chats_per_session=1,
        max_queued_chats_per_session=1,
    )
    app = await connect(harness, app_db)
    loop = asyncio.get_running_loop()
    asked = asyncio.Event()

    def hold(body: dict[str, Any]) -> Reply:
        loop.call_soon_threadsafe(asked.set)
        return Hang(30)

    llm_server.responder = hold
    first = asyncio.create_task(app.home("first", request_id="c1"))
    await asked.wait()
    waiting = asyncio.create_task(app.home("second", request_id="c2"))
    chats = harness.daemon.chats
    await wait_until(lambda: sum(chats._waiting.values()) == 1, "the second chat waits")
    third = await app.home("third", request_id="c3")
    assert third.error is not None and third.error.startswith("busy:"), third.error
    await app.cancel("c2")
    second = await asyncio.wait_for(waiting, 5)
    assert second.error == "cancelled" and llm_server.calls == 1
    await app.cancel("c1")
    assert (await asyncio.wait_for(first, 10)).error == "cancelled"

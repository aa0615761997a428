"""agents.loop with the real litellm (via LiteLLM) against the local fake OpenAI server,
and the real SQLite store behind the tools."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from agents.errors import DeviceOffline, LLMRejected, RunCancelled
from agents.llm import LiteLLM, LLMSettings, Message
from agents.loop import FINAL_NUDGE, LoopLimits, run_loop
from agents.tools import MutationRecord, ToolContext, background_toolset, chat_toolset
from tests.support.llm_server import (
    Call,
    Error,
    FakeLLMServer,
    Hang,
    Length,
    Text,
    ToolCalls,
    estimate_prompt_tokens,
)
from tests.support.stores import SqliteBackedStore

SYSTEM: Message = {"role": "system", "content": "You turn files into tasks."}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as s:
        yield s


@pytest.fixture
def llm(server: FakeLLMServer) -> Iterator[LiteLLM]:
    server.reset()
    server.responder = lambda body: Text("ok")
    yield LiteLLM(
        LLMSettings(model="openai/fake", api_base=server.base_url, timeout_s=10, max_attempts=1)
    )
    server.reset()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteBackedStore]:
    s = SqliteBackedStore(tmp_path / "app.db")
    yield s
    s.close()


def user(text: str) -> list[Message]:
    return [SYSTEM, {"role": "user", "content": text}]


def tool_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in body["messages"] if m["role"] == "tool"]


async def test_a_tool_call_then_an_answer(
    server: FakeLLMServer, llm: LiteLLM, store: SqliteBackedStore
) -> None:
    server.script(
        ToolCalls([Call("create_task", {"title": "Send invoice", "priority": "high"}, id="c1")]),
        Text("Created the task."),
    )
    ctx = ToolContext(store, UTC, background=True, idempotency_scope="agent-1:file-hash")
    result = await run_loop(llm, user("invoice.txt: ..."), background_toolset(["tasks"]), ctx)

    assert result.text == "Created the task." and result.stopped == "answer"
    (row,) = store.db.rows("tasks")
    assert row["title"] == "Send invoice" and row["priority"] == "high"
    assert (row["isAiSuggested"], row["isApproved"]) == (1, 0)
    assert result.mutations == [MutationRecord("insert", "tasks", row)]
    assert (result.tool_calls, result.steps, result.tools_used) == (1, 2, ["create_task"])

    first, second = server.requests
    assert {t["function"]["name"] for t in first["tools"]} == set(
        background_toolset(["tasks"]).names()
    )
    assistant = second["messages"][2]
    assert assistant["role"] == "assistant"
    assert assistant["tool_calls"][0]["id"] == "c1"
    assert assistant["tool_calls"][0]["function"]["name"] == "create_task"
    (tool,) = tool_messages(second)
    assert tool["tool_call_id"] == "c1" and row["id"] in tool["content"]

    assert result.usage.llm_calls == 2
    assert result.usage.prompt_tokens == sum(estimate_prompt_tokens(b) for b in server.requests)
    assert result.usage.completion_tokens > 0


async def test_parallel_tool_calls_run_concurrently_and_answer_in_order(
    server: FakeLLMServer, llm: LiteLLM, tmp_path: Path
) -> None:
    store = SqliteBackedStore(tmp_path / "slow.db", latency_s=0.2)
    server.script(
        ToolCalls(
            [
                Call("create_task", {"title": "A"}, id="first"),
                Call("create_note", {"title": "B", "content": "b"}, id="second"),
            ]
        ),
        Text("done"),
    )
    seen: list[str] = []

    async def on_tool(name: str) -> None:
        seen.append(name)

    started = time.monotonic()
    result = await run_loop(
        llm, user("go"), chat_toolset(), ToolContext(store, UTC), on_tool=on_tool
    )
    assert store.max_in_flight == 2  # both inserts were in flight at once
    assert time.monotonic() - started < 0.2 * 2 + 1.5
    assert seen == ["create_task", "create_note"] == result.tools_used
    assert [m.table for m in result.mutations] == ["tasks", "notes"]
    tools = tool_messages(server.requests[1])
    assert [t["tool_call_id"] for t in tools] == ["first", "second"]
    assert "task id=" in tools[0]["content"] and "note id=" in tools[1]["content"]
    store.close()


async def test_invalid_arguments_go_back_to_the_model_and_the_loop_goes_on(
    server: FakeLLMServer, llm: LiteLLM, store: SqliteBackedStore
) -> None:
    server.script(
        ToolCalls([Call("create_task", {"title": "Pay", "status": "open"}, id="bad")]),
        ToolCalls([Call("create_task", "{title: Pay", id="broken")]),
        ToolCalls([Call("create_task", {"title": "Pay", "status": "todo"}, id="good")]),
        Text("fixed"),
    )
    result = await run_loop(llm, user("go"), chat_toolset(), ToolContext(store, UTC))
    assert result.text == "fixed" and result.tool_calls == 3
    assert store.actions() == ["insert"] and store.db.count("tasks") == 1
    bad = tool_messages(server.requests[1])[-1]
    assert bad["tool_call_id"] == "bad" and bad["content"].startswith("error: invalid arguments")
    assert "status" in bad["content"] and "'todo'" in bad["content"]
    broken = tool_messages(server.requests[2])[-1]
    assert "not valid JSON" in broken["content"]
    # The malformed arguments are echoed as {} so the history stays parseable.
    echoed = server.requests[2]["messages"][-2]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(echoed) == {}
    assert len(result.mutations) == 1


async def test_a_model_that_never_stops_gets_one_final_call_without_tools(
    server: FakeLLMServer, llm: LiteLLM, store: SqliteBackedStore
) -> None:
    def responder(body: dict[str, Any]) -> Any:
        if "tools" in body:
            return ToolCalls([Call("list_tasks", {})])
        return Text("Here is what I found.")

    server.responder = responder
    result = await run_loop(
        llm, user("go"), chat_toolset(), ToolContext(store, UTC), limits=LoopLimits(max_steps=3)
    )
    assert result.stopped == "step_budget" and result.text == "Here is what I found."
    assert len(server.requests) == 3 + 1
    assert all("tools" in r for r in server.requests[:3])
    last = server.requests[-1]
    assert "tools" not in last and last["messages"][-1]["content"] == FINAL_NUDGE
    assert (result.steps, result.tool_calls, result.usage.llm_calls) == (3, 3, 4)


async def test_the_tool_call_budget_refuses_extra_calls_and_ends_the_loop(
    server: FakeLLMServer, llm: LiteLLM, store: SqliteBackedStore
) -> None:
    server.script(
        ToolCalls([Call("create_task", {"title": "1"}), Call("create_task", {"title": "2"})]),
        ToolCalls([Call("create_task", {"title": "3"}), Call("create_task", {"title": "4"})]),
        Text("stopped"),
    )
    limits = LoopLimits(max_tool_calls=3)
    result = await run_loop(llm, user("go"), chat_toolset(), ToolContext(store, UTC), limits=limits)
    assert result.stopped == "tool_budget" and result.text == "stopped"
    assert [r["title"] for r in store.db.rows("tasks")] == ["1", "2", "3"]
    assert result.tool_calls == 3 and len(server.requests) == 3
    assert "tools" not in server.requests[-1]
    refused = tool_messages(server.requests[-1])[-1]["content"]
    assert refused.startswith("error: the budget of 3 tool calls is used up")


async def test_a_reply_cut_by_the_token_limit_is_continued(
    server: FakeLLMServer, llm: LiteLLM, store: SqliteBackedStore
) -> None:
    server.script(Length("The plan: first, "), Length("then second, "), Text("and done."))
    result = await run_loop(llm, user("plan"), chat_toolset(), ToolContext(store, UTC))
    assert result.text == "The plan: first, then second, and done."
    assert len(server.requests) == 3 and result.usage.llm_calls == 3
    cont = server.requests[2]["messages"]
    assert cont[-2] == {"role": "assistant", "content": "The plan: first, then second, "}
    assert "Continue exactly where" in cont[-1]["content"]


async def test_continuations_are_bounded(
    server: FakeLLMServer, llm: LiteLLM, store: SqliteBackedStore
) -> None:
    server.script(Length("a"), Length("b"), Length("c"), Text("never asked"))
    limits = LoopLimits(max_continuations=2)
    result = await run_loop(llm, user("x"), chat_toolset(), ToolContext(store, UTC), limits=limits)
    assert result.text == "abc" and len(server.requests) == 3


async def test_old_tool_results_are_shortened_first(
    server: FakeLLMServer, llm: LiteLLM, store: SqliteBackedStore
) -> None:
    ids = [
        store.db.handle("insert", "notes", data={"title": t, "content": t * 3000})["row"]["id"]
        for t in ("A", "B")
    ]
    server.script(
        ToolCalls([Call("get_note", {"note_id": ids[0]})]),
        ToolCalls([Call("get_note", {"note_id": ids[1]})]),
        Text("done"),
    )
    long_user = "please summarise " + "u" * 2000
    messages = [SYSTEM, {"role": "user", "content": long_user}]
    limits = LoopLimits(context_chars=7000)
    await run_loop(llm, messages, chat_toolset(), ToolContext(store, UTC), limits=limits)

    second, third = server.requests[1], server.requests[2]
    assert "[shortened]" not in json.dumps(second)  # under budget: untouched
    first_result, second_result = tool_messages(third)
    assert first_result["content"].endswith("[shortened]") and len(first_result["content"]) < 400
    assert not second_result["content"].endswith("[shortened]")
    assert third["messages"][0] == SYSTEM and third["messages"][1]["content"] == long_user
    assert messages == [SYSTEM, {"role": "user", "content": long_user}]  # caller's list intact


async def test_cancel_before_the_next_call_sends_nothing_more(
    server: FakeLLMServer, llm: LiteLLM, store: SqliteBackedStore
) -> None:
    cancel = asyncio.Event()

    async def on_tool(name: str) -> None:
        cancel.set()  # e.g. the user pressed stop while the tool was starting

    server.script(ToolCalls([Call("create_task", {"title": "A"})]), Text("never"))
    with pytest.raises(RunCancelled):
        await run_loop(
            llm, user("go"), chat_toolset(), ToolContext(store, UTC), on_tool=on_tool, cancel=cancel
        )
    assert len(server.requests) == 1
    assert store.db.count("tasks") == 1  # the batch that had started finished whole


async def test_cancel_set_before_the_start(
    server: FakeLLMServer, llm: LiteLLM, store: SqliteBackedStore
) -> None:
    cancel = asyncio.Event()
    cancel.set()
    with pytest.raises(RunCancelled):
        await run_loop(llm, user("go"), chat_toolset(), ToolContext(store, UTC), cancel=cancel)
    assert server.requests == []


async def test_cancel_abandons_a_model_call_in_flight(
    server: FakeLLMServer, llm: LiteLLM, store: SqliteBackedStore
) -> None:
    server.script(Hang(3.0))
    cancel = asyncio.Event()
    asyncio.get_running_loop().call_later(0.3, cancel.set)
    started = time.monotonic()
    with pytest.raises(RunCancelled):
        await run_loop(llm, user("go"), chat_toolset(), ToolContext(store, UTC), cancel=cancel)
    assert time.monotonic() - started < 2.0
    assert len(server.requests) == 1


async def test_streaming_forwards_text_as_it_comes(
    server: FakeLLMServer, llm: LiteLLM, store: SqliteBackedStore
) -> None:
    server.script(
        ToolCalls([Call("list_tasks", {})], content="Looking. ", chunk_size=3),
        Text("You have no tasks today.", chunk_size=5),
    )
    chunks: list[str] = []

    async def on_text(piece: str) -> None:
        chunks.append(piece)

    result = await run_loop(
        llm, user("today?"), chat_toolset(), ToolContext(store, UTC), on_text=on_text
    )
    assert result.text == "You have no tasks today."
    assert len(chunks) > 2 and "".join(chunks) == "Looking. You have no tasks today."
    assert all(r.get("stream") is True for r in server.requests)
    assert result.tools_used == ["list_tasks"] and result.usage.llm_calls == 2


async def test_llm_errors_propagate(
    server: FakeLLMServer, llm: LiteLLM, store: SqliteBackedStore
) -> None:
    server.script(Error(400))
    with pytest.raises(LLMRejected):
        await run_loop(llm, user("go"), chat_toolset(), ToolContext(store, UTC))


async def test_device_offline_stops_the_run(
    server: FakeLLMServer, llm: LiteLLM, store: SqliteBackedStore
) -> None:
    store.offline = True
    server.script(ToolCalls([Call("list_tasks", {}), Call("list_notes", {})]), Text("never"))
    with pytest.raises(DeviceOffline):
        await run_loop(llm, user("go"), chat_toolset(), ToolContext(store, UTC))
    assert len(server.requests) == 1
    assert len(store.calls) == 2  # both calls of the batch finished before the error surfaced


async def test_unknown_tool_is_reported_to_the_model(
    server: FakeLLMServer, llm: LiteLLM, store: SqliteBackedStore
) -> None:
    server.script(ToolCalls([Call("delete_task", {"task_id": "t1"})]), Text("ok then"))
    result = await run_loop(
        llm, user("go"), background_toolset(["tasks"]), ToolContext(store, UTC, background=True)
    )
    assert result.text == "ok then" and result.tools_used == [] and store.calls == []
    content = tool_messages(server.requests[1])[0]["content"]
    assert content.startswith("error: unknown tool 'delete_task'; available tools:")

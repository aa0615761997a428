"""End to end: charts and core memory in the home chat, through the real daemon, the
reference client with SQLite and real litellm against the local test model.

What issue 11 asks: a chart block split across many ``stream_text`` chunks arrives
whole; an invalid one is dropped and the rest of the answer arrives; with a
``coreMemory`` table announced, ``update_core_memory`` stores what the user states
and every chat starts with it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agents.chat import CHART_PROMPT
from protocol.frames import Capabilities
from protocol.reference import ReferenceClient, SqliteStore
from tests.conftest import DaemonFactory, DaemonHarness
from tests.support.llm_server import Call, FakeLLMServer, Text, ToolCalls

TABLES = ["tasks", "projects", "notes", "timelines", "taskComments", "clients"]
CHART = json.dumps(
    {
        "chartType": "pie",
        "title": "Open tasks per project",
        "data": [{"project": "Website", "tasks": 3}, {"project": "App", "tasks": 1}],
        "config": {"tasks": {"label": "Tasks", "color": "#16a34a"}},
    }
)


@pytest.fixture
async def daemon(make_daemon: DaemonFactory, llm_server: FakeLLMServer) -> DaemonHarness:
    return await make_daemon(llm__model="openai/fake", llm__api_base=llm_server.base_url)


@pytest.fixture
def app_db(tmp_path: Path) -> Path:
    path = tmp_path / "app.db"
    with SqliteStore(path) as db:
        db.handle("insert", "coreMemory", data={"key": "working hours", "value": "9 to 5 CET"})
    return path


async def connect(daemon: DaemonHarness, db: Path, *, memory: bool) -> ReferenceClient:
    tables = [*TABLES, "coreMemory"] if memory else TABLES
    return await daemon.device(db, capabilities=Capabilities(idempotency=True, tables=tables))


def system_prompt(body: dict[str, Any]) -> str:
    message = body["messages"][0]
    assert message["role"] == "system"
    return str(message["content"])


def tool_names(body: dict[str, Any]) -> list[str]:
    return [t["function"]["name"] for t in body.get("tools") or []]


# --- charts -----------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 3, 17])
async def test_a_chart_split_across_many_chunks_arrives_whole(
    daemon: DaemonHarness, llm_server: FakeLLMServer, app_db: Path, chunk_size: int
) -> None:
    app = await connect(daemon, app_db, memory=False)
    answer = f"Here is the split:\n<chart>{CHART}</chart>\nMostly the website."
    llm_server.script(Text(answer, chunk_size=chunk_size))

    result = await app.home("how are my open tasks spread?")

    assert result.error is None and result.text == answer
    with_tags = [c for c in result.chunks if "<chart" in c or "chart>" in c]
    assert with_tags == [f"<chart>{CHART}</chart>"]  # one frame, the whole block
    assert len(result.chunks) > 3  # the text around it still streamed in pieces
    assert CHART_PROMPT in system_prompt(llm_server.requests[0])


async def test_an_invalid_chart_is_dropped_and_the_rest_of_the_answer_arrives(
    daemon: DaemonHarness, llm_server: FakeLLMServer, app_db: Path
) -> None:
    app = await connect(daemon, app_db, memory=False)
    bad = '{"chartType": "donut", "data": [{"a": 1}]}'
    llm_server.script(
        Text(f"Before. <chart>{bad}</chart> <chart>{CHART}</chart> After.", chunk_size=5)
    )

    result = await app.home("chart it")

    assert result.error is None
    assert result.text == f"Before.  <chart>{CHART}</chart> After."
    assert all("donut" not in c for c in result.chunks)


async def test_a_chart_still_open_when_the_answer_ends_is_dropped(
    daemon: DaemonHarness, llm_server: FakeLLMServer, app_db: Path
) -> None:
    app = await connect(daemon, app_db, memory=False)
    llm_server.script(Text('Start <chart>{"chartType": "bar", "data": [{"a"', chunk_size=4))

    result = await app.home("chart it")

    assert result.error is None and result.text == "Start "


async def test_a_floating_answer_gets_no_chart_instructions(
    daemon: DaemonHarness, llm_server: FakeLLMServer, app_db: Path
) -> None:
    app = await connect(daemon, app_db, memory=False)
    llm_server.script(Text("ok"))
    await app.floating("summarise", scope={"type": "tasks"})
    assert CHART_PROMPT not in system_prompt(llm_server.requests[0])


# --- core memory --------------------------------------------------------------------------


async def test_every_chat_starts_with_the_core_memory_and_can_add_to_it(
    daemon: DaemonHarness, llm_server: FakeLLMServer, app_db: Path
) -> None:
    app = await connect(daemon, app_db, memory=True)
    llm_server.script(
        ToolCalls([Call("update_core_memory", {"key": "time zone", "value": "CET"})]),
        Text("Noted."),
    )

    result = await app.home("I am in CET, remember that")

    assert result.error is None and result.text == "Noted."
    first = llm_server.requests[0]
    assert "- working hours: 9 to 5 CET" in system_prompt(first)
    assert "update_core_memory" in tool_names(first)
    rows = {r["key"]: r["value"] for r in app.store.rows("coreMemory")}
    assert rows == {"working hours": "9 to 5 CET", "time zone": "CET"}
    (mutation,) = result.mutations
    assert (mutation.action, mutation.table) == ("insert", "coreMemory")

    # The same key again is an update, not a second row; the next chat knows it.
    llm_server.script(
        ToolCalls([Call("update_core_memory", {"key": "Working hours", "value": "8 to 4 CET"})]),
        Text("Updated."),
    )
    await app.home("I now work 8 to 4")
    rows = {r["key"]: r["value"] for r in app.store.rows("coreMemory")}
    assert rows == {"working hours": "8 to 4 CET", "time zone": "CET"}
    llm_server.script(Text("Hi."))
    await app.home("hello")
    prompt = system_prompt(llm_server.requests[-1])
    assert "- working hours: 8 to 4 CET" in prompt and "- time zone: CET" in prompt


async def test_without_a_core_memory_table_there_is_no_memory(
    daemon: DaemonHarness, llm_server: FakeLLMServer, app_db: Path
) -> None:
    app = await connect(daemon, app_db, memory=False)
    llm_server.script(
        ToolCalls([Call("update_core_memory", {"key": "k", "value": "v"})]), Text("?")
    )

    result = await app.home("remember k")

    assert result.error is None
    assert "update_core_memory" not in tool_names(llm_server.requests[0])
    assert "9 to 5" not in system_prompt(llm_server.requests[0])
    assert not [c for c in app.tool_calls if c.table == "coreMemory"]
    (error,) = [m["content"] for m in llm_server.requests[1]["messages"] if m["role"] == "tool"]
    assert error.startswith("error: unknown tool 'update_core_memory'")

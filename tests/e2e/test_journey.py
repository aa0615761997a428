"""End to end: the agent-setup journey (``journey_start`` / ``journey_reply``) through
the real daemon, the reference client and real litellm against the local test model.

What issue 11 asks: a first question that fits the kind, a journey that ends in at
most five replies with ``done: true`` and a ``prompt_template`` that validates, an
invalid suggestion sent back to the model, the model made to finish after the fifth
reply, the old template as the starting point with ``agent_id``, idle expiry, and
``cancel``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from agents.journey import FINISH_TOOL
from protocol.agent_config import GmailAgent, LocalDirectoryAgent
from protocol.codec import encode
from protocol.frames import JourneyMessage, _Frame
from protocol.reference import ProtocolClient, RequestFailed
from tests.conftest import DaemonFactory, DaemonHarness, wait_until
from tests.support.llm_server import Call, FakeLLMServer, Hang, Text, ToolCalls


@pytest.fixture
async def daemon(make_daemon: DaemonFactory, llm_server: FakeLLMServer) -> DaemonHarness:
    return await make_daemon(llm__model="openai/fake", llm__api_base=llm_server.base_url)


@pytest.fixture
async def app(daemon: DaemonHarness) -> ProtocolClient:
    return await daemon.control()


def finish(**arguments: Any) -> ToolCalls:
    return ToolCalls([Call(FINISH_TOOL, arguments)])


def tool_results(body: dict[str, Any]) -> list[str]:
    return [m["content"] for m in body["messages"] if m["role"] == "tool"]


async def test_a_mail_journey_ends_with_a_valid_prompt(
    app: ProtocolClient, llm_server: FakeLLMServer
) -> None:
    first = await app.journey_start("gmail")
    assert first.done is False and first.session_id
    assert "email" in first.message.lower()
    assert llm_server.calls == 0  # the first question needs no model

    llm_server.script(
        Text("Which senders matter most?"),
        finish(
            prompt_template="Turn client requests into tasks with due dates.",
            data_types=["tasks", "notes"],
            filter_config={"senders": ["ana@example.com"], "labels": ["clients"]},
        ),
    )
    second = await app.journey_reply(first.session_id, "Requests from my clients become tasks")
    assert (second.done, second.message) == (False, "Which senders matter most?")
    last = await app.journey_reply(first.session_id, "Mostly Ana, label clients")

    assert last.done is True and last.session_id == first.session_id
    assert last.prompt_template == "Turn client requests into tasks with due dates."
    assert last.data_types == ["tasks", "notes"]
    assert last.filter_config == {"senders": ["ana@example.com"], "labels": ["clients"]}
    assert last.file_extensions is None
    # The result validates as an agent config of that kind.
    GmailAgent(
        id="mail",
        name="Mail",
        schedule_cron="0 9 * * *",
        account="me@example.com",
        prompt_template=last.prompt_template,
        data_types=last.data_types,
        filter_config=last.filter_config,
    )
    # The model saw the whole conversation, and only the finish tool.
    body = llm_server.requests[-1]
    assert [t["function"]["name"] for t in body["tools"]] == [FINISH_TOOL]
    said = [m["content"] for m in body["messages"] if m["role"] in ("user", "assistant")]
    assert said[:4] == [
        first.message,
        "Requests from my clients become tasks",
        "Which senders matter most?",
        "Mostly Ana, label clients",
    ]
    # A finished journey is gone: the daemon keeps nothing.
    with pytest.raises(RequestFailed) as gone:
        await app.journey_reply(first.session_id, "one more thing")
    assert gone.value.code == "not_found"


async def test_a_files_journey_asks_about_files_and_normalises_extensions(
    app: ProtocolClient, llm_server: FakeLLMServer
) -> None:
    first = await app.journey_start("local_directory")
    assert "files" in first.message.lower()
    llm_server.script(
        finish(prompt_template="Meeting notes become notes.", file_extensions=["MD", ".pdf"])
    )
    last = await app.journey_reply(first.session_id, "meeting notes in markdown and pdf")
    assert last.done and last.file_extensions == [".md", ".pdf"]
    assert last.data_types is None and last.filter_config is None
    LocalDirectoryAgent(
        id="docs",
        name="Docs",
        schedule_cron="0 9 * * *",
        directory_paths=[str(Path.home())],
        prompt_template=last.prompt_template or "",
        file_extensions=last.file_extensions,
    )


async def test_an_invalid_suggestion_goes_back_to_the_model(
    app: ProtocolClient, llm_server: FakeLLMServer
) -> None:
    first = await app.journey_start("outlook")
    llm_server.script(
        finish(prompt_template="Invoices become notes.", data_types=["emails"]),
        finish(prompt_template="Invoices become notes.", file_extensions=[".pdf"]),
        finish(prompt_template="Invoices become notes.", data_types=["notes"]),
    )
    last = await app.journey_reply(first.session_id, "invoices")
    assert last.done and last.data_types == ["notes"]
    errors = tool_results(llm_server.requests[2])
    assert errors[0].startswith("error:") and "data_types" in errors[0]
    assert "file_extensions: only for file agents" in errors[1]


async def test_after_five_replies_the_model_must_finish(
    app: ProtocolClient, llm_server: FakeLLMServer
) -> None:
    first = await app.journey_start("teams")
    assert "chat" in first.message.lower()
    llm_server.script(*[Text(f"Question {n}?") for n in range(2, 6)])
    for n in range(1, 5):
        step = await app.journey_reply(first.session_id, f"answer {n}")
        assert (step.done, step.message) == (False, f"Question {n + 1}?")
    # On the fifth reply the model asks yet another question: it is asked again, forced.
    llm_server.script(Text("And one more question?"), finish(prompt_template="Requests: tasks."))
    last = await app.journey_reply(first.session_id, "answer 5")

    assert last.done and last.prompt_template == "Requests: tasks."
    forced = llm_server.requests[-2:]
    for body in forced:
        assert body["tool_choice"] == {"type": "function", "function": {"name": FINISH_TOOL}}
        assert "last answer" in body["messages"][-1]["content"]
    assert all("tool_choice" not in body for body in llm_server.requests[:-2])
    user_turns = [m for m in forced[-1]["messages"] if m["role"] == "user"]
    assert len(user_turns) == 6  # five answers and the nudge


async def test_a_model_that_never_finishes_is_an_error_and_the_answer_can_be_resent(
    app: ProtocolClient, llm_server: FakeLLMServer, daemon: DaemonHarness
) -> None:
    first = await app.journey_start("gmail")
    llm_server.script(*[Text(f"Q{n}?") for n in range(4)])
    for n in range(4):
        await app.journey_reply(first.session_id, f"a{n}")
    llm_server.script(Text("still asking?"), Text("still asking?"), Text("still asking?"))
    with pytest.raises(RequestFailed) as failed:
        await app.journey_reply(first.session_id, "a4")
    assert failed.value.code == "internal" and "did not finish" in failed.value.message
    # The journey is as it was: the same last answer may be sent again.
    llm_server.script(finish(prompt_template="Done right."))
    last = await app.journey_reply(first.session_id, "a4")
    assert last.done and last.prompt_template == "Done right."
    user_turns = [m for m in llm_server.requests[-1]["messages"] if m["role"] == "user"]
    assert [m["content"] for m in user_turns[:5]] == ["a0", "a1", "a2", "a3", "a4"]


async def test_a_journey_for_an_agent_starts_from_its_prompt(
    app: ProtocolClient, llm_server: FakeLLMServer, tmp_path: Path
) -> None:
    (tmp_path / "docs").mkdir()
    await app.agents_sync(
        [
            {
                "id": "docs",
                "name": "Docs",
                "kind": "local_directory",
                "schedule_cron": "0 9 * * *",
                "enabled": False,
                "directory_paths": [str(tmp_path / "docs")],
                "prompt_template": "OLD RULE: every heading is a task.",
            }
        ]
    )
    first = await app.journey_start("local_directory", agent_id="docs")
    assert "OLD RULE: every heading is a task." in first.message
    llm_server.script(finish(prompt_template="Only headings marked TODO are tasks."))
    last = await app.journey_reply(first.session_id, "only TODO headings")
    assert last.done
    system = llm_server.requests[0]["messages"][0]
    assert system["role"] == "system"
    assert (
        "<current_prompt>\nOLD RULE: every heading is a task.\n</current_prompt>"
        in (system["content"])
    )

    with pytest.raises(RequestFailed) as unknown:
        await app.journey_start("local_directory", agent_id="nope")
    assert unknown.value.code == "unknown_agent"


async def test_an_idle_journey_expires(app: ProtocolClient, daemon: DaemonHarness) -> None:
    now = [1000.0]
    journeys = daemon.daemon.journeys
    journeys.clock = lambda: now[0]
    first = await app.journey_start("gmail")
    kept = await app.journey_start("gmail")
    now[0] += 29 * 60
    assert first.session_id in journeys and kept.session_id in journeys
    now[0] += 60
    with pytest.raises(RequestFailed) as expired:
        await app.journey_reply(first.session_id, "hello?")
    assert expired.value.code == "not_found" and "expired" in expired.value.message
    assert len(journeys) == 0


async def test_cancel_ends_a_journey(app: ProtocolClient, llm_server: FakeLLMServer) -> None:
    first = await app.journey_start("gmail")
    await app.cancel(first.session_id)
    with pytest.raises(RequestFailed) as gone:
        await app.journey_reply(first.session_id, "hello?")
    assert gone.value.code == "not_found"
    assert llm_server.calls == 0


async def test_cancel_abandons_a_model_call_in_flight(
    app: ProtocolClient, llm_server: FakeLLMServer
) -> None:
    first = await app.journey_start("gmail")
    llm_server.script(Hang(3))
    reply = asyncio.create_task(app.journey_reply(first.session_id, "invoices"))
    await wait_until(lambda: llm_server.in_flight == 1, "the model call")
    await app.cancel(first.session_id)
    with pytest.raises(RequestFailed) as cancelled:
        await reply
    assert cancelled.value.code == "cancelled"


async def test_bad_journey_requests_get_clear_errors(
    app: ProtocolClient, daemon: DaemonHarness
) -> None:
    with pytest.raises(RequestFailed) as kind:
        await app.journey_start("dropbox")
    assert kind.value.code == "bad_request" and "local_directory, gmail" in kind.value.message
    with pytest.raises(RequestFailed) as unknown:
        await app.journey_reply("journey-nope", "hi")
    assert unknown.value.code == "not_found"


class AppShaped(ProtocolClient):
    """Keeps the journey messages that come without an id (the app sends none)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.journey: asyncio.Queue[JourneyMessage] = asyncio.Queue()

    async def _on_frame(self, conn: Any, frame: _Frame) -> None:
        if isinstance(frame, JourneyMessage) and frame.id is None:
            self.journey.put_nowait(frame)
            return
        await super()._on_frame(conn, frame)


async def test_a_journey_reply_without_an_id_is_answered_by_session(
    daemon: DaemonHarness, llm_server: FakeLLMServer
) -> None:
    app = AppShaped(daemon.url, daemon.token, client_name="app")
    daemon.clients.append(app)
    await app.connect()
    first = await app.journey_start("gmail")
    llm_server.script(Text("Which label?"))
    reply = {"type": "journey_reply", "session_id": first.session_id, "message": "invoices"}
    await app.send_raw(json.dumps(reply))

    answer = await asyncio.wait_for(app.journey.get(), 30)

    assert (answer.session_id, answer.message, answer.done) == (
        first.session_id,
        "Which label?",
        False,
    )
    assert "id" not in json.loads(encode(answer))
    await app.send_raw(json.dumps({**reply, "message": ""}))  # a bad frame
    await app.status()  # leaves the session usable

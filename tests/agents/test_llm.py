"""agents.llm: real litellm against the local FakeLLMServer (never a real provider)."""

from __future__ import annotations

import asyncio
import email.utils
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.errors import LLMBadResponse, LLMRejected, LLMUnavailable
from agents.llm import LiteLLM, LLMSettings, Reply, ToolCall, Usage
from tests.support.llm_server import (
    Call,
    Error,
    FakeLLMServer,
    Garbage,
    Hang,
    Length,
    Text,
    ToolCalls,
    estimate_prompt_tokens,
)

# One event loop for the module's async tests: litellm caches its HTTP clients and
# its logging worker per loop, and warns when the loop changes under it.
module_loop = pytest.mark.asyncio(loop_scope="module")

ROOT = Path(__file__).resolve().parents[2]
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Summarise notes/a.txt"},
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a file under the agent's roots.",
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string"}},
                "required": ["path"],
            },
        },
    }
]
SECRET = "sk-test-SECRET-0123456789"


class RecordedSleeps:
    """An injected sleep: records each wait, returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


@pytest.fixture(scope="module")
def module_server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


@pytest.fixture
def server(module_server: FakeLLMServer) -> FakeLLMServer:
    module_server.reset()
    return module_server


@pytest.fixture
def sleeps() -> RecordedSleeps:
    return RecordedSleeps()


def make_llm(
    server: FakeLLMServer, sleeps: RecordedSleeps, model: str = "openai/fake", **overrides: Any
) -> LiteLLM:
    settings = LLMSettings(model=model, api_base=server.base_url, **overrides)
    return LiteLLM(settings, sleep=sleeps)


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- replies ----------------------------------------------------------------------


@module_loop
async def test_plain_text_reply(server: FakeLLMServer, sleeps: RecordedSleeps) -> None:
    server.script(Text("Three meetings, one deadline."))

    reply = await make_llm(server, sleeps).complete(MESSAGES)

    assert reply.text == "Three meetings, one deadline."
    assert reply.tool_calls == ()
    assert reply.finish_reason == "stop"
    body = server.requests[0]
    assert body["messages"] == MESSAGES
    assert body["model"] == "fake"
    assert body["temperature"] == 0.0
    assert "tools" not in body and not body.get("stream")
    assert reply.usage.llm_calls == 1
    assert reply.usage.prompt_tokens == estimate_prompt_tokens(body)
    assert reply.usage.completion_tokens > 0
    assert reply.usage.cost_usd is None  # "fake" is in no price list
    assert sleeps.waits == []


@module_loop
async def test_stream_delivers_text_in_several_chunks(
    server: FakeLLMServer, sleeps: RecordedSleeps
) -> None:
    text = "The quick brown fox jumps over the lazy dog."
    server.script(Text(text, chunk_size=5))
    pieces: list[str] = []

    async def on_text(piece: str) -> None:
        pieces.append(piece)

    reply = await make_llm(server, sleeps).complete(MESSAGES, stream=True, on_text=on_text)

    assert len(pieces) > 1
    assert "".join(pieces) == text == reply.text
    assert reply.finish_reason == "stop"
    body = server.requests[0]
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert reply.usage.llm_calls == 1
    assert reply.usage.prompt_tokens == estimate_prompt_tokens(body)
    assert reply.usage.completion_tokens > 0


@module_loop
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_tool_call_is_assembled(
    server: FakeLLMServer, sleeps: RecordedSleeps, stream: bool
) -> None:
    arguments = {"path": "notes/a long file name.txt", "max_bytes": 4096}
    server.script(ToolCalls([Call("read_file", arguments, id="call_abc")], chunk_size=3))

    reply = await make_llm(server, sleeps).complete(MESSAGES, TOOLS, stream=stream)

    assert reply.finish_reason == "tool_calls"
    assert reply.text == ""
    assert reply.tool_calls == (ToolCall("call_abc", "read_file", json.dumps(arguments)),)
    assert server.requests[0]["tools"] == TOOLS
    assert reply.usage.llm_calls == 1 and reply.usage.prompt_tokens > 0


@module_loop
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_two_parallel_tool_calls(
    server: FakeLLMServer, sleeps: RecordedSleeps, stream: bool
) -> None:
    server.script(
        ToolCalls(
            [Call("read_file", {"path": "a.txt"}), Call("read_file", {"path": "b.txt"})],
            content="Reading both.",
            chunk_size=2,
        )
    )

    reply = await make_llm(server, sleeps).complete(MESSAGES, TOOLS, stream=stream)

    assert reply.text == "Reading both."
    assert [call.name for call in reply.tool_calls] == ["read_file", "read_file"]
    assert [json.loads(call.arguments) for call in reply.tool_calls] == [
        {"path": "a.txt"},
        {"path": "b.txt"},
    ]
    ids = [call.id for call in reply.tool_calls]
    assert all(ids) and len(set(ids)) == 2


@module_loop
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_malformed_arguments_come_back_raw(
    server: FakeLLMServer, sleeps: RecordedSleeps, stream: bool
) -> None:
    raw = '{"path": "a.txt", '  # cut short: the tool loop, not the adapter, reports it
    server.script(ToolCalls([Call("read_file", raw)]))

    reply = await make_llm(server, sleeps).complete(MESSAGES, TOOLS, stream=stream)

    assert [call.arguments for call in reply.tool_calls] == [raw]


@module_loop
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_finish_reason_length_is_surfaced(
    server: FakeLLMServer, sleeps: RecordedSleeps, stream: bool
) -> None:
    server.script(Length("The summary is cut"))

    reply = await make_llm(server, sleeps).complete(MESSAGES, stream=stream, max_tokens=5)

    assert reply.finish_reason == "length"
    assert reply.text == "The summary is cut"
    assert server.requests[0]["max_tokens"] == 5


@module_loop
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_cost_comes_from_the_local_price_map(
    server: FakeLLMServer, sleeps: RecordedSleeps, stream: bool
) -> None:
    server.script(Text("priced"))

    reply = await make_llm(server, sleeps, model="openai/gpt-4o-mini").complete(
        MESSAGES, stream=stream
    )

    assert server.requests[0]["model"] == "gpt-4o-mini"
    assert reply.usage.cost_usd is not None and reply.usage.cost_usd > 0


def test_usage_adds_up() -> None:
    one = Usage(1, 100, 10, None)
    two = Usage(1, 50, 5, 0.25)

    assert one + two == Usage(2, 150, 15, 0.25)
    assert one.add(one) == Usage(2, 200, 20, None)
    assert sum([one, two], Usage()) == Usage(2, 150, 15, 0.25)
    assert (one + two).total_tokens == 165
    assert Reply("x").usage == Usage()


# -- transient failures -----------------------------------------------------------


@module_loop
async def test_429_retry_after_seconds_is_honoured(
    server: FakeLLMServer, sleeps: RecordedSleeps
) -> None:
    server.script(Error(429, retry_after=2), Text("after the wait"))

    reply = await make_llm(server, sleeps).complete(MESSAGES)

    assert reply.text == "after the wait"
    assert sleeps.waits == [pytest.approx(2.0)]
    assert server.calls == 2


@module_loop
async def test_retry_after_http_date_is_honoured_when_streaming(
    server: FakeLLMServer, sleeps: RecordedSleeps
) -> None:
    when = email.utils.formatdate(time.time() + 3, usegmt=True)
    server.script(Error(503, retry_after=when), Text("later"))

    reply = await make_llm(server, sleeps).complete(MESSAGES, stream=True)

    assert reply.text == "later"
    assert len(sleeps.waits) == 1 and 1.0 <= sleeps.waits[0] <= 3.5


@module_loop
async def test_retry_after_beyond_backoff_max_gives_up_at_once(
    server: FakeLLMServer, sleeps: RecordedSleeps
) -> None:
    server.script(Error(429, retry_after=600))

    with pytest.raises(LLMUnavailable, match="600 s"):
        await make_llm(server, sleeps, backoff_max_s=30).complete(MESSAGES)

    assert server.calls == 1 and sleeps.waits == []


@module_loop
async def test_five_500s_give_up_after_five_attempts(
    server: FakeLLMServer, sleeps: RecordedSleeps
) -> None:
    server.script(*[Error(500)] * 5, Text("never reached"))
    llm = make_llm(server, sleeps, backoff_base_s=0.5, backoff_max_s=1.5)

    with pytest.raises(LLMUnavailable) as caught:
        await llm.complete(MESSAGES)

    assert server.calls == 5
    message = str(caught.value)
    assert "kept failing" in message and "500" in message and "5 attempts" in message
    # Full jitter: each wait is in [0, min(max, base * 2**n)].
    assert len(sleeps.waits) == 4
    for n, wait in enumerate(sleeps.waits):
        assert 0.0 <= wait <= min(1.5, 0.5 * 2**n)


@module_loop
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_a_5xx_then_success_recovers(
    server: FakeLLMServer, sleeps: RecordedSleeps, stream: bool
) -> None:
    server.script(Error(502, body="<html>bad gateway</html>"), Text("fine now"))

    reply = await make_llm(server, sleeps).complete(MESSAGES, stream=stream)

    assert reply.text == "fine now"
    assert server.calls == 2 and len(sleeps.waits) == 1


@module_loop
async def test_hang_beyond_timeout_is_retried_then_unavailable(
    server: FakeLLMServer, sleeps: RecordedSleeps
) -> None:
    server.script(Hang(1.5), Hang(1.5))
    llm = make_llm(server, sleeps, timeout_s=0.5, max_attempts=2)

    started = time.monotonic()
    with pytest.raises(LLMUnavailable, match=r"timed out \(timeout_s=0.5\)"):
        await llm.complete(MESSAGES)

    assert server.calls == 2
    assert time.monotonic() - started < 2.5  # two 0.5 s timeouts, not two 1.5 s hangs


@module_loop
@pytest.mark.parametrize("model", ["openai/fake", "ollama/llama3.1"])
async def test_connection_refused_is_unavailable(sleeps: RecordedSleeps, model: str) -> None:
    base = f"http://127.0.0.1:{unused_port()}" + ("/v1" if model.startswith("openai/") else "")
    llm = LiteLLM(LLMSettings(model=model, api_base=base, max_attempts=2), sleep=sleeps)

    with pytest.raises(LLMUnavailable, match="after 2 attempts") as caught:
        await llm.complete(MESSAGES)

    assert model in str(caught.value)
    assert len(sleeps.waits) == 1


@module_loop
async def test_stream_broken_after_text_is_not_retried(
    server: FakeLLMServer, sleeps: RecordedSleeps
) -> None:
    server.script(Text("aaaabbbbcccc", chunk_size=4, chunk_delay_s=1.5), Text("again"))
    pieces: list[str] = []

    async def on_text(piece: str) -> None:
        pieces.append(piece)

    llm = make_llm(server, sleeps, timeout_s=0.5)
    with pytest.raises(LLMUnavailable, match="broke after part of the reply"):
        await llm.complete(MESSAGES, stream=True, on_text=on_text)

    assert pieces == ["aaaa"]
    assert server.calls == 1 and sleeps.waits == []


# -- rejected and unusable --------------------------------------------------------


@module_loop
@pytest.mark.parametrize("status", [400, 401, 403, 404])
async def test_4xx_is_rejected_at_once_without_the_key(
    server: FakeLLMServer, sleeps: RecordedSleeps, status: int
) -> None:
    server.script(
        Error(status, body={"error": {"message": f"Incorrect API key provided: {SECRET}"}})
    )
    llm = make_llm(server, sleeps, api_key=SECRET)

    with pytest.raises(LLMRejected) as caught:
        await llm.complete(MESSAGES)

    message = str(caught.value)
    assert server.calls == 1 and sleeps.waits == []
    assert "openai/fake" in message and str(status) in message
    assert SECRET not in message
    assert SECRET not in repr(llm.settings)


@module_loop
@pytest.mark.parametrize(
    ("body", "stream"),
    [
        ("<html>definitely not json</html>", False),
        ("<html>definitely not json</html>", True),
        ('{"choices": []}', False),
        ("[]", False),
    ],
    ids=["html", "html-stream", "no-choices", "array"],
)
async def test_garbage_body_is_a_bad_response_without_retry(
    server: FakeLLMServer, sleeps: RecordedSleeps, body: str, stream: bool
) -> None:
    # Decision: a 200 that is not a completion means api_base points at the wrong
    # thing; retrying cannot help, so LLMBadResponse at once.
    server.script(Garbage(body), Text("never reached"))

    with pytest.raises(LLMBadResponse, match="api_base"):
        await make_llm(server, sleeps).complete(MESSAGES, stream=stream)

    assert server.calls == 1 and sleeps.waits == []


# -- what must pass through untouched ----------------------------------------------


@module_loop
async def test_cancellation_propagates(server: FakeLLMServer, sleeps: RecordedSleeps) -> None:
    arrived = threading.Event()

    def hang_and_tell(body: dict[str, Any]) -> Hang:
        arrived.set()
        return Hang(2.0)

    server.responder = hang_and_tell
    task = asyncio.create_task(make_llm(server, sleeps).complete(MESSAGES))
    assert await asyncio.to_thread(arrived.wait, 10)

    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert sleeps.waits == []


@module_loop
async def test_on_text_errors_propagate_untouched(
    server: FakeLLMServer, sleeps: RecordedSleeps
) -> None:
    server.script(Text("hello world"))

    async def on_text(piece: str) -> None:
        raise ConnectionAbortedError("the chat client went away")

    with pytest.raises(ConnectionAbortedError, match="went away"):
        await make_llm(server, sleeps).complete(MESSAGES, stream=True, on_text=on_text)

    assert server.calls == 1


# -- configuration ----------------------------------------------------------------


def test_import_is_lazy_and_no_model_is_not_configured() -> None:
    script = """
import asyncio, sys
import agents.llm
assert "litellm" not in sys.modules, "import agents.llm imported litellm"
from agents.errors import LLMNotConfigured
try:
    asyncio.run(agents.llm.LiteLLM(agents.llm.LLMSettings(model=None)).complete([]))
except LLMNotConfigured as exc:
    assert "TETHER_MODEL" in str(exc), exc
else:
    raise SystemExit("no LLMNotConfigured")
assert "litellm" not in sys.modules, "LLMNotConfigured came after importing litellm"
print("lazy")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "lazy"


def test_objects_of_the_litellm_import_are_frozen_for_the_gc() -> None:
    """A full collection must not walk litellm's ~300k module objects every time."""
    script = """
import asyncio, gc
import agents.llm
before = gc.get_freeze_count()
asyncio.run(agents.llm._load_litellm())
frozen = gc.get_freeze_count() - before
assert frozen > 100_000, frozen
print("frozen")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "frozen"

"""The one tool loop, for every agent and for chat.

Rules:

- Each step sends the messages and the toolset's schemas. A reply with tool calls
  is appended as an OpenAI assistant message with ``tool_calls``; every call is
  validated and run (several calls in one reply run concurrently), and the results
  are appended as ``{"role": "tool", ...}`` messages in the order of the calls.
  ``on_tool(name)`` is awaited before each known tool runs. A reply without tool
  calls is the answer.
- Step budget: after ``max_steps`` model calls that still wanted tools, one last
  call without tools (and a nudge to answer now) forces the final answer
  (``stopped="step_budget"``).
- Tool-call budget: calls beyond ``max_tool_calls`` are not run (the model gets an
  error result) and the next model call is the final one without tools
  (``stopped="tool_budget"``). Every call counts, invalid ones included.
- A text reply cut off by the output-token limit (``finish_reason == "length"``)
  is continued up to ``max_continuations`` times; the pieces are joined.
- Context budget: before each model call, when the messages hold more than
  ``context_chars`` characters, the oldest tool results are shortened first (head
  kept, ``[shortened]`` added), then older user/assistant texts; never a system
  message, the last user message or the last two messages. The full history is
  kept and shortened afresh for each call; the caller's list and dicts are never
  changed.
- Streaming: with ``on_text`` every model call streams and text deltas are
  forwarded as they come.
- Cancellation: with ``cancel`` set, ``RunCancelled`` is raised before each model
  call and before each batch of tool calls; a model call in flight is abandoned
  (nothing was written by it). A batch of tools, once started, finishes, so no
  write is left half-done. ``asyncio.CancelledError`` propagates.
- Usage is summed over every model call. ``LLMError`` propagates (callers decide);
  so do ``DeviceOffline`` and ``RunCancelled`` from a tool, after the other calls
  of the batch have finished.
- Malformed tool-call arguments are echoed back in the assistant message as ``{}``
  (some providers re-parse the history); the tool result says what was wrong.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from agents.errors import RunCancelled
from agents.limits import DEFAULT_LIMITS, LoopLimits
from agents.llm import LLM, Message, Reply, ToolCall, Usage
from agents.tools import MutationRecord, ToolContext, ToolOutcome, Toolset

__all__ = [
    "DEFAULT_LIMITS",
    "FINAL_NUDGE",
    "LoopLimits",
    "LoopResult",
    "StopReason",
    "assistant_with_calls",
    "run_loop",
    "shorten_context",
    "until_cancelled",
]

StopReason = Literal["answer", "step_budget", "tool_budget"]

FINAL_NUDGE = (
    "You cannot call any more tools. Answer now with what you have, briefly saying "
    "what was done and what remains."
)
CONTINUE_NUDGE = "Your reply was cut off. Continue exactly where it stopped, without repeating."
SHORTENED = " [shortened]"
SHORTENED_HEAD = 300  # characters of a shortened message that are kept

T = TypeVar("T")


@dataclass
class LoopResult:
    """The answer and what it took. ``steps`` counts model calls that offered tools;
    ``tool_calls`` counts calls that were run (invalid ones included)."""

    text: str
    usage: Usage
    mutations: list[MutationRecord] = field(default_factory=list)
    tool_calls: int = 0
    steps: int = 0
    stopped: StopReason = "answer"
    tools_used: list[str] = field(default_factory=list)
    # Write calls that failed and were not followed by a successful call of the same
    # tool: what the model wanted written and the client never confirmed.
    failed_writes: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)  # to records the user owns


class _Loop:
    """The state of one ``run_loop`` call."""

    def __init__(
        self,
        llm: LLM,
        messages: Sequence[Message],
        toolset: Toolset,
        ctx: ToolContext,
        limits: LoopLimits,
        on_text: Callable[[str], Awaitable[None]] | None,
        on_tool: Callable[[str], Awaitable[None]] | None,
        cancel: asyncio.Event | None,
    ) -> None:
        self.llm = llm
        self.history: list[Message] = list(messages)
        self.toolset = toolset
        self.ctx = ctx
        self.limits = limits
        self.on_text = on_text
        self.on_tool = on_tool
        self.cancel = cancel
        self.usage = Usage()
        self.mutations: list[MutationRecord] = []
        self.tool_calls = 0
        self.steps = 0
        self.tools_used: list[str] = []
        self.failed_writes: dict[tuple[str, str], str] = {}  # (tool, item) -> unresolved error
        self.notices: list[str] = []
        self.changes: list[dict[str, Any]] = []
        self.finished_by_writes = False

    def result(self, text: str, stopped: StopReason) -> LoopResult:
        return LoopResult(
            text=text,
            usage=self.usage,
            mutations=self.mutations,
            tool_calls=self.tool_calls,
            steps=self.steps,
            stopped=stopped,
            tools_used=self.tools_used,
            failed_writes=[f"{name}: {err}" for (name, _), err in self.failed_writes.items()],
            notices=self.notices,
            changes=self.changes,
        )

    async def run(self) -> LoopResult:
        schemas = self.toolset.schemas()
        while True:
            if self.steps >= self.limits.max_steps:
                return self.result(await self.final_answer(), "step_budget")
            reply = await self.complete(self.history, schemas)
            self.steps += 1
            if not reply.tool_calls:
                return self.result(await self.continued(reply, self.history), "answer")
            self.history.append(assistant_with_calls(reply))
            over_budget = await self.run_tools(reply.tool_calls)
            if over_budget:
                return self.result(await self.final_answer(), "tool_budget")
            if self.finished_by_writes:
                return self.result(reply.text, "answer")

    # -- model calls ----------------------------------------------------------------

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise RunCancelled("cancelled")

    async def complete(self, messages: list[Message], tools: list[dict[str, Any]] | None) -> Reply:
        self.check_cancel()
        prepared = shorten_context(messages, self.limits.context_chars)
        reply = await self.until_cancelled(
            self.llm.complete(
                prepared,
                tools or None,
                stream=self.on_text is not None,
                on_text=self.on_text,
                max_tokens=self.limits.max_tokens,
            )
        )
        self.usage = self.usage + reply.usage
        return reply

    async def until_cancelled(self, coro: Coroutine[Any, Any, T]) -> T:
        return await until_cancelled(coro, self.cancel)

    async def continued(self, reply: Reply, messages: list[Message]) -> str:
        """``reply``'s text, continued while it was cut off by the token limit."""
        text = reply.text
        for _ in range(self.limits.max_continuations):
            if reply.finish_reason != "length":
                break
            more: list[Message] = [
                *messages,
                {"role": "assistant", "content": text},
                {"role": "user", "content": CONTINUE_NUDGE},
            ]
            reply = await self.complete(more, None)
            text += reply.text
        return text

    async def final_answer(self) -> str:
        messages = [*self.history, {"role": "user", "content": FINAL_NUDGE}]
        reply = await self.complete(messages, None)
        return await self.continued(reply, messages)

    # -- tool calls -----------------------------------------------------------------

    async def run_tools(self, calls: Sequence[ToolCall]) -> bool:
        """Run one reply's calls; ``True`` when the tool-call budget was exceeded."""
        self.check_cancel()
        allowed = max(0, self.limits.max_tool_calls - self.tool_calls)
        runs = calls[:allowed]
        self.tool_calls += len(runs)
        for call in runs:
            if call.name in self.toolset.tools:
                if call.name not in self.tools_used:
                    self.tools_used.append(call.name)
                if self.on_tool is not None:
                    await self.on_tool(call.name)
        results = await asyncio.gather(
            *(self.toolset.call(c.name, c.arguments, self.ctx) for c in runs),
            return_exceptions=True,
        )
        for result in results:  # the first failure, in call order, once all have finished
            if isinstance(result, BaseException):
                raise result
        refused = _budget_error(self.limits.max_tool_calls)
        outcomes = [r for r in results if isinstance(r, ToolOutcome)]
        outcomes += [refused] * (len(calls) - len(runs))
        informs = False
        for call, outcome in zip(calls, outcomes, strict=True):
            self.mutations.extend(outcome.mutations)
            self.notices.extend(outcome.notices)
            self.changes.extend(outcome.changes)
            self.history.append({"role": "tool", "tool_call_id": call.id, "content": outcome.text})
            tool = self.toolset.tools.get(call.name)
            informs = informs or tool is None or tool.informs or outcome.is_error
            if tool is not None and tool.writes:
                key = (call.name, _identity(call.arguments))
                if outcome.is_error:
                    self.failed_writes[key] = outcome.text.removeprefix("error: ")
                else:
                    self.failed_writes.pop(key, None)
        self.finished_by_writes = self.limits.finish_after_writes and not informs
        return len(runs) < len(calls)


_IDENTITY_ARGS = ("title", "name", "task_id", "note_id", "timeline_id", "project_id")


def _identity(arguments: str) -> str:
    """What a write call is about (its title, name or id), to pair a retry with a failure."""
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError:
        return ""
    if not isinstance(parsed, dict):
        return ""
    for name in _IDENTITY_ARGS:
        value = parsed.get(name)
        if isinstance(value, str) and value.strip():
            return " ".join(value.split()).casefold()
    return ""


async def until_cancelled(coro: Coroutine[Any, Any, T], cancel: asyncio.Event | None) -> T:
    """Await ``coro``, abandoning it with ``RunCancelled`` if ``cancel`` fires first."""
    if cancel is None:
        return await coro
    if cancel.is_set():
        coro.close()
        raise RunCancelled("cancelled")
    work = asyncio.ensure_future(coro)
    stop = asyncio.ensure_future(cancel.wait())
    try:
        await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not work.done():
            work.cancel()
            await asyncio.wait({work})
    if work.cancelled():
        raise RunCancelled("cancelled")
    return work.result()


def _budget_error(limit: int) -> ToolOutcome:
    return ToolOutcome(
        f"error: the budget of {limit} tool calls is used up; this call was not run",
        is_error=True,
    )


def _echo_arguments(arguments: str) -> str:
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError:
        return "{}"
    return arguments if isinstance(parsed, dict) and arguments.strip() else "{}"


def assistant_with_calls(reply: Reply) -> Message:
    """The assistant turn that asked for ``reply``'s tool calls, as the history keeps it
    (arguments that are not a JSON object are echoed as ``{}``)."""
    return {
        "role": "assistant",
        "content": reply.text or None,
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": _echo_arguments(call.arguments)},
            }
            for call in reply.tool_calls
        ],
    }


# -- context budget ---------------------------------------------------------------


def _size(message: Message) -> int:
    size = len(message.get("content") or "") if isinstance(message.get("content"), str) else 0
    for call in message.get("tool_calls") or ():
        size += len(call.get("function", {}).get("arguments") or "")
    return size


def shorten_context(messages: list[Message], budget: int) -> list[Message]:
    """``messages`` within ``budget`` characters if shortening allows it; a new list,
    with new dicts for the shortened messages."""
    total = sum(_size(m) for m in messages)
    if total <= budget:
        return messages
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    tool_results = [i for i, m in enumerate(messages) if m.get("role") == "tool"]
    others = [
        i
        for i, m in enumerate(messages)
        if m.get("role") in ("user", "assistant") and i != last_user and i < len(messages) - 2
    ]
    out = list(messages)
    for i in [*tool_results, *others]:  # oldest tool results first, then other old texts
        if total <= budget:
            break
        content = out[i].get("content")
        if not isinstance(content, str) or len(content) <= SHORTENED_HEAD + len(SHORTENED):
            continue
        short = content[:SHORTENED_HEAD] + SHORTENED
        out[i] = {**out[i], "content": short}
        total -= len(content) - len(short)
    return out


async def run_loop(
    llm: LLM,
    messages: list[Message],
    toolset: Toolset,
    ctx: ToolContext,
    *,
    limits: LoopLimits = DEFAULT_LIMITS,
    on_text: Callable[[str], Awaitable[None]] | None = None,
    on_tool: Callable[[str], Awaitable[None]] | None = None,
    cancel: asyncio.Event | None = None,
) -> LoopResult:
    """Run the conversation until the model answers or a budget runs out."""
    loop = _Loop(llm, messages, toolset, ctx, limits, on_text, on_tool, cancel)
    return await loop.run()

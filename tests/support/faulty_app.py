"""A desktop app that fails some writes: the reference client with a rule that answers
chosen ``tool_call``s with ``ok: false`` (or never answers them).

It is a fake at the far edge (the app), like the fake LLM server: the daemon under
test talks to it over a real WebSocket, and every call it does not refuse is served
from the real SQLite store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from protocol.frames import ErrorBody, ToolCall, ToolResult
from protocol.reference import ReferenceClient

__all__ = ["FaultyApp"]

Rule = Callable[[ToolCall], str | None]  # a call -> "hang", an error message, or None


class FaultyApp(ReferenceClient):
    """``rule(call)`` returns ``None`` to serve the call, ``"hang"`` to never answer
    it, or a message to answer ``ok: false`` with (code ``internal``)."""

    def __init__(self, *args: Any, rule: Rule, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rule = rule
        self.refused: list[ToolCall] = []

    def answer_at_once(self, call: ToolCall) -> ToolResult | None:
        if self.rule(call) is not None:
            return None  # answered (or not) in handle_tool_call
        return super().answer_at_once(call)

    async def handle_tool_call(self, call: ToolCall) -> ToolResult:
        verdict = self.rule(call)
        if verdict is None:
            return await super().handle_tool_call(call)
        self.refused.append(call)
        if verdict == "hang":
            await asyncio.Event().wait()  # never answers; the daemon's timeout fires
        return ToolResult(id=call.id, ok=False, error=ErrorBody(code="internal", message=verdict))

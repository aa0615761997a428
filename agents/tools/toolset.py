"""Toolsets: the tools one run or chat request may use, and the one way to call them.

Rules:

- ``Toolset.call`` validates before anything runs: an unknown tool, arguments that
  are not a JSON object, an unknown argument, a bad enum, an empty title or a date
  that is not ISO 8601 is an ``error:`` outcome for the model, and no store call.
  ``ToolError``/``StoreError`` from a handler become ``error:`` outcomes too;
  ``DeviceOffline`` and ``RunCancelled`` propagate: the run must stop.
- Background runs never delete: a background toolset refuses chat-only tools at
  build time, and ``call`` refuses them for a background context as well. The
  approval flags a model sends in a background run are dropped (the daemon sets
  them), not refused.
- ``background_toolset(data_types, extra)`` is the entity tools of the agent's data
  types (without the list/get tools the existing records up front make redundant),
  ``list_projects`` always, ``report_unplaced`` (nothing is dropped silently), plus a
  source's own read-only tools (``extra``); its schemas are compact (every schema is
  paid for on every call of a run). ``chat_toolset()`` is every entity tool.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from typing import Any

from pydantic import ValidationError

from ..errors import DeviceOffline, RunCancelled, StoreError, ToolError
from .base import Tool, ToolContext, ToolOutcome
from .entities import ENTITY_TOOLS
from .notices import NOTICE_TOOLS

__all__ = ["ALL_TOOLS", "Toolset", "background_toolset", "chat_toolset"]

# Every entity tool by name (a source's own tools are not in here).
ALL_TOOLS: dict[str, Tool] = {t.name: t for t in ENTITY_TOOLS}

# Always in a background toolset, whatever its data types: the model matches work to
# projects. One lookup tool only: every schema is paid for on every call of a run, and
# triage has already named the item's project.
_PROJECT_LOOKUP = ("list_projects",)
# Not offered to background runs: the project's existing records come with the item,
# and every schema is paid for on every call (list_tasks stays, to search the rest).
_NOT_IN_BACKGROUND = frozenset({"list_notes", "list_timelines", "list_all_projects", "get_project"})
_APPROVAL_FLAGS = ("isAiSuggested", "isApproved", "is_ai_suggested", "is_approved")
_DATA_TYPES = frozenset({"tasks", "notes", "timelines", "projects"})


def _validation_message(tool: Tool, exc: ValidationError) -> str:
    allowed = ", ".join(tool.args.model_fields) or "none"
    problems = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        if err["type"] == "extra_forbidden":
            problems.append(f"{where}: unknown argument (allowed: {allowed})")
            continue
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "string_too_short" and err.get("ctx", {}).get("min_length") == 1:
            msg = "must not be empty"
        if err["type"] not in ("missing", "value_error") and "input" in err:
            msg += f" (got {json.dumps(err['input'], ensure_ascii=False, default=str)[:80]})"
        problems.append(f"{where}: {msg}" if err["loc"] else msg)
    return f"invalid arguments for {tool.name}: " + "; ".join(problems)


class Toolset:
    """The tools one run or chat request may use, by name."""

    def __init__(
        self, tools: Iterable[Tool], *, background: bool = False, compact: bool = False
    ) -> None:
        self.tools: dict[str, Tool] = {t.name: t for t in tools}
        self.background = background
        self.compact = compact
        if background:
            refused = sorted(n for n, t in self.tools.items() if t.chat_only)
            if refused:
                raise ValueError(f"chat-only tools in a background toolset: {', '.join(refused)}")

    def names(self) -> list[str]:
        return list(self.tools)

    def table_of(self, name: str) -> str | None:
        """The table a tool works on (``None`` for the file tools and unknown names)."""
        tool = self.tools.get(name)
        return None if tool is None else tool.table

    def schemas(self) -> list[dict[str, Any]]:
        """OpenAI function-tool schemas, one per tool (fresh copies: callers may mutate)."""
        return [t.schema(compact=self.compact) for t in self.tools.values()]

    async def call(self, name: str, arguments: str, ctx: ToolContext) -> ToolOutcome:
        """Validate and run one tool call; failures the model can fix are error outcomes."""
        tool = self.tools.get(name)
        if tool is None:
            return _error(f"unknown tool {name!r}; available tools: {', '.join(self.tools)}")
        if tool.chat_only and (ctx.background or self.background):
            return _error(f"{name} is not available in background runs")
        try:
            raw = json.loads(arguments.strip() or "{}")
        except ValueError as exc:
            return _error(f"arguments for {name} are not valid JSON ({exc}); send one JSON object")
        if not isinstance(raw, dict):
            return _error(f"arguments for {name} must be a JSON object, got {type(raw).__name__}")
        if ctx.background or self.background:
            # The approval flags are the daemon's to set in background runs (see _insert):
            # a model asking for them is overruled, not refused.
            for flag in _APPROVAL_FLAGS:
                raw.pop(flag, None)
        try:
            args = tool.args.model_validate(raw)
        except ValidationError as exc:
            return _error(_validation_message(tool, exc))
        try:
            return await tool.handler(ctx, args)
        except (DeviceOffline, RunCancelled):
            raise
        except (ToolError, StoreError) as exc:
            return _error(str(exc))


def _error(message: str) -> ToolOutcome:
    return ToolOutcome(f"error: {message}", is_error=True)


def background_toolset(data_types: Collection[str], extra: Iterable[Tool] = ()) -> Toolset:
    """The entity tools of ``data_types`` plus project lookup, and ``extra`` (a source's
    read-only tools); never a chat-only or delete tool."""
    unknown = set(data_types) - _DATA_TYPES
    if unknown:
        raise ValueError(f"unknown data types: {', '.join(sorted(unknown))}")
    chosen = [
        t
        for t in ENTITY_TOOLS
        if not t.chat_only
        and t.name not in _NOT_IN_BACKGROUND
        and (t.group in data_types or t.name in _PROJECT_LOOKUP)
    ]
    return Toolset([*chosen, *NOTICE_TOOLS, *extra], background=True, compact=True)


def chat_toolset() -> Toolset:
    """Every entity tool, deletes included (chat requests are typed by the user)."""
    return Toolset(ENTITY_TOOLS)

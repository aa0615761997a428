"""What a tool is, what it is given and what it gives back.

Rules:

- A tool is declared once, by decorating its handler with :func:`tool`: the name is
  the function's, the one-line description its docstring's first line, and the
  argument model the annotation of its second parameter (as pydantic-ai does), so
  the schema the model sees and the validation the handler gets cannot drift apart.
- A handler takes ``(ctx: ToolContext, args: <ArgsModel>)`` and returns a
  :class:`ToolOutcome`: short text for the model plus a record of every change it
  made (``MutationRecord``: the row the client returned; ``{"id"}`` for a delete).
- ``ToolContext.tz`` is required: dates the model reads and writes are in the user's
  zone, and only the daemon knows it.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any, Literal, Protocol

from pydantic import BaseModel

from ..store import Store
from .schema import compact_schema, parameters_schema

__all__ = [
    "Handler",
    "MutationRecord",
    "NoteSearch",
    "Tool",
    "ToolContext",
    "ToolGroup",
    "ToolOutcome",
    "tool",
]

ToolGroup = Literal["files", "tasks", "notes", "timelines", "projects", "notices", "memory"]


class NoteSearch(Protocol):
    """Semantic note search (``agents.notes_index.NotesIndex``), for ``search_notes``."""

    async def search(self, query: str, limit: int = 5) -> list[dict[str, Any]]: ...


@dataclass
class MutationRecord:
    """One change to the client's data: the row the client returned (``{"id"}`` for delete)."""

    action: Literal["insert", "update", "delete"]
    table: str
    data: dict[str, Any]


@dataclass
class ToolOutcome:
    """What a tool call gives back: text for the model and the changes it made."""

    text: str
    mutations: list[MutationRecord] = field(default_factory=list)
    is_error: bool = False
    notices: list[str] = field(default_factory=list)  # for the user (run_complete.errors)
    # Changes a background run made to a record the user owns (created or approved):
    # {table, id, field, before, after}, listed in run_complete so the app can undo them.
    changes: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ToolContext:
    """What the handlers of one run or chat request work with."""

    store: Store
    tz: tzinfo
    background: bool = False
    idempotency_scope: str | None = None
    run_id: str | None = None
    notes: NoteSearch | None = None  # chat with a client vector store only


Handler = Callable[[ToolContext, Any], Awaitable[ToolOutcome]]


@dataclass(frozen=True)
class Tool:
    """One tool: what the model sees (name, description, schema) and what runs."""

    name: str
    description: str
    args: type[BaseModel]
    handler: Handler
    table: str | None
    writes: bool
    chat_only: bool
    group: ToolGroup
    informs: bool = True  # the model needs the result to go on (reads do; writes do not)

    def schema(self, *, compact: bool = False) -> dict[str, Any]:
        """The OpenAI function-tool schema (a fresh copy); ``compact`` drops what
        ``schema.compact_schema`` drops."""
        parameters = parameters_schema(self.args)
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": compact_schema(parameters) if compact else parameters,
            },
        }


def tool(
    group: ToolGroup,
    *,
    table: str | None = None,
    writes: bool = False,
    chat_only: bool = False,
    informs: bool | None = None,
) -> Callable[[Handler], Tool]:
    """Declare a handler as a tool. ``table`` defaults to the group's (none for files,
    notices, memory);
    ``informs`` (the model must read the result before it can finish) to ``not writes``."""

    def declare(handler: Handler) -> Tool:
        params = list(inspect.signature(handler).parameters)
        if len(params) != 2:
            raise TypeError(f"{handler.__name__}: a tool handler takes (ctx, args)")
        args = typing.get_type_hints(handler).get(params[1])
        if not (isinstance(args, type) and issubclass(args, BaseModel)):
            raise TypeError(f"{handler.__name__}: annotate its arguments with a pydantic model")
        doc = inspect.getdoc(handler)
        if not doc:
            raise TypeError(f"{handler.__name__}: the docstring's first line is the description")
        return Tool(
            name=handler.__name__,
            description=doc.splitlines()[0],
            args=args,
            handler=handler,
            table=table if table is not None or group in ("files", "notices", "memory") else group,
            writes=writes,
            chat_only=chat_only,
            group=group,
            informs=not writes if informs is None else informs,
        )

    return declare

"""Chat-only tools that depend on what the app announced: core memory and note search.

Rules:

- ``update_core_memory(key, value)`` stores a preference the user stated ("I work 9
  to 5 CET") in the app's ``coreMemory`` table: one row per key (case-insensitive
  match on the stored key), updated when the key exists. Offered only when the app
  lists ``coreMemory`` in ``capabilities.tables``.
- ``search_notes(query)`` finds notes by meaning through the app's vector store
  (``ToolContext.notes``); offered only when the app announced ``vector: true`` and
  an embedding model is configured. A failure of the search is an ``error:`` result
  for the model (it may fall back to ``list_notes``), never a failed chat.
- Neither is ever in a background toolset (``chat_only``).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ..errors import AgentError, DeviceOffline, RunCancelled, ToolError
from .base import MutationRecord, ToolContext, ToolOutcome, tool
from .render import render_row

__all__ = ["CORE_MEMORY", "CoreMemoryArgs", "SearchNotesArgs", "search_notes", "update_core_memory"]

CORE_MEMORY = "coreMemory"
SEARCH_LIMIT = 5


class CoreMemoryArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)] = (
        Field(description="A short name for the preference, e.g. working_hours.")
    )
    value: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)
    ] = Field(description="What the user said, e.g. 9 to 5 CET, Monday to Friday.")


class SearchNotesArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)] = Field(
        description="What the notes are about, in words."
    )


@tool("memory", table=CORE_MEMORY, writes=True, chat_only=True)
async def update_core_memory(ctx: ToolContext, a: CoreMemoryArgs) -> ToolOutcome:
    """Remember a lasting preference or fact the user stated about themselves or their work."""
    rows = await ctx.store.select(CORE_MEMORY, None, 500)
    wanted = a.key.casefold()
    existing = next((r for r in rows if str(r.get("key", "")).casefold() == wanted), None)
    if existing is None:
        row = await ctx.store.insert(CORE_MEMORY, {"key": a.key, "value": a.value})
        return ToolOutcome(
            f"remembered {a.key}: {a.value}", [MutationRecord("insert", CORE_MEMORY, row)]
        )
    if existing.get("value") == a.value:
        return ToolOutcome(f"already remembered {a.key}: {a.value}")
    row = await ctx.store.update(CORE_MEMORY, str(existing["id"]), {"value": a.value})
    return ToolOutcome(f"updated {a.key}: {a.value}", [MutationRecord("update", CORE_MEMORY, row)])


@tool("notes", chat_only=True)
async def search_notes(ctx: ToolContext, a: SearchNotesArgs) -> ToolOutcome:
    """Find notes by meaning (not only by title), best match first."""
    if ctx.notes is None:
        raise ToolError("semantic search is not available; use list_notes")
    try:
        found = await ctx.notes.search(a.query, SEARCH_LIMIT)
    except (DeviceOffline, RunCancelled):
        raise
    except AgentError as exc:
        raise ToolError(f"the search failed ({exc}); use list_notes instead") from None
    if not found:
        return ToolOutcome("no note matches")
    lines = [
        f"{render_row('notes', {k: v for k, v in n.items() if k != 'score'}, ctx.tz)}"
        f" score={float(n.get('score') or 0):.2f}"
        for n in found
    ]
    return ToolOutcome("\n".join(lines))

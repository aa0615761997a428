"""Every tool the model may call, declared once (see ``base.tool``).

Modules: ``dates`` (ISO 8601 <-> ms), ``args`` (argument models), ``schema`` (JSON
schemas cleaned for OpenAI function tools), ``render`` (rows as text for the model),
``entities`` (the entity handlers and the existing-item lookup), ``toolset`` (the
toolsets and the one way to call a tool). A source's own tools (the local
directory's file tools) live with the source.
"""

from .base import MutationRecord, Tool, ToolContext, ToolGroup, ToolOutcome, tool
from .dates import iso_from_ms, ms_from_iso
from .entities import COMMENT_AUTHOR, idempotency_key
from .render import render_row
from .toolset import ALL_TOOLS, Toolset, background_toolset, chat_toolset

__all__ = [
    "ALL_TOOLS",
    "COMMENT_AUTHOR",
    "MutationRecord",
    "Tool",
    "ToolContext",
    "ToolGroup",
    "ToolOutcome",
    "Toolset",
    "background_toolset",
    "chat_toolset",
    "idempotency_key",
    "iso_from_ms",
    "ms_from_iso",
    "render_row",
    "tool",
]

"""The local directory's read-only file tools, confined to the agent's roots.

Rules:

- ``file_tools(roots)`` declares ``list_directory``, ``get_file_metadata`` and
  ``read_file_content`` bound to those roots (``roots.py`` does the confinement:
  symlinks and ``..`` resolved, hidden paths refused). They never write.
- The file system is read in a worker thread; the event loop never blocks on disk.
- A path outside the roots, a missing file or an unreadable one is a ``ToolError``:
  its message goes back to the model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from pydantic import Field

from agents.tools import Tool, ToolContext, ToolOutcome, tool
from agents.tools.args import Args

from . import roots as file_roots

__all__ = ["DIRECTORY_LIMIT", "PathArgs", "ReadFileArgs", "file_tools"]

DIRECTORY_LIMIT = 200
READ_DEFAULT_CHARS = 8000
READ_MAX_CHARS = 20_000


class PathArgs(Args):
    path: str = Field(min_length=1, description="Absolute path, or relative to the first root")


class ReadFileArgs(Args):
    path: str = Field(min_length=1, description="Absolute path, or relative to the first root")
    offset: int = Field(0, ge=0, description="Character offset to start reading at")
    max_chars: int = Field(
        READ_DEFAULT_CHARS, ge=1, le=READ_MAX_CHARS, description="Characters to return at most"
    )


def file_tools(roots: Sequence[str]) -> list[Tool]:
    """The three file tools, confined to ``roots``."""
    bound = tuple(roots)

    @tool("files")
    async def list_directory(ctx: ToolContext, a: PathArgs) -> ToolOutcome:
        """List a folder's files and subfolders."""
        entries = await asyncio.to_thread(
            file_roots.list_directory, bound, a.path, DIRECTORY_LIMIT + 1
        )
        if not entries:
            return ToolOutcome(f"{a.path} is empty")
        lines = []
        for e in entries[:DIRECTORY_LIMIT]:
            size = "" if e["size"] is None else f" {e['size']} bytes"
            lines.append(f"- {e['kind']} {e['path']}{size} modified {e['modified']}")
        if len(entries) > DIRECTORY_LIMIT:
            lines.append(f"(more than {DIRECTORY_LIMIT} entries; only the first are shown)")
        return ToolOutcome("\n".join(lines))

    @tool("files")
    async def get_file_metadata(ctx: ToolContext, a: PathArgs) -> ToolOutcome:
        """Size, modification time and type of a file."""
        meta = await asyncio.to_thread(file_roots.get_file_metadata, bound, a.path)
        return ToolOutcome(" ".join(f"{k}={v}" for k, v in meta.items()))

    @tool("files")
    async def read_file_content(ctx: ToolContext, a: ReadFileArgs) -> ToolOutcome:
        """Read a file's text, in pages (offset, max_chars)."""
        got = await asyncio.to_thread(
            file_roots.read_file_content, bound, a.path, a.offset, a.max_chars
        )
        head = (
            f"{got['path']} characters {got['offset']}-{got['offset'] + got['returned_chars']}"
            f" of {got['total_chars']}"
        )
        if got["truncated"]:
            head += f" (more: offset={got['offset'] + got['returned_chars']})"
        return ToolOutcome(f"{head}\n{got['text']}")

    return [list_directory, get_file_metadata, read_file_content]

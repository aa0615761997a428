"""The local directory as a ``Source`` of the run pipeline.

Rules (agents.md "Local-directory agent"):

- Changes: scan the roots against the fingerprints of files processed before
  (``scan.py``); an unchanged tree costs no file read and no LLM call. Files whose
  stat changed but whose content did not get their stat refreshed; deleted files
  are forgotten (if one comes back it is processed again; idempotency keys prevent
  duplicates). Scan notices (a file over the size limit, a symlink leaving the
  roots, a missing root) are notices, not failures.
- An item's key is the file's path, its fingerprint the file's sha256.
- Text: ``extract.py`` in a worker thread, bounded by ``max_file_bytes``.
- Done: the file's fingerprint is recorded in the daemon's file index.
- The source's own tools are the read-only file tools, confined to the roots.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from agents.pipeline import run_pipeline
from agents.run import RunContext, RunReport
from agents.source import Changes, Item
from agents.tools import Tool
from protocol.agent_config import LocalDirectoryAgent

from .extract import extract_text
from .file_tools import file_tools
from .policy import root_refusal
from .scan import SUPPORTED_EXTENSIONS, ScannedFile, ScanRules, scan

__all__ = ["LocalDirectorySource", "run_local_directory"]


class LocalDirectorySource:
    noun = "file"
    key_name = "path"
    phase = "scan"

    def __init__(self, ctx: RunContext) -> None:
        agent = ctx.agent
        assert isinstance(agent, LocalDirectoryAgent)
        self.ctx = ctx
        # Checked again at run time (the config may predate a rule, or a link may have
        # moved): a refused root is a failure of the run and no file under it is opened.
        self.refused = [
            f"root refused: {reason}"
            for path in agent.directory_paths
            if (reason := root_refusal(path, protected=ctx.protected)) is not None
        ]
        self.roots = tuple(
            p for p in agent.directory_paths if root_refusal(p, protected=ctx.protected) is None
        )
        self.rules = ScanRules(
            roots=self.roots,
            extensions=frozenset(agent.file_extensions) or SUPPORTED_EXTENSIONS,
            exclude=tuple(agent.exclude),
            max_file_bytes=ctx.limits.max_file_bytes,
            max_files=agent.max_files,
        )

    async def changes(self) -> Changes:
        if self.refused and not self.roots:
            return Changes(items=[], failures=list(self.refused))
        books = self.ctx.books
        index = await asyncio.to_thread(books.file_index)
        result = await asyncio.to_thread(scan, self.rules, index)
        if result.over_limit:
            where = "this folder has" if len(self.roots) == 1 else "these folders have"
            return Changes(
                items=[],
                failures=[
                    f"{where} {result.files_seen} files (more than max_files = "
                    f"{self.rules.max_files}); raise max_files or narrow the folder"
                ],
                detail={"files_seen": result.files_seen, "files_opened": result.files_opened},
            )
        for rec in result.touched:
            books.record_file(rec)
        if result.missing:
            books.forget_files(result.missing)
        # A new path with content already processed (moved, renamed or copied) is
        # recorded as it is: its items exist, and re-reading it would cost LLM calls.
        known = {rec.sha256 for rec in index.values()}
        moved = [f for f in result.changed if f.is_new and f.sha256 in known]
        for f in moved:
            books.record_file(f.record())
        items = [
            Item(key=f.path, fingerprint=f.sha256, size=f.size, modified_ns=f.mtime_ns, meta=f)
            for f in result.changed
            if not (f.is_new and f.sha256 in known)
        ]
        bad = set(result.bad_roots)
        return Changes(
            items=items,
            notices=[e for e in result.errors if e not in bad],
            failures=[*self.refused, *result.bad_roots],
            detail={
                "files_seen": result.files_seen,
                "files_changed": len(items),
                "files_moved": len(moved),
                "files_opened": result.files_opened,
            },
            summary=f"{len(items)} changed, {len(moved)} moved, of {result.files_seen}",
            new=sum(f.is_new for f in result.changed) - len(moved),
            moved=len(moved),
            unchanged=result.unchanged + len(result.touched),
        )

    async def text(self, item: Item) -> str:
        return await asyncio.to_thread(
            extract_text,
            item.key,
            max_bytes=self.ctx.limits.max_file_bytes,
            roots=self.roots,
            expect_sha256=item.fingerprint,
        )

    def _file(self, item: Item) -> ScannedFile:
        assert isinstance(item.meta, ScannedFile)
        return item.meta

    def triage_line(self, item: Item, snippet: str) -> dict[str, Any]:
        f = self._file(item)
        return {
            "path": f.path,
            "folder": os.path.relpath(os.path.dirname(f.path), f.root),
            "size": f.size,
            "modified": datetime.fromtimestamp(f.mtime_ns / 1e9, UTC).strftime("%Y-%m-%d"),
            "snippet": snippet,
        }

    def hints(self, item: Item) -> Sequence[str]:
        f = self._file(item)
        rel = os.path.relpath(os.path.dirname(f.path), f.root)
        return [] if rel == "." else list(reversed(rel.split(os.sep)))

    def header(self, item: Item) -> list[tuple[str, str]]:
        modified = datetime.fromtimestamp(item.modified_ns / 1e9, self.ctx.tz)
        return [("File", item.key), ("Modified", modified.isoformat(timespec="minutes"))]

    def label(self, item: Item) -> str:
        return os.path.basename(item.key)

    def tools(self) -> list[Tool]:
        # The file's text is in the prompt; reading on (another part of a long file, a
        # file it names) is all a run needs, and every schema costs tokens on every call.
        return [t for t in file_tools(self.roots) if t.name == "read_file_content"]

    async def done(self, item: Item) -> None:
        self.ctx.books.record_file(self._file(item).record())


async def run_local_directory(ctx: RunContext) -> RunReport:
    """The local-directory agent's runner: the one pipeline over its folders."""
    return await run_pipeline(ctx, LocalDirectorySource(ctx))

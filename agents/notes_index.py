"""Semantic note search: notes embedded into the client's vector store.

Rules (issue 11, storage.md ``vector_upsert`` / ``vector_search``):

- Used only when the client announced ``capabilities.vector`` and an embedding
  model is configured; the daemon decides, and builds a :class:`NotesIndex` then.
- :meth:`NotesIndex.index_mutations` is the one place where notes written by a run
  or a chat are embedded: every inserted or updated note (its last row when it was
  written several times) is embedded in one call and sent with ``vector_upsert``
  ``{id, projectId, content}``. An update whose mutation carries no row (the app's
  ``{id, updates}`` shape) is read back with ``get`` first.
- It never raises: an embedding or storage failure is logged and counted in
  ``failures`` and the run or chat goes on (a note without a vector is found by
  its title, not by meaning). ``asyncio.CancelledError`` propagates.
- The text embedded is the title, a blank line and the content, cut at
  ``MAX_CHARS``. The daemon keeps no note content: :class:`NoteMarks` remembers
  only which version (``<model>|<updatedAt>``) of each note id has its vector, so
  the background pass over existing notes (:meth:`index_rows`) skips those and can
  stop and resume anywhere.
- :meth:`search` embeds the query and asks ``vector_search``; notes deleted since
  they were embedded are left out (each hit is read back with ``get``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from .errors import AgentError
from .llm import Embedder
from .store import Row, Store, VectorStore

__all__ = ["MAX_CHARS", "NoteMarks", "NotesIndex", "note_text"]

log = logging.getLogger("tether.vectors")

MAX_CHARS = 8_000  # characters of a note that are embedded (title first)
NOTES = "notes"


class NoteMarks(Protocol):
    """Which version of each note has its vector in the client's store (no content)."""

    def version(self, note_id: str) -> str | None: ...

    def mark(self, note_id: str, version: str) -> None: ...


class _Mutation(Protocol):
    @property
    def action(self) -> str: ...

    @property
    def table(self) -> str: ...

    @property
    def data(self) -> dict[str, Any]: ...


def note_text(row: Row) -> str:
    """What is embedded for a note: its title, a blank line, its content."""
    title = str(row.get("title") or "").strip()
    content = str(row.get("content") or "").strip()
    return (f"{title}\n\n{content}" if content else title)[:MAX_CHARS]


class NotesIndex:
    """Embeds notes into, and searches, the client's vector store."""

    def __init__(
        self,
        *,
        embedder: Embedder,
        vectors: VectorStore,
        store: Store,
        model: str,
        marks: NoteMarks | None = None,
        batch: int = 16,
    ) -> None:
        if batch < 1:
            raise ValueError(f"batch must be at least 1, not {batch}")
        self.embedder = embedder
        self.vectors = vectors
        self.store = store
        self.model = model
        self.marks = marks
        self.batch = batch
        self.upserted = 0
        self.failures = 0

    def version(self, row: Row) -> str:
        return f"{self.model}|{row.get('updatedAt') or row.get('createdAt') or ''}"

    def is_current(self, row: Row) -> bool:
        """True when this version of the note already has its vector."""
        if self.marks is None:
            return False
        return self.marks.version(str(row.get("id"))) == self.version(row)

    async def index_mutations(self, mutations: Iterable[_Mutation]) -> int:
        """Embed and upsert the notes ``mutations`` inserted or updated; how many were."""
        rows: dict[str, Row | None] = {}
        for m in mutations:
            if m.table != NOTES or m.action not in ("insert", "update"):
                continue
            data = m.data
            row = data.get("row") if isinstance(data.get("row"), dict) else data
            note_id = str(data.get("id") or (row or {}).get("id") or "")
            if not note_id:
                continue
            rows.pop(note_id, None)  # keep the order of the last write
            rows[note_id] = row if row is not None and "title" in row else None
        if not rows:
            return 0
        try:
            for note_id in [i for i, r in rows.items() if r is None]:
                rows[note_id] = await self.store.get(NOTES, note_id)
        except AgentError as exc:
            self._failed(len(rows), exc)
            return 0
        return await self.index_rows([r for r in rows.values() if r is not None])

    async def index_rows(self, rows: Sequence[Row]) -> int:
        """Embed and upsert ``rows`` (notes) in batches; how many were upserted."""
        done = 0
        for start in range(0, len(rows), self.batch):
            done += await self._upsert(rows[start : start + self.batch])
        return done

    async def _upsert(self, rows: Sequence[Row]) -> int:
        texts = [note_text(r) for r in rows]
        try:
            vectors = await self.embedder.embed(texts)
            for row, text, vector in zip(rows, texts, vectors, strict=True):
                data: dict[str, Any] = {"id": str(row["id"]), "content": text}
                if row.get("projectId"):
                    data["projectId"] = row["projectId"]
                await self.vectors.vector_upsert(data, vector)
                if self.marks is not None:
                    self.marks.mark(str(row["id"]), self.version(row))
                self.upserted += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never fail a run or a chat for a vector
            self._failed(len(rows), exc)
            return 0
        return len(rows)

    async def search(self, query: str, limit: int = 5) -> list[Row]:
        """The notes closest in meaning to ``query``, best first (``id``, ``title``,
        ``projectId``, ``content``, ``score``); raises ``AgentError`` subclasses."""
        [vector] = await self.embedder.embed([query])
        hits = await self.vectors.vector_search(vector, limit)
        found: list[Row] = []
        for hit in hits:
            note = await self.store.get(NOTES, str(hit.get("id")))
            if note is None:
                continue  # deleted since it was embedded
            found.append({**note, "score": hit.get("score")})
        return found

    def _failed(self, count: int, exc: BaseException) -> None:
        self.failures += count
        log.warning(
            "could not embed %d note%s for semantic search (%s: %s); they stay findable by title",
            count,
            "" if count == 1 else "s",
            type(exc).__name__,
            exc,
        )

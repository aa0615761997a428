"""``Store`` implementations for agents unit tests (no socket, no daemon).

``SqliteBackedStore`` answers the ``Store`` and ``VectorStore`` protocols straight from the reference
client's ``SqliteStore`` (a real SQLite file), in process:

- ``StorageError`` becomes ``ToolCallError(code, message)``, as the daemon's
  ``ClientStore`` turns a ``tool_result ok=false`` into one.
- Every call is recorded in ``.calls`` as ``(action, table, params)`` *before* it
  runs, so a test can assert that nothing was sent.
- ``latency_s`` makes each call wait (``asyncio.sleep``) first; ``max_in_flight``
  records how many calls overlapped, to prove tools ran concurrently.
- ``offline = True`` makes every call raise ``DeviceOffline`` (the app went away).

``DictMarks`` is ``agents.notes_index.NoteMarks`` in a dict (the daemon keeps them
in its state store).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import Any

from agents.errors import DeviceOffline, ToolCallError
from agents.store import Row
from protocol.errors import StorageError
from protocol.reference import SqliteStore

__all__ = ["DictMarks", "SqliteBackedStore"]


class SqliteBackedStore:
    """The ``Store`` protocol over an in-process ``SqliteStore``."""

    def __init__(self, db: SqliteStore | str | os.PathLike[str], *, latency_s: float = 0.0) -> None:
        self.db = db if isinstance(db, SqliteStore) else SqliteStore(db)
        self.latency_s = latency_s
        self.offline = False
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def _handle(self, action: str, table: str, **params: Any) -> dict[str, Any]:
        self.calls.append((action, table, params))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            if self.offline:
                raise DeviceOffline("the device session went away")
            try:
                return self.db.handle(action, table, **params)
            except StorageError as exc:
                raise ToolCallError(str(exc.code), exc.message) from exc
        finally:
            self.in_flight -= 1

    async def select(
        self, table: str, filters: dict[str, Any] | None = None, limit: int | None = None
    ) -> list[Row]:
        result = await self._handle("select", table, filters=filters, limit=limit)
        rows: list[Row] = result["rows"]
        return rows

    async def get(self, table: str, id: str) -> Row | None:
        result = await self._handle("get", table, data={"id": id})
        row: Row | None = result["row"]
        return row

    async def insert(
        self, table: str, data: dict[str, Any], *, idempotency_key: str | None = None
    ) -> Row:
        result = await self._handle("insert", table, data=data, idempotency_key=idempotency_key)
        row: Row = result["row"]
        return row

    async def update(self, table: str, id: str, updates: dict[str, Any]) -> Row:
        result = await self._handle("update", table, data={"id": id, "updates": updates})
        row: Row = result["row"]
        return row

    async def delete(self, table: str, id: str) -> None:
        await self._handle("delete", table, data={"id": id})

    # ``agents.store.VectorStore``
    async def vector_upsert(self, data: dict[str, Any], vector: list[float]) -> None:
        await self._handle("vector_upsert", "", data=data, vector=vector)

    async def vector_search(self, vector: list[float], limit: int) -> list[Row]:
        result = await self._handle("vector_search", "", vector=vector, limit=limit)
        hits: list[Row] = result["results"]
        return hits

    def actions(self) -> list[str]:
        """The actions called so far, in order (``["get", "insert", ...]``)."""
        return [action for action, _, _ in self.calls]

    def close(self) -> None:
        self.db.close()


@dataclass
class DictMarks:
    """``NoteMarks`` in memory: note id -> embedded version."""

    versions: dict[str, str] = field(default_factory=dict)

    def version(self, note_id: str) -> str | None:
        return self.versions.get(note_id)

    def mark(self, note_id: str, version: str) -> None:
        self.versions[note_id] = version

"""``Store`` implementations for agents unit tests (no socket, no daemon).

``SqliteBackedStore`` answers the ``Store`` protocol straight from the reference
client's ``SqliteStore`` (a real SQLite file), in process:

- ``StorageError`` becomes ``ToolCallError(code, message)``, as the daemon's
  ``ClientStore`` turns a ``tool_result ok=false`` into one.
- Every call is recorded in ``.calls`` as ``(action, table, params)`` *before* it
  runs, so a test can assert that nothing was sent.
- ``latency_s`` makes each call wait (``asyncio.sleep``) first; ``max_in_flight``
  records how many calls overlapped, to prove tools ran concurrently.
- ``offline = True`` makes every call raise ``DeviceOffline`` (the app went away).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from agents.errors import DeviceOffline, ToolCallError
from agents.store import Row
from protocol.errors import StorageError
from protocol.reference import SqliteStore

__all__ = ["SqliteBackedStore"]


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

    def actions(self) -> list[str]:
        """The actions called so far, in order (``["get", "insert", ...]``)."""
        return [action for action, _, _ in self.calls]

    def close(self) -> None:
        self.db.close()

"""The ``Store`` interface: how agents read and write the client's data.

Agents never talk to a WebSocket. They call these five coroutines; the daemon
implements them over a live device session (``daemon.session.ClientStore``) and
tests implement them with the reference client. Every method raises only the
``StoreError`` branch of ``agents.errors``.

``VectorStore`` is storage.md's two vector actions, for a client that announced
``capabilities.vector``: ``vector_upsert`` with ``data: {id, projectId?, content}``
and ``vector_search`` answering ``[{id, content, score}]``, best first.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["Row", "Store", "VectorStore"]

Row = dict[str, Any]


class Store(Protocol):
    async def select(
        self, table: str, filters: dict[str, Any] | None = None, limit: int | None = None
    ) -> list[Row]: ...

    async def get(self, table: str, id: str) -> Row | None: ...

    async def insert(
        self, table: str, data: dict[str, Any], *, idempotency_key: str | None = None
    ) -> Row: ...

    async def update(self, table: str, id: str, updates: dict[str, Any]) -> Row: ...

    async def delete(self, table: str, id: str) -> None: ...


class VectorStore(Protocol):
    async def vector_upsert(self, data: dict[str, Any], vector: list[float]) -> None: ...

    async def vector_search(self, vector: list[float], limit: int) -> list[Row]: ...

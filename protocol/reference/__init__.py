"""The reference client: what a desktop app does, in Python.

Not part of the pure protocol: this package does I/O (websockets, SQLite). It is
what the tests, the benchmarks and ``daemon dev-client`` connect with, and the
executable description of the contract for the desktop app's developers. The
daemon uses only ``BatchedServerConnection`` from it (the batched socket writes).

The names below are loaded on first use (PEP 562), so a CLI verb that needs only
the control client does not import the SQLite store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from protocol.lazy import lazy_names

if TYPE_CHECKING:
    from protocol.errors import ClientError, ConnectionLost, HandshakeRefused, RequestFailed

    from .client import ChatResult, ProtocolClient, ReferenceClient
    from .connection import BatchedClientConnection, BatchedServerConnection
    from .sqlite_store import SqliteStore

__all__ = [
    "BatchedClientConnection",
    "BatchedServerConnection",
    "ChatResult",
    "ClientError",
    "ConnectionLost",
    "HandshakeRefused",
    "ProtocolClient",
    "ReferenceClient",
    "RequestFailed",
    "SqliteStore",
]

_HOME = {
    "BatchedClientConnection": ".connection",
    "BatchedServerConnection": ".connection",
    "ChatResult": ".client",
    "ClientError": "protocol.errors",
    "ConnectionLost": "protocol.errors",
    "HandshakeRefused": "protocol.errors",
    "ProtocolClient": ".client",
    "ReferenceClient": ".client",
    "RequestFailed": "protocol.errors",
    "SqliteStore": ".sqlite_store",
}


__getattr__ = lazy_names(__name__, _HOME)

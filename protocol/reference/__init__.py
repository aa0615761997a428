"""The reference client: what a desktop app does, in Python.

Not part of the pure protocol: this package does I/O (websockets, SQLite). It is
what the tests, the benchmarks and ``daemon dev-client`` connect with, and the
executable description of the contract for the desktop app's developers. The
daemon uses only ``BatchedServerConnection`` from it (the batched socket writes).
"""

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

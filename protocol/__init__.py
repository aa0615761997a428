"""Tether wire protocol v1: frames, codec, errors, storage contract, JSON Schema.

Pure modules (no asyncio, no websockets, no I/O). The reference client, its SQLite
store and the batched websockets connection live in ``protocol.reference``, which
is imported on its own.

The names below are loaded on first use (PEP 562): importing ``protocol.errors``
alone, as every CLI verb does for its error handler, must not build the ~45 frame
models (about a third of ``daemon status``'s start-up).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from protocol.lazy import lazy_names

if TYPE_CHECKING:
    from .codec import decode, encode
    from .errors import BadFrame, CloseCode, ErrorCode, ProtocolError, StorageError, UnknownType
    from .frames import PROTOCOL_VERSION, SUPPORTED_PROTOCOLS

__all__ = [
    "PROTOCOL_VERSION",
    "SUPPORTED_PROTOCOLS",
    "BadFrame",
    "CloseCode",
    "ErrorCode",
    "ProtocolError",
    "StorageError",
    "UnknownType",
    "decode",
    "encode",
]

_HOME = {
    "decode": ".codec",
    "encode": ".codec",
    "BadFrame": ".errors",
    "CloseCode": ".errors",
    "ErrorCode": ".errors",
    "ProtocolError": ".errors",
    "StorageError": ".errors",
    "UnknownType": ".errors",
    "PROTOCOL_VERSION": ".frames",
    "SUPPORTED_PROTOCOLS": ".frames",
}


__getattr__ = lazy_names(__name__, _HOME)

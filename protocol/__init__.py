"""Tether wire protocol v1: frames, codec, errors, storage contract, JSON Schema.

Pure modules (no asyncio, no websockets, no I/O). The reference client, its SQLite
store and the batched websockets connection live in ``protocol.reference``, which
is imported on its own.
"""

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

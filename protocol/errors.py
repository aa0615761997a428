"""Errors of the wire protocol, the storage contract and the reference client.

The tree::

    ProtocolError                 a frame or request that cannot be handled (has .code)
    ├── BadFrame                  malformed JSON or a frame that fails validation
    ├── UnknownType               a well-formed frame whose "type" we do not know
    └── StorageError              a storage action the client refused (tool_result ok=false)
    ClientError                   how a client's request or connection ended (protocol.reference)
    ├── RequestFailed             the daemon answered a request with an error frame (.code)
    ├── ConnectionLost            the connection closed while a request waited for its answer
    └── HandshakeRefused          the daemon refused the connection (.status HTTP, .code close)

``ErrorCode`` lists the ``code`` values of ``error`` frames; ``CloseCode`` the
WebSocket close codes of protocol.md. The ``ClientError`` tree is raised by the
reference client (``protocol.reference``, which re-exports it) and caught by the CLI.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Any

__all__ = [
    "BadFrame",
    "ClientError",
    "CloseCode",
    "ConnectionLost",
    "ErrorCode",
    "HandshakeRefused",
    "ProtocolError",
    "RequestFailed",
    "StorageError",
    "UnknownType",
]


class ErrorCode(StrEnum):
    BAD_FRAME = "bad_frame"
    UNKNOWN_TYPE = "unknown_type"
    EXPECTED_HELLO = "expected_hello"
    UNAUTHORIZED = "unauthorized"
    UNSUPPORTED_PROTOCOL = "unsupported_protocol"
    UNKNOWN_AGENT = "unknown_agent"
    ALREADY_RUNNING = "already_running"
    DEVICE_OFFLINE = "device_offline"
    INVALID_CONFIG = "invalid_config"
    NOT_FOUND = "not_found"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    BUSY = "busy"
    INTERNAL = "internal"
    # storage-level codes answered by the client in tool_result errors
    BAD_REQUEST = "bad_request"
    CONFLICT = "conflict"


class CloseCode(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    EXPECTED_HELLO = 4400
    UNAUTHORIZED = 4401
    UNSUPPORTED_PROTOCOL = 4402
    HELLO_TIMEOUT = 4408
    SUPERSEDED = 4409


class ProtocolError(Exception):
    """Base of every protocol error; ``code`` is the ``error`` frame's code."""

    code: str = ErrorCode.INTERNAL

    def __init__(self, message: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.extra = extra

    def __str__(self) -> str:
        return self.message


class BadFrame(ProtocolError):
    """The peer sent malformed JSON or a frame that fails validation (peer's fault)."""

    code = ErrorCode.BAD_FRAME


class UnknownType(ProtocolError):
    """The peer sent a frame whose ``type`` this side does not know (peer's fault)."""

    code = ErrorCode.UNKNOWN_TYPE


class StorageError(ProtocolError):
    """A storage action failed on the client side (bad_request, not_found, ...)."""

    code = ErrorCode.BAD_REQUEST


# --- the client's side (raised by protocol.reference) -----------------------------------


class ClientError(Exception):
    """Base of what a client's request or connection ended with."""


class RequestFailed(ClientError):
    """The daemon answered a request with an ``error`` frame."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ConnectionLost(ClientError):
    """The connection closed while a request waited for its answer."""


class HandshakeRefused(ClientError):
    """The daemon refused the connection (HTTP status or a close code during hello)."""

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code

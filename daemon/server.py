"""The daemon's WebSocket server: handshake, sessions, frame dispatch.

Rules (protocol.md "Transport", "Handshake", "Errors", "Close codes"):

- HTTP upgrade is refused before any frame when the ``Host`` is not loopback (403,
  DNS-rebinding defence), an ``Origin`` is present and not allow-listed (403, so any
  browser page and ``Origin: null`` are refused by default), a token given at the
  upgrade (``Authorization: Bearer`` or a ``?token=`` query parameter) is wrong (401),
  a ``Host``, ``Origin``, ``Authorization`` or ``token`` appears twice (400), or
  ``max_pending_handshakes`` connections without a token at the upgrade have not
  said hello yet (503).
- A client with the right token at the upgrade is never refused by that cap: when
  the cap is full, the oldest connection still waiting for a hello without one is
  closed (1013) to make room. Tokens are compared in constant time; the request's
  path and query never reach a log line (websockets logs through ``tether.ws`` at
  WARNING and above only).
- The first frame must be ``device_hello`` or ``control_hello`` within
  ``hello_timeout_s`` (else 4408); anything else first: ``expected_hello`` and
  4400. Wrong or missing token: ``unauthorized`` and 4401 (constant-time compare).
  No common protocol version: ``unsupported_protocol`` with ``supported`` and 4402.
- One device session per ``device_id``: a newer one closes the older with 4409.
- A hello whose agents cannot be saved (a full disk) still gets its ``hello_ack``
  (without ``agents``), then an ``error`` frame saying why; the session goes on.
- After the hello, a malformed or unknown frame is answered with an ``error`` frame
  and the connection stays open; ``max_bad_frames`` bad frames in a row close it
  with 1008. Oversized messages are closed with 1009 by websockets itself.
- Requests are handled in their own tasks so the read loop keeps reading
  ``tool_result`` frames while a request waits on storage.

One module, past 500 lines, on purpose: the handshake rules (Host, Origin, token,
the cap on connections without hello) and the session read loop are one security
boundary, reviewed together.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import uuid
from collections.abc import Coroutine, Iterable
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import Server as WsServer
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from protocol.codec import decode
from protocol.errors import CloseCode, ErrorCode, ProtocolError
from protocol.frames import (
    SUPPORTED_PROTOCOLS,
    AgentsResult,
    ControlHello,
    DaemonInfo,
    DeviceHello,
    Error,
    HelloAck,
    Ping,
    Pong,
    ToolResult,
    _Frame,
)
from protocol.reference import BatchedServerConnection

from .config import Config
from .errors import StateError
from .session import ControlSession, DeviceSession, Session

__all__ = [
    "FEATURES",
    "MAX_LOGGED_CHARS",
    "Handlers",
    "Server",
    "choose_protocol",
    "clip",
    "host_is_loopback",
]

log = logging.getLogger("tether.server")
# websockets' own lines (handshake failures): through our handlers and redaction, and
# never its DEBUG lines, which carry the request line with its query string.
_ws_log = logging.getLogger("tether.ws")
_ws_log.setLevel(logging.WARNING)

# What a log line quotes of a client's frame at most (a 15 MB error frame is not logged whole).
MAX_LOGGED_CHARS = 2000
# Close code for a handshake closed to make room (RFC 6455 1013 "try again later").
_TRY_AGAIN_LATER = 1013

FEATURES = ["agents", "chat", "cancel", "status", "journey"]

# Frames only the daemon sends: a client that sends one made a mistake.
_DAEMON_ONLY = frozenset(
    {
        "hello_ack",
        "tool_call",
        "ack",
        "status",
        "estimate_result",
        "journey_message",
        "stream_start",
        "floating_domain",
        "stream_text",
        "stream_end",
        "run_started",
        "run_progress",
        "run_complete",
    }
)


class Handlers(Protocol):
    """What the composition root does with sessions and requests."""

    async def on_hello(
        self, session: Session, hello: DeviceHello | ControlHello
    ) -> AgentsResult | None:
        """Validate and store agents carried by a device hello (before ``hello_ack``)."""
        ...

    async def after_hello(self, session: Session, hello: DeviceHello | ControlHello) -> None:
        """Replay missed events and enqueue overdue runs (after ``hello_ack``)."""
        ...

    async def on_request(self, session: Session, frame: _Frame) -> None:
        """Handle one client request; raise ``ProtocolError`` to answer an ``error``."""
        ...

    def on_closed(self, session: Session) -> None:
        """A session ended (after its pending calls failed)."""
        ...


def host_is_loopback(host_header: str | None) -> bool:
    """True when a ``Host`` header names a loopback host (with or without port)."""
    if not host_header:
        return False
    host = host_header.strip()
    if host.startswith("["):  # [::1]:port
        host = host[1 : host.find("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    host = host.rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def choose_protocol(offered: int | list[int]) -> int | None:
    """The highest version both sides speak, or None."""
    versions = [offered] if isinstance(offered, int) else list(offered)
    common = set(versions) & set(SUPPORTED_PROTOCOLS)
    return max(common) if common else None


def clip(text: str, limit: int = MAX_LOGGED_CHARS) -> str:
    """``text`` cut to ``limit`` characters for a log line, saying how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [cut: {len(text):,} characters in all]"


def _bearer(value: str | None) -> str | None:
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class _BadUpgrade(Exception):
    """The upgrade request is malformed (answered 400 with this message)."""


def _one_header(request: Request, name: str) -> str | None:
    values = request.headers.get_all(name)
    if len(values) > 1:
        raise _BadUpgrade(f"{name} header given {len(values)} times")
    return values[0] if values else None


def upgrade_token(request: Request) -> str | None:
    """The token a client gave at the upgrade (``Authorization: Bearer`` or ``?token=``).

    None when it gave none; ``""`` for a non-bearer ``Authorization``. Raises
    ``_BadUpgrade`` when the token is given twice with different values.
    """
    tokens: list[str] = []
    bearer = _bearer(_one_header(request, "Authorization"))
    if bearer is not None:
        tokens.append(bearer)
    query = urlsplit(request.path).query
    if query:
        tokens += [v for k, v in parse_qsl(query, keep_blank_values=True) if k == "token"]
    if not tokens:
        return None
    if len(set(tokens)) > 1:
        raise _BadUpgrade("the token is given twice with different values")
    return tokens[0]


def _parse(raw: str | bytes) -> dict[str, Any] | None:
    """Best effort: the JSON object of a frame we could not decode."""
    try:
        obj = json.loads(raw)
    except (ValueError, TypeError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def _request_id(obj: dict[str, Any] | None) -> str | None:
    """The ``id`` of a frame we could not decode, to correlate the error."""
    if obj is None:
        return None
    value = obj.get("id", obj.get("request_id"))
    return value if isinstance(value, str) else None


def _fail_malformed_result(
    device: DeviceSession, obj: dict[str, Any] | None, exc: ProtocolError
) -> None:
    """A malformed ``tool_result`` for a pending call fails that call now, with the
    validation message (instead of leaving it to time out)."""
    if obj is None or obj.get("type") != "tool_result":
        return
    call_id = obj.get("id")
    if isinstance(call_id, str) and device.fail(call_id, exc.message):
        log.warning("tool_result %s is malformed: %s", clip(call_id, 200), clip(exc.message))


class Server:
    """The WebSocket endpoint and the registry of live sessions."""

    def __init__(
        self,
        config: Config,
        token: str,
        handlers: Handlers,
        *,
        version: str,
        pid: int | None = None,
    ) -> None:
        self.config = config
        self._token = token.encode()
        self.handlers = handlers
        self.version = version
        self.pid = pid
        self.port: int | None = None
        self.devices: dict[str, DeviceSession] = {}
        self.controls: dict[str, ControlSession] = {}
        self._connections: dict[str, ServerConnection] = {}
        # Connections waiting for their hello, oldest first: True when they gave the
        # right token at the upgrade (those are never refused nor evicted).
        self._awaiting_hello: dict[ServerConnection, bool] = {}
        self._unproven = 0  # how many of them gave no token at the upgrade
        self._ws: WsServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._closed = False

    # --- lifecycle -------------------------------------------------------------------

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port (useful with port 0)."""
        self._ws = await serve(
            self._handle,
            host,
            port,
            process_request=self._check_request,
            compression=None,
            max_size=self.config.max_message_bytes,
            ping_interval=self.config.heartbeat_s,
            ping_timeout=self.config.heartbeat_s,
            server_header=f"tether/{self.version}",
            create_connection=BatchedServerConnection,
            logger=_ws_log,
        )
        sockets = list(self._ws.sockets)
        self.port = sockets[0].getsockname()[1] if sockets else port
        return self.port

    def stop_accepting(self) -> None:
        """Refuse new connections; live sessions go on. Idempotent."""
        self._closing = True
        if self._ws is not None:
            self._ws.close(close_connections=False)

    async def close(self) -> None:
        """Stop accepting, close every session with 1001. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.stop_accepting()
        for session in list(self.devices.values()) + list(self.controls.values()):
            session.close("daemon shutting down")
        conns = list(self._connections.values())
        await asyncio.gather(
            *(c.close(CloseCode.GOING_AWAY, "daemon shutting down") for c in conns),
            return_exceptions=True,
        )
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._ws is not None:
            self._ws.close()
            await self._ws.wait_closed()

    # --- registry --------------------------------------------------------------------

    def device(self, device_id: str | None = None) -> DeviceSession | None:
        """The live session of ``device_id``; with None, the most recent device."""
        if device_id is not None:
            return self.devices.get(device_id)
        return next(reversed(self.devices.values()), None)

    def sessions(self) -> Iterable[Session]:
        yield from self.devices.values()
        yield from self.controls.values()

    async def broadcast(self, frame: _Frame) -> None:
        """Send a run event to every device session and every subscribed control session."""
        targets: list[Session] = list(self.devices.values())
        targets += [c for c in self.controls.values() if c.subscribe]
        if targets:
            await asyncio.gather(*(s.send(frame) for s in targets))

    async def rotate_token(self, token: str) -> None:
        """Use a new pairing token; sessions that paired with the old one are closed."""
        self._token = token.encode()
        for session in list(self.sessions()):
            conn = self._connections.get(session.session_id)
            session.close("pairing token rotated")
            if conn is not None:
                self._background(conn.close(CloseCode.UNAUTHORIZED, "pairing token rotated"))

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- handshake -------------------------------------------------------------------

    def _token_ok(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), self._token)

    def _check_request(self, conn: ServerConnection, request: Request) -> Response | None:
        try:
            return self._check(conn, request)
        except _BadUpgrade as exc:
            log.warning("refused upgrade: %s", exc)
            return conn.respond(HTTPStatus.BAD_REQUEST, f"{exc}\n")

    def _check(self, conn: ServerConnection, request: Request) -> Response | None:
        host = _one_header(request, "Host")
        if not self.config.allow_remote and not host_is_loopback(host):
            log.warning("refused upgrade: Host %r is not loopback", clip(host or "", 200))
            return conn.respond(HTTPStatus.FORBIDDEN, "Host must be a loopback address\n")
        origin = _one_header(request, "Origin")
        if origin is not None and origin not in self.config.allowed_origins:
            log.warning("refused upgrade: Origin %r is not allowed", clip(origin, 200))
            return conn.respond(HTTPStatus.FORBIDDEN, "Origin not allowed\n")
        token = upgrade_token(request)
        if token is not None and not self._token_ok(token):
            log.warning("refused upgrade: wrong token at the upgrade")
            return conn.respond(HTTPStatus.UNAUTHORIZED, "wrong token\n")
        if token is not None:
            if self._unproven >= self.config.max_pending_handshakes:
                self._evict_oldest_unproven()
            return None
        if self._unproven >= self.config.max_pending_handshakes:
            return conn.respond(HTTPStatus.SERVICE_UNAVAILABLE, "too many pending connections\n")
        return None

    def _evict_oldest_unproven(self) -> None:
        """Close the oldest connection that gave no token and has not said hello."""
        oldest = next((c for c, proven in self._awaiting_hello.items() if not proven), None)
        if oldest is None:
            return
        del self._awaiting_hello[oldest]
        self._unproven -= 1
        log.warning("too many connections without hello: closing the oldest to make room")
        self._background(oldest.close(_TRY_AGAIN_LATER, "too many connections without hello"))

    async def _refuse(self, conn: ServerConnection, close: CloseCode, error: Error) -> None:
        try:
            await conn.send(error.model_dump_json(exclude_unset=True))
            await conn.close(close, error.message[:120])
        except ConnectionClosed:
            pass

    async def _read_hello(self, conn: ServerConnection) -> DeviceHello | ControlHello | None:
        try:
            raw = await asyncio.wait_for(conn.recv(), self.config.hello_timeout_s)
        except TimeoutError:
            await conn.close(CloseCode.HELLO_TIMEOUT, "no hello in time")
            return None
        except ConnectionClosed:
            return None
        frame: _Frame | None = None
        try:
            frame = decode(raw)
            reason = f"expected device_hello or control_hello first, got {frame.type}"
        except ProtocolError as exc:
            reason = f"expected device_hello or control_hello first ({exc.message})"
        if not isinstance(frame, DeviceHello | ControlHello):
            await self._refuse(
                conn,
                CloseCode.EXPECTED_HELLO,
                Error(code=ErrorCode.EXPECTED_HELLO, message=reason),
            )
            return None
        # A token at the upgrade was already checked in _check_request: present means right.
        if not (self._awaiting_hello.get(conn) or self._token_ok(frame.token)):
            log.warning("refused %s: wrong or missing token", frame.type)
            await self._refuse(
                conn,
                CloseCode.UNAUTHORIZED,
                Error(code=ErrorCode.UNAUTHORIZED, message="wrong or missing pairing token"),
            )
            return None
        if choose_protocol(frame.protocol) is None:
            await self._refuse(
                conn,
                CloseCode.UNSUPPORTED_PROTOCOL,
                Error(
                    code=ErrorCode.UNSUPPORTED_PROTOCOL,
                    message=f"protocol {frame.protocol} is not supported",
                    supported=list(SUPPORTED_PROTOCOLS),
                ),
            )
            return None
        return frame

    async def _handle(self, conn: ServerConnection) -> None:
        proven = conn.request is not None and bool(upgrade_token(conn.request))
        self._awaiting_hello[conn] = proven
        if not proven:
            self._unproven += 1
        try:
            hello = await self._read_hello(conn)
        finally:
            if conn in self._awaiting_hello and not self._awaiting_hello.pop(conn):
                self._unproven -= 1
        if hello is None or self._closing:
            return
        session = self._open_session(conn, hello)
        self._connections[session.session_id] = conn
        try:
            if isinstance(session, DeviceSession):
                await self._supersede(session)
            not_saved: Error | None = None
            try:
                agents = await self.handlers.on_hello(session, hello)
            except StateError as exc:  # a full disk must not keep the app out
                log.error("the agents of session %s were not saved: %s", session.session_id, exc)
                agents = None
                not_saved = Error(
                    code=ErrorCode.INTERNAL, message=f"the agents were not saved: {exc}"
                )
            ack = HelloAck(
                protocol=choose_protocol(hello.protocol) or 1,
                session_id=session.session_id,
                daemon=DaemonInfo(
                    name="tether", version=self.version, pid=self.pid, port=self.port
                ),
                heartbeat_s=self.config.heartbeat_s,
                features=FEATURES,
            )
            if agents is not None:
                ack.agents = agents
            await session.send(ack)
            if not_saved is not None:
                await session.send(not_saved)
            await self.handlers.after_hello(session, hello)
            await self._read_loop(conn, session)
        finally:
            self._connections.pop(session.session_id, None)
            self._unregister(session)
            session.close(session.close_reason or "connection closed")
            self.handlers.on_closed(session)
            log.info(
                "%s session %s closed: %s", session.kind, session.session_id, session.close_reason
            )

    def _open_session(self, conn: ServerConnection, hello: DeviceHello | ControlHello) -> Session:
        session_id = uuid.uuid4().hex
        # Sessions send encoded UTF-8 JSON, written with the other frames of the same
        # event-loop pass in one socket write (protocol/reference/connection.py).
        assert isinstance(conn, BatchedServerConnection)
        send_text = conn.send_text_batched
        if isinstance(hello, DeviceHello):
            log.info("device %s connected (session %s)", hello.device_id, session_id)
            return DeviceSession(
                session_id,
                send_text,
                device_id=hello.device_id,
                capabilities=hello.capabilities,
                timeout_s=self.config.tool_call_timeout_s,
                max_in_flight=self.config.max_in_flight,
            )
        control = ControlSession(session_id, send_text, subscribe=hello.subscribe)
        self.controls[session_id] = control
        return control

    async def _supersede(self, session: DeviceSession) -> None:
        old = self.devices.pop(session.device_id, None)
        self.devices[session.device_id] = session
        if old is not None:
            log.info("device %s: session %s superseded", session.device_id, old.session_id)
            old.close("superseded by a newer session")
            conn = self._connections.get(old.session_id)
            if conn is not None:
                # In the background: a frozen old peer must not delay the new session.
                self._background(conn.close(CloseCode.SUPERSEDED, "superseded by a newer session"))

    def _unregister(self, session: Session) -> None:
        if isinstance(session, DeviceSession):
            if self.devices.get(session.device_id) is session:
                del self.devices[session.device_id]
        else:
            self.controls.pop(session.session_id, None)

    # --- frames after the hello ------------------------------------------------------

    async def _read_loop(self, conn: ServerConnection, session: Session) -> None:
        bad_in_a_row = 0
        device = session if isinstance(session, DeviceSession) else None
        try:
            async for raw in conn:
                try:
                    if isinstance(raw, bytes):
                        raise ProtocolError(
                            "binary messages are not part of the protocol; send UTF-8 JSON text",
                            code=ErrorCode.BAD_FRAME,
                        )
                    frame = decode(raw)
                except ProtocolError as exc:
                    bad_in_a_row += 1
                    parsed = _parse(raw)
                    if device is not None:
                        _fail_malformed_result(device, parsed, exc)
                    await session.send(
                        Error(id=_request_id(parsed), code=exc.code, message=exc.message)
                    )
                    if bad_in_a_row >= self.config.max_bad_frames:
                        session.close_reason = "too many bad frames"
                        await conn.close(CloseCode.POLICY_VIOLATION, "too many bad frames")
                        return
                    continue
                bad_in_a_row = 0
                if device is not None and frame.__class__ is ToolResult:
                    # The hot path (what _dispatch does for it, without a coroutine).
                    if not device.resolve(frame):
                        log.debug("tool_result %s matches no pending call", clip(frame.id, 200))
                    continue
                await self._dispatch(session, frame)
        except ConnectionClosed as exc:
            session.close_reason = (
                session.close_reason
                or f"connection closed ({exc.rcvd.code if exc.rcvd else 'no close frame'})"
            )

    async def _dispatch(self, session: Session, frame: _Frame) -> None:
        if isinstance(frame, ToolResult):
            if isinstance(session, DeviceSession):
                if not session.resolve(frame):
                    log.debug("tool_result %s matches no pending call", clip(frame.id, 200))
                return
            await session.send(
                Error(code=ErrorCode.BAD_FRAME, message="control sessions do not serve tool calls")
            )
            return
        kind = frame.type
        if isinstance(frame, Ping):
            await session.send(Pong(id=frame.id) if frame.id is not None else Pong())
            return
        if isinstance(frame, Pong):
            return
        if isinstance(frame, Error):
            log.warning(
                "client reported an error: %s %s", clip(frame.code, 200), clip(frame.message)
            )
            return
        if isinstance(frame, DeviceHello | ControlHello):
            await session.send(
                Error(code=ErrorCode.BAD_FRAME, message="this session already said hello")
            )
            return
        if kind in _DAEMON_ONLY:
            await session.send(
                Error(
                    id=getattr(frame, "id", None),
                    code=ErrorCode.BAD_FRAME,
                    message=f"{kind} is sent by the daemon, not by a client",
                )
            )
            return
        self._background(self._run_request(session, frame))

    async def _run_request(self, session: Session, frame: _Frame) -> None:
        request_id: Any = getattr(frame, "id", None)
        try:
            await self.handlers.on_request(session, frame)
        except ProtocolError as exc:
            await session.send(
                Error(id=request_id, code=exc.code, message=exc.message, **_extra(exc))
            )
        except asyncio.CancelledError:
            raise
        except StateError as exc:  # e.g. a full disk: the reason, not "see its log"
            log.error("request %s failed: %s", frame.type, exc)
            await session.send(
                Error(id=request_id, code=ErrorCode.INTERNAL, message=f"{frame.type}: {exc}")
            )
        except Exception:
            log.exception("request %s failed", frame.type)
            await session.send(
                Error(
                    id=request_id,
                    code=ErrorCode.INTERNAL,
                    message=f"{frame.type} failed inside the daemon; see its log",
                )
            )


def _extra(exc: ProtocolError) -> dict[str, Any]:
    return {k: v for k, v in exc.extra.items() if k in ("supported",)}

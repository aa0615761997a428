"""The reference client: what a desktop app does, in Python.

``ProtocolClient`` connects, says hello, answers pings, correlates requests with
their answers (``ack``/``status``/``error`` by ``id``, chat streams by
``request_id``), collects run events and, with ``reconnect=True``, reconnects with
jittered exponential backoff. ``ReferenceClient`` adds the device side: it serves
``tool_call`` frames from a real SQLite database (``SqliteStore``) with the schema
of storage.md. The tests, the benchmarks and ``daemon dev-client`` use it; it is
also the executable description of the contract for the desktop app's developers.

Rules:

- Every request method awaits exactly one terminal answer; an ``error`` answer is
  raised as ``RequestFailed`` (with the daemon's ``code``).
- A connection lost while requests wait fails them with ``ConnectionLost``.
- Closes 4401 (unauthorized), 4402 (unsupported protocol) and 4409 (superseded)
  are final: the client does not reconnect after them.
- ``last_event_seq`` follows the run events seen, so a reconnect replays only what
  was missed.

One module although it is over 500 lines: it is one concept, the app's end of a
session, and the device (``ReferenceClient``) is answered from the session's own
read loop, so splitting them would only move the seam into the hot path.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from protocol.codec import construct, decode, encode, encode_bytes
from protocol.errors import (
    CloseCode,
    ConnectionLost,
    HandshakeRefused,
    ProtocolError,
    RequestFailed,
    StorageError,
)
from protocol.frames import (
    PROTOCOL_VERSION,
    Ack,
    AgentsSync,
    Cancel,
    Capabilities,
    ChatMessage,
    ClientInfo,
    ControlHello,
    DeviceHello,
    Error,
    ErrorBody,
    EstimateResult,
    FloatingDomain,
    FloatingRequest,
    HelloAck,
    HomeRequest,
    JourneyMessage,
    JourneyReply,
    JourneyStart,
    Mutation,
    Ping,
    Pong,
    RunComplete,
    RunProgress,
    RunStarted,
    Scope,
    Status,
    StatusRequest,
    StreamEnd,
    StreamStart,
    StreamText,
    ToolCall,
    ToolResult,
    Trigger,
    _Frame,
)

from .connection import BatchedClientConnection

if TYPE_CHECKING:  # imported by ReferenceClient: a control client has no store
    from .sqlite_store import SqliteStore

__all__ = ["ChatResult", "ProtocolClient", "ReferenceClient"]

log = logging.getLogger("tether.client")

RunEvent = RunStarted | RunProgress | RunComplete
_FINAL_CLOSES = {CloseCode.UNAUTHORIZED, CloseCode.UNSUPPORTED_PROTOCOL, CloseCode.SUPERSEDED}


@dataclass
class ChatResult:
    """Everything one chat request streamed back."""

    request_id: str
    chunks: list[str] = field(default_factory=list)
    domain: str | None = None
    mutations: list[Mutation] = field(default_factory=list)
    error: str | None = None
    started: bool = False

    @property
    def text(self) -> str:
        return "".join(self.chunks)


@dataclass
class _ChatWaiter:
    result: ChatResult
    done: asyncio.Future[ChatResult]
    on_text: Callable[[str], None] | None = None


class ProtocolClient:
    """A client session: hello, requests, run events, reconnects."""

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        client_name: str = "tether-reference-client",
        reconnect: bool = False,
        backoff: tuple[float, float] = (0.2, 10.0),
        authorization_header: bool = False,
        open_timeout: float = 5.0,
        last_event_seq: int | None = None,
        subscribe: bool = True,
    ) -> None:
        self.url = url
        self.subscribe = subscribe
        self.token = token
        self.client_info = ClientInfo(name=client_name, version="0.1.0")
        self.reconnect = reconnect
        self.backoff = backoff
        self.authorization_header = authorization_header
        self.open_timeout = open_timeout
        self.hello_ack: HelloAck | None = None
        self.last_event_seq = last_event_seq
        self.events: asyncio.Queue[RunEvent] = asyncio.Queue()
        self.on_event: Callable[[RunEvent], None] | None = None
        self.close_code: int | None = None
        self._conn: BatchedClientConnection | None = None
        self._pending: dict[str, asyncio.Future[_Frame]] = {}
        self._chats: dict[str, _ChatWaiter] = {}
        self._ids = itertools.count(1)
        self._reader: asyncio.Task[None] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._stopped = False
        self._tasks: set[asyncio.Task[None]] = set()

    # --- what a subclass says in its hello ------------------------------------------

    def hello(self) -> DeviceHello | ControlHello:
        return ControlHello(
            protocol=PROTOCOL_VERSION,
            token=self.token,
            client=self.client_info,
            subscribe=self.subscribe,
            last_event_seq=self.last_event_seq,
        )

    def answer_at_once(self, call: ToolCall) -> ToolResult | None:
        """The answer to ``call`` if it needs no waiting (given in the read loop, in
        order, without a task), else None: ``handle_tool_call`` then runs in a task."""
        return None

    async def handle_tool_call(self, call: ToolCall) -> ToolResult:
        return ToolResult(
            id=call.id, ok=False, error=ErrorBody(code="bad_request", message="not a device")
        )

    # --- connection -----------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def connect(self) -> HelloAck:
        """Connect once and complete the handshake; with ``reconnect``, keep reconnecting."""
        self._stopped = False
        ack = await self._open()
        if self.reconnect and self._runner is None:
            self._runner = asyncio.create_task(self._reconnect_loop())
        return ack

    async def _open(self) -> HelloAck:
        headers = {"Authorization": f"Bearer {self.token}"} if self.authorization_header else None
        try:
            opened = await connect(
                self.url,
                additional_headers=headers,
                compression=None,
                max_size=None,
                proxy=None,  # the daemon is local: an http_proxy must not route to it
                open_timeout=self.open_timeout,
                ping_interval=None,
                create_connection=BatchedClientConnection,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise HandshakeRefused(
                f"daemon refused the upgrade: HTTP {status}", status=status
            ) from None
        assert isinstance(opened, BatchedClientConnection)  # create_connection= above
        conn = opened
        hello = self.hello()
        await conn.send(encode(hello))
        try:
            raw = await conn.recv()
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else None
            self.close_code = code
            raise HandshakeRefused(f"daemon closed the connection ({code})", code=code) from None
        frame = decode(raw)
        if isinstance(frame, Error):
            code = None
            try:
                await conn.recv()
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else None
            self.close_code = code
            raise HandshakeRefused(f"{frame.code}: {frame.message}", code=code)
        if not isinstance(frame, HelloAck):
            await conn.close()
            raise HandshakeRefused(f"expected hello_ack, got {frame.type}")
        self.hello_ack = frame
        self._conn = conn
        self.close_code = None
        self._connected.set()
        self._reader = asyncio.create_task(self._read_loop(conn))
        return frame

    async def _reconnect_loop(self) -> None:
        low, high = self.backoff
        delay = low
        while not self._stopped:
            if self._reader is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await self._reader
            if self._stopped or self.close_code in _FINAL_CLOSES:
                return
            await asyncio.sleep(random.uniform(0, delay))
            try:
                await self._open()
                delay = low
            except (OSError, HandshakeRefused, ProtocolError, TimeoutError) as exc:
                log.info("reconnect failed: %s", exc)
                if isinstance(exc, HandshakeRefused) and exc.code in _FINAL_CLOSES:
                    return
                self._reader = None
                delay = min(high, delay * 2)

    async def wait_connected(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout)

    async def close(self) -> None:
        """Close the connection and stop reconnecting. Idempotent."""
        self._stopped = True
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        if self._conn is not None:
            await self._conn.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    def kill(self) -> None:
        """Drop the TCP connection without a close handshake (a crashed app)."""
        self._stopped = True
        if self._runner is not None:
            self._runner.cancel()
        if self._conn is not None:
            self._conn.transport.abort()

    # --- reading --------------------------------------------------------------------

    async def _read_loop(self, conn: BatchedClientConnection) -> None:
        try:
            async for raw in conn:
                try:
                    frame = decode(raw)
                except ProtocolError as exc:
                    log.warning("daemon sent a bad frame: %s", exc)
                    continue
                if type(frame) is ToolCall:
                    answer = self._answer_in_read_loop(conn, frame)
                    if answer is not None:
                        try:
                            await conn.send_text_batched(answer)
                        except ConnectionClosed:
                            pass
                    continue
                await self._on_frame(conn, frame)
        except ConnectionClosed:
            pass
        finally:
            if conn.close_code is not None:
                self.close_code = conn.close_code
            self._connected.clear()
            lost = ConnectionLost(f"connection closed ({conn.close_code})")
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(lost)
            self._pending.clear()
            for waiter in self._chats.values():
                if not waiter.done.done():
                    waiter.done.set_exception(lost)
            self._chats.clear()

    def _answer_in_read_loop(self, conn: BatchedClientConnection, call: ToolCall) -> bytes | None:
        """The encoded answer to ``call`` when ``answer_at_once`` has one, for the read
        loop to send; else None, and ``handle_tool_call`` answers it from a task.

        Hot path: a call answered here costs no task and no coroutine between reading
        it and writing its answer, and the answers go out in the order of the calls
        (with the others of this event-loop pass: ``send_text_batched``)."""
        result = self.answer_at_once(call)
        if result is None:
            task = asyncio.create_task(self._serve_tool_call(conn, call))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return None
        return encode_bytes(result)

    async def _on_frame(self, conn: BatchedClientConnection, frame: _Frame) -> None:
        if isinstance(frame, Ping):
            await conn.send(encode(Pong(id=frame.id) if frame.id is not None else Pong()))
        elif isinstance(frame, RunStarted | RunProgress | RunComplete):
            if not isinstance(frame, RunProgress):
                self.last_event_seq = max(self.last_event_seq or 0, frame.seq)
            self.events.put_nowait(frame)
            if self.on_event is not None:
                self.on_event(frame)
        elif isinstance(frame, StreamStart | StreamText | FloatingDomain | StreamEnd):
            self._on_chat_frame(frame)
        elif isinstance(frame, Ack | Status | Error | Pong | EstimateResult | JourneyMessage):
            request_id = frame.id
            fut = self._pending.pop(request_id, None) if request_id else None
            if fut is not None and not fut.done():
                fut.set_result(frame)
            elif isinstance(frame, Error):
                log.warning("daemon error: %s %s", frame.code, frame.message)

    def _on_chat_frame(self, frame: StreamStart | StreamText | FloatingDomain | StreamEnd) -> None:
        waiter = self._chats.get(frame.request_id)
        if waiter is None:
            return
        result = waiter.result
        if isinstance(frame, StreamStart):
            result.started = True
        elif isinstance(frame, StreamText):
            result.chunks.append(frame.chunk)
            if waiter.on_text is not None:
                waiter.on_text(frame.chunk)
        elif isinstance(frame, FloatingDomain):
            result.domain = frame.domain
        else:
            result.mutations = list(frame.mutations)
            result.error = frame.error
            self._chats.pop(frame.request_id, None)
            if not waiter.done.done():
                waiter.done.set_result(result)

    async def _serve_tool_call(self, conn: BatchedClientConnection, call: ToolCall) -> None:
        result = await self.handle_tool_call(call)
        try:
            # Already UTF-8 JSON; written with the other answers of this loop pass.
            await conn.send_text_batched(encode_bytes(result))
        except ConnectionClosed:
            pass

    # --- requests -------------------------------------------------------------------

    def _next_id(self) -> str:
        return f"r{next(self._ids)}"

    async def send(self, frame: _Frame) -> None:
        if self._conn is None:
            raise ConnectionLost("not connected")
        try:
            await self._conn.send(encode(frame))
        except ConnectionClosed as exc:
            raise ConnectionLost(str(exc)) from None

    async def send_raw(self, text: str) -> None:
        """Send any text (tests use it for malformed frames)."""
        if self._conn is None:
            raise ConnectionLost("not connected")
        await self._conn.send(text)

    async def request(self, frame: _Frame, *, timeout: float = 30.0) -> _Frame:
        request_id: str = frame.id  # type: ignore[attr-defined]
        fut: asyncio.Future[_Frame] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = fut
        try:
            await self.send(frame)
            answer = await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(request_id, None)
        if isinstance(answer, Error):
            raise RequestFailed(answer.code, answer.message)
        return answer

    async def ping(self, timeout: float = 5.0) -> None:
        await self.request(Ping(id=self._next_id()), timeout=timeout)

    async def agents_sync(self, agents: list[dict[str, Any]], *, replace: bool = False) -> Ack:
        answer = await self.request(AgentsSync(id=self._next_id(), agents=agents, replace=replace))
        assert isinstance(answer, Ack)
        return answer

    async def trigger(self, agent_id: str, run_context: dict[str, Any] | None = None) -> Ack:
        frame = Trigger(id=self._next_id(), agent_id=agent_id)
        if run_context is not None:
            frame.run_context = run_context
        answer = await self.request(frame)
        assert isinstance(answer, Ack)
        return answer

    async def cancel(self, target: str) -> Ack:
        answer = await self.request(Cancel(id=self._next_id(), target=target))
        assert isinstance(answer, Ack)
        return answer

    async def status(self) -> Status:
        answer = await self.request(StatusRequest(id=self._next_id()))
        assert isinstance(answer, Status)
        return answer

    async def journey_start(
        self, kind: str, *, agent_id: str | None = None, timeout: float = 30.0
    ) -> JourneyMessage:
        """Open an agent-setup journey; the first question."""
        frame = JourneyStart(id=self._next_id(), kind=kind)
        if agent_id is not None:
            frame.agent_id = agent_id
        answer = await self.request(frame, timeout=timeout)
        assert isinstance(answer, JourneyMessage)
        return answer

    async def journey_reply(
        self, session_id: str, message: str, *, timeout: float = 120.0
    ) -> JourneyMessage:
        """Answer the journey's last question; the next one, or the result (``done``)."""
        frame = JourneyReply(id=self._next_id(), session_id=session_id, message=message)
        answer = await self.request(frame, timeout=timeout)
        assert isinstance(answer, JourneyMessage)
        return answer

    async def _chat(
        self,
        frame: HomeRequest | FloatingRequest,
        on_text: Callable[[str], None] | None,
        timeout: float,
    ) -> ChatResult:
        request_id = frame.request_id or uuid.uuid4().hex
        frame.request_id = request_id
        waiter = _ChatWaiter(
            ChatResult(request_id), asyncio.get_running_loop().create_future(), on_text
        )
        self._chats[request_id] = waiter
        await self.send(frame)
        return await asyncio.wait_for(waiter.done, timeout)

    async def home(
        self,
        message: str,
        *,
        history: list[dict[str, str]] | None = None,
        request_id: str | None = None,
        on_text: Callable[[str], None] | None = None,
        timeout: float = 120.0,
    ) -> ChatResult:
        frame = HomeRequest(message=message, request_id=request_id)
        if history is not None:
            frame.conversation_history = [ChatMessage.model_validate(m) for m in history]
        return await self._chat(frame, on_text, timeout)

    async def floating(
        self,
        message: str,
        *,
        scope: dict[str, Any],
        request_id: str | None = None,
        on_text: Callable[[str], None] | None = None,
        timeout: float = 120.0,
    ) -> ChatResult:
        frame = FloatingRequest(message=message, scope=Scope(**scope), request_id=request_id)
        return await self._chat(frame, on_text, timeout)

    async def next_event(
        self,
        kind: type[RunEvent] | tuple[type[RunEvent], ...] = RunComplete,
        *,
        timeout: float = 30.0,
    ) -> RunEvent:
        """The next run event of ``kind`` (others seen on the way are dropped)."""

        async def wait() -> RunEvent:
            while True:
                event = await self.events.get()
                if isinstance(event, kind):
                    return event

        return await asyncio.wait_for(wait(), timeout)

    async def wait_run(self, run_id: str, *, timeout: float = 60.0) -> RunComplete:
        """Wait for the ``run_complete`` of ``run_id``."""

        async def wait() -> RunComplete:
            while True:
                event = await self.events.get()
                if isinstance(event, RunComplete) and event.run_id == run_id:
                    return event

        return await asyncio.wait_for(wait(), timeout)


class _BurstReads:
    """The tool calls answered in one event-loop pass (a burst) read from one SQLite
    read transaction (``SqliteStore.hold_snapshot``).

    Hot path: outside a transaction SQLite takes and drops its locks around every
    read; with 64 calls in flight the burst pays that once. A call alone in its pass
    reads without one (BEGIN and COMMIT would cost more than they save). The snapshot
    ends when the pass does (``call_soon``), so the next burst sees every write."""

    __slots__ = ("_calls", "_store")

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self._calls = 0  # tool calls answered in this event-loop pass

    def add_call(self) -> None:
        """Before answering a call: the first of a pass schedules ``end``; the second
        holds the snapshot that it and the rest of the pass read from."""
        if self._calls == 0:
            asyncio.get_running_loop().call_soon(self.end)
        elif self._calls == 1:
            self._store.hold_snapshot()
        self._calls += 1

    def end(self) -> None:
        """End the pass: release the snapshot if one was held. Idempotent."""
        if self._calls > 1:
            self._store.release_snapshot()
        self._calls = 0


class ReferenceClient(ProtocolClient):
    """A device: serves ``tool_call`` frames from a real SQLite database.

    ``tool_calls`` lists the calls served, oldest first, for tests and the dev
    client: the most recent ``keep_calls`` at least (older ones are dropped in
    batches, so a client that runs for days does not grow without bound)."""

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        db: SqliteStore | str,
        device_id: str = "reference-device",
        agents: list[dict[str, Any]] | None = None,
        capabilities: Capabilities | None = None,
        before_tool_call: Callable[[ToolCall], Awaitable[None]] | None = None,
        keep_calls: int = 10_000,
        **kwargs: Any,
    ) -> None:
        super().__init__(url, token, **kwargs)
        if keep_calls < 1:
            raise ValueError(f"keep_calls must be >= 1, not {keep_calls}")
        self.keep_calls = keep_calls
        from .sqlite_store import SqliteStore

        self.store = db if isinstance(db, SqliteStore) else SqliteStore(db)
        self.device_id = device_id
        self.agents = agents
        self.capabilities = capabilities or Capabilities(idempotency=True)
        self.before_tool_call = before_tool_call
        self.tool_calls: list[ToolCall] = []
        self._burst = _BurstReads(self.store)

    async def close(self) -> None:
        await super().close()
        self._burst.end()  # the loop may not run the scheduled end (it may be closing)

    def kill(self) -> None:
        super().kill()
        self._burst.end()

    def answer_at_once(self, call: ToolCall) -> ToolResult | None:
        if self.before_tool_call is not None:
            return None
        self._record(call)
        return self._answer(call)

    def _record(self, call: ToolCall) -> None:
        calls = self.tool_calls
        calls.append(call)
        if len(calls) >= 2 * self.keep_calls:
            del calls[: -self.keep_calls]

    def hello(self) -> DeviceHello:
        frame = DeviceHello(
            protocol=PROTOCOL_VERSION,
            token=self.token,
            device_id=self.device_id,
            client=self.client_info,
            capabilities=self.capabilities,
        )
        if self.agents is not None:
            frame.agents = self.agents
        if self.last_event_seq is not None:
            frame.last_event_seq = self.last_event_seq
        return frame

    async def handle_tool_call(self, call: ToolCall) -> ToolResult:
        self._record(call)
        if self.before_tool_call is not None:
            await self.before_tool_call(call)
        return self._answer(call)

    def _answer(self, call: ToolCall) -> ToolResult:
        self._burst.add_call()
        if call.action in ("vector_upsert", "vector_search") and not self.capabilities.vector:
            return ToolResult(
                id=call.id,
                ok=False,
                error=ErrorBody(
                    code="bad_request", message=f"{call.action}: this client has no vector store"
                ),
            )
        try:
            payload = self.store.handle(
                call.action,
                call.table or "",
                data=call.data,
                filters=call.filters,
                limit=call.limit,
                idempotency_key=call.idempotency_key if self.capabilities.idempotency else None,
                vector=call.vector,
            )
        except StorageError as exc:
            return ToolResult(
                id=call.id, ok=False, error=ErrorBody(code=exc.code, message=exc.message)
            )
        # The payload comes from our own store: construct without re-validating.
        # (``vector_upsert`` answers ``{ok: true}`` itself.)
        return construct(ToolResult, **{"id": call.id, "ok": True, **payload})

"""Live sessions and ``ClientStore``, the daemon's side of the storage contract.

Rules (protocol.md, architecture.md):

- A session is one authenticated WebSocket: a *device* session (the desktop app,
  which owns storage and answers ``tool_call``) or a *control* session (the CLI).
- Tool calls are futures keyed by request id. At most ``max_in_flight`` are
  outstanding per session; more wait in FIFO order for a slot.
- Each call waits at most ``timeout_s`` for its ``tool_result`` (checked every
  0.1 s by one sweeper per session), then fails with ``ToolCallTimeout``; a late
  answer is dropped. A malformed ``tool_result`` for a pending call fails it at
  once (``fail``) with a ``ToolCallError`` carrying the validation message.
- A call's future never ends with an exception nobody reads (no "Future exception
  was never retrieved" when the peer vanishes while the call is being sent).
- When the session closes, every pending call and every caller still waiting for a
  slot fails at once with ``DeviceOffline``. ``close()`` is idempotent.
- ``ClientStore`` translates results into rows and failures into the
  ``agents.errors.StoreError`` tree, so agents never see a frame. It counts the
  inserts and updates the app confirmed and tells ``on_confirmed`` after each, so
  the run manager can journal a run's running counts as they grow.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from agents.errors import DeviceOffline, ToolCallError, ToolCallTimeout
from agents.store import Row
from protocol.codec import construct, encode_bytes
from protocol.frames import Capabilities, ToolCall, ToolResult, _Frame

__all__ = ["ClientStore", "ControlSession", "DeviceSession", "Session"]

log = logging.getLogger("tether.session")

# Sends one text message, given as UTF-8 JSON bytes (``partial(conn.send, text=True)``).
SendText = Callable[[bytes], Awaitable[None]]
_SWEEP_S = 0.1
_Pending = tuple["asyncio.Future[ToolResult]", float, float, dict[str, Any]]


class Session:
    """One authenticated connection. ``send`` never raises for a closed peer."""

    kind = "session"

    def __init__(self, session_id: str, send_text: SendText) -> None:
        self.session_id = session_id
        self._send_text = send_text
        self.closed = False
        self.close_reason = ""

    async def send(self, frame: _Frame) -> bool:
        """Send one frame; False when the connection is already gone."""
        if self.closed:
            return False
        try:
            await self._send_text(encode_bytes(frame))
        except Exception as exc:  # the connection's own errors: the peer left
            log.debug("send on %s failed: %s", self.session_id, exc)
            return False
        return True

    def close(self, reason: str = "session closed") -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason


class ControlSession(Session):
    """A CLI or tool session: may trigger and watch, never serves tool calls."""

    kind = "control"

    def __init__(self, session_id: str, send_text: SendText, *, subscribe: bool = True) -> None:
        super().__init__(session_id, send_text)
        self.subscribe = subscribe


class DeviceSession(Session):
    """The desktop app's session: owns storage, answers tool calls."""

    kind = "device"

    def __init__(
        self,
        session_id: str,
        send_text: SendText,
        *,
        device_id: str,
        capabilities: Capabilities | None = None,
        timeout_s: float = 30.0,
        max_in_flight: int = 64,
    ) -> None:
        super().__init__(session_id, send_text)
        self.device_id = device_id
        self.capabilities = capabilities or Capabilities()
        # From the hello (daemon.handlers): the app's agent ids, and no ``protocol`` sent.
        self.agent_ids: list[str] | None = None
        self.legacy = False
        self.timeout_s = timeout_s
        self._slots = asyncio.Semaphore(max_in_flight)
        # call id -> (future, deadline, wait in s, the call's fields for messages)
        self._pending: dict[str, _Pending] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._prefix = session_id[:8]

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def store(
        self,
        *,
        run_id: str | None = None,
        run_context: dict[str, Any] | None = None,
        on_confirmed: Callable[[ClientStore], None] | None = None,
    ) -> ClientStore:
        """A ``Store`` over this session, optionally attributed to a run."""
        return ClientStore(self, run_id=run_id, run_context=run_context, on_confirmed=on_confirmed)

    async def call(
        self, frame_fields: dict[str, Any], *, timeout_s: float | None = None
    ) -> ToolResult:
        """Send one ``tool_call`` and wait for its ``tool_result``."""
        if self.closed:
            raise DeviceOffline(f"device {self.device_id} is offline ({self.close_reason})")
        # The hot path of every storage call: no helper coroutines (``async with`` on
        # the semaphore, ``self.send``), one dict entry per call.
        slots = self._slots
        await slots.acquire()
        try:
            if self.closed:
                raise DeviceOffline(f"device {self.device_id} is offline ({self.close_reason})")
            call_id = f"{self._prefix}-{next(self._ids)}"
            loop = asyncio.get_running_loop()
            future: asyncio.Future[ToolResult] = loop.create_future()
            wait = self.timeout_s if timeout_s is None else timeout_s
            self._pending[call_id] = (future, loop.time() + wait, wait, frame_fields)
            if self._sweeper is None:
                self._sweeper = loop.create_task(self._sweep_deadlines())
            try:
                # Built from our own fields: no need to re-validate on the hot path.
                try:
                    await self._send_text(
                        encode_bytes(construct(ToolCall, id=call_id, **frame_fields))
                    )
                except Exception as exc:  # the connection's own errors: the peer left
                    log.debug("send on %s failed: %s", self.session_id, exc)
                    raise DeviceOffline(f"device {self.device_id} went offline") from None
                return await future
            finally:
                self._pending.pop(call_id, None)
                if future.done() and not future.cancelled():
                    future.exception()  # read, so an unawaited failure is not reported
                else:
                    future.cancel()
        finally:
            slots.release()

    async def _sweep_deadlines(self) -> None:
        """Fail calls past their deadline. One timer per session instead of one per
        call keeps the round trip cheap; a deadline is met within ``_SWEEP_S``."""
        loop = asyncio.get_running_loop()
        while not self.closed:
            await asyncio.sleep(min(_SWEEP_S, self.timeout_s / 4))
            now = loop.time()
            for future, deadline, wait, fields in list(self._pending.values()):
                if deadline <= now and not future.done():
                    future.set_exception(
                        ToolCallTimeout(
                            f"the app did not answer {fields.get('action')} "
                            f"{fields.get('table')} within {wait:g} s"
                        )
                    )

    def resolve(self, result: ToolResult) -> bool:
        """Hand a ``tool_result`` to its waiting call; False if nobody waits for it."""
        entry = self._pending.get(result.id)
        if entry is None or entry[0].done():
            return False
        entry[0].set_result(result)
        return True

    def fail(self, call_id: str, message: str) -> bool:
        """Fail a pending call because its ``tool_result`` was malformed; False if
        nobody waits for ``call_id``."""
        entry = self._pending.get(call_id)
        if entry is None or entry[0].done():
            return False
        fields = entry[3]
        entry[0].set_exception(
            ToolCallError(
                "bad_frame",
                f"the app answered {fields.get('action')} {fields.get('table')} with a "
                f"malformed tool_result: {message}",
            )
        )
        return True

    def close(self, reason: str = "session closed") -> None:
        if self.closed:
            return
        super().close(reason)
        message = f"device {self.device_id} disconnected ({reason})"
        for future, *_ in self._pending.values():
            if not future.done():
                # One instance each: a shared one would collect every caller's traceback.
                future.set_exception(DeviceOffline(message))
        if self._sweeper is not None:
            self._sweeper.cancel()
        self._pending.clear()


class ClientStore:
    """The ``agents.store.Store`` interface over a live device session."""

    def __init__(
        self,
        session: DeviceSession,
        *,
        run_id: str | None = None,
        run_context: dict[str, Any] | None = None,
        on_confirmed: Callable[[ClientStore], None] | None = None,
    ) -> None:
        self.session = session
        self.run_id = run_id
        self.run_context = run_context
        self.on_confirmed = on_confirmed
        self.calls = 0
        self.created = 0  # inserts the app confirmed
        self.updated = 0  # updates the app confirmed

    def _confirmed(self, action: str) -> None:
        if action == "insert":
            self.created += 1
        else:
            self.updated += 1
        if self.on_confirmed is not None:
            self.on_confirmed(self)

    async def _call(self, **fields: Any) -> ToolResult:
        if self.run_id is not None:
            fields["run_id"] = self.run_id
            if self.run_context is not None:
                fields["run_context"] = self.run_context
        self.calls += 1
        result = await self.session.call(fields)
        if not result.succeeded:
            body = result.error_body()
            raise ToolCallError(body.code, body.message)
        return result

    async def select(
        self, table: str, filters: dict[str, Any] | None = None, limit: int | None = None
    ) -> list[Row]:
        fields: dict[str, Any] = {"action": "select", "table": table}
        if filters:
            fields["filters"] = filters
        if limit is not None:
            fields["limit"] = limit
        result = await self._call(**fields)
        return list(result.rows or [])

    async def get(self, table: str, id: str) -> Row | None:
        result = await self._call(action="get", table=table, data={"id": id})
        return result.row

    async def insert(
        self, table: str, data: dict[str, Any], *, idempotency_key: str | None = None
    ) -> Row:
        fields: dict[str, Any] = {"action": "insert", "table": table, "data": data}
        if idempotency_key is not None:
            fields["idempotency_key"] = idempotency_key
        result = await self._call(**fields)
        if result.row is None:
            raise ToolCallError(
                "internal", f"the app answered an insert into {table} without a row"
            )
        self._confirmed("insert")
        return result.row

    async def update(self, table: str, id: str, updates: dict[str, Any]) -> Row:
        result = await self._call(action="update", table=table, data={"id": id, "updates": updates})
        if result.row is None:
            raise ToolCallError("not_found", f"no {table} row {id}")
        self._confirmed("update")
        return result.row

    async def delete(self, table: str, id: str) -> None:
        await self._call(action="delete", table=table, data={"id": id})

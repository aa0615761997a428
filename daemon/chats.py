"""The chat registry: one task per chat request in flight, by ``request_id``.

Rules:

- A request without its own ``request_id`` gets ``chat-<uuid>`` (written back into
  the frame, so every frame of its stream carries it). A second request with the id
  of one still running is refused (``bad_frame``).
- The chat runs against the requesting device session, or, for a control session,
  the connected desktop app. With no app connected the answer is still a whole
  stream: ``stream_start`` (after ``floating_domain``, from the scope, for a
  floating request) then ``stream_end`` with the error (the app's chat view opens
  on ``stream_start``).
- Each chat gets the extras the app's capabilities allow (``agents.chat.ChatExtras``):
  core memory when ``coreMemory`` is in ``capabilities.tables``, semantic note
  search when ``daemon.vectors`` gives the session a notes index.
- At most ``max_per_session`` chats of one session talk to the model at once; the
  others wait, in order of arrival. Past ``max_queued`` waiting ones, a new request
  is answered at once with a stream whose ``stream_end.error`` starts with
  ``busy:`` (a flood on one session cannot make thousands of model calls). A chat cancelled while it waits ends at once (``stream_end`` "cancelled").
- :meth:`ChatRegistry.cancel` sets the chat's cancel event (``agents.chat`` lets
  writes already sent finish); a session that closes takes its chats with it, and
  :meth:`ChatRegistry.close` ends every chat at shutdown.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from agents.chat import ChatExtras, ChatService, scope_domain
from agents.tools.memory import CORE_MEMORY
from protocol.errors import ErrorCode, ProtocolError
from protocol.frames import FloatingDomain, FloatingRequest, HomeRequest, StreamEnd, StreamStart

from .session import DeviceSession, Session
from .vectors import NoteVectors

__all__ = ["ChatRegistry"]

NO_APP = "no desktop app is connected to read or change data"


class ChatRegistry:
    """Chats in flight: start, cancel, and end them with their session."""

    def __init__(
        self,
        service: ChatService,
        device: Callable[[], DeviceSession | None],
        *,
        vectors: NoteVectors | None = None,
        max_per_session: int = 4,
        max_queued: int = 64,
    ) -> None:
        self.service = service
        self._device = device
        self.vectors = vectors
        self._chats: dict[str, tuple[asyncio.Task[None], asyncio.Event, Session]] = {}
        self.max_per_session = max_per_session
        self.max_queued = max_queued
        self._slots: dict[Session, asyncio.Semaphore] = {}
        self._waiting: dict[Session, int] = {}

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._chats

    def start(self, session: Session, frame: HomeRequest | FloatingRequest) -> asyncio.Task[None]:
        """Start answering ``frame`` in a task (named ``chat-<request_id>``) and return it."""
        request_id = frame.request_id or f"chat-{uuid.uuid4().hex}"
        frame.request_id = request_id
        if request_id in self._chats:
            raise ProtocolError(
                f"chat request {request_id} is already running", code=ErrorCode.BAD_FRAME
            )
        device = session if isinstance(session, DeviceSession) else self._device()
        cancel = asyncio.Event()
        slot = self._slots.setdefault(session, asyncio.Semaphore(self.max_per_session))
        busy = slot.locked() and self._waiting.get(session, 0) >= self.max_queued

        async def answer() -> None:
            self._waiting[session] = self._waiting.get(session, 0) + 1
            try:
                if device is None or device.closed:
                    if isinstance(frame, FloatingRequest):
                        domain = scope_domain(frame)
                        await session.send(FloatingDomain(request_id=request_id, domain=domain))
                    await session.send(StreamStart(request_id=request_id))
                    await session.send(StreamEnd(request_id=request_id, error=NO_APP))
                    return
                store = device.store()
                extras = ChatExtras(core_memory=CORE_MEMORY in device.capabilities.tables)
                if self.vectors is not None:
                    extras.notes = await self.vectors.index_for(device, store)
                acquired = await _first(slot.acquire(), cancel.wait())
            finally:
                self._waiting[session] -= 1
            if not acquired:  # cancelled while it waited
                await refuse("cancelled")
                return
            try:
                assert device is not None
                await self.service.handle(
                    frame, send=session.send, store=store, cancel=cancel, extras=extras
                )
            finally:
                slot.release()

        async def refuse(error: str) -> None:
            # Still a whole stream: the app's chat view opens on stream_start.
            if isinstance(frame, FloatingRequest):
                domain = scope_domain(frame)
                await session.send(FloatingDomain(request_id=request_id, domain=domain))
            await session.send(StreamStart(request_id=request_id))
            await session.send(StreamEnd(request_id=request_id, error=error))

        async def run() -> None:
            try:
                if busy:
                    await refuse(
                        f"busy: {self.max_per_session} chats are answering and "
                        f"{self.max_queued} are waiting on this session; ask again shortly"
                    )
                    return
                if device is None or device.closed:
                    await refuse(NO_APP)
                    return
                await answer()
            finally:
                self._chats.pop(request_id, None)

        task = asyncio.create_task(run(), name=f"chat-{request_id}")
        self._chats[request_id] = (task, cancel, session)
        return task

    def cancel(self, request_id: str) -> bool:
        """Ask the chat ``request_id`` to stop; False when no such chat runs."""
        chat = self._chats.get(request_id)
        if chat is None:
            return False
        chat[1].set()
        return True

    def session_closed(self, session: Session) -> None:
        """End every chat of ``session`` (its answers have nowhere to go)."""
        self._slots.pop(session, None)
        self._waiting.pop(session, None)
        for request_id, (task, cancel, owner) in list(self._chats.items()):
            if owner is session:
                cancel.set()
                task.cancel()
                self._chats.pop(request_id, None)

    def close(self) -> None:
        """End every chat (shutdown)."""
        for task, cancel, _ in list(self._chats.values()):
            cancel.set()
            task.cancel()


async def _first(acquire: Coroutine[Any, Any, bool], cancelled: Coroutine[Any, Any, bool]) -> bool:
    """True once ``acquire`` got the slot; False when ``cancelled`` came first (the slot
    is then not held)."""
    got = asyncio.ensure_future(acquire)
    stop = asyncio.ensure_future(cancelled)
    try:
        await asyncio.wait({got, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
    if got.done() and not got.cancelled():
        return True  # if the cancel came too, the chat sees it and ends
    got.cancel()
    return False

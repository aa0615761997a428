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
- :meth:`ChatRegistry.cancel` sets the chat's cancel event (``agents.chat`` lets
  writes already sent finish); a session that closes takes its chats with it, and
  :meth:`ChatRegistry.close` ends every chat at shutdown.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from agents.chat import ChatService, scope_domain
from protocol.errors import ErrorCode, ProtocolError
from protocol.frames import FloatingDomain, FloatingRequest, HomeRequest, StreamEnd, StreamStart

from .session import DeviceSession, Session

__all__ = ["ChatRegistry"]

NO_APP = "no desktop app is connected to read or change data"


class ChatRegistry:
    """Chats in flight: start, cancel, and end them with their session."""

    def __init__(self, service: ChatService, device: Callable[[], DeviceSession | None]) -> None:
        self.service = service
        self._device = device
        self._chats: dict[str, tuple[asyncio.Task[None], asyncio.Event, Session]] = {}

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

        async def run() -> None:
            try:
                if device is None or device.closed:
                    if isinstance(frame, FloatingRequest):
                        domain = scope_domain(frame)
                        await session.send(FloatingDomain(request_id=request_id, domain=domain))
                    await session.send(StreamStart(request_id=request_id))
                    await session.send(StreamEnd(request_id=request_id, error=NO_APP))
                    return
                await self.service.handle(
                    frame, send=session.send, store=device.store(), cancel=cancel
                )
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

"""The journey registry: agent-setup conversations in flight, by ``session_id``.

Rules (issue 11):

- Sessions live in memory only; the daemon saves nothing (the app saves the agent
  with ``agents_sync`` when the user applies the result). A finished journey is
  forgotten at once.
- A journey idle for ``idle_s`` (30 minutes) expires: it is dropped on the next
  look at the registry (every start, reply and cancel sweeps), so no timer runs.
  The clock is injected (monotonic seconds), so tests expire one without sleeping.
- One answer at a time per journey: a reply while the model is still answering the
  previous one is ``busy``. At most ``max_sessions`` journeys at once (``busy``).
- ``cancel`` ends a journey: a model call in flight is abandoned.
- Errors are ``ProtocolError``s the server sends as ``error`` frames: an unknown or
  expired session is ``not_found`` (saying which), a bad kind ``bad_request``, a
  model failure or a model that would not finish ``internal`` with words the user
  can act on (the journey stays, so the same answer may be sent again).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from agents.errors import JourneyError, LLMError, RunCancelled
from agents.journey import Journey, JourneyStep
from agents.llm import LLM
from protocol.errors import ErrorCode, ProtocolError
from protocol.frames import JourneyMessage

__all__ = ["IDLE_S", "JourneyRegistry"]

log = logging.getLogger("tether.journeys")

IDLE_S = 30 * 60.0
_EXPIRED_KEPT = 256  # expired ids remembered, to say "expired" rather than "unknown"


@dataclass
class _Session:
    journey: Journey
    last_used: float
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    busy: bool = False


class JourneyRegistry:
    """Journeys in flight (see the module rules)."""

    def __init__(
        self,
        llm_factory: Callable[[], LLM],
        *,
        clock: Callable[[], float] = time.monotonic,
        idle_s: float = IDLE_S,
        max_sessions: int = 32,
    ) -> None:
        self.llm_factory = llm_factory
        self.clock = clock
        self.idle_s = idle_s
        self.max_sessions = max_sessions
        self._sessions: dict[str, _Session] = {}
        self._expired: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, session_id: object) -> bool:
        self.expire()
        return session_id in self._sessions

    def __len__(self) -> int:
        self.expire()
        return len(self._sessions)

    def expire(self) -> list[str]:
        """Drop every journey idle for ``idle_s`` or more; their ids."""
        now = self.clock()
        gone = [
            sid
            for sid, s in self._sessions.items()
            if not s.busy and now - s.last_used >= self.idle_s
        ]
        for sid in gone:
            self._drop(sid)
            self._expired[sid] = None
            while len(self._expired) > _EXPIRED_KEPT:
                self._expired.popitem(last=False)
            log.info("journey %s expired after %.0f idle minutes", sid, self.idle_s / 60)
        return gone

    def start(
        self, kind: str, *, existing_template: str | None = None, request_id: str | None = None
    ) -> JourneyMessage:
        """Open a journey; its first question (no model call)."""
        self.expire()
        if len(self._sessions) >= self.max_sessions:
            raise ProtocolError(
                f"too many agent-setup journeys open ({self.max_sessions}); finish or cancel one",
                code=ErrorCode.BUSY,
            )
        try:
            journey = Journey(kind, existing_template=existing_template)
        except JourneyError as exc:
            raise ProtocolError(str(exc), code=ErrorCode.BAD_REQUEST) from None
        session_id = f"journey-{uuid.uuid4().hex}"
        self._sessions[session_id] = _Session(journey, self.clock())
        return _frame(session_id, journey.start(), request_id)

    async def reply(
        self, session_id: str, message: str, *, request_id: str | None = None
    ) -> JourneyMessage:
        """The user's answer; the next question or, ``done``, the result."""
        session = self._get(session_id)
        if session.busy:
            raise ProtocolError(
                f"journey {session_id} is still answering the previous message",
                code=ErrorCode.BUSY,
            )
        session.busy = True
        try:
            # Off the event loop: without a configured key the factory asks the keyring.
            llm = await asyncio.to_thread(self.llm_factory)
            step = await session.journey.reply(llm, message, cancel=session.cancel)
        except RunCancelled:
            raise ProtocolError(
                f"journey {session_id} was cancelled", code=ErrorCode.CANCELLED
            ) from None
        except (LLMError, JourneyError) as exc:
            raise ProtocolError(str(exc), code=ErrorCode.INTERNAL) from None
        finally:
            session.busy = False
            session.last_used = self.clock()
        if step.done:
            self._drop(session_id)
        return _frame(session_id, step, request_id)

    def cancel(self, session_id: str) -> bool:
        """End the journey ``session_id``; False when there is none."""
        self.expire()
        session = self._sessions.get(session_id)
        if session is None:
            return False
        session.cancel.set()
        self._drop(session_id)
        return True

    def close(self) -> None:
        """End every journey (shutdown)."""
        for session_id in list(self._sessions):
            self.cancel(session_id)

    def _get(self, session_id: str) -> _Session:
        self.expire()
        session = self._sessions.get(session_id)
        if session is not None:
            return session
        if session_id in self._expired:
            raise ProtocolError(
                f"journey {session_id} expired after {self.idle_s / 60:.0f} idle minutes; "
                "start a new one",
                code=ErrorCode.NOT_FOUND,
            )
        raise ProtocolError(
            f"no journey {session_id} (never started, finished or cancelled)",
            code=ErrorCode.NOT_FOUND,
        )

    def _drop(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)


def _frame(session_id: str, step: JourneyStep, request_id: str | None) -> JourneyMessage:
    frame = JourneyMessage(session_id=session_id, message=step.message, done=step.done)
    if request_id is not None:
        frame.id = request_id
    result = step.result
    if result is not None:
        frame.prompt_template = result.prompt_template
        if result.data_types is not None:
            frame.data_types = result.data_types
        if result.file_extensions is not None:
            frame.file_extensions = result.file_extensions
        if result.filter_config is not None:
            frame.filter_config = result.filter_config
    return frame

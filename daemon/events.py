"""Run events: numbered, persisted, broadcast, replayed.

Rules (protocol.md "Run events"):

- ``run_started`` and ``run_complete`` are persisted in the state store, which gives
  each a ``seq`` one higher than any before it, across restarts.
- ``run_progress`` is not persisted and not replayed; it carries the latest
  persisted ``seq`` (it does not advance it), so a client's ``last_event_seq``
  only ever counts events it could be missing.
- A client whose hello carries ``last_event_seq`` gets every ``run_complete`` after
  it, and every ``run_started`` after it that has no ``run_complete`` yet.
- ``retention`` events are kept (trimmed every 100 events). When trimming, the
  oldest ``skipped`` run_completes go first, so the skips of an agent whose device
  stays away cannot push real runs out of the replay window.
- An event the state store cannot persist (a full disk) is still broadcast, from
  memory, with the latest persisted ``seq`` (like ``run_progress``): it cannot be
  replayed, but nobody waiting for it waits forever.
"""

from __future__ import annotations

import logging
from typing import Any

from protocol.frames import RunComplete, RunProgress, RunStarted

from .errors import StateError
from .server import Server
from .session import Session
from .state import StateStore

__all__ = ["EventLog"]

log = logging.getLogger("tether.events")

_PERSISTED = {"run_started": RunStarted, "run_complete": RunComplete}


class EventLog:
    def __init__(self, state: StateStore, server: Server, *, retention: int = 1000) -> None:
        self.state = state
        self.server = server
        self.retention = retention
        self._since_trim = 0
        self._last_seq: int | None = None  # the latest seq persisted, once known

    async def run_started(self, **fields: Any) -> RunStarted:
        frame = RunStarted(seq=self._persist("run_started", fields), **fields)
        await self.server.broadcast(frame)
        return frame

    async def run_complete(self, **fields: Any) -> RunComplete:
        frame = RunComplete(seq=self._persist("run_complete", fields), **fields)
        await self.server.broadcast(frame)
        return frame

    async def run_progress(self, **fields: Any) -> None:
        await self.server.broadcast(RunProgress(seq=self.state.last_seq(), **fields))

    def _persist(self, kind: str, fields: dict[str, Any]) -> int:
        try:
            seq = self.state.append_event(kind, fields, run_id=fields.get("run_id"))
        except StateError as exc:
            log.error("%s of run %s sent but not persisted: %s", kind, fields.get("run_id"), exc)
            return self._latest_seq()
        self._last_seq = seq
        self._since_trim += 1
        if self._since_trim >= 100:
            self._since_trim = 0
            try:
                self.state.trim_events(self.retention)
            except StateError as exc:
                log.error("trimming run events failed: %s", exc)
        return seq

    def _latest_seq(self) -> int:
        if self._last_seq is None:
            try:
                self._last_seq = self.state.last_seq()
            except StateError:
                return 0
        return self._last_seq

    async def replay(self, session: Session, after_seq: int) -> int:
        """Send what the client missed since ``after_seq``; returns how many frames."""
        events = self.state.events_after(after_seq, types=tuple(_PERSISTED))
        completed = {e.run_id for e in events if e.type == "run_complete"}
        sent = 0
        for event in events:
            if event.type == "run_started" and event.run_id in completed:
                continue
            frame = _PERSISTED[event.type](seq=event.seq, **event.payload)
            if not await session.send(frame):
                break
            sent += 1
        if sent:
            log.info(
                "replayed %d run events after seq %d to %s", sent, after_seq, session.session_id
            )
        return sent

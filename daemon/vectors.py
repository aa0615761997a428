"""Semantic note search, the daemon's part: who gets a ``NotesIndex``, and the
background pass that embeds the notes that existed before.

Rules (issue 11):

- A device session gets a :class:`~agents.notes_index.NotesIndex` only when it
  announced ``capabilities.vector`` and ``[llm] embedding_model``
  (``TETHER_EMBEDDING_MODEL``) is set; otherwise nothing is embedded and chat has
  no ``search_notes``. Building the embedder may ask the keyring: off the loop.
- The daemon keeps no note content: which version of each note has its vector is
  a cursor of the state store, under the pseudo-agent ``vectors:<device_id>``, key
  the note id, value ``<model>|<updatedAt>``.
- Backfill: after a device's hello that announces vectors, one background task per
  device reads every note and embeds, in batches, those without a current mark.
  It is idempotent (marked notes are skipped, so a second pass embeds nothing) and
  resumable (a pass cut short, by the app leaving or the embedding service
  failing, continues at the next such hello). Once a pass completes for a device,
  later hellos in this process do not start another one. Failures are logged and
  counted (``failures``), never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from agents.errors import AgentError
from agents.notes_index import NotesIndex

from .llm import LLMFactory
from .session import ClientStore, DeviceSession
from .state import StateStore

__all__ = ["NoteVectors", "StateMarks"]

log = logging.getLogger("tether.vectors")

BATCH = 16


class StateMarks:
    """``agents.notes_index.NoteMarks`` in the state store's cursors."""

    def __init__(self, state: StateStore, device_id: str) -> None:
        self.state = state
        self.owner = f"vectors:{device_id}"

    def version(self, note_id: str) -> str | None:
        return self.state.get_cursor(self.owner, note_id)

    def mark(self, note_id: str, version: str) -> None:
        self.state.set_cursor(self.owner, note_id, version)


class NoteVectors:
    """Builds notes indexes for sessions and runs the backfill (see the module rules)."""

    def __init__(self, state: StateStore, llm: LLMFactory, *, batch: int = BATCH) -> None:
        self.state = state
        self.llm = llm
        self.batch = batch
        self.failures = 0
        self._passes: dict[str, asyncio.Task[None]] = {}
        self._complete: set[str] = set()

    @property
    def model(self) -> str | None:
        return self.llm.config.embedding_model

    async def index_for(
        self, device: DeviceSession, store: ClientStore | None = None
    ) -> NotesIndex | None:
        """The notes index of ``device`` (over ``store``, default a plain one), or None
        when the app has no vector store or no embedding model is configured."""
        model = self.model
        if not device.capabilities.vector or not model:
            return None
        try:
            embedder = await asyncio.to_thread(self.llm.embedder)
        except AgentError as exc:
            log.warning("no embeddings: %s", exc)
            return None
        if embedder is None:
            return None
        store = store or device.store()
        return NotesIndex(
            embedder=embedder,
            vectors=store,
            store=store,
            model=model,
            marks=StateMarks(self.state, device.device_id),
            batch=self.batch,
        )

    def device_online(self, device: DeviceSession) -> asyncio.Task[None] | None:
        """Start the backfill of ``device`` unless done, running, or not wanted."""
        key = device.device_id
        if not device.capabilities.vector or not self.model or key in self._complete:
            return None
        running = self._passes.get(key)
        if running is not None and not running.done():
            return running
        task = asyncio.create_task(self._backfill(device), name=f"vectors-backfill-{key}")
        self._passes[key] = task
        return task

    def backfill_of(self, device_id: str) -> asyncio.Task[None] | None:
        """The latest backfill task of ``device_id`` (running or done), if any."""
        return self._passes.get(device_id)

    async def _backfill(self, device: DeviceSession) -> None:
        index = await self.index_for(device)
        if index is None:
            return
        try:
            notes = await index.store.select("notes", None, None)
            missing = [n for n in notes if not index.is_current(n)]
            log.info(
                "embedding %d of %d notes of %s for semantic search",
                len(missing),
                len(notes),
                device.device_id,
            )
            for start in range(0, len(missing), self.batch):
                if device.closed:
                    return
                done = await index.index_rows(missing[start : start + self.batch])
                if not done:  # the embedding service failed: try again at the next hello
                    self.failures += index.failures
                    return
        except AgentError as exc:
            log.warning("the semantic-search backfill of %s stopped: %s", device.device_id, exc)
            return
        self._complete.add(device.device_id)

    async def close(self) -> None:
        """Stop every backfill (shutdown)."""
        for task in self._passes.values():
            task.cancel()
        for task in self._passes.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._passes.clear()

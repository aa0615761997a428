"""A source of work for the one run pipeline: a folder, a mailbox, a chat service.

Rules:

- A source says what changed since last time (:meth:`Source.changes`), gives the
  full text of one item (:meth:`Source.text`), describes an item for the prompts
  (:meth:`Source.triage_line`, :meth:`Source.header`, :meth:`Source.hints`,
  :meth:`Source.label`), may
  offer read-only tools of its own (:meth:`Source.tools`), and records an item as
  done (:meth:`Source.done`) — which the pipeline calls only after every write the
  item caused was confirmed by the client.
- An :class:`Item` has a stable ``key`` (a file's path, a message's id) and a
  ``fingerprint`` of the version being processed (a file's sha256, a message's
  id): idempotency keys are scoped to ``agent id : fingerprint``, so a re-run after
  a crash sends the same keys and the client creates nothing twice.
- ``changes`` never raises for one bad item: problems that are policy, not failure
  (a file over the size limit, a missing root) are ``notices``; figures for the
  journal go in ``detail``.
- ``text`` raises ``ExtractError`` for an item that cannot be read: the item is
  reported in the run's errors, not recorded, and tried again next run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .tools import Tool

__all__ = ["Changes", "Item", "Source"]


@dataclass(frozen=True)
class Item:
    key: str  # stable: a file's path, a message's id
    fingerprint: str  # the version: a file's sha256, a message's id
    size: int = 0
    modified_ns: int = 0  # Unix ns (a file's mtime, a message's date)
    meta: Any = None  # the source's own record of the item


@dataclass
class Changes:
    items: list[Item]
    notices: list[str] = field(default_factory=list)  # policy: does not lower the status
    failures: list[str] = field(default_factory=list)  # e.g. a root that does not exist
    detail: dict[str, Any] = field(default_factory=dict)
    new: int = 0  # of ``items``: never seen before (the rest changed since last time)
    moved: int = 0  # recorded without processing: content already processed elsewhere
    unchanged: int = 0
    summary: str | None = None  # one line for the progress event


class Source(Protocol):
    noun: str  # "file", "message": how the prompts name one item
    key_name: str  # "path", "id": the key's field in the triage lines
    phase: str  # the progress phase of `changes`: "scan" or "fetch"

    async def changes(self) -> Changes: ...

    async def text(self, item: Item) -> str: ...

    def triage_line(self, item: Item, snippet: str) -> dict[str, Any]:
        """The item's line in the triage prompt (its key under ``key_name``)."""
        ...

    def hints(self, item: Item) -> Sequence[str]:
        """Names (nearest first) the deterministic triage matches to project names."""
        ...

    def header(self, item: Item) -> list[tuple[str, str]]:
        """Labelled lines above the item's text in the processing prompt, first line
        ``(noun, key)``: e.g. ``[("File", path), ("Modified", "2025-03-14T09:00")]``."""
        ...

    def label(self, item: Item) -> str:
        """A short name for progress lines (a file's name, a message's subject)."""
        ...

    def tools(self) -> list[Tool]: ...

    async def done(self, item: Item) -> None: ...

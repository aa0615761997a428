"""The bookkeeping a run may read and write: the daemon's state store, seen from agents.

Rules:

- ``agents`` never imports ``daemon``: the daemon implements :class:`Bookkeeping`
  over its state store, per agent; tests implement it with the same store.
- It holds no user content: file fingerprints (:class:`FileRecord`), the ids of
  processed messages, and cursors (history ids, delta links).
- A source records an item only after the item's writes were confirmed by the
  client, so a crash or cancel resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Bookkeeping", "FileRecord"]


@dataclass(frozen=True, slots=True)
class FileRecord:
    """What the state store remembers of a file that was processed successfully."""

    path: str
    size: int
    mtime_ns: int
    sha256: str


class Bookkeeping(Protocol):
    """The daemon's state store, as much of it as one agent's run may touch."""

    def file_index(self) -> dict[str, FileRecord]: ...

    def record_file(self, rec: FileRecord) -> None: ...

    def forget_files(self, paths: Iterable[str]) -> None: ...

    def processed_ids(self, provider: str, account: str, ids: Collection[str]) -> set[str]: ...

    def mark_processed(self, provider: str, account: str, message_id: str) -> None: ...

    def get_cursor(self, key: str) -> str | None: ...

    def set_cursor(self, key: str, value: str) -> None: ...

"""Fingerprint records of the local-directory agent (kept in the daemon's state store)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FileRecord"]


@dataclass(frozen=True, slots=True)
class FileRecord:
    """What the state store remembers of a file that was processed successfully."""

    path: str
    size: int
    mtime_ns: int
    sha256: str

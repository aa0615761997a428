"""A minimal inotify watcher (Linux, ctypes): run a callback the moment a file in a
folder is closed after reading — the timing an attacker uses to swap a file for a
link between the scan (which hashes the file) and the extraction (which reads it).

Test support only; ``available()`` is False where inotify is missing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import struct
import sys
import threading
from collections.abc import Callable

__all__ = ["IN_CLOSE_NOWRITE", "IN_OPEN", "Watcher", "available"]

IN_OPEN = 0x00000020
IN_CLOSE_NOWRITE = 0x00000010
_EVENT = struct.Struct("iIII")

_libc = (
    ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if sys.platform.startswith("linux")
    else None
)


def available() -> bool:
    return _libc is not None and hasattr(_libc, "inotify_init1")


class Watcher:
    """Calls ``on_event(name, mask)`` from a thread for events in ``folder``."""

    def __init__(self, folder: str, mask: int, on_event: Callable[[str, int], None]) -> None:
        assert _libc is not None
        self.fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        if _libc.inotify_add_watch(self.fd, os.fsencode(folder), mask) < 0:
            raise OSError(ctypes.get_errno(), "inotify_add_watch failed")
        self.on_event = on_event
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.fd], [], [], 0.05)
            if not ready:
                continue
            try:
                buf = os.read(self.fd, 64 * 1024)
            except BlockingIOError:
                continue
            offset = 0
            while offset < len(buf):
                _wd, mask, _cookie, length = _EVENT.unpack_from(buf, offset)
                name = buf[offset + _EVENT.size : offset + _EVENT.size + length].rstrip(b"\0")
                offset += _EVENT.size + length
                self.on_event(os.fsdecode(name), mask)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        os.close(self.fd)

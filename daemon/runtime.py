"""The runtime file (how CLI verbs and the app find a running daemon) and the instance lock.

Rules:

- One daemon per state directory. :class:`InstanceLock` holds an OS lock on
  ``daemon.lock`` (``filelock``: ``flock`` on POSIX, ``msvcrt`` on Windows) for the
  life of the process; the OS drops it when the process dies, however it dies.
  A second :meth:`InstanceLock.acquire` fails at once with
  :class:`~daemon.errors.AlreadyRunning` naming the holder's pid and port.
- The holder writes ``daemon.json`` (pid, port, host, version, protocol,
  started_at) once it listens: 0600, atomic replace. It removes the file on clean
  exit, and only if the pid in it is its own.
- A reader ignores a missing or corrupt file and a stale one (its pid is gone):
  :func:`read_runtime` returns None for all three. It never deletes anything.
- The lock file itself is left in place after release (deleting a lock file that
  another process is about to lock breaks mutual exclusion).
- ``os.kill(pid, 0)`` probes a pid on POSIX. On Windows ``os.kill`` would
  terminate the process, so the probe uses ``OpenProcess`` instead.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from daemon.errors import AlreadyRunning
from daemon.paths import Paths, write_private_file

if TYPE_CHECKING:
    import filelock

__all__ = [
    "InstanceLock",
    "RuntimeInfo",
    "pid_alive",
    "read_runtime",
    "remove_runtime",
    "write_runtime",
]

RUNTIME_WAIT_S = 1.0  # how long a loser waits for the winner's runtime file


@dataclass(frozen=True)
class RuntimeInfo:
    """What ``daemon.json`` says about a running daemon."""

    pid: int
    port: int
    host: str
    version: str
    protocol: int
    started_at: str  # ISO 8601, UTC

    @classmethod
    def for_this_process(cls, *, port: int, host: str, version: str, protocol: int) -> RuntimeInfo:
        """The info for the calling process, started now."""
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        return cls(
            pid=os.getpid(),
            port=port,
            host=host,
            version=version,
            protocol=protocol,
            started_at=now,
        )


def write_runtime(paths: Paths, info: RuntimeInfo) -> None:
    """Write ``daemon.json`` atomically, mode 0600."""
    data = json.dumps(asdict(info), indent=2) + "\n"
    write_private_file(paths.runtime_file, data.encode("utf-8"))


def read_runtime(paths: Paths) -> RuntimeInfo | None:
    """The running daemon's info; None if the file is missing, corrupt or stale."""
    info = _load(paths)
    if info is None or not pid_alive(info.pid):
        return None
    return info


def remove_runtime(paths: Paths) -> bool:
    """Delete ``daemon.json`` if it names this process. Returns True if it did."""
    info = _load(paths)
    if info is None or info.pid != os.getpid():
        return False
    with contextlib.suppress(FileNotFoundError):
        paths.runtime_file.unlink()
    return True


def _load(paths: Paths) -> RuntimeInfo | None:
    try:
        raw: Any = json.loads(paths.runtime_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(raw, dict):
        return None
    try:
        info = RuntimeInfo(
            pid=raw["pid"],
            port=raw["port"],
            host=raw["host"],
            version=raw["version"],
            protocol=raw["protocol"],
            started_at=raw["started_at"],
        )
    except (KeyError, TypeError):
        return None
    ints_ok = all(
        isinstance(v, int) and not isinstance(v, bool) for v in (info.pid, info.port, info.protocol)
    )
    strs_ok = all(isinstance(v, str) for v in (info.host, info.version, info.started_at))
    return info if ints_ok and strs_ok else None


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists (a zombie counts on POSIX)."""
    if pid <= 0:
        return False
    if sys.platform == "win32":
        return _pid_alive_windows(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return False
    return True


if sys.platform == "win32":
    import ctypes
    from ctypes import wintypes

    _PROCESS_QUERY_LIMITED_INFORMATION = 0x1000
    _STILL_ACTIVE = 259
    _ERROR_ACCESS_DENIED = 5

    def _pid_alive_windows(pid: int) -> bool:
        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        kernel32.OpenProcess.restype = wintypes.HANDLE
        handle = kernel32.OpenProcess(_PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
        if not handle:
            return ctypes.get_last_error() == _ERROR_ACCESS_DENIED
        try:
            code = wintypes.DWORD()
            if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
                return True
            return code.value == _STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)

else:

    def _pid_alive_windows(pid: int) -> bool:
        raise NotImplementedError("only on Windows")


class InstanceLock:
    """The single-instance lock on ``paths.lock_file``. Use as a context manager.

    ``runtime_wait_s`` bounds how long a failed :meth:`acquire` waits for the
    holder's runtime file to name its pid and port (the holder writes it only once
    it listens); after that it raises with what it has, possibly ``None``.
    """

    def __init__(self, paths: Paths, *, runtime_wait_s: float = RUNTIME_WAIT_S) -> None:
        self._paths = paths
        self._runtime_wait_s = runtime_wait_s
        self._lock: filelock.BaseFileLock | None = None

    @property
    def held(self) -> bool:
        return self._lock is not None and self._lock.is_locked

    def acquire(self) -> None:
        """Take the lock now or raise :class:`AlreadyRunning`. Idempotent while held."""
        if self.held:
            return
        import filelock

        self._paths.ensure()
        # thread_local=False: release() must work from whichever thread shuts down.
        lock = filelock.FileLock(str(self._paths.lock_file), timeout=0, thread_local=False)
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            pid, port = self._holder()
            raise AlreadyRunning(pid, port) from None
        self._lock = lock

    def release(self) -> None:
        """Drop the lock. Idempotent."""
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release(force=True)

    def _holder(self) -> tuple[int | None, int | None]:
        deadline = time.monotonic() + self._runtime_wait_s
        while True:
            info = read_runtime(self._paths)
            if info is not None:
                return info.pid, info.port
            if time.monotonic() >= deadline:
                return None, None
            time.sleep(0.05)

    def __enter__(self) -> InstanceLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

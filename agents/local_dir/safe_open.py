"""Reading a file under the agent's roots without following a link that appeared later.

Rules (issue "hardening", deliverable 1):

- A path is resolved once (``os.path.realpath``: links inside the roots are fine) and
  must lie under a root (the innermost root holding it). It is then opened one
  component at a time from that root's directory, each with ``O_NOFOLLOW`` (the file
  itself also with ``O_NONBLOCK``): a file or folder swapped for a link between the
  check and the open is refused, never followed.
- The open descriptor is checked with ``fstat``: a regular file, within the size
  limit; everything is read from that descriptor only.
- The run's own reads also pass the scan's ``sha256``: content that differs from what
  the scan hashed (a file swapped for another one) is refused and read again next run.
- Where the OS has no ``dir_fd`` support (Windows), the file is opened by its resolved
  path and the descriptor's identity is compared with the path's own ``lstat``
  (no reparse point, same file), a best effort documented as such.
- Every failure is an :class:`~agents.errors.ExtractError` naming the file.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Sequence

from agents.errors import ExtractError

__all__ = ["read_under_roots"]

_DIR = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_FILE = (
    os.O_RDONLY
    | _NOFOLLOW
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)
_WALK_BY_FD = os.open in os.supports_dir_fd and bool(_NOFOLLOW)


def _norm(path: str) -> str:
    return os.path.normcase(path)


def _containing_root(real: str, roots: Sequence[str]) -> str | None:
    best: str | None = None
    for root in (os.path.realpath(r) for r in roots if r and os.path.isabs(r)):
        prefix = root if root.endswith(os.sep) else root + os.sep
        if _norm(real) == _norm(root) or _norm(real).startswith(_norm(prefix)):
            if best is None or len(root) > len(best):
                best = root
    return best


def resolve_under_roots(path: str, roots: Sequence[str]) -> tuple[str, list[str]]:
    """The root holding ``path`` (resolved) and the components below it."""
    real = os.path.realpath(path)
    root = _containing_root(real, roots)
    if root is None:
        raise ExtractError(f"cannot read {path}: it is outside the agent's folders")
    rel = os.path.relpath(real, root)
    parts = [] if rel == "." else rel.split(os.sep)
    if not parts:
        raise ExtractError(f"cannot read {path}: it is a folder")
    return root, parts


def open_parts(path: str, root: str, parts: Sequence[str]) -> int:
    """Open ``root/parts...`` following no link below ``root``; a descriptor."""
    if not _WALK_BY_FD:
        return _open_checked_by_path(path, os.path.join(root, *parts))
    fd = os.open(root, _DIR)
    try:
        for part in parts[:-1]:
            nxt = os.open(part, _DIR | _NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nxt
        return os.open(parts[-1], _FILE, dir_fd=fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            raise ExtractError(
                f"cannot read {path}: it became a link after it was checked; refused"
            ) from None
        reason = "permission denied" if isinstance(exc, PermissionError) else exc.strerror
        raise ExtractError(f"cannot read {path}: {reason or type(exc).__name__}") from None
    finally:
        os.close(fd)


def _open_checked_by_path(path: str, real: str) -> int:  # pragma: no cover - Windows
    try:
        fd = os.open(real, _FILE)
    except OSError as exc:
        raise ExtractError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    try:
        opened, named = os.fstat(fd), os.lstat(real)
    except OSError as exc:
        os.close(fd)
        raise ExtractError(f"cannot read {path}: {exc.strerror}") from None
    if stat.S_ISLNK(named.st_mode) or (opened.st_dev, opened.st_ino) != (
        named.st_dev,
        named.st_ino,
    ):
        os.close(fd)
        raise ExtractError(f"cannot read {path}: it changed while it was opened; refused")
    return fd


def read_under_roots(
    path: str,
    roots: Sequence[str],
    max_bytes: int,
    *,
    expect_sha256: str | None = None,
    too_big: str | None = None,
) -> bytes:
    """The bytes of ``path``, opened safely under ``roots`` (see the module's rules)."""
    root, parts = resolve_under_roots(path, roots)
    fd = open_parts(path, root, parts)
    with open(fd, "rb", closefd=True) as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ExtractError(f"cannot read {path}: not a regular file")
        if st.st_size > max_bytes:
            raise ExtractError(too_big or f"cannot read {path}: over the size limit")
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ExtractError(too_big or f"cannot read {path}: over the size limit")
    if expect_sha256 is not None and hashlib.sha256(data).hexdigest() != expect_sha256:
        raise ExtractError(
            f"cannot read {path}: its content changed since the scan; it is read again next run"
        )
    return data

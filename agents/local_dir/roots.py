"""Confinement of the read-only file tools to the agent's roots, and their data.

Rules:

- :func:`resolve_within` is the only way in: a relative path is taken relative
  to the first root; the path is resolved (symlinks and ``..``, the way the OS
  follows them) and must be a root or lie inside one, compared against the
  resolved roots. Otherwise :class:`~agents.errors.PathOutsideRoots`.
- Hidden entries (a name starting with ``.`` below the root) are not listed and
  cannot be opened through the tools: they are where secrets live (``.env``,
  ``.ssh``) and the scan ignores them too. Entries that are not files or folders
  (sockets, FIFOs) and symlinks that lead outside the roots are not listed.
- Paths handed back are the resolved paths, so the model passes back something
  that resolves to itself.
- Times are ISO 8601 in UTC (``2024-05-01T09:30:00Z``).
- Every failure is a :class:`~agents.errors.ToolError` whose message goes back to
  the model (an extraction failure keeps its reason). Nothing here writes.
"""

from __future__ import annotations

import functools
import os
import stat
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agents.errors import ExtractError, PathOutsideRoots, ToolError
from agents.local_dir.extract import extract_text
from agents.local_dir.scan import SUPPORTED_EXTENSIONS

__all__ = [
    "get_file_metadata",
    "list_directory",
    "read_file_content",
    "resolve_within",
]

_CASE_INSENSITIVE_FS = os.name == "nt"


def _key(path: str) -> str:
    return os.path.normcase(path) if _CASE_INSENSITIVE_FS else path


def _real_roots(roots: Sequence[str]) -> list[str]:
    return [os.path.realpath(r) for r in roots if r and os.path.isabs(r)]


def _containing_root(real: str, real_roots: Sequence[str]) -> str | None:
    """The innermost root holding ``real`` (nested roots: the most specific wins)."""
    key = _key(real)
    best: str | None = None
    for root in real_roots:
        rkey = _key(root)
        if key == rkey or key.startswith(rkey if rkey.endswith(os.sep) else rkey + os.sep):
            if best is None or len(root) > len(best):
                best = root
    return best


def _is_hidden(real: str, root: str) -> bool:
    rel = os.path.relpath(real, root)
    return rel != "." and any(part.startswith(".") for part in rel.split(os.sep))


def resolve_within(roots: Sequence[str], path: str) -> Path:
    """The resolved ``path``, which must be one of ``roots`` or lie inside one."""
    real_roots = _real_roots(roots)
    if not real_roots:
        raise PathOutsideRoots(f"{path} is outside the agent's folders (the agent has none)")
    if "\0" in path:
        raise PathOutsideRoots(f"{path!r} is not a valid path")
    joined = path if os.path.isabs(path) else os.path.join(real_roots[0], path)
    real = os.path.realpath(joined)
    root = _containing_root(real, real_roots)
    if root is None:
        raise PathOutsideRoots(f"{path} is outside the agent's folders")
    if _is_hidden(real, root):
        raise ToolError(f"{path} is hidden; hidden files and folders are not available")
    return Path(real)


def _iso_utc(mtime: float) -> str:
    return datetime.fromtimestamp(mtime, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _stat(path: Path, shown: str) -> os.stat_result:
    try:
        return path.stat()
    except FileNotFoundError:
        raise ToolError(f"{shown} does not exist") from None
    except PermissionError:
        raise ToolError(f"{shown} cannot be read: permission denied") from None
    except OSError as exc:
        raise ToolError(f"{shown} cannot be read: {exc.strerror or exc}") from None


def list_directory(roots: Sequence[str], path: str, limit: int = 200) -> list[dict[str, Any]]:
    """Entries of a folder: folders first, then files, each by name; at most ``limit``.

    Each entry: ``name``, ``path`` (resolved), ``kind`` (``"dir"`` or ``"file"``),
    ``size`` (bytes; ``None`` for folders) and ``modified``.
    """
    folder = resolve_within(roots, path)
    if not stat.S_ISDIR(_stat(folder, path).st_mode):
        raise ToolError(f"{path} is not a folder")
    real_roots = _real_roots(roots)
    candidates: list[tuple[int, str, os.DirEntry[str]]] = []
    try:
        with os.scandir(folder) as it:
            for entry in it:
                if entry.name.startswith("."):
                    continue
                try:
                    is_dir = entry.is_dir()  # follows symlinks
                    is_file = not is_dir and entry.is_file()
                except OSError:
                    continue
                if is_dir or is_file:
                    candidates.append((0 if is_dir else 1, entry.name, entry))
    except PermissionError:
        raise ToolError(f"{path} cannot be read: permission denied") from None
    except OSError as exc:
        raise ToolError(f"{path} cannot be read: {exc.strerror or exc}") from None
    candidates.sort(key=lambda c: (c[0], c[1].casefold(), c[1]))
    out: list[dict[str, Any]] = []
    for order, name, entry in candidates:
        if len(out) >= max(limit, 0):
            break
        entry_path = entry.path
        if entry.is_symlink():
            entry_path = os.path.realpath(entry.path)
            root = _containing_root(entry_path, real_roots)
            if root is None or _is_hidden(entry_path, root):
                continue  # the tools would refuse it anyway
        try:
            st = entry.stat()
        except OSError:
            continue
        out.append(
            {
                "name": name,
                "path": entry_path,
                "kind": "dir" if order == 0 else "file",
                "size": None if order == 0 else st.st_size,
                "modified": _iso_utc(st.st_mtime),
            }
        )
    return out


def get_file_metadata(roots: Sequence[str], path: str) -> dict[str, Any]:
    """``path`` (resolved), ``kind``, ``size``, ``modified``, ``extension``, ``supported``."""
    real = resolve_within(roots, path)
    st = _stat(real, path)
    is_dir = stat.S_ISDIR(st.st_mode)
    ext = "" if is_dir else real.suffix.lower()
    return {
        "path": str(real),
        "kind": "dir" if is_dir else "file",
        "size": st.st_size,
        "modified": _iso_utc(st.st_mtime),
        "extension": ext,
        "supported": stat.S_ISREG(st.st_mode) and ext in SUPPORTED_EXTENSIONS,
    }


@functools.lru_cache(maxsize=4)
def _cached_text(path: str, size: int, mtime_ns: int, roots: tuple[str, ...]) -> str:
    """Text of a file version: paging through a long PDF parses it once. Opened under
    the roots with no link followed after the check (``safe_open``)."""
    return extract_text(path, roots=roots)


def read_file_content(
    roots: Sequence[str], path: str, offset: int = 0, max_chars: int = 8000
) -> dict[str, Any]:
    """Up to ``max_chars`` characters of the file's text from ``offset``.

    Returns ``path``, ``text``, ``offset``, ``returned_chars``, ``total_chars`` and
    ``truncated`` (more text follows; ask again with ``offset + returned_chars``).
    """
    if offset < 0:
        raise ToolError("offset must be 0 or more")
    if max_chars < 1:
        raise ToolError("max_chars must be 1 or more")
    real = resolve_within(roots, path)
    st = _stat(real, path)
    if stat.S_ISDIR(st.st_mode):
        raise ToolError(f"{path} is a folder; use list_directory")
    try:
        text = _cached_text(str(real), st.st_size, st.st_mtime_ns, tuple(roots))
    except ExtractError as exc:
        raise ToolError(str(exc)) from exc
    piece = text[offset : offset + max_chars]
    return {
        "path": str(real),
        "text": piece,
        "offset": offset,
        "returned_chars": len(piece),
        "total_chars": len(text),
        "truncated": offset + len(piece) < len(text),
    }

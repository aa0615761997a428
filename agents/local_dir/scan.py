"""Scan the local-directory agent's roots and tell which files changed.

Sans-I/O with respect to the daemon: :func:`scan` reads the file system only. The
caller passes in the state store's file index and records what it processes.

Rules:

- Each root must be an absolute path to an existing folder; anything else is an
  error entry and the other roots are still scanned. Roots are walked in the
  given order with ``os.scandir`` on an explicit stack (no recursion limit).
- A file is kept when it is a regular file, its extension is allowed
  (case-insensitive; empty ``extensions`` means :data:`SUPPORTED_EXTENSIONS`), no
  part of its path below the root is hidden (name starting with ``.``) and no
  ``exclude`` pattern matches it. A pattern without ``/`` matches a file or folder
  name anywhere (``*.tmp``, ``node_modules``); a pattern with ``/`` matches the
  path relative to the root, ``/``-separated, where ``*`` and ``?`` stay inside
  one name and ``**`` crosses folders (``drafts/**``, ``**/build/*.json``).
  Excluded and hidden folders are not entered.
- Files over ``max_file_bytes`` are skipped with an error entry and never opened.
- Paths are reported under the root as given (normalised), e.g. the link path for
  a file reached through a symlink.
- Symlinks are resolved. One that resolves outside every root is skipped with an
  error entry naming the link and its target; a broken link or a link loop is an
  error entry too. A link to a folder inside the roots is walked unless that
  folder is already walked (so links to an ancestor cannot loop). A link to a file
  inside the roots is a duplicate, skipped silently, when the scan keeps the
  target under its own path; otherwise (the target is hidden, excluded, ...) the
  file is kept under the link path. Links are handled after the plain walk so the
  outcome does not depend on directory order. Overlapping roots are walked once.
- Change detection: the ``(size, mtime_ns)`` of ``DirEntry.stat`` (the target's for
  a symlink) is compared with the index. Equal: unchanged, the file is not
  opened. Different or not indexed: the file is opened and hashed (sha256, 1 MiB
  blocks); it is *changed* when it is new or its hash differs from the index,
  *touched* when only its stat changed (the caller refreshes the stat).
- ``missing`` lists indexed paths the scan did not keep: deleted, or now out of
  scope (hidden, excluded, another extension, outside the roots). Paths the scan
  could not judge (a root or folder that could not be read, a file with an error
  entry) are never reported missing, so an unplugged drive does not wipe the index.
- Nothing on disk makes :func:`scan` raise: every problem becomes an entry in
  ``errors``. Output lists are sorted.

One module, past 500 lines, on purpose: the walk, the symlink rules and change
detection share one state (the roots, the index, what was seen) and are tested as
one; splitting them would spread the symlink rules.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from agents.books import FileRecord
from agents.run import DEFAULT_MAX_FILE_BYTES

__all__ = [
    "DEFAULT_MAX_FILE_BYTES",
    "SUPPORTED_EXTENSIONS",
    "ScanResult",
    "ScanRules",
    "ScannedFile",
    "format_size",
    "scan",
]

SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(
    {".txt", ".md", ".csv", ".json", ".html", ".htm", ".eml", ".pdf", ".docx"}
)

_HASH_BLOCK = 1024 * 1024
_CASE_INSENSITIVE_FS = os.name == "nt"
# O_NOFOLLOW: we always open a resolved path, so a path that became a link after
# the walk is refused rather than followed. O_NONBLOCK: a path swapped for a FIFO
# must not block the scan (it is rejected by the fstat check right after).
_SCANDIR_FD = os.scandir in os.supports_fd
_DIR_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_DIRECTORY", 0)
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
)
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_BINARY", 0)
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


@dataclass(frozen=True)
class ScanRules:
    """What to scan: absolute roots, allowed extensions, exclude globs, size limit."""

    roots: tuple[str, ...]
    extensions: frozenset[str] = SUPPORTED_EXTENSIONS
    exclude: tuple[str, ...] = ()
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    # Past this many kept files the scan only counts (no file is opened) and
    # ``ScanResult.over_limit`` is set; nothing is reported missing then.
    max_files: int | None = None


@dataclass(slots=True)
class ScannedFile:
    """A file that is new or whose content changed since the index was written."""

    path: str
    root: str
    size: int
    mtime_ns: int
    sha256: str
    is_new: bool

    def record(self) -> FileRecord:
        """The fingerprint to store once the file has been processed."""
        return FileRecord(self.path, self.size, self.mtime_ns, self.sha256)


@dataclass(slots=True)
class ScanResult:
    """The outcome of one scan. ``files_seen`` counts files that passed the filters."""

    changed: list[ScannedFile] = field(default_factory=list)
    touched: list[FileRecord] = field(default_factory=list)
    unchanged: int = 0
    missing: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    bad_roots: list[str] = field(
        default_factory=list
    )  # also in errors: roots that could not be walked
    files_opened: int = 0
    files_seen: int = 0
    over_limit: bool = False


def format_size(n: int) -> str:
    """Human size in binary units with the usual short labels (``20 MB`` = 20 MiB)."""
    value = float(n)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            if unit == "bytes":
                return f"{n} bytes"
            return f"{value:.0f} {unit}" if value >= 10 else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


# --- exclude patterns -------------------------------------------------------------


def _translate_path_glob(pattern: str) -> str:
    """Regex for a ``/`` pattern: ``*``/``?`` stay in one name, ``**`` crosses folders."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                i += 2
                if pattern.startswith("/", i):
                    out.append("(?:.*/)?")
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i + 1
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1  # a "]" right after "[" or "[!" is a literal member
            end = pattern.find("]", j)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                negate = body.startswith("!")
                if negate:
                    body = body[1:]
                body = body.replace("\\", "\\\\").replace("[", "\\[")
                if body.startswith("^"):
                    body = "\\" + body
                out.append(f"[{'^' if negate else ''}{body}]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


class _Excluder:
    """Compiled exclude patterns: name patterns and root-relative path patterns."""

    def __init__(self, patterns: Iterable[str]) -> None:
        flags = re.IGNORECASE if _CASE_INSENSITIVE_FS else 0
        names: list[str] = []
        paths: list[str] = []
        for raw in patterns:
            pattern = raw.strip().replace("\\", "/")
            if pattern.startswith("./"):
                pattern = pattern[2:]
            pattern = pattern.lstrip("/")
            if pattern.endswith("/"):  # "build/" means the folder build
                pattern = pattern.rstrip("/")
            if not pattern:
                continue
            if "/" in pattern:
                paths.append(_translate_path_glob(pattern))
            else:
                names.append(fnmatch.translate(pattern))
        self.name_re = re.compile("|".join(names), flags) if names else None
        self.path_re = re.compile("(?:" + ")|(?:".join(paths) + r")\Z", flags) if paths else None

    def excludes_file(self, rel: str, name: str) -> bool:
        if self.name_re is not None and self.name_re.match(name):
            return True
        return self.path_re is not None and self.path_re.match(rel) is not None

    def excludes_dir(self, rel: str, name: str) -> bool:
        if self.name_re is not None and self.name_re.match(name):
            return True
        if self.path_re is None:
            return False
        # "drafts/**" excludes the folder itself: everything inside would match.
        return self.path_re.match(rel) is not None or self.path_re.match(rel + "/") is not None


# --- the scan ----------------------------------------------------------------------


def _key(path: str) -> str:
    """Comparison key of a real path (case-folded where the file system folds case)."""
    return os.path.normcase(path) if _CASE_INSENSITIVE_FS else path


def _within(real: str, real_roots: list[str]) -> bool:
    key = _key(real)
    for root in real_roots:
        if key == root or key.startswith(root if root.endswith(os.sep) else root + os.sep):
            return True
    return False


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    return exc.strerror or exc.__class__.__name__


class _Scan:
    """State of one scan run (kept on an object so the walk loop stays flat)."""

    def __init__(self, rules: ScanRules, index: Mapping[str, FileRecord]) -> None:
        self.index = index
        self.max_bytes = rules.max_file_bytes
        self.rules_max_files = rules.max_files
        self.excluder = _Excluder(rules.exclude)
        self.result = ScanResult()
        self.errors = self.result.errors
        self.extensions = self._allowed_extensions(rules.extensions)
        self.seen: set[str] = set()  # reported paths of kept files
        # (reported path, real path) of every walked root and folder link: maps a
        # link target back to the path under which the scan would report it
        self.tops: list[tuple[str, str]] = []
        self.linked_files: set[str] = set()  # real-path keys of files kept through a link
        self.visited_dirs: set[str] = set()  # real-path keys of walked folders
        self.unsure: set[str] = set()  # paths with an error entry: never "missing"
        self.unsure_dirs: list[str] = []  # folders not (fully) read: nothing below is missing
        self.real_roots: list[str] = []
        # symlinks met during a walk: (link path, root, rel path, name)
        self.links: list[tuple[str, str, str, str]] = []

    def _allowed_extensions(self, requested: frozenset[str]) -> frozenset[str]:
        if not requested:
            return SUPPORTED_EXTENSIONS
        allowed: set[str] = set()
        for ext in requested:
            norm = ext.strip().lower()
            norm = norm if norm.startswith(".") else "." + norm
            if norm in SUPPORTED_EXTENSIONS:
                allowed.add(norm)
            else:
                self.errors.append(f"extension {ext!r} is not supported; ignored")
        return frozenset(allowed)

    # -- roots

    def bad_root(self, message: str) -> None:
        self.errors.append(message)
        self.result.bad_roots.append(message)

    def open_roots(self, roots: tuple[str, ...]) -> list[tuple[str, str]]:
        """Validate roots; returns (root as reported, real path) of the usable ones."""
        usable: list[tuple[str, str]] = []
        for given in roots:
            if not given or not os.path.isabs(given):
                self.bad_root(f"root is not an absolute path: {given!r}")
                continue
            root = os.path.normpath(given)
            try:
                real = os.path.realpath(root, strict=True)
                st = os.stat(real)
            except FileNotFoundError:
                self.bad_root(f"root not found: {root}")
                self.unsure_dirs.append(root)
                continue
            except OSError as exc:
                self.bad_root(f"cannot open root {root}: {_os_reason(exc)}")
                self.unsure_dirs.append(root)
                continue
            if not stat.S_ISDIR(st.st_mode):
                self.bad_root(f"root is not a directory: {root}")
                self.unsure_dirs.append(root)
                continue
            self.real_roots.append(_key(real))
            usable.append((root, real))
        return usable

    # -- walking

    def walk(self, top: str, root: str, rel_top: str, real_top: str) -> None:
        """Walk ``top`` (reported path) whose real path is ``real_top``.

        The hot loop of a rescan: per file one ``lstat`` (``fstatat`` on the open
        folder where the OS allows it) and a few dict and set operations.
        """
        visited = self.visited_dirs
        top_key = _key(real_top)
        if top_key in visited:
            return
        visited.add(top_key)
        self.tops.append((top, real_top))
        index_get = self.index.get
        extensions = self.extensions
        excluder = self.excluder
        has_excludes = excluder.name_re is not None or excluder.path_re is not None
        max_bytes = self.max_bytes
        max_files = self.rules_max_files
        seen_add = self.seen.add
        linked = self.linked_files  # empty while roots are walked: links come after
        sep = os.sep
        seen_n = unchanged_n = 0
        # (reported folder, real folder, path below the root with "/" separators)
        stack: list[tuple[str, str, str]] = [(top, real_top, rel_top)]
        try:
            while stack:
                dirpath, real_dir, rel_dir = stack.pop()
                prefix = dirpath if dirpath.endswith(sep) else dirpath + sep
                real_prefix = real_dir if real_dir.endswith(sep) else real_dir + sep
                rel_prefix = rel_dir + "/" if rel_dir else ""
                fd = -1
                try:
                    if _SCANDIR_FD:
                        # O_NOFOLLOW: a link swapped in for a folder since it was listed
                        # is refused; entry.stat() then runs fstatat on this folder, which
                        # spares the kernel a path walk per file.
                        fd = os.open(real_dir, _DIR_FLAGS)
                        it = os.scandir(fd)
                    else:
                        it = os.scandir(real_dir)
                    with it:
                        for entry in it:
                            name = entry.name
                            if name[0] == ".":
                                continue
                            if entry.is_file(follow_symlinks=False):
                                dot = name.rfind(".")
                                if dot <= 0:
                                    continue
                                ext = name[dot:]
                                if ext not in extensions and ext.lower() not in extensions:
                                    continue
                                if has_excludes and excluder.excludes_file(rel_prefix + name, name):
                                    continue
                                path = prefix + name
                                if linked and _key(real_prefix + name) in linked:
                                    continue  # already kept through a file link
                                try:
                                    st = entry.stat(follow_symlinks=False)
                                except FileNotFoundError:
                                    continue  # deleted since the listing: missing if indexed
                                except OSError as exc:
                                    self.file_error(path, f"cannot read {path}: {_os_reason(exc)}")
                                    continue
                                seen_n += 1
                                rec = index_get(path)
                                if (
                                    rec is not None
                                    and rec.size == st.st_size
                                    and rec.mtime_ns == st.st_mtime_ns
                                ):
                                    unchanged_n += 1
                                    seen_add(path)
                                elif st.st_size > max_bytes:
                                    self.too_big(path, st.st_size)
                                elif (
                                    max_files is not None
                                    and self.result.files_seen + seen_n > max_files
                                ):
                                    self.result.over_limit = True  # count only from here on
                                else:
                                    self.fingerprint(
                                        path,
                                        root,
                                        real_prefix + name,
                                        st.st_size,
                                        st.st_mtime_ns,
                                        rec,
                                    )
                            elif entry.is_dir(follow_symlinks=False):
                                rel = rel_prefix + name
                                if has_excludes and excluder.excludes_dir(rel, name):
                                    continue
                                sub_real = real_prefix + name
                                sub_key = _key(sub_real)
                                if sub_key in visited:
                                    continue  # an overlapping root already covers it
                                visited.add(sub_key)
                                stack.append((prefix + name, sub_real, rel))
                            elif entry.is_symlink():
                                self.links.append((prefix + name, root, rel_prefix + name, name))
                            # sockets, FIFOs, devices: never content
                except OSError as exc:
                    self.errors.append(f"cannot read folder {dirpath}: {_os_reason(exc)}")
                    self.unsure_dirs.append(dirpath)
                finally:
                    if fd != -1:
                        os.close(fd)
        finally:
            self.result.files_seen += seen_n
            self.result.unchanged += unchanged_n

    def follow_links(self) -> None:
        """Handle the symlinks met so far, in path order, until none are left."""
        while self.links:
            links, self.links = sorted(self.links), []
            for link, root, rel, name in links:
                self.follow_link(link, root, rel, name)

    def follow_link(self, link: str, root: str, rel: str, name: str) -> None:
        excluder = self.excluder
        try:
            real = os.path.realpath(link, strict=True)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                self.file_error(link, f"skipped {link}: symlink loop")
            elif isinstance(exc, FileNotFoundError):
                self.file_error(link, f"skipped {link}: broken symlink to {_readlink(link)}")
            else:
                self.file_error(link, f"skipped {link}: {_os_reason(exc)}")
            return
        if not _within(real, self.real_roots):
            self.file_error(
                link, f"skipped {link}: symlink to {real} is outside the agent's folders"
            )
            return
        try:
            st = os.stat(real)
        except OSError as exc:
            self.file_error(link, f"cannot read {link}: {_os_reason(exc)}")
            return
        if stat.S_ISDIR(st.st_mode):
            if not excluder.excludes_dir(rel, name):
                self.walk(link, root, rel, real)
            return
        if not stat.S_ISREG(st.st_mode):
            return
        dot = name.rfind(".")
        if dot <= 0 or name[dot:].lower() not in self.extensions:
            return
        if excluder.excludes_file(rel, name):
            return
        real_key = _key(real)
        if real_key in self.linked_files or self.kept_as(real) is not None:
            return  # the target itself is scanned: a duplicate
        self.linked_files.add(real_key)
        self.result.files_seen += 1
        rec = self.index.get(link)
        if rec is not None and rec.size == st.st_size and rec.mtime_ns == st.st_mtime_ns:
            self.result.unchanged += 1
            self.seen.add(link)
        elif st.st_size > self.max_bytes:
            self.too_big(link, st.st_size)
        else:
            self.fingerprint(link, root, real, st.st_size, st.st_mtime_ns, rec)

    def kept_as(self, real: str) -> str | None:
        """The reported path under which the file at ``real`` was kept, if it was."""
        key = _key(real)
        for shown, top_real in self.tops:
            top_key = _key(top_real)
            if key.startswith(top_key if top_key.endswith(os.sep) else top_key + os.sep):
                candidate = os.path.join(shown, real[len(top_real) :].lstrip(os.sep))
                if candidate in self.seen:
                    return candidate
        return None

    # -- per file

    def file_error(self, path: str, message: str) -> None:
        self.errors.append(message)
        self.unsure.add(path)

    def too_big(self, path: str, size: int) -> None:
        self.file_error(
            path,
            f"skipped {path}: {format_size(size)} is over the {format_size(self.max_bytes)} limit",
        )

    def fingerprint(
        self,
        path: str,
        root: str,
        real: str,
        size: int,
        mtime_ns: int,
        rec: FileRecord | None,
    ) -> None:
        """Hash a file whose stat differs from the index (or that is not indexed)."""
        try:
            fd = os.open(real, _OPEN_FLAGS)
        except FileNotFoundError:
            return  # deleted since the listing
        except OSError as exc:
            self.file_error(path, f"cannot read {path}: {_os_reason(exc)}")
            return
        self.result.files_opened += 1
        try:
            with open(fd, "rb", buffering=0, closefd=True) as fh:
                if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                    return  # replaced by something that is not a file since the listing
                digest = hashlib.sha256()
                buf = bytearray(_HASH_BLOCK)
                view = memoryview(buf)
                while n := fh.readinto(buf):
                    digest.update(view[:n])
                sha = digest.hexdigest()
        except OSError as exc:
            self.file_error(path, f"cannot read {path}: {_os_reason(exc)}")
            return
        self.seen.add(path)
        if rec is None:
            self.result.changed.append(ScannedFile(path, root, size, mtime_ns, sha, True))
        elif rec.sha256 != sha:
            self.result.changed.append(ScannedFile(path, root, size, mtime_ns, sha, False))
        else:
            self.result.touched.append(FileRecord(path, size, mtime_ns, sha))

    # -- the end

    def finish(self) -> ScanResult:
        result = self.result
        seen = self.seen
        unsure = self.unsure
        # Every kept path is reported once, so when as many kept paths were found in
        # the index as it holds, nothing is missing: skip the pass over the index.
        hits = result.unchanged + len(result.touched) + sum(not f.is_new for f in result.changed)
        if max_files_exceeded := (
            self.rules_max_files is not None and result.files_seen > self.rules_max_files
        ):
            result.over_limit = True
        if hits != len(self.index) and not max_files_exceeded:
            prefixes = tuple(d if d.endswith(os.sep) else d + os.sep for d in self.unsure_dirs)
            result.missing = sorted(
                p
                for p in self.index.keys() - seen
                if p not in unsure and not (prefixes and p.startswith(prefixes))
            )
        result.changed.sort(key=lambda f: f.path)
        result.touched.sort(key=lambda r: r.path)
        result.errors.sort()
        return result


def _readlink(link: str) -> str:
    try:
        return os.readlink(link)
    except OSError:
        return "?"


def scan(rules: ScanRules, index: Mapping[str, FileRecord]) -> ScanResult:
    """Walk ``rules.roots`` and compare what is there with ``index`` (path → record).

    Opens only files whose ``(size, mtime_ns)`` differ from the index. Never raises
    for anything found on disk; problems are entries in ``ScanResult.errors``.
    """
    run = _Scan(rules, index)
    for root, real in run.open_roots(rules.roots):
        run.walk(root, root, "", real)
    run.follow_links()
    return run.finish()

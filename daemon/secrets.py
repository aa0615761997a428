"""Secrets (API keys, OAuth tokens): the OS keyring, or a private file when there is none.

Rules:

- Entries live in the keyring under service ``tether``, user name = the key
  (``"gmail:refresh_token"``, ...). The backend is looked up on first use, not at
  import (``keyring`` scans its plugins, which takes time the CLI does not have).
- When keyring has no usable backend (its ``fail`` backend on headless Linux, or
  the ``null`` backend, which would silently drop writes) or an operation raises
  a ``KeyringError``, the store switches to ``<config>/secrets.json`` (mode 0600,
  atomic replace, a cross-process lock around read-modify-write) for the rest of
  the process, and logs once per file: "no OS keyring available; storing secrets
  in <file> (mode 0600)". ``daemon doctor`` reports it via :meth:`is_fallback`.
- With a keyring, :meth:`SecretStore.get` also looks in the file (which may hold
  values stored while there was no keyring); :meth:`set` removes the key from it.
- Windows caps one credential at 2560 bytes, which keyring stores as UTF-16: 1280
  characters. A value over 1000 UTF-16 units (2000 bytes) is stored in chunks
  ``key#1 .. key#n`` with ``key`` holding the count (``tether-chunks:<n>``); the
  chunks are written before the count, stale chunks are deleted after. A chunked
  value with a missing chunk reads as None (sign in again), with a warning.
- ``#`` is reserved in keys. Every value read or written is registered with the
  log redaction filter. This module never logs a value.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon.errors import ConfigError
from daemon.logs import register_secret
from daemon.paths import Paths, write_private_file

if TYPE_CHECKING:
    from keyring.backend import KeyringBackend

__all__ = ["SERVICE", "SecretStore"]

SERVICE = "tether"
CHUNK_UNITS = 1000  # UTF-16 code units per keyring entry: 2000 bytes < Windows' 2560
COUNT_PREFIX = "tether-chunks:"
FILE_VERSION = 1
FILE_LOCK_TIMEOUT_S = 10.0

log = logging.getLogger("tether.secrets")

_warned_files: set[Path] = set()
_warned_lock = threading.Lock()


class SecretStore:
    """Get, set and delete named secrets; see the module rules."""

    def __init__(self, paths: Paths) -> None:
        self._paths = paths
        self._lock = threading.RLock()
        self._backend: KeyringBackend | None = None
        self._fallback: bool | None = None  # None: not decided yet

    # -- public API --------------------------------------------------------

    def get(self, key: str) -> str | None:
        """The value stored under ``key``, or None."""
        _check_key(key)
        with self._lock:
            backend = self._keyring()
            if backend is not None:
                from keyring.errors import KeyringError

                try:
                    value = self._keyring_get(backend, key)
                except KeyringError as exc:
                    self._use_fallback(f"keyring read failed: {type(exc).__name__}")
                else:
                    if value is not None:
                        register_secret(value)
                        return value
            value = self._file_entries(strict=self._fallback is True).get(key)
            if value is not None:
                register_secret(value)
            return value

    def set(self, key: str, value: str) -> None:
        """Store ``value`` under ``key``, replacing any previous value."""
        _check_key(key)
        if not isinstance(value, str):
            raise TypeError("secret values are str")
        register_secret(value)
        with self._lock:
            backend = self._keyring()
            if backend is not None:
                from keyring.errors import KeyringError

                try:
                    self._keyring_set(backend, key, value)
                except KeyringError as exc:
                    self._use_fallback(f"keyring write failed: {type(exc).__name__}")
                else:
                    self._forget_in_file(key)
                    return
            self._file_update(key, value)

    def delete(self, key: str) -> None:
        """Remove ``key`` from the keyring and the file. Idempotent."""
        _check_key(key)
        with self._lock:
            backend = self._keyring()
            if backend is not None:
                from keyring.errors import KeyringError

                try:
                    self._keyring_delete(backend, key)
                except KeyringError as exc:
                    self._use_fallback(f"keyring delete failed: {type(exc).__name__}")
            if self._fallback:
                self._file_update(key, None)
            else:
                self._forget_in_file(key)

    def backend_name(self) -> str:
        """The keyring backend's class (``keyring.backends.macOS.Keyring``), or the file."""
        with self._lock:
            backend = self._keyring()
            if backend is None:
                return f"file {self._paths.secrets_file}"
            cls = type(backend)
            return f"{cls.__module__}.{cls.__qualname__}"

    def is_fallback(self) -> bool:
        """True when secrets go to the 0600 file instead of an OS keyring."""
        with self._lock:
            return self._keyring() is None

    # -- keyring -----------------------------------------------------------

    def _keyring(self) -> KeyringBackend | None:
        if self._fallback is None:
            try:
                import keyring
                from keyring.backends import fail, null

                backend = keyring.get_keyring()
            except Exception as exc:  # a broken plugin must not stop the daemon
                self._use_fallback(f"keyring failed to load: {type(exc).__name__}: {exc}")
            else:
                if isinstance(backend, fail.Keyring | null.Keyring):
                    self._use_fallback(f"keyring backend is {type(backend).__module__}")
                else:
                    self._backend = backend
                    self._fallback = False
        return None if self._fallback else self._backend

    def _use_fallback(self, reason: str) -> None:
        self._fallback = True
        self._backend = None
        path = self._paths.secrets_file
        with _warned_lock:
            if path in _warned_files:
                return
            _warned_files.add(path)
        log.warning(
            "no OS keyring available; storing secrets in %s (mode 0600)",
            path,
            extra={"reason": reason},
        )

    @staticmethod
    def _keyring_get(backend: KeyringBackend, key: str) -> str | None:
        head = backend.get_password(SERVICE, key)
        count = _chunk_count(head)
        if count is None:
            return head
        parts: list[str] = []
        for index in range(1, count + 1):
            part = backend.get_password(SERVICE, f"{key}#{index}")
            if part is None:
                log.warning(
                    "secret %s is incomplete in the keyring (part %d of %d missing); "
                    "store it again",
                    key,
                    index,
                    count,
                )
                return None
            parts.append(part)
        return "".join(parts)

    @staticmethod
    def _keyring_set(backend: KeyringBackend, key: str, value: str) -> None:
        old_count = _chunk_count(backend.get_password(SERVICE, key)) or 0
        if _utf16_units(value) <= CHUNK_UNITS and not value.startswith(COUNT_PREFIX):
            backend.set_password(SERVICE, key, value)
            new_count = 0
        else:
            chunks = _split(value, CHUNK_UNITS)
            for index, chunk in enumerate(chunks, start=1):
                backend.set_password(SERVICE, f"{key}#{index}", chunk)
            backend.set_password(SERVICE, key, f"{COUNT_PREFIX}{len(chunks)}")
            new_count = len(chunks)
        for index in range(new_count + 1, old_count + 1):
            _delete_entry(backend, f"{key}#{index}")

    @staticmethod
    def _keyring_delete(backend: KeyringBackend, key: str) -> None:
        count = _chunk_count(backend.get_password(SERVICE, key)) or 0
        _delete_entry(backend, key)
        for index in range(1, count + 1):
            _delete_entry(backend, f"{key}#{index}")

    # -- fallback file -----------------------------------------------------

    def _file_load(self) -> dict[str, str]:
        path = self._paths.secrets_file
        try:
            st = path.stat()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read secrets file: {exc}") from None
        if os.name == "posix" and st.st_mode & 0o077:
            log.warning(
                "secrets file %s had mode %03o; restricting it to 0600",
                path,
                stat.S_IMODE(st.st_mode),
            )
            path.chmod(0o600)
        try:
            raw: Any = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            # ValueError covers bad JSON and bad UTF-8; neither message quotes content.
            raise ConfigError(
                f"{path}: secrets file is unreadable or corrupt ({type(exc).__name__}); "
                "move it aside and sign in again"
            ) from None
        entries = raw.get("secrets") if isinstance(raw, dict) else None
        if not isinstance(entries, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in entries.items()
        ):
            raise ConfigError(
                f"{path}: secrets file has an unexpected shape; move it aside and sign in again"
            )
        return entries

    def _file_entries(self, *, strict: bool) -> dict[str, str]:
        """The file's entries. Not strict (a keyring is in use): problems are warnings."""
        if strict:
            return self._file_load()
        try:
            return self._file_load()
        except ConfigError as exc:
            log.warning("ignoring the fallback secrets file: %s", exc)
            return {}

    def _forget_in_file(self, key: str) -> None:
        """Drop a key from the file after the keyring took it; problems are warnings."""
        try:
            self._file_update(key, None)
        except (ConfigError, OSError) as exc:
            log.warning("could not remove %s from the fallback secrets file: %s", key, exc)

    def _file_update(self, key: str, value: str | None) -> None:
        """Set (or with None, remove) one entry under the cross-process file lock."""
        path = self._paths.secrets_file
        if value is None and not path.exists():
            return
        import filelock

        lock = filelock.FileLock(
            str(path.with_name(path.name + ".lock")), timeout=FILE_LOCK_TIMEOUT_S
        )
        try:
            with lock:
                entries = self._file_load()
                if value is None:
                    if key not in entries:
                        return
                    del entries[key]
                else:
                    entries[key] = value
                payload = {"version": FILE_VERSION, "secrets": entries}
                write_private_file(path, (json.dumps(payload, indent=2) + "\n").encode("utf-8"))
        except filelock.Timeout:
            raise ConfigError(
                f"{path}: secrets file is locked by another process; try again"
            ) from None


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not key or "#" in key:
        raise ValueError(f"invalid secret key {key!r}: a non-empty str without '#'")


def _chunk_count(head: str | None) -> int | None:
    """The chunk count if ``head`` is a count entry, else None."""
    if head is None or not head.startswith(COUNT_PREFIX):
        return None
    digits = head[len(COUNT_PREFIX) :]
    return int(digits) if digits.isdigit() else None


def _delete_entry(backend: KeyringBackend, name: str) -> None:
    from keyring.errors import PasswordDeleteError

    try:
        backend.delete_password(SERVICE, name)
    except PasswordDeleteError:
        pass  # not there: fine, delete is idempotent


def _utf16_units(text: str) -> int:
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def _split(value: str, max_units: int) -> list[str]:
    chunks: list[str] = []
    start = units = 0
    for index, ch in enumerate(value):
        width = 2 if ord(ch) > 0xFFFF else 1
        if units + width > max_units:
            chunks.append(value[start:index])
            start, units = index, 0
        units += width
    chunks.append(value[start:])
    return chunks

"""Keyring backends for tests: the OS keyring is never touched.

- ``MemoryKeyring``: a real ``keyring`` backend that keeps passwords in a dict
  (``entries``), counts ``lookups``, respects Windows' 2560-byte limit on a value,
  and raises ``fail_with`` from every call when it is set.
- ``HangingKeyring``: a ``MemoryKeyring`` whose reads block until ``release`` is set
  (a keyring stuck on D-Bus).

Both have priority -1, so ``keyring.get_keyring()`` never picks them by itself.
"""

from __future__ import annotations

import threading

from keyring.backend import KeyringBackend
from keyring.errors import PasswordDeleteError

__all__ = ["HangingKeyring", "MemoryKeyring"]


class MemoryKeyring(KeyringBackend):
    """An in-memory keyring backend that can be told to fail."""

    priority = -1  # never chosen by keyring's automatic choice

    def __init__(
        self,
        entries: dict[tuple[str, str], str] | None = None,
        *,
        fail_with: Exception | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.entries: dict[tuple[str, str], str] = dict(entries or {})
        self.fail_with = fail_with
        self.lookups = 0

    def get_password(self, service: str, username: str) -> str | None:
        self.lookups += 1
        if self.fail_with:
            raise self.fail_with
        return self.entries.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        if self.fail_with:
            raise self.fail_with
        # the Windows limit a secret store must respect: 2560 bytes of UTF-16
        assert len(password.encode("utf-16-le")) <= 2560
        self.entries[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        if self.fail_with:
            raise self.fail_with
        if self.entries.pop((service, username), None) is None:
            raise PasswordDeleteError(username)


class HangingKeyring(MemoryKeyring):
    """Every read waits for ``release`` (set it at the end of the test)."""

    def __init__(self, entries: dict[tuple[str, str], str] | None = None) -> None:
        super().__init__(entries)
        self.release = threading.Event()
        self.waiting = threading.Event()

    def get_password(self, service: str, username: str) -> str | None:
        self.waiting.set()
        self.release.wait()
        return super().get_password(service, username)

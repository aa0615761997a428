"""daemon.secrets: the OS keyring (an in-memory backend here), or a private file.

The keyring tests install ``tests.support.keyrings.MemoryKeyring``; the OS keyring
is never touched.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from keyring.backends import fail
from keyring.errors import KeyringLocked

from daemon.errors import ConfigError
from daemon.paths import Paths
from daemon.secrets import CHUNK_UNITS, COUNT_PREFIX, SERVICE, SecretStore
from tests.support.keyrings import MemoryKeyring

POSIX = os.name == "posix"
posix_only = pytest.mark.skipif(not POSIX, reason="POSIX file modes")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@posix_only
def test_secrets_fall_back_to_private_file(
    paths: Paths, use_keyring: Any, caplog: pytest.LogCaptureFixture
) -> None:
    use_keyring(fail.Keyring())  # type: ignore[no-untyped-call]
    store = SecretStore(paths)
    with caplog.at_level(logging.WARNING, logger="tether"):
        assert store.is_fallback()
        assert store.backend_name() == f"file {paths.secrets_file}"
        assert store.get("gmail:refresh_token") is None
        store.set("gmail:refresh_token", "1//refresh-value")
        store.set("llm:api_key", "sk-abcdefgh12345678")
        SecretStore(paths).set("other", "value-from-a-second-store")
    assert caplog.text.count("no OS keyring available; storing secrets in") == 1
    assert f"{paths.secrets_file} (mode 0600)" in caplog.text
    assert mode(paths.secrets_file) == 0o600
    assert SecretStore(paths).get("gmail:refresh_token") == "1//refresh-value"
    store.delete("gmail:refresh_token")
    store.delete("gmail:refresh_token")  # idempotent
    assert store.get("gmail:refresh_token") is None
    assert store.get("llm:api_key") == "sk-abcdefgh12345678"
    paths.secrets_file.chmod(0o644)
    assert store.get("other") == "value-from-a-second-store"
    assert mode(paths.secrets_file) == 0o600
    paths.secrets_file.write_text("{broken")
    with pytest.raises(ConfigError, match="corrupt"):
        store.get("other")


def test_secrets_chunked_in_keyring(paths: Paths, use_keyring: Any) -> None:
    backend = MemoryKeyring()
    use_keyring(backend)
    store = SecretStore(paths)
    assert not store.is_fallback()
    assert store.backend_name().endswith("MemoryKeyring")
    big = "".join(chr(ord("a") + i % 26) for i in range(4500)) + "\U0001f600" * 700
    store.set("outlook:tokens", big)
    count = int(backend.entries[(SERVICE, "outlook:tokens")].removeprefix(COUNT_PREFIX))
    assert count >= 6
    chunks = [backend.entries[(SERVICE, f"outlook:tokens#{i}")] for i in range(1, count + 1)]
    assert all(len(chunk.encode("utf-16-le")) <= 2 * CHUNK_UNITS for chunk in chunks)
    assert SecretStore(paths).get("outlook:tokens") == big
    store.set("outlook:tokens", "short now")  # stale chunks are removed
    assert set(backend.entries) == {(SERVICE, "outlook:tokens")}
    assert store.get("outlook:tokens") == "short now"
    store.set("tricky", COUNT_PREFIX + "2")  # a value that looks like a count entry
    assert store.get("tricky") == COUNT_PREFIX + "2"
    store.set("outlook:tokens", big)
    del backend.entries[(SERVICE, "outlook:tokens#2")]
    assert store.get("outlook:tokens") is None  # incomplete: treated as missing
    store.delete("outlook:tokens")
    store.delete("tricky")
    assert backend.entries == {}
    assert not paths.secrets_file.exists()
    with pytest.raises(ValueError):
        store.set("bad#key", "x")


def test_keyring_error_switches_to_file(paths: Paths, use_keyring: Any) -> None:
    use_keyring(MemoryKeyring(fail_with=KeyringLocked("locked")))
    store = SecretStore(paths)
    assert not store.is_fallback()
    store.set("teams:refresh_token", "refresh-after-lock")
    assert store.is_fallback()
    assert json.loads(paths.secrets_file.read_text())["secrets"] == {
        "teams:refresh_token": "refresh-after-lock"
    }
    assert store.get("teams:refresh_token") == "refresh-after-lock"


def test_keyring_takes_over_from_the_fallback_file(paths: Paths, use_keyring: Any) -> None:
    use_keyring(fail.Keyring())  # type: ignore[no-untyped-call]
    SecretStore(paths).set("gmail:refresh_token", "stored-while-headless")
    SecretStore(paths).set("llm:api_key", "also-stored-while-headless")
    backend = MemoryKeyring()
    use_keyring(backend)
    store = SecretStore(paths)
    assert store.get("gmail:refresh_token") == "stored-while-headless"  # read-through
    store.set("gmail:refresh_token", "now-in-the-keyring")
    assert backend.entries == {(SERVICE, "gmail:refresh_token"): "now-in-the-keyring"}
    left = json.loads(paths.secrets_file.read_text())["secrets"]
    assert left == {"llm:api_key": "also-stored-while-headless"}  # no stale copy on disk
    store.delete("llm:api_key")
    assert json.loads(paths.secrets_file.read_text())["secrets"] == {}

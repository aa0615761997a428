"""Fixtures of the daemon's unit tests: a home under tmp_path, and a test keyring.

Nothing in ``daemon`` reads the environment except ``daemon.config`` (given a
mapping), so these fixtures set no variable: ``paths`` is ``Paths.under(home)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import keyring
import pytest
from keyring.backend import KeyringBackend

from daemon.paths import Paths


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def paths(home: Path) -> Paths:
    return Paths.under(home)


@pytest.fixture
def use_keyring() -> Iterator[Callable[[KeyringBackend], None]]:
    """``use_keyring(backend)`` installs a keyring backend for the rest of the test."""
    previous = keyring.get_keyring()
    yield keyring.set_keyring
    keyring.set_keyring(previous)

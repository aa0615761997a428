"""daemon.pairing: the pairing token file, the TETHER_TOKEN override, rotation."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from daemon.config import load_settings
from daemon.logs import ROOT_LOGGER, setup_logging
from daemon.pairing import read_or_create_token, rotate_token, token_source
from daemon.paths import Paths

POSIX = os.name == "posix"
posix_only = pytest.mark.skipif(not POSIX, reason="POSIX file modes")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_token_created_private_and_reused(paths: Paths) -> None:
    token = read_or_create_token(paths)
    assert len(token) >= 43
    assert paths.token_file.read_text() == token
    if POSIX:
        assert mode(paths.token_file) == 0o600
    assert read_or_create_token(paths) == token
    assert token_source(paths) == str(paths.token_file)
    assert [p.name for p in paths.config_dir.iterdir()] == ["token"]  # no temp files left


def test_tether_token_override_wins(paths: Paths) -> None:
    override = load_settings({"TETHER_TOKEN": " from-the-desktop-app-0123456789 "}).token
    assert read_or_create_token(paths, override) == "from-the-desktop-app-0123456789"
    assert not paths.token_file.exists()
    assert token_source(paths, override) == "TETHER_TOKEN"
    assert read_or_create_token(paths, "  ") != "  "  # blank: the token file
    assert paths.token_file.exists()


def test_rotate_token_changes_it(paths: Paths) -> None:
    first = read_or_create_token(paths)
    second = rotate_token(paths)
    assert second != first
    assert read_or_create_token(paths) == second
    if POSIX:
        assert mode(paths.token_file) == 0o600


@posix_only
def test_loose_token_permissions_fixed(paths: Paths, caplog: pytest.LogCaptureFixture) -> None:
    token = read_or_create_token(paths)
    paths.token_file.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="tether"):
        assert read_or_create_token(paths) == token
    assert mode(paths.token_file) == 0o600
    assert "had mode 644" in caplog.text


def test_empty_token_file_replaced(paths: Paths) -> None:
    paths.ensure()
    paths.token_file.write_text("  \n")
    token = read_or_create_token(paths)
    assert token and paths.token_file.read_text() == token


@pytest.mark.parametrize("source", ["file", "TETHER_TOKEN"])
def test_the_token_never_appears_in_the_log(
    paths: Paths, source: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """daemon run registers nothing itself: reading the token is what masks it."""
    override = "app-given-token-0123456789abcdef" if source == "TETHER_TOKEN" else None
    logger = logging.getLogger(ROOT_LOGGER)
    saved = (list(logger.handlers), logger.level, logger.propagate)
    setup_logging(paths.ensure(), "DEBUG", stderr=True)
    try:
        token = read_or_create_token(paths, override)
        logging.getLogger("tether.test").warning("a client echoed %s back", token)
        rotated = rotate_token(paths)
        logging.getLogger("tether.test").warning("rotated to %s", rotated)
    finally:
        for handler in logger.handlers[:]:
            if handler not in saved[0]:
                logger.removeHandler(handler)
                handler.close()
        logger.setLevel(saved[1])
        logger.propagate = saved[2]
    written = paths.log_file.read_text(encoding="utf-8") + capsys.readouterr().err
    assert "a client echoed *** back" in written and "rotated to ***" in written
    assert token not in written and rotated not in written

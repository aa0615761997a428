"""daemon.paths: the three directories, their files, and private files."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from daemon.config import paths_from_env
from daemon.paths import Paths

POSIX = os.name == "posix"
posix_only = pytest.mark.skipif(not POSIX, reason="POSIX file modes")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_paths_under_tether_home(home: Path) -> None:
    p = paths_from_env({"TETHER_HOME": f" {home} "})
    assert p == Paths.under(home)
    assert (p.config_dir, p.state_dir, p.log_dir) == (home / "config", home / "state", home / "log")
    assert p.config_toml == home / "config" / "config.toml"
    assert p.agents_toml == home / "config" / "agents.toml"
    assert p.token_file == home / "config" / "token"
    assert p.secrets_file == home / "config" / "secrets.json"
    assert p.state_db == home / "state" / "state.db"
    assert p.runtime_file == home / "state" / "daemon.json"
    assert p.lock_file == home / "state" / "daemon.lock"
    assert p.log_file == home / "log" / "daemon.log"
    assert not p.config_dir.exists()  # nothing is created until ensure()
    p.ensure().ensure()
    for d in (p.config_dir, p.state_dir, p.log_dir):
        assert d.is_dir()
        if POSIX:
            assert mode(d) == 0o700


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG layout is Linux's")
def test_paths_follow_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "st"))
    p = Paths.default()
    assert p.config_dir == tmp_path / "cfg" / "tether"
    assert p.state_dir == tmp_path / "st" / "tether"
    assert p.log_dir.is_relative_to(tmp_path / "st" / "tether")
    assert paths_from_env({}) == p
    assert paths_from_env({"TETHER_HOME": "  "}) == p  # empty counts as unset
    other = paths_from_env({"TETHER_HOME": str(tmp_path / "h")})
    assert other.config_dir == tmp_path / "h" / "config"

"""Where the daemon keeps its files.

Rules:

- Three directories, from platformdirs with app name ``tether`` and no app author:
  config (``config.toml``, ``agents.toml``, the pairing ``token``, the fallback
  ``secrets.json``), state (``state.db``, the runtime file ``daemon.json``, the
  instance lock ``daemon.lock``) and log (``daemon.log``). ``XDG_*`` variables move
  them on Linux, exactly as platformdirs defines.
- :meth:`Paths.under` puts the three directories under one home folder:
  ``home/config``, ``home/state`` and ``home/log``. Tests and portable installs use
  it; ``daemon.config.paths_from_env`` chooses between the two (this module reads
  no environment variable of ours).
- Paths are absolute. Nothing is created until :meth:`Paths.ensure`, which makes
  the directories with mode 0700 (owner only; a no-op for the mode on Windows).
- Private files (token, runtime file, fallback secrets) are written with
  :func:`write_private_file`: a fresh 0600 temp file in the same directory, fsync,
  then ``os.replace`` — readers see the old content or the new, never a half.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

__all__ = ["APP_NAME", "Paths", "write_private_file"]

APP_NAME = "tether"
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


@dataclass(frozen=True)
class Paths:
    """The daemon's three directories and the files inside them."""

    config_dir: Path
    state_dir: Path
    log_dir: Path

    @classmethod
    def default(cls) -> Paths:
        """The paths for this user from platformdirs (which reads ``XDG_*`` itself)."""
        import platformdirs  # a small import, but only needed here

        return cls(
            config_dir=Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)).absolute(),
            state_dir=Path(platformdirs.user_state_dir(APP_NAME, appauthor=False)).absolute(),
            log_dir=Path(platformdirs.user_log_dir(APP_NAME, appauthor=False)).absolute(),
        )

    @classmethod
    def under(cls, home: Path) -> Paths:
        """All three directories as subfolders of ``home`` (a portable install, tests)."""
        base = home.expanduser().absolute()
        return cls(config_dir=base / "config", state_dir=base / "state", log_dir=base / "log")

    @property
    def config_toml(self) -> Path:
        return self.config_dir / "config.toml"

    @property
    def agents_toml(self) -> Path:
        return self.config_dir / "agents.toml"

    @property
    def token_file(self) -> Path:
        return self.config_dir / "token"

    @property
    def secrets_file(self) -> Path:
        return self.config_dir / "secrets.json"

    @property
    def state_db(self) -> Path:
        return self.state_dir / "state.db"

    @property
    def runtime_file(self) -> Path:
        return self.state_dir / "daemon.json"

    @property
    def lock_file(self) -> Path:
        return self.state_dir / "daemon.lock"

    @property
    def log_file(self) -> Path:
        return self.log_dir / "daemon.log"

    def protected(self) -> tuple[str, ...]:
        """Tether's own folders: no agent may read them (tokens, state, logs)."""
        return tuple(str(p) for p in (self.config_dir, self.state_dir, self.log_dir))

    def ensure(self) -> Paths:
        """Create the three directories (owner-only, 0700) if missing; return self."""
        for directory in (self.config_dir, self.state_dir, self.log_dir):
            _ensure_private_dir(directory)
        return self


def _ensure_private_dir(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    if os.name == "posix":
        # mkdir's mode is filtered by the umask and ignored for existing dirs.
        directory.chmod(PRIVATE_DIR_MODE)


def write_private_file(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``, readable by the owner only (0600).

    The parent directory is created (0700) if missing. The temp file is created
    with ``O_CREAT | O_EXCL`` and mode 0600, so the content is never visible with
    looser permissions, not even for an instant.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, PRIVATE_FILE_MODE)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise

"""The pairing token: the shared secret a client presents in its hello.

Rules:

- An ``override`` (``TETHER_TOKEN``, read by ``daemon.config`` into
  ``Settings.token``; the desktop app passes it when it launches the daemon) is
  the token; the token file is then neither read nor made.
- Otherwise the token lives in ``<config>/token``: one line, no newline, mode 0600.
  It is made on first use from ``secrets.token_urlsafe(32)`` (256 bits), written
  to a 0600 temp file and published atomically, so a reader never sees an empty
  or partial file. When two processes race to make it, the first file wins and
  both return the same token.
- A token file readable by group or others is tightened to 0600 with a warning.
  An empty token file is replaced by a new token, with a warning.
- :func:`rotate_token` replaces the file's token (the daemon then closes sessions
  paired with the old one). It does not affect an override.
- Every token this module returns is registered with the log redaction filter:
  this is the one place the pairing token is registered (``daemon run`` relies on
  it).
- Comparing a presented token is the server's job: use ``hmac.compare_digest``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
from pathlib import Path

from daemon.config import TOKEN_VAR
from daemon.errors import ConfigError
from daemon.logs import register_secret
from daemon.paths import Paths, write_private_file

__all__ = ["read_or_create_token", "rotate_token", "token_source"]

TOKEN_BYTES = 32

log = logging.getLogger("tether.pairing")


def read_or_create_token(paths: Paths, override: str | None = None) -> str:
    """The pairing token: ``override`` (``TETHER_TOKEN``), else the token file (made if missing)."""
    override = (override or "").strip()
    if override:
        register_secret(override)
        return override
    path = paths.token_file
    token = _read_token_file(path)
    if token is None:
        token = _create_token_file(path)
    register_secret(token)
    return token


def rotate_token(paths: Paths) -> str:
    """Replace the token file's token with a new one and return it."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    register_secret(token)
    try:
        write_private_file(paths.token_file, token.encode("ascii"))
    except OSError as exc:
        raise ConfigError(f"{paths.token_file}: cannot write pairing token: {exc}") from None
    log.info("pairing token rotated", extra={"token_file": str(paths.token_file)})
    return token


def token_source(paths: Paths, override: str | None = None) -> str:
    """Where the token comes from: ``"TETHER_TOKEN"`` (an override) or the token file's path."""
    if (override or "").strip():
        return TOKEN_VAR
    return str(paths.token_file)


def _read_token_file(path: Path) -> str | None:
    """The token in ``path``, or None when the file is missing or empty."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read pairing token: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{path}: pairing token path is not a regular file")
    if os.name == "posix" and st.st_mode & 0o077:
        log.warning(
            "pairing token file %s had mode %03o; restricting it to 0600",
            path,
            stat.S_IMODE(st.st_mode),
        )
        try:
            path.chmod(0o600)
        except OSError as exc:
            raise ConfigError(
                f"{path}: pairing token file is readable by others and cannot be fixed: {exc}"
            ) from None
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read pairing token: {exc}") from None
    if not token:
        log.warning("pairing token file %s is empty; making a new token", path)
        return None
    return token


def _create_token_file(path: Path) -> str:
    token = secrets.token_urlsafe(TOKEN_BYTES)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.new")
    try:
        write_private_file(tmp, token.encode("ascii"))
        try:
            # link() publishes only if no file exists yet: a concurrent creator's
            # token is never overwritten, so both processes agree on one token.
            os.link(tmp, path)
        except FileExistsError:
            existing = _read_token_file(path)
            if existing is not None:
                return existing
            os.replace(tmp, path)  # the existing file was empty
        except OSError:
            os.replace(tmp, path)  # no hard links on this filesystem
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write pairing token: {exc}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    log.info("created pairing token file %s", path)
    return token

"""What several verbs share: paths, config, and a control session to the daemon.

Rules:

- :func:`_environment` is the CLI's one read of the process environment; the
  mapping goes to ``daemon.config``, the only module that looks up ``TETHER_*``
  variables in it. Verbs use :func:`load_settings` / :func:`load`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from daemon.config import Settings, paths_from_env, token_from_env
from daemon.config import load_settings as _load_settings
from daemon.errors import DaemonError, NotRunning
from daemon.paths import Paths
from daemon.runtime import RuntimeInfo, read_runtime

if TYPE_CHECKING:  # built on first use (daemon.config_tables): status needs none
    from daemon.config import Config

__all__ = [
    "control_client",
    "endpoint",
    "env_token",
    "fetch_status",
    "load",
    "load_paths",
    "load_settings",
    "token_refused",
]


def _environment() -> Mapping[str, str]:
    return os.environ


def _read_token(paths: Paths) -> str | None:
    """The token file's token; the CLI never creates one (the daemon does)."""
    try:
        return paths.token_file.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def load_settings(overrides: dict[str, Any] | None = None) -> Settings:
    """Paths, config (flags in ``overrides``) and the ``TETHER_TOKEN`` override."""
    return _load_settings(_environment(), overrides=overrides)


def load_paths() -> Paths:
    """The paths alone (``TETHER_HOME`` or platformdirs), for verbs that need no config."""
    return paths_from_env(_environment())


def env_token() -> str | None:
    """``TETHER_TOKEN``, or None (then the token file)."""
    return token_from_env(_environment())


def environment() -> Mapping[str, str]:
    """The process environment, for what is not a ``TETHER_*`` setting (``XDG_*``)."""
    return _environment()


def load(overrides: dict[str, Any] | None = None) -> tuple[Paths, Config]:
    settings = load_settings(overrides)
    return settings.paths, settings.config


def endpoint(paths: Paths) -> tuple[str, str | None, RuntimeInfo]:
    """The running daemon's URL, the token to show it and its runtime file, or
    ``NotRunning``. Shared by :func:`control_client` and ``oneshot.ask``."""
    info = read_runtime(paths)
    if info is None:
        raise NotRunning("the tether daemon is not running (start it with: daemon run)")
    host = "127.0.0.1" if info.host in ("0.0.0.0", "::", "") else info.host
    if ":" in host:
        host = f"[{host}]"
    token = token_from_env(_environment()) or _read_token(paths)
    return f"ws://{host}:{info.port}/", token, info


def token_refused(info: RuntimeInfo) -> DaemonError:
    """The daemon answered 401/4401 to the CLI's token: say what to do."""
    return DaemonError(
        f"the daemon is running (pid {info.pid}, port {info.port}) but refused the "
        "CLI's pairing token; if the app started it with TETHER_TOKEN, set the same "
        "TETHER_TOKEN here"
    )


async def control_client(paths: Paths, *, subscribe: bool = False) -> Any:
    """A connected control session to the running daemon (``ProtocolClient``)."""
    from protocol.errors import CloseCode
    from protocol.reference import HandshakeRefused, ProtocolClient

    url, token, info = endpoint(paths)
    client = ProtocolClient(
        url,
        token,
        client_name="tether-cli",
        subscribe=subscribe,
        authorization_header=token is not None,  # never refused by the pending-hello cap
    )
    try:
        await client.connect()
    except HandshakeRefused as exc:
        if exc.code == CloseCode.UNAUTHORIZED or exc.status == 401:
            raise token_refused(info) from None
        raise NotRunning(f"the daemon at port {info.port} refused the CLI: {exc}") from None
    except OSError as exc:
        raise NotRunning(f"cannot reach the daemon at port {info.port}: {exc}") from None
    return client


async def fetch_status(paths: Paths) -> Any:
    """The running daemon's ``status`` frame through the full client (``Status``)."""
    client = await control_client(paths)
    try:
        return await client.status()
    finally:
        await client.close()

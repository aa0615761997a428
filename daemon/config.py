"""The daemon's settings: ``config.toml``, then ``TETHER_*`` variables, then flags.

Rules:

- The models of the tables (:class:`Config` and its sections) are in
  ``daemon.config_tables``, loaded on first use: reading the paths and the token
  (``daemon status``) imports neither pydantic nor the models.
- This is the only module that reads ``TETHER_*`` variables. It does not touch
  ``os.environ`` either: the CLI reads the environment once and passes the mapping
  to :func:`load_settings`; every other module receives values (a :class:`Settings`,
  a :class:`Config`, a token), never the environment.
- ``TETHER_HOME`` is read first, alone, by :func:`paths_from_env`: the paths must
  be known before ``config.toml`` can be found. Set and non-empty, the three
  directories become ``$TETHER_HOME/config``, ``/state`` and ``/log``
  (``Paths.under``); otherwise they come from platformdirs (``Paths.default``).
- ``TETHER_TOKEN``, set and non-empty, is the pairing token (the desktop app passes
  it when it launches the daemon): :attr:`Settings.token`, handed to
  ``daemon.pairing``, which then neither reads nor makes the token file.
- Every setting has a default; a missing ``config.toml`` is not an error.
- Later sources win: file < environment < ``overrides`` (command-line flags).
- Unknown keys are errors (``extra="forbid"``), so a typo such as ``prot = 1`` is
  reported with the key named instead of being silently ignored.
- Every error is a :class:`~daemon.errors.ConfigError` that names where the bad
  value came from (the file and key, or the variable) and what was wrong. Secret
  values (``llm.api_key``) are never echoed in an error.
- The daemon binds a loopback address unless ``allow_remote = true``.
- An empty environment variable counts as unset (``TETHER_PORT=`` in a shell).
- ``llm.api_key`` (from the file or ``TETHER_API_KEY``) is registered with the log
  redaction filter as it is read. The keyring's key is resolved later, by
  ``daemon.llm``, only when no key is configured here.

Environment variables: ``TETHER_HOME`` (paths), ``TETHER_TOKEN`` (pairing),
``TETHER_MODEL``, ``TETHER_API_BASE``, ``TETHER_API_KEY``, ``TETHER_EMBEDDING_MODEL``
(the ``llm`` table), ``TETHER_PORT``, ``TETHER_HOST``, ``TETHER_TOOL_CALL_TIMEOUT_S``,
``TETHER_LOG_LEVEL``; the ``cloud`` table's ``TETHER_GMAIL_API_BASE`` ...
``TETHER_MICROSOFT_CLIENT_ID`` (see :data:`ENV_VARS`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon.errors import ConfigError
from daemon.paths import Paths
from protocol.lazy import lazy_names

if TYPE_CHECKING:
    from daemon.config_tables import CloudConfig, Config, LLMConfig, RunsConfig, is_loopback_host

__all__ = [
    "ENV_VARS",
    "HOME_VAR",
    "TOKEN_VAR",
    "CloudConfig",
    "Config",
    "LLMConfig",
    "RunsConfig",
    "Settings",
    "is_loopback_host",
    "load_config",
    "load_settings",
    "paths_from_env",
    "token_from_env",
]

HOME_VAR = "TETHER_HOME"
TOKEN_VAR = "TETHER_TOKEN"

# variable -> dotted key in Config
ENV_VARS: dict[str, str] = {
    "TETHER_MODEL": "llm.model",
    "TETHER_API_BASE": "llm.api_base",
    "TETHER_API_KEY": "llm.api_key",
    "TETHER_EMBEDDING_MODEL": "llm.embedding_model",
    "TETHER_PORT": "port",
    "TETHER_HOST": "host",
    "TETHER_TOOL_CALL_TIMEOUT_S": "tool_call_timeout_s",
    "TETHER_LOG_LEVEL": "log_level",
    "TETHER_GMAIL_API_BASE": "cloud.gmail_api_base",
    "TETHER_GRAPH_API_BASE": "cloud.graph_api_base",
    "TETHER_GOOGLE_AUTH_URL": "cloud.google_auth_url",
    "TETHER_GOOGLE_TOKEN_URL": "cloud.google_token_url",
    "TETHER_MICROSOFT_AUTH_URL": "cloud.microsoft_auth_url",
    "TETHER_MICROSOFT_TOKEN_URL": "cloud.microsoft_token_url",
    "TETHER_GOOGLE_CLIENT_ID": "cloud.google_client_id",
    "TETHER_GOOGLE_CLIENT_SECRET": "cloud.google_client_secret",
    "TETHER_MICROSOFT_CLIENT_ID": "cloud.microsoft_client_id",
}

_SECRET_KEYS = frozenset({"llm.api_key", "cloud.google_client_secret"})


@dataclass(frozen=True)
class Settings:
    """What the environment and ``config.toml`` decide for one process, read once."""

    paths: Paths
    config: Config
    token: str | None = field(default=None, repr=False)
    """``TETHER_TOKEN``; None: the token file (``daemon.pairing``)."""


def load_settings(
    env: Mapping[str, str], *, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Paths (``TETHER_HOME``), then :func:`load_config`, then the pairing token override."""
    paths = paths_from_env(env)
    config = load_config(paths, env, overrides=overrides)
    return Settings(paths=paths, config=config, token=token_from_env(env))


def paths_from_env(env: Mapping[str, str]) -> Paths:
    """``Paths.under($TETHER_HOME)`` when it is set and non-empty, else ``Paths.default()``."""
    home = env.get(HOME_VAR, "").strip()
    return Paths.under(Path(home)) if home else Paths.default()


def token_from_env(env: Mapping[str, str]) -> str | None:
    """``TETHER_TOKEN`` stripped, or None when unset or empty."""
    return env.get(TOKEN_VAR, "").strip() or None


def load_config(
    paths: Paths,
    env: Mapping[str, str],
    *,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Read ``config.toml`` (if present), apply ``TETHER_*`` variables, then ``overrides``.

    ``overrides`` maps dotted keys (``"port"``, ``"llm.model"``) to values; the CLI
    passes its flags here. Raises :class:`ConfigError` naming the source of a bad value.
    """
    path = paths.config_toml
    data = _read_toml(path)
    origin: dict[str, str] = {}  # dotted key -> where its value came from
    for key in _dotted_keys(data):
        origin[key] = f"{path}: key '{key}'"
    for var, key in ENV_VARS.items():
        raw = env.get(var, "")
        if raw.strip():
            _set_dotted(data, key, raw.strip())
            origin[key] = f"environment variable {var}"
    for key, value in (overrides or {}).items():
        _set_dotted(data, key, value)
        origin[key] = f"option {key}"
    from pydantic import ValidationError

    from daemon.config_tables import Config
    from daemon.logs import register_secret

    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(err, origin, path) for err in exc.errors()]
    else:
        register_secret(config.llm.api_key)
        return config
    # Raised outside the except block: the pydantic error (which may quote a
    # secret value) must not be chained into tracebacks.
    raise ConfigError(problems[0] if len(problems) == 1 else "; ".join(problems))


def _read_toml(path: os.PathLike[str]) -> dict[str, Any]:
    import tomllib

    try:
        with open(path, "rb") as fp:
            return tomllib.load(fp)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _dotted_keys(data: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys: list[str] = []
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        keys.append(dotted)
        if isinstance(value, Mapping):
            keys.extend(_dotted_keys(value, dotted + "."))
    return keys


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[leaf] = value


def _describe(err: Mapping[str, Any], origin: Mapping[str, str], path: os.PathLike[str]) -> str:
    loc = [str(part) for part in err["loc"]]
    key = ".".join(loc)
    message = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        where = origin.get(key, f"{path}: key '{key}'")
        parent = ".".join(loc[:-1])
        return f"{where}: unknown key{_suggest(parent, loc[-1])}"
    if not loc:  # a model-level rule; today only the loopback rule, which is about host
        key = "host"
    where = origin.get(key) or _nearest_origin(key, origin) or f"{path}: key '{key}'"
    if key in _SECRET_KEYS:
        return f"{where}: {message}"
    value = err.get("input")
    shown = f" (got {value!r})" if isinstance(value, str | int | float | bool) and loc else ""
    return f"{where}: {message}{shown}"


def _nearest_origin(key: str, origin: Mapping[str, str]) -> str | None:
    # For list items ("allowed_origins.0") the origin is recorded on the list.
    parts = key.split(".")
    while parts:
        parts.pop()
        found = origin.get(".".join(parts))
        if found:
            return found
    return None


def _suggest(section: str, name: str) -> str:
    import difflib

    from pydantic import BaseModel

    from daemon.config_tables import Config

    model: type[BaseModel] = Config
    for part in filter(None, section.split(".")):
        field = model.model_fields.get(part)
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    close = difflib.get_close_matches(name, list(model.model_fields), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


# The models live in daemon.config_tables, built on first use (see its docstring).
__getattr__ = lazy_names(
    __name__,
    {
        name: "daemon.config_tables"
        for name in ("CloudConfig", "Config", "LLMConfig", "RunsConfig", "is_loopback_host")
    },
)

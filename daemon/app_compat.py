"""The desktop app as it ships: its agent rows, normalized before validation.

Rules (protocol.md "Compatibility with the shipping app", issue 11):

- Only agents **from the client** (``device_hello.agents``, ``agents_sync``) pass
  here; ``agents.toml`` stays strict (an unknown key there is an error).
- Unknown keys are dropped and named in the answer (``ignored_keys: [{id, keys}]``),
  nested ones with a dotted path (``filter_config.color``). The app's own
  bookkeeping (``user_id``, ``created_at``, ``updated_at``) is simply ignored.
- ``oauth_token_encrypted`` is dropped unread: it is never validated, stored or
  logged (only its key name goes back to the client, in ``ignored_keys``). The
  daemon keeps provider tokens in the OS keyring (``credentials_put``).
- ``provider`` stands for ``kind`` (``gmail``, ``outlook``, ``teams``, and
  ``local`` / ``local_directory`` for a local agent). With both, they must agree.
- ``null`` for a setting that cannot be null means "not set" (the default), as a
  nullable database column of the app sends it. An integer ``id`` is taken as its
  decimal text.
- ``last_run_at`` (ISO 8601, or a number of milliseconds since the epoch as the
  app's storage keeps times) is the app's own record of the agent's last run. It is
  kept per agent (:func:`record_app_runs`), and :func:`effective_last_run_at` is
  the newer of it and the run journal's, so an agent the app ran recently is not
  overdue. A time in the future counts as now; an unreadable one is ignored (and
  listed in ``ignored_keys``).
- Log lines name agents and counts, never values (a row may carry secrets).
"""

from __future__ import annotations

import logging
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from protocol.agent_config import GmailAgent, LocalDirectoryAgent, OutlookAgent, TeamsAgent
from protocol.frames import IgnoredKeys

from .state import StateStore

__all__ = [
    "APP_LAST_RUN_CURSOR",
    "KIND_BY_PROVIDER",
    "ClientAgents",
    "effective_last_run_at",
    "normalize_client_agents",
    "parse_app_time",
    "record_app_runs",
]

log = logging.getLogger("tether.agents")

KIND_BY_PROVIDER = {
    "gmail": "gmail",
    "outlook": "outlook",
    "teams": "teams",
    "local": "local_directory",
    "local_directory": "local_directory",
}
_MODELS: dict[str, type[BaseModel]] = {
    "local_directory": LocalDirectoryAgent,
    "gmail": GmailAgent,
    "outlook": OutlookAgent,
    "teams": TeamsAgent,
}
# Keys the daemon reads itself instead of passing them to the model.
_CONSUMED = ("provider", "last_run_at")
# Keys dropped unread whatever the row is (never validated, stored or logged).
_DROPPED_UNREAD = ("oauth_token_encrypted",)
APP_LAST_RUN_CURSOR = "app_last_run_at"


@dataclass
class ClientAgents:
    """A client's batch after normalization: what to validate, and what was set aside."""

    raws: list[Any] = field(default_factory=list)
    ignored: list[IgnoredKeys] = field(default_factory=list)
    # agent id -> the app's last_run_at (UTC), for the agents that carried one
    last_run_at: dict[str, datetime] = field(default_factory=dict)


def parse_app_time(value: Any) -> datetime | None:
    """An app timestamp: ISO 8601 (naive = UTC) or milliseconds since the epoch."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            return None
        try:
            return datetime.fromtimestamp(value / 1000, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str) and value.strip():
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return None


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model of a field typed ``Model`` or ``Model | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(models) == 1:
            return _model_of(models[0])
    return None


def _nullable(annotation: Any) -> bool:
    if annotation is Any or annotation is None or annotation is type(None):
        return True
    return typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(
        None
    ) in typing.get_args(annotation)


def _strip(
    model: type[BaseModel], data: Mapping[str, Any], prefix: str
) -> tuple[dict[str, Any], list[str]]:
    """``data`` without the keys ``model`` does not know (recursing into sub-models)."""
    by_key: dict[str, FieldInfo] = {}
    for name, info in model.model_fields.items():
        by_key[name] = info
        if info.alias:
            by_key[info.alias] = info
    kept: dict[str, Any] = {}
    ignored: list[str] = []
    for key, value in data.items():
        found = by_key.get(key) if isinstance(key, str) else None
        if found is None:
            ignored.append(f"{prefix}{key}")
            continue
        if value is None and not _nullable(found.annotation):
            continue  # a null column: the default applies
        sub = _model_of(found.annotation)
        if sub is not None and isinstance(value, Mapping):
            value, more = _strip(sub, value, f"{prefix}{key}.")
            ignored += more
        kept[key] = value
    return kept, ignored


def _normalize(raw: Mapping[str, Any]) -> tuple[Any, list[str], Any]:
    """One agent row: (what to validate, ignored keys, the app's raw last_run_at)."""
    data = dict(raw)
    if isinstance(data.get("id"), int) and not isinstance(data.get("id"), bool):
        data["id"] = str(data["id"])  # an app's integer key
    provider = data.get("provider")
    kind = data.get("kind")
    if kind is None and isinstance(provider, str):
        kind = KIND_BY_PROVIDER.get(provider.strip().lower(), provider)
    elif isinstance(provider, str) and isinstance(kind, str):
        if KIND_BY_PROVIDER.get(provider.strip().lower()) != kind:
            # A tag no kind has: validation rejects the row and shows both.
            kind = f"{kind} (but provider {provider!r})"
    app_last_run = data.get("last_run_at")
    for key in _CONSUMED:
        data.pop(key, None)
    if kind is not None:
        data["kind"] = kind
    model = _MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:  # an unknown kind: validation says which kinds exist
        dropped = [key for key in _DROPPED_UNREAD if data.pop(key, None) is not None]
        return data, dropped, app_last_run
    kept, ignored = _strip(model, data, "")
    return kept, ignored, app_last_run


def normalize_client_agents(raws: Sequence[Any]) -> ClientAgents:
    """Apply the module's rules to a client's batch (rows that are not objects pass
    through unchanged; validation rejects them)."""
    out = ClientAgents()
    for raw in raws:
        if not isinstance(raw, Mapping):
            out.raws.append(raw)
            continue
        data, ignored, app_last_run = _normalize(raw)
        agent_id = data.get("id") if isinstance(data.get("id"), str) else None
        if app_last_run is not None:
            moment = parse_app_time(app_last_run)
            if moment is None:
                ignored.append("last_run_at")
            elif agent_id is not None:
                out.last_run_at[agent_id] = moment
        if ignored:
            out.ignored.append(IgnoredKeys(id=agent_id, keys=sorted(ignored)))
        out.raws.append(data)
    if out.ignored:
        log.info(
            "client agents: unknown keys ignored in %d agent(s) (listed in the answer)",
            len(out.ignored),
        )
    return out


def record_app_runs(
    state: StateStore, last_run_at: Mapping[str, datetime], accepted: Sequence[str], now: datetime
) -> None:
    """Keep the app's ``last_run_at`` of each accepted agent (a future time as ``now``)."""
    for agent_id in accepted:
        moment = last_run_at.get(agent_id)
        if moment is None:
            continue
        moment = min(moment, now)
        state.set_cursor(agent_id, APP_LAST_RUN_CURSOR, moment.isoformat())


def effective_last_run_at(state: StateStore) -> Callable[[str], datetime | None]:
    """``last_run_at(agent_id)``: the newer of the journal's and the app's."""

    def last_run_at(agent_id: str) -> datetime | None:
        journal = state.last_run_at(agent_id)
        stored = state.get_cursor(agent_id, APP_LAST_RUN_CURSOR)
        app = parse_app_time(stored) if stored is not None else None
        if journal is None or (app is not None and app > journal):
            return app
        return journal

    return last_run_at

"""The agents the daemon knows: validated on arrival, cached in the state store.

Rules (agents.md "Agent configuration"):

- Agents come from the client (``device_hello.agents``, ``agents_sync``) and from an
  optional ``agents.toml`` (``[[agents]]`` tables). Both pass ``validate_agent``:
  the pydantic ``AgentConfig`` union, the cron check of ``scheduler.cron`` and the
  kind's own checks (``kinds.agent_problems``: roots that would leak the machine).
- One bad agent never fails the batch: it is rejected with its reasons and the
  others are accepted. A duplicate id within one batch is rejected.
- A device hello carrying ``agents`` is the client's full set (replace); an
  ``agents_sync`` replaces only when it says ``replace: true``.
- The client's set is cached so the CLI can list and trigger agents while the app
  is closed. On an id present in both sources, the latest write wins.
- Listeners (the scheduler) are told which ids changed after every accepted change.
- Rejected agents are kept with their reasons (:meth:`AgentRegistry.rejected`: the
  last ``agents.toml`` load and the last client batch) so ``status`` can show them.
- Reloading ``agents.toml`` never loses agents: a file that cannot be read or
  parsed keeps the agents of the last good load and is reported as one rejected
  entry (id ``None``) with the reason.
- The client's agents are first normalized by ``daemon.app_compat`` (the shipping
  app's rows: unknown keys ignored and named, ``provider`` for ``kind``, the app's
  ``last_run_at`` kept); ``agents.toml`` is not.
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from protocol.agent_config import AgentConfig, agent_config_adapter
from protocol.frames import AgentsResult, RejectedAgent
from scheduler.cron import cron_error

from .app_compat import normalize_client_agents, record_app_runs
from .errors import ConfigError
from .kinds import agent_problems
from .state import StateStore

__all__ = ["AgentRegistry", "load_agents_toml", "validate_agent", "validate_agents"]

log = logging.getLogger("tether.agents")


def validate_agent(
    raw: Any, *, protected: Sequence[str] = ()
) -> tuple[AgentConfig | None, list[str]]:
    """One agent: the config, or None and the reasons it was rejected. ``protected``
    are folders no agent may read (Tether's own)."""
    if not isinstance(raw, Mapping):
        return None, ["an agent must be an object"]
    try:
        config = agent_config_adapter.validate_python(dict(raw))
    except ValidationError as exc:
        errors = []
        for err in exc.errors(include_url=False, include_input=False):
            loc = [str(p) for p in err["loc"]]
            if loc and loc[0] in ("local_directory", "gmail", "outlook", "teams"):
                loc = loc[1:]  # the union tag adds nothing for the reader
            errors.append(f"{'.'.join(loc) or 'agent'}: {err['msg']}")
        return None, errors
    reason = cron_error(config.schedule_cron)
    if reason is not None:
        return None, [f"schedule_cron: {reason}"]
    problems = agent_problems(config, protected)
    if problems:
        return None, problems
    return config, []


def validate_agents(
    raws: Sequence[Any], *, protected: Sequence[str] = ()
) -> tuple[list[AgentConfig], list[RejectedAgent]]:
    accepted: list[AgentConfig] = []
    rejected: list[RejectedAgent] = []
    seen: set[str] = set()
    for raw in raws:
        raw_id = raw.get("id") if isinstance(raw, Mapping) else None
        agent_id = raw_id if isinstance(raw_id, str) else None
        config, errors = validate_agent(raw, protected=protected)
        if config is not None and config.id in seen:
            config, errors = None, [f"id {agent_id!r} appears more than once"]
        if config is None:
            rejected.append(RejectedAgent(id=agent_id, errors=errors))
            continue
        seen.add(config.id)
        accepted.append(config)
    return accepted, rejected


def load_agents_toml(
    path: Path, *, protected: Sequence[str] = ()
) -> tuple[list[AgentConfig], list[RejectedAgent]]:
    """Read and validate an ``agents.toml``; a missing file is an empty set."""
    if not path.exists():
        return [], []
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    extra = sorted(set(data) - {"agents"})
    if extra:
        raise ConfigError(f"{path}: unknown top-level keys {extra}; expected [[agents]] tables")
    agents = data.get("agents", [])
    if not isinstance(agents, list):
        raise ConfigError(f"{path}: 'agents' must be an array of tables ([[agents]])")
    return validate_agents(agents, protected=protected)


def _dump(config: AgentConfig) -> dict[str, Any]:
    return config.model_dump(mode="json", by_alias=True)


class AgentRegistry:
    """Validated agent configurations, cached in the state store."""

    def __init__(
        self,
        state: StateStore,
        *,
        protected: Sequence[str] = (),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.state = state
        self.protected = tuple(protected)
        self.clock = clock
        self._agents: dict[str, AgentConfig] = {}
        self._listeners: list[Callable[[set[str]], None]] = []
        self._rejected_file: list[RejectedAgent] = []
        self._rejected_client: list[RejectedAgent] = []
        for raw in state.agents():
            config, errors = validate_agent(raw)
            if config is None:
                log.warning("cached agent %s no longer validates: %s", raw.get("id"), errors)
                continue
            self._agents[config.id] = config

    def on_change(self, listener: Callable[[set[str]], None]) -> None:
        self._listeners.append(listener)

    def all(self) -> list[AgentConfig]:
        return sorted(self._agents.values(), key=lambda a: a.id)

    def get(self, agent_id: str) -> AgentConfig | None:
        return self._agents.get(agent_id)

    def rejected(self) -> list[RejectedAgent]:
        """The agents rejected by the last ``agents.toml`` load and the last client batch."""
        return [*self._rejected_file, *self._rejected_client]

    def load_file(self, path: Path) -> list[RejectedAgent]:
        """Take the agents of ``agents.toml`` (replacing earlier file agents).

        A file that cannot be read or parsed changes nothing but the rejected list.
        """
        try:
            accepted, rejected = load_agents_toml(path, protected=self.protected)
        except ConfigError as exc:
            log.error("agents.toml not loaded, keeping the agents of the last good load: %s", exc)
            self._rejected_file = [RejectedAgent(id=None, errors=[str(exc)])]
            return list(self._rejected_file)
        for bad in rejected:
            log.warning("agents.toml: agent %s rejected: %s", bad.id, "; ".join(bad.errors))
        self._rejected_file = rejected
        self._put(accepted, source="file", replace=True)
        return rejected

    def sync(self, raws: Sequence[Any], *, replace: bool) -> AgentsResult:
        """Take the client's agents; answer which were accepted, rejected, and which
        of their keys were ignored."""
        client = normalize_client_agents(raws)
        accepted, rejected = validate_agents(client.raws, protected=self.protected)
        self._rejected_client = rejected
        ids = [a.id for a in accepted]
        record_app_runs(self.state, client.last_run_at, ids, self.clock())
        self._put(accepted, source="client", replace=replace)
        for bad in rejected:
            log.warning("agent %s rejected: %s", bad.id, "; ".join(bad.errors))
        return AgentsResult(accepted=ids, rejected=rejected, ignored_keys=client.ignored)

    def _put(self, configs: Iterable[AgentConfig], *, source: str, replace: bool) -> None:
        configs = list(configs)
        before = dict(self._agents)
        self.state.put_agents([_dump(c) for c in configs], source=source, replace=replace)
        self._agents = {}
        for raw in self.state.agents():
            config, _ = validate_agent(raw)
            if config is not None:
                self._agents[config.id] = config
        changed = {
            i for i in set(before) | set(self._agents) if before.get(i) != self._agents.get(i)
        }
        if changed:
            log.info("agents changed: %s", ", ".join(sorted(changed)))
            for listener in self._listeners:
                listener(changed)

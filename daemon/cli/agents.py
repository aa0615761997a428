"""``daemon agents list|show ID|validate FILE``: the agents the daemon knows."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import fetch_status, load

if TYPE_CHECKING:
    from protocol.frames import RejectedAgent


def add_arguments(p: argparse.ArgumentParser) -> None:
    verbs = p.add_subparsers(dest="agents_verb", metavar="list|show|validate")
    verbs.required = True
    verbs.add_parser(
        "list", help="every agent the daemon knows (cached from the app + agents.toml)"
    )
    show = verbs.add_parser("show", help="one agent's configuration as JSON")
    show.add_argument("agent_id")
    validate = verbs.add_parser("validate", help="check an agents.toml without running anything")
    validate.add_argument("file", type=Path)
    p.set_defaults(handler=run)


def _known() -> list[dict[str, Any]]:
    from daemon.state import StateStore  # here, not at the top: keeps `daemon --help` fast

    paths, _ = load()
    if not paths.state_db.exists():
        return []
    with StateStore.open(paths.state_db) as state:
        return state.agents()


def run(args: argparse.Namespace) -> int:
    from daemon.agent_configs import load_agents_toml, validate_agent  # pydantic, croniter

    if args.agents_verb == "validate":
        paths, _ = load()
        accepted, rejected = load_agents_toml(args.file, protected=paths.protected())
        if not args.file.exists():
            print(f"{args.file}: no such file")
            return 1
        for agent in accepted:
            print(f"ok       {agent.id} ({agent.kind}, cron {agent.schedule_cron!r})")
        for bad in rejected:
            print(f"invalid  {bad.id or '(no id)'}: " + "; ".join(bad.errors))
        print(f"{len(accepted)} valid, {len(rejected)} invalid")
        return 1 if rejected else 0
    agents = _known()
    if args.agents_verb == "show":
        for raw in agents:
            if raw.get("id") == args.agent_id:
                print(json.dumps(raw, indent=2, sort_keys=True))
                return 0
        print(f"no agent {args.agent_id!r}")
        return 1
    rejected = _rejected()
    if not agents and not rejected:
        print("no agents yet: the desktop app sends them, or write agents.toml")
    for raw in agents:
        config, errors = validate_agent(raw)
        if config is None:
            print(f"{raw.get('id')!s:<20} INVALID: {'; '.join(errors)}")
            continue
        state = "enabled" if config.enabled else "disabled"
        print(
            f"{config.id:<20} {config.kind:<16} {state:<8} {config.schedule_cron!r:<16} {config.name}"
        )
    for bad in rejected:
        print(f"{bad.id or '(no id)'!s:<20} REJECTED: {'; '.join(bad.errors)}")
    return 0


def _rejected() -> list[RejectedAgent]:
    """The running daemon's rejected agents; without one, those of agents.toml."""
    from daemon.agent_configs import load_agents_toml
    from daemon.errors import ConfigError, DaemonError
    from daemon.runtime import read_runtime
    from protocol.frames import RejectedAgent

    paths, _ = load()
    if read_runtime(paths) is not None:
        try:
            status = asyncio.run(fetch_status(paths))
        except DaemonError:
            pass
        else:
            return list(status.rejected_agents)
    try:
        return load_agents_toml(paths.agents_toml, protected=paths.protected())[1]
    except ConfigError as exc:
        return [RejectedAgent(id=None, errors=[str(exc)])]

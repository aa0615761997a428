"""``daemon status``: is it running, which app is connected, every agent's runs, and
the cloud accounts (connected or needing a reconnect, throttling, last sync)."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from daemon.disk import disk_space_warning
from daemon.errors import NotRunning

from .common import control_client, load_paths


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the status frame as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    paths = load_paths()
    try:
        status = asyncio.run(_fetch(paths))
    except NotRunning as exc:
        if args.json:
            print(json.dumps({"running": False}))
        else:
            print(f"not running: {exc}")
        return 3
    if args.json:
        print(status.model_dump_json(indent=2))
        return 0
    d = status.daemon
    print(
        f"running: pid {d.pid if d else '?'}, port {d.port if d else '?'}, version {d.version if d else '?'}"
    )
    low_disk = disk_space_warning(paths.state_dir)
    if low_disk:
        print(f"warning: {low_disk}")
    print("desktop app: " + (", ".join(status.devices) if status.devices else "not connected"))
    for dev in status.device_details:  # agent_ids of the app's hello (docs/protocol.md)
        if dev.unknown_agent_ids:
            missing = ", ".join(dev.unknown_agent_ids)
            print(f"  {dev.device_id} has agents the daemon has no configuration for: {missing}")
    if not status.agents:
        print("agents: none (the app sends them, or put them in agents.toml)")
    for a in status.agents:
        state = "enabled" if a.enabled else "disabled"
        print(
            f"  {a.id:<20} {state:<8} cron {a.schedule_cron!r:<16} next {a.next_run_at or '-':<25} "
            f"last {a.last_run_at or 'never'} ({a.last_status or '-'})"
        )
    for bad in status.rejected_agents:
        print(f"  REJECTED {bad.id or '(no id)'}: {'; '.join(bad.errors)}")
    if status.rejected_agents:
        print("  (fix agents.toml: the daemon reloads it on its own, or send SIGHUP)")
    if status.accounts:
        print("accounts:")
    for acc in status.accounts:
        if acc.state == "needs_reconnect":
            state = f"needs reconnect ({acc.reason or 'sign-in refused'})"
        else:
            state = "connected"
        if acc.throttled_until:
            state += f", throttled until {acc.throttled_until}"
        print(
            f"  {acc.provider:<10} {acc.account:<32} {state}; last sync {acc.last_sync or 'never'}, "
            f"{acc.messages_taken} messages taken in"
        )
    for r in status.active_runs:
        print(
            f"  running: {r.agent_id} run {r.run_id} ({r.trigger}) {r.phase or ''} {r.done}/{r.total}"
        )
    return 0


async def _fetch(paths: Any) -> Any:
    client = await control_client(paths)
    try:
        return await client.status()
    finally:
        await client.close()

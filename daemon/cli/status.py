"""``daemon status``: is it running, which app is connected, every agent's runs, and
the cloud accounts (connected or needing a reconnect, throttling, last sync).

It asks with :func:`daemon.cli.oneshot.ask` (blocking, plain JSON) and prints the
frame as the daemon sent it: status is polled by scripts and must start fast
(footprint bench: ``status`` <= 0.3 s)."""

from __future__ import annotations

import argparse
import json

from daemon.disk import disk_space_warning
from daemon.errors import NotRunning

from .common import load_paths
from .oneshot import ask


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the status frame as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    paths = load_paths()
    try:
        status = ask(paths, {"type": "status_request"})
    except NotRunning as exc:
        if args.json:
            print(json.dumps({"running": False}))
        else:
            print(f"not running: {exc}")
        return 3
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    d = status.get("daemon") or {}
    print(
        f"running: pid {d.get('pid', '?')}, port {d.get('port', '?')}, "
        f"version {d.get('version', '?')}"
    )
    low_disk = disk_space_warning(paths.state_dir)
    if low_disk:
        print(f"warning: {low_disk}")
    devices = status.get("devices") or []
    print("desktop app: " + (", ".join(devices) if devices else "not connected"))
    for dev in status.get("device_details") or []:  # agent_ids of the app's hello
        if dev.get("unknown_agent_ids"):
            missing = ", ".join(dev["unknown_agent_ids"])
            print(f"  {dev['device_id']} has agents the daemon has no configuration for: {missing}")
    agents = status.get("agents") or []
    if not agents:
        print("agents: none (the app sends them, or put them in agents.toml)")
    for a in agents:
        state = "enabled" if a.get("enabled") else "disabled"
        print(
            f"  {a['id']:<20} {state:<8} cron {a.get('schedule_cron')!r:<16} "
            f"next {a.get('next_run_at') or '-':<25} "
            f"last {a.get('last_run_at') or 'never'} ({a.get('last_status') or '-'})"
        )
    rejected = status.get("rejected_agents") or []
    for bad in rejected:
        print(f"  REJECTED {bad.get('id') or '(no id)'}: {'; '.join(bad.get('errors') or [])}")
    if rejected:
        print("  (fix agents.toml: the daemon reloads it on its own, or send SIGHUP)")
    accounts = status.get("accounts") or []
    if accounts:
        print("accounts:")
    for acc in accounts:
        if acc.get("state") == "needs_reconnect":
            state = f"needs reconnect ({acc.get('reason') or 'sign-in refused'})"
        else:
            state = "connected"
        if acc.get("throttled_until"):
            state += f", throttled until {acc['throttled_until']}"
        print(
            f"  {acc['provider']:<10} {acc['account']:<32} {state}; "
            f"last sync {acc.get('last_sync') or 'never'}, "
            f"{acc.get('messages_taken', 0)} messages taken in"
        )
    for r in status.get("active_runs") or []:
        print(
            f"  running: {r['agent_id']} run {r['run_id']} ({r['trigger']}) "
            f"{r.get('phase') or ''} {r.get('done', 0)}/{r.get('total', 0)}"
        )
    return 0

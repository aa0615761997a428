"""``daemon runs [--agent ID]``: recent runs from the journal."""

from __future__ import annotations

import argparse

from .common import load


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--agent", help="only this agent's runs")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from daemon.state import StateStore  # here, not at the top: keeps `daemon --help` fast

    paths, _ = load()
    if not paths.state_db.exists():
        print("no runs yet")
        return 0
    with StateStore.open(paths.state_db) as state:
        records = state.runs(args.agent, limit=args.limit)
    if not records:
        print("no runs yet")
    for r in records:
        took = "-"  # still running, or skipped (it never ran)
        if r.finished_at is not None and r.status != "skipped":
            took = f"{(r.finished_at - r.started_at).total_seconds():.1f}s"
        print(
            f"{r.started_at:%Y-%m-%d %H:%M:%S} {r.agent_id:<16} {r.trigger:<9} {r.status:<9} "
            f"{took:>7}  processed {r.items_processed}, created {r.items_created}, "
            f"updated {r.items_updated}" + (f"; {len(r.errors)} errors" if r.errors else "")
        )
        for err in r.errors[:3]:
            print(f"    {err}")
        fires = (r.detail or {}).get("skipped_fires")
        if r.status == "skipped" and fires and r.finished_at:
            print(
                f"    {fires} fires skipped in a row, the last at {r.finished_at:%Y-%m-%d %H:%M:%S}"
            )
    return 0

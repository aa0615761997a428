"""``daemon cancel RUN_ID``: stop a run (or a chat request) that is in progress."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from daemon.paths import Paths

from .common import control_client, load


def add_parser(sub: Any) -> None:
    p = sub.add_parser("cancel", help="cancel a run in progress")
    p.add_argument("run_id", help="the run id (`daemon status` lists active runs)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    paths, _ = load()
    asyncio.run(_cancel(paths, args.run_id))
    print(f"cancel requested for {args.run_id}; the run ends at its next step")
    return 0


async def _cancel(paths: Paths, run_id: str) -> None:
    client = await control_client(paths)
    try:
        await client.cancel(run_id)
    finally:
        await client.close()

"""``daemon cancel <run-id|agent>``: stop a running run (it ends ``cancelled``)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from .common import control_client, load


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", help="a run id, or an agent id whose run to stop")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    paths, _ = load()
    asyncio.run(_cancel(paths, args.target))
    print(f"cancel sent: {args.target} stops at its next step (the journal says cancelled)")
    return 0


async def _cancel(paths: Any, target: str) -> None:
    client = await control_client(paths)
    try:
        await client.cancel(target)
    finally:
        await client.close()

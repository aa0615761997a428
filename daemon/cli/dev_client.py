"""``daemon dev-client --db FILE``: a stand-in desktop app with a real SQLite store."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from daemon.errors import NotRunning
from daemon.pairing import read_or_create_token
from daemon.runtime import read_runtime

from .common import load_settings


def add_parser(sub: Any) -> None:
    p = sub.add_parser("dev-client", help="run the reference client against the running daemon")
    p.add_argument("--db", required=True, help="SQLite file (created with the app's schema)")
    p.add_argument("--device-id", default="dev-client")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    paths = settings.paths
    info = read_runtime(paths)
    if info is None:
        raise NotRunning("the tether daemon is not running (start it with: daemon run)")
    token = read_or_create_token(paths.ensure(), settings.token)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    return asyncio.run(_serve(f"ws://127.0.0.1:{info.port}/", token, args.db, args.device_id))


async def _serve(url: str, token: str, db: str, device_id: str) -> int:
    from protocol.reference import ReferenceClient

    client = ReferenceClient(url, token, db=db, device_id=device_id, reconnect=True)
    client.on_event = lambda e: print(e.model_dump_json(exclude_unset=True), flush=True)
    ack = await client.connect()
    print(f"connected as {device_id} (session {ack.session_id}); serving {db}; Ctrl-C to stop")
    try:
        await asyncio.Event().wait()
    finally:
        await client.close()
    return 0

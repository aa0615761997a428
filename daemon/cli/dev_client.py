"""``daemon dev-client --db FILE [--seed JSON]``: a stand-in desktop app with a real SQLite store.

Rules:

- Each (re)connection reads the runtime file and the token again, so a daemon
  restarted on a new port (``--port 0``) or a rotated token is found without
  restarting the dev-client.
- Every disconnection says why: the pairing token was rotated (reconnects with the
  new token), another client took over the device id (superseded: stops, exit 1),
  the daemon stopped or the connection was lost (waits for it to come back).
- ``--seed FILE`` inserts projects and tasks (and notes, timelines, clients) from
  JSON before connecting, once: each row has an idempotency key derived from its
  content, so seeding twice adds nothing. Format::

      {"projects": [{"name": "Website", "tasks": [{"title": "Fix the footer"}]}],
       "tasks": [{"title": "Call the bank", "priority": "high"}]}

  A project's nested ``tasks``/``notes``/``timelines`` get its ``projectId``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

from daemon.errors import ConfigError, DaemonError, NotRunning
from daemon.paths import Paths
from daemon.runtime import RuntimeInfo, read_runtime
from protocol.errors import CloseCode, StorageError

from .common import env_token, load_paths

__all__ = ["add_arguments", "run", "seed_store"]

RETRY_S = (0.5, 5.0)
WATCH_S = 0.2
_NESTED = ("tasks", "notes", "timelines")
_TOP = ("clients", "projects", "tasks", "notes", "timelines")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", required=True, help="SQLite file (created with the app's schema)")
    p.add_argument("--device-id", default="dev-client")
    p.add_argument(
        "--seed",
        type=Path,
        metavar="FILE",
        help='JSON of projects/tasks to put in the store first: {"projects": [{"name": '
        '"Website", "tasks": [{"title": "Fix the footer"}]}], "tasks": [...]}',
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from protocol.reference import SqliteStore

    paths = load_paths()
    seed = _read_seed(args.seed) if args.seed is not None else None
    store = SqliteStore(args.db)
    try:
        if seed is not None:
            counts = seed_store(store, seed)
            shown = ", ".join(f"{n} {table}" for table, n in counts.items() if n) or "nothing new"
            print(f"seeded {args.db} from {args.seed}: {shown}", flush=True)
        if read_runtime(paths) is None:
            raise NotRunning("the tether daemon is not running (start it with: daemon run)")
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
        return asyncio.run(_serve(paths, store, args.db, args.device_id))
    finally:
        store.close()


def _read_seed(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the seed file {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"the seed file {path} is not valid JSON: {exc}") from None


def seed_store(store: Any, seed: Any) -> dict[str, int]:
    """Insert the seed's rows into ``store`` (a ``SqliteStore``); counts of new rows."""
    if not isinstance(seed, dict):
        raise ConfigError('a seed is a JSON object such as {"projects": [...], "tasks": [...]}')
    unknown = sorted(set(seed) - set(_TOP))
    if unknown:
        raise ConfigError(f"seed: unknown keys {unknown}; expected some of {list(_TOP)}")
    counts = dict.fromkeys(_TOP, 0)

    def insert(table: str, row: Any, where: str) -> dict[str, Any]:
        if not isinstance(row, dict):
            raise ConfigError(f"seed: {where} must be an object")
        key = (
            "seed:"
            + hashlib.sha256(json.dumps([table, row], sort_keys=True).encode("utf-8")).hexdigest()[
                :32
            ]
        )
        before = store.count(table)
        try:
            result: dict[str, Any] = store.handle("insert", table, data=row, idempotency_key=key)
        except StorageError as exc:
            raise ConfigError(f"seed: {where}: {exc}") from None
        counts[table] += store.count(table) - before
        row_out: dict[str, Any] = result["row"]
        return row_out

    for table in _TOP:
        rows = seed.get(table, [])
        if not isinstance(rows, list):
            raise ConfigError(f"seed: {table!r} must be a list")
        for i, raw in enumerate(rows):
            where = f"{table}[{i}]"
            if table == "projects" and isinstance(raw, dict):
                nested = {k: raw[k] for k in _NESTED if k in raw}
                project = insert(table, {k: v for k, v in raw.items() if k not in nested}, where)
                for child_table, children in nested.items():
                    if not isinstance(children, list):
                        raise ConfigError(f"seed: {where}.{child_table} must be a list")
                    for j, child in enumerate(children):
                        if isinstance(child, dict):
                            child = {**child, "projectId": project["id"]}
                        insert(child_table, child, f"{where}.{child_table}[{j}]")
            else:
                insert(table, raw, where)
    return counts


def _token(paths: Paths) -> str | None:
    env = env_token()
    if env:
        return env
    try:
        return paths.token_file.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def _url(info: RuntimeInfo) -> str:
    host = "127.0.0.1" if info.host in ("0.0.0.0", "::", "") else info.host
    return f"ws://[{host}]:{info.port}/" if ":" in host else f"ws://{host}:{info.port}/"


def _why(code: int | None) -> str:
    if code == CloseCode.UNAUTHORIZED:
        return "the pairing token was rotated (daemon pair --rotate); reconnecting with the new one"
    if code == CloseCode.SUPERSEDED:
        return "another client connected with the same device id (superseded)"
    if code == CloseCode.GOING_AWAY:
        return "the daemon stopped; waiting for it to start again"
    return f"the connection to the daemon was lost ({code}); waiting for it to come back"


async def _serve(paths: Paths, store: Any, db: str, device_id: str) -> int:
    from protocol.reference import HandshakeRefused, ReferenceClient

    last_seq: int | None = None
    delay = RETRY_S[0]
    refused_token: str | None = None
    waiting_said = False
    connected_once = False
    while True:
        info = read_runtime(paths)
        token = _token(paths)
        if info is None or (token is not None and token == refused_token):
            if not waiting_said:
                print("waiting for the daemon (reading its runtime file)...", flush=True)
                waiting_said = True
            await asyncio.sleep(delay)
            delay = min(RETRY_S[1], delay * 2)
            continue
        client = ReferenceClient(
            _url(info), token, db=store, device_id=device_id, last_event_seq=last_seq
        )
        client.on_event = lambda e: print(e.model_dump_json(exclude_unset=True), flush=True)
        try:
            ack = await client.connect()
        except HandshakeRefused as exc:
            if exc.code == CloseCode.UNAUTHORIZED:
                if not connected_once:
                    raise DaemonError(
                        f"the daemon (pid {info.pid}, port {info.port}) refused the pairing "
                        f"token; it reads {paths.token_file} unless the app gave it TETHER_TOKEN "
                        "(then set the same TETHER_TOKEN here)"
                    ) from None
                refused_token = token  # wait for a new token file
                print("the daemon refused the token; waiting for a new one...", flush=True)
                continue
            if exc.code in (CloseCode.SUPERSEDED, CloseCode.UNSUPPORTED_PROTOCOL):
                raise DaemonError(f"the daemon refused the dev-client: {exc}") from None
            await asyncio.sleep(delay)
            continue
        except (OSError, TimeoutError):
            await asyncio.sleep(delay)
            delay = min(RETRY_S[1], delay * 2)
            continue
        delay, refused_token, waiting_said, connected_once = RETRY_S[0], None, False, True
        print(
            f"connected to port {info.port} as {device_id} (session {ack.session_id}); "
            f"serving {db}; Ctrl-C to stop",
            flush=True,
        )
        try:
            while client.connected:  # noqa: ASYNC110 (the client exposes no close event)
                await asyncio.sleep(WATCH_S)
        finally:
            last_seq = client.last_event_seq
            code = client.close_code
            await client.close()
        print(f"disconnected: {_why(code)}", flush=True)
        if code == CloseCode.SUPERSEDED:
            raise DaemonError(
                f"stopped: another client now serves device {device_id!r}; "
                "use --device-id to run both"
            )

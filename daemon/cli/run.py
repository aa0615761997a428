"""``daemon run``: the daemon in the foreground (what autostart and the app launch)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from typing import Any

from daemon import __version__
from daemon.config import Settings
from daemon.logs import register_secret, setup_logging
from daemon.pairing import read_or_create_token
from daemon.paths import Paths
from daemon.runtime import InstanceLock, RuntimeInfo, pid_alive, remove_runtime, write_runtime

from .common import load_settings

log = logging.getLogger("tether.cli")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("run", help="run the daemon in the foreground")
    p.add_argument("--port", type=int, help="port to listen on (0 = pick a free one)")
    p.add_argument("--host", help="address to bind (loopback unless --allow-remote)")
    p.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host")
    p.add_argument("--parent-pid", type=int, metavar="PID", help="exit when this process dies")
    p.add_argument("--ready-json", action="store_true", help="print one JSON line once listening")
    p.add_argument("--log-stderr", action="store_true", help="also log to stderr")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    if args.port is not None:
        overrides["port"] = args.port
    if args.host is not None:
        overrides["host"] = args.host
    if args.allow_remote:
        overrides["allow_remote"] = True
    settings = load_settings(overrides)
    paths, config = settings.paths, settings.config
    paths.ensure()
    setup_logging(paths, config.log_level, stderr=args.log_stderr)
    lock = InstanceLock(paths)
    lock.acquire()  # AlreadyRunning names the running pid and port
    try:
        # Redaction: pairing registers the token, load_config the configured API key.
        token = read_or_create_token(paths, settings.token)
        return asyncio.run(_serve(args, settings, token))
    finally:
        lock.release()


async def _serve(args: argparse.Namespace, settings: Settings, token: str) -> int:
    from daemon.app import Daemon
    from daemon.state import StateStore
    from protocol.frames import PROTOCOL_VERSION

    paths, config = settings.paths, settings.config
    state = StateStore.open(paths.state_db)
    daemon = Daemon(config=config, paths=paths, token=token, state=state, pid=os.getpid())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # Windows
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
    watchers: list[asyncio.Task[None]] = []
    try:
        port = await daemon.start()
        write_runtime(
            paths,
            RuntimeInfo.for_this_process(
                port=port, host=config.host, version=__version__, protocol=PROTOCOL_VERSION
            ),
        )
        if args.ready_json:
            token_file = None if settings.token else str(paths.token_file)
            ready = {"event": "ready", "port": port, "pid": os.getpid(), "token_file": token_file}
            sys.stdout.write(json.dumps(ready) + "\n")
            sys.stdout.flush()
        watchers = []
        if settings.token is None:  # a TETHER_TOKEN cannot be rotated
            watchers.append(asyncio.create_task(_watch_token(paths, daemon, token)))
        if args.parent_pid:
            watchers.append(asyncio.create_task(_watch_parent(args.parent_pid, stop)))
        await stop.wait()
        return 0
    finally:
        for watcher in watchers:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await daemon.stop()
        remove_runtime(paths)


async def _watch_parent(pid: int, stop: asyncio.Event) -> None:
    while pid_alive(pid):  # noqa: ASYNC110 (no event to wait on for another pid)
        await asyncio.sleep(1.0)
    log.info("parent process %d is gone; stopping", pid)
    stop.set()


async def _watch_token(paths: Paths, daemon: Any, token: str) -> None:
    """``daemon pair --rotate`` writes a new token file: use it, close old sessions."""
    current = token
    while True:
        await asyncio.sleep(2.0)
        try:
            new = paths.token_file.read_text(encoding="utf-8").strip()
        except OSError:
            continue
        if new and new != current:
            current = new
            register_secret(new)
            log.info("pairing token rotated; closing sessions paired with the old one")
            await daemon.server.rotate_token(new)

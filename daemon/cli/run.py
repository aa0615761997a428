"""``daemon run``: the daemon in the foreground (what autostart and the app launch).

Rules:

- Once listening it says where it is: one line on stderr (address, config dir, log
  file, token file) unless ``--quiet`` or ``--ready-json`` (the app reads the JSON
  line on stdout instead).
- A port another program holds is a one-line error naming the port and the fix.
- SIGHUP reloads ``config.toml`` (host and port stay until the next start) and
  ``agents.toml``; ``agents.toml`` is also reloaded when its stat changes (polled
  every few seconds). A bad file never stops the daemon: the error goes to the log
  and to ``status`` (rejected agents), the running settings stay.
- ``--parent-pid P``: exit (cleanly, removing the runtime file) within a second of
  P's death, also while P is an unreaped zombie (we are reparented at once).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import logging
import os
import signal
import sys
from typing import Any

from daemon import __version__
from daemon.config import Settings
from daemon.errors import ConfigError, DaemonError
from daemon.logs import register_secret, setup_logging
from daemon.pairing import read_or_create_token
from daemon.paths import Paths
from daemon.runtime import InstanceLock, RuntimeInfo, pid_alive, remove_runtime, write_runtime

from .common import load_settings

log = logging.getLogger("tether.cli")

PARENT_POLL_S = 0.25
AGENTS_POLL_S = 2.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, help="port to listen on (0 = pick a free one)")
    p.add_argument("--host", help="address to bind (loopback unless --allow-remote)")
    p.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host")
    p.add_argument("--parent-pid", type=int, metavar="PID", help="exit when this process dies")
    p.add_argument("--ready-json", action="store_true", help="print one JSON line once listening")
    p.add_argument("--log-stderr", action="store_true", help="also log to stderr")
    p.add_argument("--quiet", action="store_true", help="do not print where it listens")
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
        return asyncio.run(_serve(args, settings, token, overrides))
    finally:
        lock.release()


async def _serve(
    args: argparse.Namespace, settings: Settings, token: str, overrides: dict[str, Any]
) -> int:
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
    reload = asyncio.Event()
    if hasattr(signal, "SIGHUP"):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, reload.set)
    watchers: list[asyncio.Task[None]] = []
    try:
        try:
            port = await daemon.start()
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                taken = "is already in use" if exc.errno == errno.EADDRINUSE else "is not allowed"
                raise DaemonError(
                    f"port {config.port} on {config.host} {taken}; start with `daemon run "
                    "--port 0` (any free port) or set `port = N` in "
                    f"{paths.config_toml}"
                ) from None
            raise
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
        elif not args.quiet:
            token_at = "from TETHER_TOKEN" if settings.token else str(paths.token_file)
            print(
                f"tether {__version__} listening on ws://{_netloc(config.host, port)}/ "
                f"(pid {os.getpid()}); "
                f"config {paths.config_dir}, log {paths.log_file}, token {token_at}; "
                "Ctrl-C to stop",
                file=sys.stderr,
                flush=True,
            )
        watchers = [asyncio.create_task(_watch_config(paths, daemon, overrides, reload))]
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
    # A parent that dies reparents us at once, even while it waits as a zombie.
    own_parent = os.getppid() == pid
    while pid_alive(pid) and not (own_parent and os.getppid() != pid):  # noqa: ASYNC110
        await asyncio.sleep(PARENT_POLL_S)
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


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _stat(path: Any) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def reload_config(paths: Paths, daemon: Any, overrides: dict[str, Any]) -> None:
    """Take a new ``config.toml`` (host and port stay) and ``agents.toml``."""
    try:
        new = load_settings(overrides).config
    except ConfigError as exc:
        log.error("config.toml not reloaded, keeping the running settings: %s", exc)
    else:
        old = daemon.config
        fixed = {"host": old.host, "port": old.port, "allow_remote": old.allow_remote}
        if any(getattr(new, key) != value for key, value in fixed.items()):
            log.warning("host and port changes take effect at the next start")
        new = new.model_copy(update=fixed)
        daemon.config = daemon.server.config = daemon.runs.config = new
        daemon.llm.config = new.llm
        logging.getLogger("tether").setLevel(new.log_level)
        log.info("config.toml reloaded")
    daemon.registry.load_file(paths.agents_toml)


async def _watch_config(
    paths: Paths, daemon: Any, overrides: dict[str, Any], reload: asyncio.Event
) -> None:
    """SIGHUP reloads everything; a change of ``agents.toml`` on disk reloads it."""
    seen = _stat(paths.agents_toml)
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reload.wait(), AGENTS_POLL_S)
        if reload.is_set():
            reload.clear()
            log.info("SIGHUP: reloading config.toml and agents.toml")
            seen = _stat(paths.agents_toml)
            try:
                reload_config(paths, daemon, overrides)
            except Exception:  # the daemon keeps running on its current settings
                log.exception("reload failed")
            continue
        now = _stat(paths.agents_toml)
        if now != seen:
            seen = now
            log.info("agents.toml changed on disk; reloading it")
            try:
                daemon.registry.load_file(paths.agents_toml)
            except Exception:
                log.exception("agents.toml reload failed")

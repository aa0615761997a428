"""``daemon trigger <agent> [--wait]``: start a run now; ``--wait`` follows it."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any, TextIO

from protocol.errors import ConnectionLost
from protocol.frames import RunComplete, RunProgress, RunStarted

from .common import control_client, load

EXIT_TIMED_OUT = 4  # documented in daemon.cli


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("agent", help="agent id")
    p.add_argument("--wait", action="store_true", help="show progress; exit 0 only on success")
    p.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        help="seconds to wait (with --wait); the run goes on after it (exit code 4)",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    paths, _ = load()
    return asyncio.run(_trigger(paths, args.agent, args.wait, args.timeout))


def _bar(event: RunProgress, width: int = 30) -> str:
    total = max(event.total, 1)
    filled = int(width * min(event.done, total) / total)
    return f"\r{event.phase:<8} [{'#' * filled}{'.' * (width - filled)}] {event.done}/{event.total}"


def _summary(done: RunComplete, out: TextIO) -> None:
    u = done.usage
    print(
        f"{done.status}: {done.items_processed} processed, {done.items_created} created, "
        f"{done.items_updated} updated; {u.llm_calls} LLM calls, "
        f"{u.prompt_tokens + u.completion_tokens} tokens",
        file=out,
    )
    for err in done.errors:
        print(f"  error: {err}", file=out)


async def _trigger(paths: Any, agent_id: str, wait: bool, timeout: float) -> int:
    client = await control_client(paths, subscribe=wait)
    try:
        ack = await client.trigger(agent_id)
        print(f"run {ack.run_id} of {agent_id} started")
        if not wait:
            return 0
        tty = sys.stderr.isatty()
        phase = None

        async def follow() -> RunComplete:
            nonlocal phase
            while True:
                try:
                    event = await asyncio.wait_for(client.events.get(), 1.0)
                except TimeoutError:
                    if not client.connected:
                        raise ConnectionLost(
                            f"lost the daemon while run {ack.run_id} was going on; see how it "
                            "ended with `daemon runs` once the daemon is back (`daemon status`)"
                        ) from None
                    continue
                if getattr(event, "run_id", None) != ack.run_id:
                    continue
                if isinstance(event, RunProgress):
                    if tty:
                        sys.stderr.write(_bar(event))
                        sys.stderr.flush()
                    elif event.phase != phase:
                        print(f"{event.phase}: {event.done}/{event.total}", file=sys.stderr)
                    phase = event.phase
                elif isinstance(event, RunStarted):
                    continue
                elif isinstance(event, RunComplete):
                    if tty:
                        sys.stderr.write("\n")
                    return event

        try:
            done = await asyncio.wait_for(follow(), timeout)
        except TimeoutError:
            if tty:
                sys.stderr.write("\n")
            print(
                f"daemon: still running after {timeout:g} s; the run goes on in the daemon. "
                f"Follow it with `daemon logs --follow --run {ack.run_id}` (or `daemon status`), "
                f"cancel it with `daemon cancel {ack.run_id}`",
                file=sys.stderr,
            )
            return EXIT_TIMED_OUT
        _summary(done, sys.stdout)
        return 0 if done.status == "success" else 1
    finally:
        await client.close()

"""Benchmark: tool_call round trips per second, daemon ``ClientStore`` <-> reference client.

Baseline, measured in the same run: a raw ``websockets`` JSON echo (the peer
echoes each message back; compression off) at the same concurrency. As in real
use, the peer is another process in both measurements: the reference client with
its SQLite file (answering ``get``), or the echo server. The measuring side is the
daemon's ``ClientStore`` or a bare websockets client that ``json.dumps`` and
``json.loads`` each message. The echo uses websockets as it comes (one socket
write per message); the daemon and the reference client batch the writes of one
event-loop pass (protocol/reference/connection.py), which is most of why 64 in flight now
beats its target: the figure compares our whole stack with plain websockets.

    python tests/bench/rpc.py [--seconds 2] [--rounds 5] [--in-flight 1 64]
                              [--profile daemon.prof]

``--profile FILE`` runs the measuring side (daemon and echo driver) under cProfile
and writes its stats to FILE (``python -m pstats FILE``); the figures are then slower.

Targets (quality.md): >= 0.7 of echo at 1 in flight, >= 0.6 at 64 in flight.
Prints a table and a final JSON line; exits 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from daemon.app import Daemon
from daemon.config import load_config
from daemon.paths import Paths
from daemon.session import ClientStore
from daemon.state import StateStore
from protocol.reference import ReferenceClient, SqliteStore
from tests.bench.peers import spawn_peer, stop_peer

TARGETS = {1: 0.7, 64: 0.6}


async def _drive(op, concurrency: int, seconds: float) -> float:
    """Run ``op`` from ``concurrency`` workers for ``seconds``; calls per second."""
    count = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal count
        while time.perf_counter() < deadline:
            await op()
            count += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count / (time.perf_counter() - start)


async def serve_echo() -> None:
    """Subprocess mode: an echo server; prints its port, runs until stdin closes."""

    async def echo(ws) -> None:
        async for message in ws:
            await ws.send(message)

    async with serve(echo, "127.0.0.1", 0, compression=None) as server:
        print(next(iter(server.sockets)).getsockname()[1], flush=True)
        await asyncio.to_thread(sys.stdin.read)


async def serve_client(url: str, db: str) -> None:
    """Subprocess mode: the reference client; runs until stdin closes."""
    client = ReferenceClient(url, "bench", db=db)
    await client.connect()
    print("connected", flush=True)
    await asyncio.to_thread(sys.stdin.read)
    await client.close()


async def _spawn(*args: str) -> tuple[asyncio.subprocess.Process, str]:
    return await spawn_peer(__file__, *args)


_stop = stop_peer


async def echo_rate(port: int, concurrency: int, seconds: float) -> float:
    async with connect(f"ws://127.0.0.1:{port}/", compression=None) as ws:
        pending: dict[str, asyncio.Future[str]] = {}
        counter = 0

        async def reader() -> None:
            async for message in ws:
                pending.pop(json.loads(message)["id"]).set_result(message)

        read_task = asyncio.create_task(reader())

        async def op() -> None:
            nonlocal counter
            counter += 1
            key = str(counter)
            fut = asyncio.get_running_loop().create_future()
            pending[key] = fut
            await ws.send(
                json.dumps(
                    {
                        "type": "tool_call",
                        "id": key,
                        "action": "get",
                        "table": "tasks",
                        "data": {"id": "t1"},
                    }
                )
            )
            await fut

        rate = await _drive(op, concurrency, seconds)
        read_task.cancel()
        return rate


async def rpc_rate(store: ClientStore, row_id: str, concurrency: int, seconds: float) -> float:
    async def op() -> None:
        row = await store.get("tasks", row_id)
        assert row is not None

    return await _drive(op, concurrency, seconds)


async def main(seconds: float, rounds: int, levels: list[int]) -> int:
    home = Path(tempfile.mkdtemp(prefix="tether-bench-"))
    os.environ["TETHER_HOME"] = str(home)
    paths = Paths.under(home).ensure()
    config = load_config(paths, {}, overrides={"port": 0, "log_level": "WARNING"})
    daemon = Daemon(
        config=config, paths=paths, token="bench", state=StateStore.open(paths.state_db)
    )
    port = await daemon.start()
    db = home / "app.db"
    with SqliteStore(db) as app_db:
        row = app_db.handle("insert", "tasks", data={"title": "benchmark task"})["row"]
    client, _ = await _spawn("--client", f"ws://127.0.0.1:{port}/", str(db))
    echo, echo_port = await _spawn("--echo")
    session = daemon.server.device()
    assert session is not None
    store = session.store()

    results = []
    ok = True
    for concurrency in levels:
        await rpc_rate(store, row["id"], concurrency, 0.5)  # warm-up
        await echo_rate(int(echo_port), concurrency, 0.5)
        rpc_best = echo_best = 0.0
        for _ in range(rounds):  # interleaved, best of N: the machine is noisy
            echo_best = max(echo_best, await echo_rate(int(echo_port), concurrency, seconds))
            rpc_best = max(rpc_best, await rpc_rate(store, row["id"], concurrency, seconds))
        ratio = rpc_best / echo_best
        target = TARGETS[concurrency]
        ok &= ratio >= target
        results.append(
            {
                "in_flight": concurrency,
                "rpc_per_s": round(rpc_best),
                "echo_per_s": round(echo_best),
                "ratio": round(ratio, 3),
                "target": target,
                "met": ratio >= target,
            }
        )
    await _stop(client)
    await _stop(echo)
    await daemon.stop()

    print(f"{'in flight':>9} {'rpc/s':>9} {'echo/s':>9} {'ratio':>6} {'target':>7}")
    for r in results:
        print(
            f"{r['in_flight']:>9} {r['rpc_per_s']:>9} {r['echo_per_s']:>9} {r['ratio']:>6} "
            f"{'>=' + str(r['target']):>7} {'ok' if r['met'] else 'MISSED'}"
        )
    print(json.dumps({"benchmark": "rpc", "results": results}))
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--in-flight", type=int, nargs="+", choices=sorted(TARGETS), default=sorted(TARGETS)
    )
    parser.add_argument("--profile", metavar="FILE", help="write cProfile stats of this side")
    parser.add_argument("--echo", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", nargs=2, metavar=("URL", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo:
        asyncio.run(serve_echo())
    elif args.client:
        asyncio.run(serve_client(*args.client))
    elif args.profile:
        import cProfile

        profiler = cProfile.Profile()
        try:
            code = profiler.runcall(asyncio.run, main(args.seconds, args.rounds, args.in_flight))
        finally:
            profiler.dump_stats(args.profile)
        sys.exit(code)
    else:
        sys.exit(asyncio.run(main(args.seconds, args.rounds, args.in_flight)))

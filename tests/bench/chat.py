"""Benchmark: time to the first ``stream_text`` of a chat request through the daemon.

Baseline, measured in the same run: a direct ``litellm.acompletion(stream=True)``
call to the same test server with the same request the daemon makes (model,
api_base, system prompt + user message, the chat tool schemas, temperature,
timeout, ``stream_options``), timed to its first content delta.

The daemon runs in this process; the reference client (the desktop app, with its
SQLite file) runs in a subprocess, as the real app does, connected over a real
WebSocket, and times from sending ``home_request`` to its first ``stream_text``
(``on_text``). (With the client in the daemon's process, its read loop could only
run when the daemon's loop yields, i.e. after litellm has parsed the rest of the
buffered stream, which no real app waits for.) The local OpenAI-compatible test
server (``tests/support/llm_server.py``) runs in another subprocess, so its work
shares no GIL with either side. Both sides are warmed up first (litellm's import
and connection set-up are excluded), then measured interleaved, alternating which
goes first.

    python tests/bench/chat.py [--runs 20] [--warmup 5] [--profile]

Target (quality.md): daemon median <= direct median + 5 ms.
Prints a table and a final JSON line; exits 1 if the target is missed.
``--profile`` also runs the daemon requests under cProfile and prints the top items.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

from agents.llm import LOCAL_DUMMY_KEY
from daemon.app import Daemon
from daemon.config import load_config
from daemon.paths import Paths
from daemon.state import StateStore
from protocol.frames import HomeRequest
from protocol.reference import ReferenceClient, SqliteStore
from tests.bench.peers import spawn_peer, stop_peer

MODEL = "openai/bench"
QUESTION = "what is on my plate today?"
ANSWER = "You have two tasks due today: send the invoice and call the client back."
TARGET_MS = 5.0


def serve_model() -> None:
    """Subprocess mode: the test model server; prints its base URL, runs until stdin closes."""
    from tests.support.llm_server import FakeLLMServer, Text

    with FakeLLMServer(responder=lambda body: Text(ANSWER, chunk_size=4)) as server:
        print(server.base_url, flush=True)
        sys.stdin.read()


async def serve_client(url: str, db: str) -> None:
    """Subprocess mode: the app. Each stdin line starts one home_request; prints the ms
    from sending it to the first stream_text. Runs until stdin closes."""
    client = ReferenceClient(url, "bench", db=db)
    await client.connect()
    print("connected", flush=True)
    while await asyncio.to_thread(sys.stdin.readline):
        first: list[float] = []

        def on_text(chunk: str, first: list[float] = first) -> None:
            if not first:
                first.append(time.perf_counter())

        start = time.perf_counter()
        result = await client.home(QUESTION, on_text=on_text, timeout=30)
        if result.error is not None or result.text != ANSWER or not first:
            print(f"error {result.error!r} {result.text!r}", flush=True)
        else:
            print(f"{(first[0] - start) * 1000:.4f}", flush=True)
    await client.close()


async def _spawn(*args: str) -> tuple[asyncio.subprocess.Process, str]:
    return await spawn_peer(__file__, *args)


_stop = stop_peer


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


class Bench:
    def __init__(
        self, app: asyncio.subprocess.Process, litellm: Any, request: dict[str, Any]
    ) -> None:
        self.app = app
        self.litellm = litellm
        self.request = request

    async def daemon_ttft(self) -> float:
        """ms from the app sending home_request to its first stream_text (timed by the app)."""
        assert self.app.stdin is not None and self.app.stdout is not None
        self.app.stdin.write(b"go\n")
        await self.app.stdin.drain()
        line = (await asyncio.wait_for(self.app.stdout.readline(), 30)).decode().strip()
        try:
            return float(line)
        except ValueError:
            raise RuntimeError(f"chat failed: {line}") from None

    async def direct_ttft(self) -> float:
        """ms from calling litellm.acompletion to the first content delta."""
        first: float | None = None
        text: list[str] = []
        start = time.perf_counter()
        response = await self.litellm.acompletion(**self.request)
        async for chunk in response:
            for choice in chunk.choices or ():
                piece = getattr(choice.delta, "content", None)
                if piece:
                    if first is None:
                        first = time.perf_counter()
                    text.append(piece)
        if first is None or "".join(text) != ANSWER:
            raise RuntimeError(f"direct call got {''.join(text)!r}")
        return (first - start) * 1000


def direct_request(daemon: Daemon, base_url: str) -> dict[str, Any]:
    """What the daemon's LLM adapter sends for this chat request, as one litellm call."""
    messages = daemon.chat.messages(HomeRequest(message=QUESTION))
    return {
        "model": MODEL,
        "messages": messages,
        "tools": daemon.chat.toolset.schemas(),
        "timeout": daemon.config.llm.timeout_s,
        "num_retries": 0,
        "drop_params": True,
        "api_base": base_url,
        "api_key": LOCAL_DUMMY_KEY,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def main(runs: int, warmup: int, profile: bool) -> int:
    for var in [v for v in os.environ if v.startswith("TETHER_")]:
        del os.environ[var]
    home = Path(tempfile.mkdtemp(prefix="tether-bench-chat-"))
    os.environ["TETHER_HOME"] = str(home)
    model_proc, base_url = await _spawn("--serve-model")
    paths = Paths.under(home).ensure()
    config = load_config(
        paths,
        {},
        overrides={"port": 0, "log_level": "WARNING", "llm.model": MODEL, "llm.api_base": base_url},
    )
    daemon = Daemon(
        config=config, paths=paths, token="bench", state=StateStore.open(paths.state_db)
    )
    port = await daemon.start()
    db = home / "app.db"
    with SqliteStore(db) as app_db:
        app_db.handle("insert", "tasks", data={"title": "send the invoice"})
    app, _ = await _spawn("--client", f"ws://127.0.0.1:{port}/", str(db))

    import litellm  # excluded from the figures, as is the daemon's own import

    bench = Bench(app, litellm, direct_request(daemon, base_url))
    for _ in range(warmup):
        await bench.daemon_ttft()
        await bench.direct_ttft()

    daemon_ms: list[float] = []
    direct_ms: list[float] = []
    for i in range(runs):
        if i % 2 == 0:
            daemon_ms.append(await bench.daemon_ttft())
            direct_ms.append(await bench.direct_ttft())
        else:
            direct_ms.append(await bench.direct_ttft())
            daemon_ms.append(await bench.daemon_ttft())

    profile_text = ""
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(runs):
            await bench.daemon_ttft()
        profiler.disable()
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out).strip_dirs()
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(40)
        profile_text = out.getvalue()

    await _stop(app)
    await daemon.stop()
    await _stop(model_proc)

    figures = {
        "daemon": {"median_ms": statistics.median(daemon_ms), "p90_ms": percentile(daemon_ms, 0.9)},
        "direct": {"median_ms": statistics.median(direct_ms), "p90_ms": percentile(direct_ms, 0.9)},
    }
    diff_median = figures["daemon"]["median_ms"] - figures["direct"]["median_ms"]
    diff_p90 = figures["daemon"]["p90_ms"] - figures["direct"]["p90_ms"]
    met = diff_median <= TARGET_MS

    if profile_text:
        print(profile_text)
    print(f"time to first stream_text, {runs} runs each (interleaved, after {warmup} warm-up)")
    print(f"{'':>8} {'median ms':>10} {'p90 ms':>8}")
    for name, f in figures.items():
        print(f"{name:>8} {f['median_ms']:>10.2f} {f['p90_ms']:>8.2f}")
    print(
        f"{'diff':>8} {diff_median:>10.2f} {diff_p90:>8.2f}   target: median diff <= {TARGET_MS:g} ms "
        f"{'ok' if met else 'MISSED'}"
    )
    print(
        json.dumps(
            {
                "benchmark": "chat",
                "runs": runs,
                "daemon": {k: round(v, 3) for k, v in figures["daemon"].items()},
                "direct": {k: round(v, 3) for k, v in figures["direct"].items()},
                "diff_median_ms": round(diff_median, 3),
                "diff_p90_ms": round(diff_p90, 3),
                "target_ms": TARGET_MS,
                "met": met,
            }
        )
    )
    return 0 if met else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="cProfile the daemon requests")
    parser.add_argument("--serve-model", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", nargs=2, metavar=("URL", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_model:
        serve_model()
        sys.exit(0)
    if args.client:
        asyncio.run(serve_client(*args.client))
        sys.exit(0)
    sys.exit(asyncio.run(main(args.runs, args.warmup, args.profile)))

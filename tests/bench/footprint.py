"""Benchmark: the daemon's memory and the CLI's start-up time (Linux: reads /proc).

Figures, as medians over ``--rounds`` fresh daemons (memory) and ``--runs`` runs of
each command (time), each with its ratio to a baseline measured in the same run:

- **idle RSS**: ``daemon run --port 0 --ready-json`` once it has printed its ready
  line and settled; baseline: a bare interpreter's RSS (``python -c`` waiting on
  stdin).
- **RSS after a run**: the app (a reference client with its SQLite file, in this
  process, over a real WebSocket) connects with one ``local_directory`` agent over
  a small folder and triggers it; the run's model calls go through litellm to the
  local test model (``tests/support/llm_server.py``), so litellm is loaded.
- **RSS after a chat**: then one ``home_request``, streamed.
- **``daemon status``** against that daemon, and **``daemon --help``**: wall and
  CPU seconds of the whole process; baselines ``python -c "import daemon"`` (the
  package, nothing else) and ``python -c pass``, interleaved with them.

    python tests/bench/footprint.py [--rounds 3] [--runs 7] [--exe dist/daemon/daemon]

``--exe`` measures the frozen one-folder build instead of ``python -m daemon``
(the baselines stay this interpreter's). Targets (quality.md, issue 13): idle
<= 80 MB, after a run <= 250 MB, ``status`` <= 0.3 s (wall; on a loaded machine the
CPU seconds say more). Prints a table and a final JSON line; exits 1 if a target is
missed. Talks only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from protocol.reference import ReferenceClient
from tests.support.agent_model import OfficeModel
from tests.support.llm_server import FakeLLMServer

MB = 1024 * 1024
TARGETS = {"idle_rss_mb": 80.0, "run_rss_mb": 250.0, "status_wall_s": 0.3}
SETTLE_S = 0.5  # after each step, before reading RSS
TIMEOUT_S = 120.0


def rss_bytes(pid: int) -> int:
    """VmRSS of a live process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class Timed:
    wall_s: float
    cpu_s: float
    peak_mb: float
    code: int


# Runs each timed command from a bare interpreter: Linux counts the spawning process's
# memory at exec() in the child's peak RSS (ru_maxrss), so spawning from this process
# (over 40 MB by then) would report its size instead of the command's.
_SPAWNER = """
import json, os, sys, time
for line in sys.stdin:
    argv, env = json.loads(line)
    start = time.perf_counter()
    devnull = os.open(os.devnull, os.O_WRONLY)
    pid = os.posix_spawn(argv[0], argv, env, file_actions=[
        (os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)])
    os.close(devnull)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    print(json.dumps([wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss,
                      os.waitstatus_to_exitcode(status)]), flush=True)
"""


class Spawner:
    """A bare interpreter that runs commands and reports wall, CPU and peak RSS (wait4)."""

    def __init__(self, python: str) -> None:
        self._proc = subprocess.Popen(
            [python, "-c", _SPAWNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def timed(self, argv: list[str], env: dict[str, str]) -> Timed:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps([argv, env]) + "\n")
        self._proc.stdin.flush()
        wall, cpu, maxrss_kb, code = json.loads(self._proc.stdout.readline())
        return Timed(wall, cpu, maxrss_kb / 1024, code)

    def close(self) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        self._proc.wait(10)


def bare_rss(python: str) -> int:
    proc = subprocess.Popen(
        [python, "-c", "import sys; print(flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdin is not None
    proc.stdout.readline()
    time.sleep(SETTLE_S)
    try:
        return rss_bytes(proc.pid)
    finally:
        proc.stdin.close()
        proc.wait(10)


def agent(folder: Path) -> dict[str, Any]:
    return {
        "id": "bench",
        "name": "Bench",
        "kind": "local_directory",
        "schedule_cron": "0 */6 * * *",
        "directory_paths": [str(folder)],
        "data_types": ["tasks", "notes", "timelines"],
        "enabled": False,
    }


def make_folder(root: Path) -> Path:
    folder = root / "work"
    for i in range(10):
        path = folder / ("Website" if i % 2 else "Branding") / f"notes-{i}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f"# Notes {i}\nTASK: Item {i} | priority high\nNOTE: Idea {i} | Said on a call.\n",
            encoding="utf-8",
        )
    return folder


class Daemon:
    """A ``daemon run`` subprocess in its own TETHER_HOME."""

    def __init__(self, command: list[str], env: dict[str, str], home: Path) -> None:
        self.env = env
        self.home = home
        self.proc = subprocess.Popen(
            [*command, "run", "--port", "0", "--ready-json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=(home.parent / "daemon.err").open("w"),
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("{"):
            err = (home.parent / "daemon.err").read_text()
            raise RuntimeError(f"daemon did not start: {line!r} {err[-2000:]}")
        self.port = int(json.loads(line)["port"])

    @property
    def token(self) -> str:
        return (self.home / "config" / "token").read_text(encoding="utf-8").strip()

    def rss(self) -> int:
        time.sleep(SETTLE_S)
        return rss_bytes(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


async def run_and_chat(daemon: Daemon, db: Path, folder: Path) -> tuple[int, int]:
    """RSS after one local run, then after one chat."""
    client = ReferenceClient(
        f"ws://127.0.0.1:{daemon.port}/", daemon.token, db=str(db), agents=[agent(folder)]
    )
    await client.connect()
    try:
        ack = await client.trigger("bench")
        assert ack.run_id is not None
        done = await client.wait_run(ack.run_id, timeout=TIMEOUT_S)
        if done.status != "success" or done.items_created == 0:
            raise RuntimeError(f"the run did not succeed: {done.status} {done.errors}")
        after_run = await asyncio.to_thread(daemon.rss)
        result = await client.home("what is on my plate today?", timeout=TIMEOUT_S)
        if result.error is not None or not result.text:
            raise RuntimeError(f"the chat failed: {result.error}")
        after_chat = await asyncio.to_thread(daemon.rss)
        return after_run, after_chat
    finally:
        await client.close()


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def spread(xs: list[float], scale: float = 1.0, digits: int = 1) -> str:
    return f"{median(xs) / scale:.{digits}f} ({min(xs) / scale:.{digits}f}-{max(xs) / scale:.{digits}f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="fresh daemons for the RSS figures")
    parser.add_argument("--runs", type=int, default=7, help="runs of each CLI command")
    parser.add_argument(
        "--exe", type=Path, help="the frozen executable (default: python -m daemon)"
    )
    args = parser.parse_args()
    if not Path("/proc/self/status").exists():
        print("footprint: needs Linux (/proc)", file=sys.stderr)
        return 2
    python = sys.executable
    command = [str(args.exe.resolve())] if args.exe else [python, "-m", "daemon"]
    what = str(args.exe) if args.exe else "python -m daemon"

    idle: list[float] = []
    after_run: list[float] = []
    after_chat: list[float] = []
    bare: list[float] = []
    walls: dict[str, list[float]] = {}
    cpus: dict[str, list[float]] = {}
    peaks: dict[str, list[float]] = {}

    with (
        tempfile.TemporaryDirectory(prefix="tether-footprint-") as tmp_name,
        FakeLLMServer(responder=OfficeModel()) as llm,
    ):
        tmp = Path(tmp_name)
        folder = make_folder(tmp)
        base_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("TETHER_", "PYTHONPROFILE", "PYTHONTRACEMALLOC"))
        }
        base_env.update(
            LITELLM_LOCAL_MODEL_COST_MAP="True",
            TETHER_MODEL="openai/office",
            TETHER_API_BASE=llm.base_url,
        )
        daemon: Daemon | None = None
        for i in range(args.rounds):
            home = tmp / f"round-{i}" / "home"
            home.mkdir(parents=True)
            env = dict(base_env, TETHER_HOME=str(home))
            bare.append(bare_rss(python))
            daemon = Daemon(command, env, home)
            idle.append(daemon.rss())
            run_rss, chat_rss = asyncio.run(run_and_chat(daemon, home.parent / "app.db", folder))
            after_run.append(run_rss)
            after_chat.append(chat_rss)
            if i < args.rounds - 1:
                daemon.stop()
            print(
                f"round {i + 1}: idle {idle[-1] / MB:.1f} MB, after a run {run_rss / MB:.1f} MB, "
                f"after a chat {chat_rss / MB:.1f} MB (bare interpreter {bare[-1] / MB:.1f} MB)",
                flush=True,
            )
        assert daemon is not None
        try:
            env = dict(base_env, TETHER_HOME=str(daemon.home))
            commands: dict[str, list[str]] = {
                "status": [*command, "status"],
                "--help": [*command, "--help"],
                "import daemon": [python, "-c", "import daemon"],
                "python -c pass": [python, "-c", "pass"],
            }
            spawner = Spawner(python)
            try:
                for name, argv in commands.items():  # warm-up: the page cache, .pyc files
                    first = spawner.timed(argv, env)
                    if first.code != 0:
                        raise RuntimeError(f"{name} exited {first.code}")
                for _ in range(args.runs):
                    for name, argv in commands.items():
                        t = spawner.timed(argv, env)
                        walls.setdefault(name, []).append(t.wall_s)
                        cpus.setdefault(name, []).append(t.cpu_s)
                        peaks.setdefault(name, []).append(t.peak_mb)
            finally:
                spawner.close()
        finally:
            daemon.stop()

    figures = {
        "idle_rss_mb": median(idle) / MB,
        "run_rss_mb": median(after_run) / MB,
        "chat_rss_mb": median(after_chat) / MB,
        "bare_rss_mb": median(bare) / MB,
        "status_wall_s": median(walls["status"]),
        "status_cpu_s": median(cpus["status"]),
        "help_wall_s": median(walls["--help"]),
        "help_cpu_s": median(cpus["--help"]),
        "import_daemon_wall_s": median(walls["import daemon"]),
        "import_daemon_cpu_s": median(cpus["import daemon"]),
        "pass_wall_s": median(walls["python -c pass"]),
        "pass_cpu_s": median(cpus["python -c pass"]),
    }
    ratio: Callable[[str, str], float] = lambda a, b: figures[a] / figures[b]  # noqa: E731
    print(f"\nfootprint of {what}: {args.rounds} daemons, {args.runs} runs of each command")
    print(f"{'figure':<26} {'median (min-max)':<26} {'baseline':<28} ratio")
    print(
        f"{'idle RSS, MB':<26} {spread(idle, MB):<26} {'bare python ' + spread(bare, MB):<28} "
        f"{ratio('idle_rss_mb', 'bare_rss_mb'):.1f}x"
    )
    print(
        f"{'RSS after a run, MB':<26} {spread(after_run, MB):<26} {'idle':<28} "
        f"{ratio('run_rss_mb', 'idle_rss_mb'):.1f}x"
    )
    print(
        f"{'RSS after a chat, MB':<26} {spread(after_chat, MB):<26} {'after a run':<28} "
        f"{ratio('chat_rss_mb', 'run_rss_mb'):.2f}x"
    )
    for name, base in (("status", "import daemon"), ("--help", "import daemon")):
        for kind, table in (("wall", walls), ("cpu", cpus)):
            key_a = f"{name.strip('-')}_{kind}_s"
            key_b = f"import_daemon_{kind}_s"
            key_c = f"pass_{kind}_s"
            print(
                f"{'daemon ' + name + ', ' + kind + ' s':<26} {spread(table[name], 1, 3):<26} "
                f"{base + ' ' + spread(table[base], 1, 3):<28} {ratio(key_a, key_b):.1f}x "
                f"({ratio(key_a, key_c):.1f}x python -c pass)"
            )
    print(f"{'peak RSS of status, MB':<26} {spread(peaks['status']):<26}")
    missed = [k for k, limit in TARGETS.items() if figures[k] > limit]
    for key, limit in TARGETS.items():
        verdict = "MISSED" if key in missed else "met"
        print(f"target {key} <= {limit:g}: {figures[key]:.3g} {verdict}")
    print(
        json.dumps({"what": what, **{k: round(v, 4) for k, v in figures.items()}, "missed": missed})
    )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())

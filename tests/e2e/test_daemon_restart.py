"""A ``daemon run`` process killed (SIGKILL) in the middle of a run, then restarted.

What must hold (architecture.md, agents.md "Local-directory agent"):

- the killed daemon's runtime file is stale: nothing reads it as a running daemon
  and it does not block the restart (the OS dropped the instance lock);
- on start, the new daemon closes the run the journal still shows as running, as
  ``error`` with "daemon stopped during the run", and its ``run_complete`` is
  replayed to an app reconnecting with ``last_event_seq=0``;
- the next run processes exactly the files not recorded before the kill, ends
  ``success``, and the app holds every item once: an insert the app applied while
  the daemon was already dead is not repeated (same title, same idempotency key).

Real processes: the daemon is ``python -m daemon run`` (twice, same TETHER_HOME);
the app is the reference client with its SQLite file in this process; the model is
``FakeLLMServer`` answering with ``OfficeModel``.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from daemon.paths import Paths
from daemon.runtime import read_runtime
from daemon.state import StateStore
from protocol.frames import ToolCall
from protocol.reference import ReferenceClient, SqliteStore
from tests.support.agent_model import OfficeModel
from tests.support.llm_server import FakeLLMServer

pytestmark = [
    pytest.mark.skipif(os.name != "posix", reason="SIGKILL"),
    pytest.mark.timeout(60),
]

REPO = Path(__file__).resolve().parents[2]
TOKEN = "restart-test-token"
AGENT_ID = "work-folder"
READY_TIMEOUT_S = 20.0

EXPECTED = {
    "tasks": [
        "Draft homepage copy",
        "Pick fonts",
        "Renew domain",
        "Send March invoice",
        "Sketch logo",
    ],
    "timelines": ["Launch"],
    "notes": ["Client prefers blue", "Warm palette"],
}
EXPECTED_ITEMS = sum(len(v) for v in EXPECTED.values())  # 8 inserts in all


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def build_corpus(root: Path) -> list[Path]:
    return [
        write(
            root / "Website" / "brief.md",
            "# Brief\nTASK: Draft homepage copy | due 2026-12-01 | priority high\n"
            "MILESTONE: Launch | 2026-12-15\n",
        ),
        write(root / "Website" / "call.txt", "NOTE: Client prefers blue | Said so on the call.\n"),
        write(root / "Branding" / "todo.md", "TASK: Pick fonts\nTASK: Sketch logo\n"),
        write(
            root / "Branding" / "moodboard.md", "Ideas.\nNOTE: Warm palette | Terracotta, sand.\n"
        ),
        write(root / "loose.txt", "TASK: Renew domain | priority low\n"),
        write(root / "invoices" / "march.md", "TASK: Send March invoice\n"),
    ]


class DaemonProcess:
    """``daemon run --port 0 --ready-json``; stdout lines read by a thread."""

    def __init__(self, env: dict[str, str], stderr_path: Path) -> None:
        self.stderr_path = stderr_path
        with stderr_path.open("w", encoding="utf-8") as stderr:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "daemon", "run", "--port", "0", "--ready-json"],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.ready: dict[str, Any] = {}

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self._lines.put(line)
        self._lines.put(None)

    async def wait_ready(self) -> DaemonProcess:
        try:
            line = await asyncio.to_thread(self._lines.get, True, READY_TIMEOUT_S)
        except queue.Empty:
            raise AssertionError(f"no ready line in {READY_TIMEOUT_S}s: {self.stderr()}") from None
        assert line is not None, f"daemon exited before it was ready: {self.stderr()}"
        self.ready = json.loads(line)
        assert self.ready["event"] == "ready" and self.ready["pid"] == self.popen.pid
        return self

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.ready['port']}/"

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""


@dataclass
class Setup:
    home: Path
    env: dict[str, str]
    tmp: Path
    procs: list[DaemonProcess] = field(default_factory=list)
    clients: list[ReferenceClient] = field(default_factory=list)

    @property
    def paths(self) -> Paths:
        return Paths.under(self.home)

    async def start_daemon(self) -> DaemonProcess:
        proc = DaemonProcess(self.env, self.tmp / f"daemon-{len(self.procs)}.stderr")
        self.procs.append(proc)
        return await proc.wait_ready()

    async def app(self, daemon: DaemonProcess, db: Path, **kwargs: Any) -> ReferenceClient:
        client = ReferenceClient(daemon.url, TOKEN, db=str(db), **kwargs)
        self.clients.append(client)
        await client.connect()
        return client

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "daemon", *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=20,
        )


@pytest.fixture
def setup(tmp_path: Path, llm_server: FakeLLMServer) -> Iterator[Setup]:
    llm_server.responder = OfficeModel()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env.update(
        TETHER_HOME=str(tmp_path / "home"),
        TETHER_MODEL="openai/office",
        TETHER_API_BASE=llm_server.base_url,
        TETHER_TOKEN=TOKEN,
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        PYTHONUNBUFFERED="1",
    )
    harness = Setup(home=tmp_path / "home", env=env, tmp=tmp_path)
    yield harness
    for proc in harness.procs:
        if proc.popen.poll() is None:
            proc.popen.kill()
        try:
            proc.popen.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass
        if proc.popen.stdout is not None:
            proc.popen.stdout.close()


@pytest.fixture
async def apps(setup: Setup) -> AsyncIterator[None]:
    yield
    for client in setup.clients:  # close the websockets before the loop goes
        await client.close()


def agent_config(root: Path) -> dict[str, Any]:
    return {
        "id": AGENT_ID,
        "name": "Work folder",
        "kind": "local_directory",
        "schedule_cron": "0 */6 * * *",
        "directory_paths": [str(root)],
        "data_types": ["tasks", "notes", "timelines"],
        "enabled": False,  # runs only when triggered
    }


def titles(db: SqliteStore, table: str) -> list[str]:
    key = "name" if table == "projects" else "title"
    return sorted(row[key] for row in db.rows(table))


def items_in_app(db: SqliteStore) -> int:
    return sum(len(db.rows(table)) for table in EXPECTED)


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_daemon_killed_mid_run_restarts_closes_the_run_and_resumes_without_duplicates(
    setup: Setup, apps: None, tmp_path: Path
) -> None:
    corpus = tmp_path / "work"
    files = build_corpus(corpus)
    db_path = tmp_path / "app.db"
    with SqliteStore(db_path) as db:
        db.handle("insert", "projects", data={"name": "Website"})
        db.handle("insert", "projects", data={"name": "Branding"})
    agents = [agent_config(corpus)]

    first = await setup.start_daemon()
    inserts = 0
    answered = 0  # the app writes each call right after this hook returns, in the same step
    killed = asyncio.Event()

    async def kill_daemon_on_third_insert(call: ToolCall) -> None:
        nonlocal inserts, answered
        try:
            if call.action != "insert":
                return
            inserts += 1
            if inserts == 3:
                os.kill(first.pid, signal.SIGKILL)
                await asyncio.to_thread(first.popen.wait, 10)
                killed.set()
            # then the app applies the insert: the daemon never hears of it
        finally:
            answered += 1

    app = await setup.app(
        first, db_path, agents=agents, before_tool_call=kill_daemon_on_third_insert
    )
    ack = await app.trigger(AGENT_ID)
    assert ack.run_id
    killed_run = ack.run_id
    await asyncio.wait_for(killed.wait(), 30)
    assert first.popen.returncode == -signal.SIGKILL
    await until(lambda: not app.connected, 5, "the app to see the connection drop")
    await until(
        lambda: answered == len(app.tool_calls), 5, "the app to write the calls it received"
    )
    landed = items_in_app(app.store)
    assert 3 <= landed < EXPECTED_ITEMS

    # The killed daemon left its runtime file behind: stale, so nobody takes it as running.
    paths = setup.paths
    stale = json.loads(paths.runtime_file.read_text(encoding="utf-8"))
    assert stale["pid"] == first.pid
    assert read_runtime(paths) is None
    status = setup.cli("status")
    assert status.returncode == 3, status.stdout + status.stderr

    # ... and it does not block the restart.
    second = await setup.start_daemon()
    assert second.pid != first.pid
    assert json.loads(paths.runtime_file.read_text(encoding="utf-8"))["pid"] == second.pid
    running = read_runtime(paths)
    assert running is not None and running.port == second.ready["port"]

    # The journal (read by a second process while the daemon runs: WAL) closed the run.
    with StateStore.open(paths.state_db) as state:
        record = state.run(killed_run)
        recorded = set(state.file_index(AGENT_ID))
    assert record is not None
    assert record.status == "error"
    assert record.finished_at is not None
    assert "daemon stopped during the run" in record.errors
    assert len(recorded) < len(files)
    runs_cli = setup.cli("runs")
    assert runs_cli.returncode == 0 and "daemon stopped during the run" in runs_cli.stdout

    # The app reconnects from the start of the event log: that run_complete is replayed.
    again = await setup.app(second, db_path, agents=agents, last_event_seq=0)
    replayed = await again.wait_run(killed_run, timeout=10)
    assert replayed.status == "error"
    assert "daemon stopped during the run" in replayed.errors

    # The next run picks up exactly the files not recorded, and duplicates nothing.
    ack = await again.trigger(AGENT_ID)
    assert ack.run_id
    done = await again.wait_run(ack.run_id, timeout=40)
    assert done.status == "success", done.errors
    assert done.items_processed == len(files) - len(recorded)
    assert done.items_created == EXPECTED_ITEMS - landed
    for table, expected in EXPECTED.items():
        assert titles(again.store, table) == sorted(expected), table
    assert titles(again.store, "projects") == ["Branding", "Website"]
    with StateStore.open(paths.state_db) as state:
        assert set(state.file_index(AGENT_ID)) == {str(p) for p in files}
        last = state.run(ack.run_id)
    assert last is not None and last.status == "success"

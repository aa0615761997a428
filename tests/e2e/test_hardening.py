"""Hardening (issue 14) against a real ``daemon run`` process: each test is the attack.

- A full disk never hangs anything: with the state directory on a 2 MB tmpfs that
  is full, every triggered run ends with a ``run_complete`` (``error``, "disk
  full"), ``daemon trigger --wait`` exits non-zero within 10 s, the daemon keeps
  answering ``status``, and ``daemon status`` warns about the disk.
- A 15 MB ``error`` frame is not logged whole (the log stays small, the line says
  how long the frame was).
- A ``?token=`` query parameter (right or wrong) never reaches a log line.
- ``daemon.log``, ``state.db`` and its ``-wal``/``-shm`` are 0600 under umask 0.
- A client vanishing in the middle of tool calls (chat and run) leaves no
  "Future exception was never retrieved" and no traceback on the daemon's stderr.
- After a SIGKILL in the middle of a run, the journal's counts for that run are
  what the app had confirmed (not 0).

Real processes and sockets; the app is the reference client (SQLite) or a raw
WebSocket; the model is ``FakeLLMServer``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from daemon.paths import Paths
from daemon.state import StateStore
from protocol.frames import RunComplete, ToolCall
from protocol.reference import ProtocolClient, ReferenceClient, RequestFailed
from tests.support.agent_model import OfficeModel
from tests.support.disk import fill, small_disk
from tests.support.llm_server import Call, FakeLLMServer, ToolCalls

pytestmark = [
    pytest.mark.skipif(os.name != "posix", reason="POSIX signals, modes and mounts"),
    pytest.mark.timeout(90),
]

REPO = Path(__file__).resolve().parents[2]
TOKEN = "hardening-test-token-0123456789"
READY_TIMEOUT_S = 20.0


class Daemon:
    """``python -m daemon run --port 0 --ready-json``, stderr to a file."""

    def __init__(self, env: dict[str, str], stderr_path: Path, umask: int = -1) -> None:
        self.stderr_path = stderr_path
        with stderr_path.open("w", encoding="utf-8") as stderr:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "daemon", "run", "--port", "0", "--ready-json"],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                umask=umask,
            )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.port = 0

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self._lines.put(line)
        self._lines.put(None)

    async def ready(self) -> Daemon:
        try:
            line = await asyncio.to_thread(self._lines.get, True, READY_TIMEOUT_S)
        except queue.Empty:
            raise AssertionError(f"no ready line: {self.stderr()}") from None
        assert line is not None, f"daemon exited before it was ready: {self.stderr()}"
        self.port = json.loads(line)["port"]
        return self

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> int:
        self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(20)


class Home:
    def __init__(self, tmp: Path, llm: FakeLLMServer) -> None:
        self.tmp = tmp
        self.root = tmp / "home"
        self.paths = Paths.under(self.root)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
        self.env.update(
            TETHER_HOME=str(self.root),
            TETHER_TOKEN=TOKEN,
            TETHER_MODEL="openai/office",
            TETHER_API_BASE=llm.base_url,
            LITELLM_LOCAL_MODEL_COST_MAP="True",
            PYTHONUNBUFFERED="1",
        )
        self.daemons: list[Daemon] = []
        self.clients: list[ProtocolClient] = []

    async def start(self, umask: int = -1, **env: str) -> Daemon:
        daemon = Daemon({**self.env, **env}, self.tmp / f"d{len(self.daemons)}.err", umask)
        self.daemons.append(daemon)
        return await daemon.ready()

    async def app(self, daemon: Daemon, db: Path, **kwargs: Any) -> ReferenceClient:
        client = ReferenceClient(daemon.url, TOKEN, db=str(db), **kwargs)
        self.clients.append(client)
        await client.connect()
        return client

    async def control(self, daemon: Daemon) -> ProtocolClient:
        client = ProtocolClient(daemon.url, TOKEN, client_name="test", subscribe=True)
        self.clients.append(client)
        await client.connect()
        return client

    def cli(self, *args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "daemon", *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def log_text(self) -> str:
        try:
            return self.paths.log_file.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""


@pytest.fixture
def home(tmp_path: Path, llm_server: FakeLLMServer) -> Iterator[Home]:
    llm_server.responder = OfficeModel()
    harness = Home(tmp_path, llm_server)
    yield harness
    for daemon in harness.daemons:
        if daemon.popen.poll() is None:
            daemon.popen.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            daemon.popen.wait(10)
        if daemon.popen.stdout is not None:
            daemon.popen.stdout.close()


@pytest.fixture
async def clients(home: Home) -> AsyncIterator[None]:
    yield
    for client in home.clients:
        await client.close()


def corpus(root: Path, files: int = 6) -> list[Path]:
    made = []
    for i in range(files):
        path = root / f"f{i}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        # large enough that each file is its own unit of work (small ones are batched)
        filler = "Minutes of the weekly call. " * 800
        path.write_text(
            f"TASK: Thing {i}\nNOTE: Remark {i} | Said on call {i}.\n{filler}\n", "utf-8"
        )
        made.append(path)
    return made


def agent(root: Path, agent_id: str = "folder") -> dict[str, Any]:
    return {
        "id": agent_id,
        "name": "Folder",
        "kind": "local_directory",
        "schedule_cron": "0 0 1 1 *",
        "directory_paths": [str(root)],
        "data_types": ["tasks", "notes"],
        "enabled": False,
    }


async def until(predicate: Any, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- a full disk ------------------------------------------------------------------------


async def test_full_state_disk_ends_every_run_with_run_complete_and_never_hangs(
    home: Home, clients: None, tmp_path: Path
) -> None:
    with small_disk(home.paths.state_dir):
        root = tmp_path / "work"
        corpus(root, 2)
        daemon = await home.start()
        app = await home.app(daemon, tmp_path / "app.db", agents=[agent(root)])
        watcher = await home.control(daemon)
        fill(home.paths.state_dir)

        # Through the protocol: acknowledged, then a run_complete from memory.
        for _ in range(3):
            ack = await app.trigger("folder")
            assert ack.run_id
            done = await app.wait_run(ack.run_id, timeout=10)
            assert done.status == "error", done
            assert any(e.startswith("disk full (") for e in done.errors), done.errors
            seen = await asyncio.wait_for(_run_complete(watcher, ack.run_id), 10)
            assert seen.status == "error"

        # Through the CLI: --wait ends, non-zero, within 10 s.
        for _ in range(2):
            waited = await asyncio.to_thread(home.cli, "trigger", "folder", "--wait", timeout=10)
            assert waited.returncode not in (0, None), waited.stdout + waited.stderr
            assert "disk full" in waited.stdout + waited.stderr

        # The daemon keeps answering (an app reconnecting with its agents too), and
        # says the disk is low.
        again = await home.app(
            daemon, tmp_path / "app2.db", agents=[agent(root)], device_id="second-laptop"
        )
        assert again.hello_ack is not None and again.hello_ack.agents is None
        assert (await again.status()).agents
        with pytest.raises(RequestFailed) as sync:
            await again.agents_sync([agent(root, "another")])
        assert "disk full (" in str(sync.value)
        status = await app.status()
        assert status.active_runs == []
        shown = await asyncio.to_thread(home.cli, "status")
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert "low disk space" in shown.stdout + shown.stderr
        assert daemon.popen.poll() is None
        assert "Traceback" not in daemon.stderr()

        # Space comes back: the next run is journaled again.
        (home.paths.state_dir / "filler").unlink()
        ack = await app.trigger("folder")
        done = await app.wait_run(ack.run_id, timeout=30)
        assert done.status == "success", done.errors
        assert daemon.stop() == 0
        with StateStore.open(home.paths.state_db) as state:
            record = state.run(ack.run_id)
        assert record is not None and record.status == "success"


async def _run_complete(client: ProtocolClient, run_id: str) -> RunComplete:
    while True:
        event = await client.events.get()
        if isinstance(event, RunComplete) and event.run_id == run_id:
            return event


# --- logs, modes ------------------------------------------------------------------------


async def test_huge_error_frame_is_logged_cut_with_its_size(home: Home) -> None:
    daemon = await home.start()
    before = home.paths.log_file.stat().st_size
    huge = "E" * (15 * 1024 * 1024)
    async with connect(daemon.url, max_size=None, ping_interval=None) as ws:
        hello = {"type": "device_hello", "protocol": 1, "device_id": "d", "token": TOKEN}
        await ws.send(json.dumps(hello))
        await ws.recv()
        await ws.send(json.dumps({"type": "error", "code": "client_bug", "message": huge}))
        await ws.send(json.dumps({"type": "ping", "id": "after"}))
        while json.loads(await asyncio.wait_for(ws.recv(), 30)).get("id") != "after":
            pass
    await until(lambda: "client reported an error" in home.log_text(), 10, "the log line")
    grown = home.paths.log_file.stat().st_size - before
    assert grown < 64 * 1024, grown
    line = next(x for x in home.log_text().splitlines() if "client reported an error" in x)
    assert "15,728,640 characters in all" in line
    assert daemon.stop() == 0


async def test_token_in_the_query_never_reaches_a_log_line(home: Home) -> None:
    daemon = await home.start(TETHER_LOG_LEVEL="DEBUG")
    wrong = "wrong-query-token-5f1d9a7c3e"
    with pytest.raises(InvalidStatus) as refused:
        await connect(f"{daemon.url}?token={wrong}", ping_interval=None)
    assert refused.value.response.status_code == 401
    async with connect(f"{daemon.url}?token={TOKEN}", ping_interval=None) as ws:
        await ws.send(json.dumps({"type": "control_hello", "protocol": 1}))
        assert json.loads(await ws.recv())["type"] == "hello_ack"
    assert daemon.stop() == 0
    everything = home.log_text() + daemon.stderr()
    assert "refused upgrade: wrong token" in everything
    assert wrong not in everything
    assert TOKEN not in everything


async def test_log_and_state_files_are_private_whatever_the_umask(
    home: Home, clients: None, tmp_path: Path
) -> None:
    daemon = await home.start(umask=0)
    app = await home.app(daemon, tmp_path / "app.db", agents=[agent(tmp_path / "work")])
    await app.status()
    db = home.paths.state_db
    for path in (home.paths.log_file, db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        assert path.exists(), path
        assert mode(path) == 0o600, f"{path}: {oct(mode(path))}"
    assert daemon.stop() == 0


# --- a client vanishing, a daemon killed --------------------------------------------------


async def _vanish_at_first_tool_call(
    url: str, request: dict[str, Any], hello: dict[str, Any]
) -> None:
    ws: ClientConnection = await connect(url, ping_interval=None, max_size=None)
    await ws.send(json.dumps(hello))
    assert json.loads(await ws.recv())["type"] == "hello_ack"
    await ws.send(json.dumps(request))
    while json.loads(await asyncio.wait_for(ws.recv(), 20))["type"] != "tool_call":
        pass
    ws.transport.abort()


async def _leave_while_answering(url: str, hello: dict[str, Any], trigger: dict[str, Any]) -> None:
    """Answer the run's look-ups in one burst and close at once: each answer makes the
    daemon send its insert while the connection is closing."""
    ws: ClientConnection = await connect(url, ping_interval=None, max_size=None)
    await ws.send(json.dumps(hello))
    assert json.loads(await ws.recv())["type"] == "hello_ack"
    await ws.send(json.dumps(trigger))
    lookups: list[str] = []
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 20))
        if frame["type"] != "tool_call":
            continue
        if frame["table"] == "projects":
            await ws.send(json.dumps({"type": "tool_result", "id": frame["id"], "rows": []}))
            continue
        lookups.append(frame["id"])
        if len(lookups) == 30:
            break
    for call_id in lookups:
        await ws.send(json.dumps({"type": "tool_result", "id": call_id, "rows": []}))
    await ws.close()


async def test_client_vanishing_mid_tool_call_leaves_nothing_on_stderr(
    home: Home, llm_server: FakeLLMServer, tmp_path: Path
) -> None:
    root = tmp_path / "work"
    root.mkdir()
    (root / "list.md").write_text("".join(f"TASK: Item {i}\n" for i in range(30)), "utf-8")
    model = OfficeModel()
    calls = [Call("list_tasks", {}), Call("list_notes", {}), Call("list_tasks", {"status": "todo"})]
    chats: list[ToolCalls] = [ToolCalls(calls) for _ in range(3)]

    def respond(body: dict[str, Any]) -> Any:
        return chats.pop() if chats else model(body)  # the three chats come first

    llm_server.responder = respond
    daemon = await home.start()
    hello: dict[str, Any] = {
        "type": "device_hello",
        "protocol": 1,
        "device_id": "d",
        "token": TOKEN,
    }
    for i in range(3):
        chat = {"type": "home_request", "request_id": f"c{i}", "message": "what is on my list?"}
        await _vanish_at_first_tool_call(daemon.url, chat, hello)
    hello["agents"] = [agent(root)]
    for i in range(4):
        trigger = {"type": "trigger", "id": f"t{i}", "agent_id": "folder"}
        await _leave_while_answering(daemon.url, hello, trigger)
        await until(lambda n=i: home.log_text().count("finished error") > n, 20, "the run end")
    assert daemon.stop() == 0
    err = daemon.stderr()
    assert "never retrieved" not in err, err
    assert "Traceback" not in err, err


async def test_sigkill_mid_run_leaves_the_confirmed_counts_in_the_journal(
    home: Home, clients: None, tmp_path: Path
) -> None:
    root = tmp_path / "work"
    files = corpus(root, 6)
    daemon = await home.start()
    inserts = 0
    killed = asyncio.Event()

    # Each file gives two inserts (a task and a note, in parallel), files one after
    # the other: at the seventh insert, three files and six inserts were confirmed.
    async def kill_on_the_seventh_insert(call: ToolCall) -> None:
        nonlocal inserts
        if call.action != "insert":
            return
        inserts += 1
        if inserts == 7:
            os.kill(daemon.popen.pid, signal.SIGKILL)
            await asyncio.to_thread(daemon.popen.wait, 10)
            killed.set()

    app = await home.app(
        daemon,
        tmp_path / "app.db",
        agents=[agent(root)],
        before_tool_call=kill_on_the_seventh_insert,
    )
    ack = await app.trigger("folder")
    await asyncio.wait_for(killed.wait(), 60)
    with StateStore.open(home.paths.state_db) as state:
        record = state.run(ack.run_id)
        recorded = state.file_index("folder")
    assert record is not None and record.status == "running"
    assert len(recorded) == 3 < len(files)
    assert record.items_processed == 3, record
    assert record.items_created == 6, record


async def test_cli_gives_its_token_at_the_upgrade_and_names_a_wrong_one(home: Home) -> None:
    daemon = await home.start()
    assert (await asyncio.to_thread(home.cli, "status")).returncode == 0
    wrong = {**home.env, "TETHER_TOKEN": "not-the-daemon-token"}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "daemon", "status"],
        cwd=REPO,
        env=wrong,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode != 0
    assert "refused the CLI's pairing token" in done.stdout + done.stderr
    assert "refused upgrade: wrong token at the upgrade" in home.log_text()
    assert daemon.stop() == 0

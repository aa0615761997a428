"""``daemon dev-client`` over real processes: seeded store, reconnects after a token
rotation and after the daemon restarts on a new port (re-reading the runtime file),
and says why it was disconnected each time."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.cli.dev_client import seed_store
from daemon.errors import ConfigError
from protocol.reference import SqliteStore
from tests.support.cli import REPO, Cli, cli_harness

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
pytestmark = pytest.mark.timeout(120)

SEED = {
    "projects": [{"name": "Website", "tasks": [{"title": "Fix the footer"}]}],
    "tasks": [{"title": "Call the bank", "priority": "high"}],
}


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    with cli_harness(tmp_path) as harness:
        yield harness


class Lines:
    """A process's stdout, line by line, read by a thread."""

    def __init__(self, popen: subprocess.Popen[str]) -> None:
        self.popen = popen
        self.seen: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def expect(self, fragment: str, timeout: float = 20.0) -> str:
        while True:
            try:
                line = self._q.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no line with {fragment!r}; saw {self.seen}") from None
            if line is None:
                raise AssertionError(f"exited before {fragment!r}; saw {self.seen}")
            self.seen.append(line)
            if fragment in line:
                return line


def test_seed_inserts_projects_with_their_tasks_once(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "app.db"))
    try:
        counts = seed_store(store, SEED)
        assert counts["projects"] == 1 and counts["tasks"] == 2
        assert seed_store(store, SEED)["tasks"] == 0  # seeding twice adds nothing
        [project] = store.rows("projects")
        tasks = {t["title"]: t for t in store.rows("tasks")}
        assert tasks["Fix the footer"]["projectId"] == project["id"]
        assert tasks["Call the bank"]["projectId"] is None
        assert tasks["Call the bank"]["priority"] == "high"
        with pytest.raises(ConfigError, match=r"tasks\[0\]: unknown column 'titel'"):
            seed_store(store, {"tasks": [{"titel": "typo"}]})
        with pytest.raises(ConfigError, match="unknown keys"):
            seed_store(store, {"projetcs": []})
    finally:
        store.close()


@posix_only
def test_dev_client_follows_rotation_and_a_restart_on_a_new_port(cli: Cli) -> None:
    seed = cli.tmp / "seed.json"
    seed.write_text(json.dumps(SEED))
    db = cli.tmp / "app.db"
    first = cli.start()
    popen = subprocess.Popen(
        [sys.executable, "-m", "daemon", "dev-client", "--db", str(db), "--seed", str(seed)],
        cwd=REPO,
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    cli.procs.append(popen)
    out = Lines(popen)
    assert "1 projects, 2 tasks" in out.expect("seeded")
    out.expect(f"connected to port {first.port} as dev-client")
    assert "dev-client" in cli.run("status").stdout

    assert cli.run("pair", "--rotate").returncode == 0
    out.expect("disconnected: the pairing token was rotated")
    out.expect(f"connected to port {first.port}")

    assert first.stop() == 0
    out.expect("disconnected: the daemon stopped")
    second = cli.start()  # --port 0: a new port, found through the runtime file
    out.expect(f"connected to port {second.port}")
    assert "dev-client" in cli.run("status").stdout

    # a second dev-client with the same device id supersedes the first, which says so
    other = subprocess.Popen(
        [sys.executable, "-m", "daemon", "dev-client", "--db", str(cli.tmp / "b.db")],
        cwd=REPO,
        env=cli.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    cli.procs.append(other)
    out.expect("disconnected: another client connected with the same device id")
    last = out.expect("daemon: stopped")
    assert "--device-id" in last
    assert popen.wait(10) == 1
    assert not any("Traceback" in line for line in out.seen)
    assert second.stop() == 0

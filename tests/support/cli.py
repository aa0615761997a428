"""The ``daemon`` command as real subprocesses, each harness with its own TETHER_HOME.

``Cli.run`` runs one verb and returns the finished process; ``Cli.start`` spawns
``daemon run --port 0 --ready-json`` and waits for its ready line;
:func:`cli_harness` builds one (no ``TETHER_*`` variable leaks from the shell;
``XDG_CONFIG_HOME`` and ``XDG_RUNTIME_DIR`` point into tmp so autostart never
reaches the real user's files or service manager) and cleans up its processes.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 15.0

__all__ = ["READY_TIMEOUT_S", "REPO", "Cli", "DaemonProcess", "cli_harness", "mode"]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class DaemonProcess:
    """A ``daemon run`` subprocess whose stdout lines are read by a thread."""

    def __init__(self, popen: subprocess.Popen[str], stderr_path: Path) -> None:
        self.popen = popen
        self.stderr_path = stderr_path
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.ready: dict[str, Any] = {}
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line)
        self.lines.put(None)  # EOF

    def next_line(self, timeout: float) -> str | None:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"no line on stdout within {timeout}s; stderr: {self.stderr()}"
            ) from None

    def rest_of_stdout(self, timeout: float = 5.0) -> list[str]:
        """Every line after the ones read so far, until EOF (the process must exit)."""
        out = []
        while (line := self.next_line(timeout)) is not None:
            out.append(line)
        return out

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def port(self) -> int:
        port: int = self.ready["port"]
        return port

    def stop(self, timeout: float = 10.0) -> int:
        self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout)


@dataclass
class Cli:
    home: Path
    tmp: Path
    env: dict[str, str]
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def token_file(self) -> Path:
        return self.home / "config" / "token"

    def token(self) -> str:
        return self.token_file.read_text(encoding="utf-8").strip()

    @property
    def runtime_file(self) -> Path:
        return self.home / "state" / "daemon.json"

    def run(
        self, *args: str, timeout: float = 30.0, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "daemon", *args],
            cwd=REPO,
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def python(
        self, code: str, *args: str, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", code, *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def spawn(self, *args: str) -> DaemonProcess:
        stderr_path = self.tmp / f"daemon-{len(self.procs)}.stderr"
        stderr = stderr_path.open("w", encoding="utf-8")
        try:
            popen = subprocess.Popen(
                [sys.executable, "-m", "daemon", "run", "--port", "0", "--ready-json", *args],
                cwd=REPO,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        finally:
            stderr.close()
        self.procs.append(popen)
        return DaemonProcess(popen, stderr_path)

    def start(self, *args: str) -> DaemonProcess:
        """Spawn ``daemon run`` and wait for its ready line."""
        proc = self.spawn(*args)
        line = proc.next_line(READY_TIMEOUT_S)
        assert line is not None, f"daemon exited before it was ready: {proc.stderr()}"
        proc.ready = json.loads(line)
        return proc


@contextmanager
def cli_harness(tmp_path: Path) -> Iterator[Cli]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env["TETHER_HOME"] = str(tmp_path / "home")
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg-config")
    env["XDG_RUNTIME_DIR"] = str(tmp_path / "xdg-runtime")
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    env["PYTHONUNBUFFERED"] = "1"
    harness = Cli(home=tmp_path / "home", tmp=tmp_path, env=env)
    try:
        yield harness
    finally:
        for popen in harness.procs:
            if popen.poll() is None:
                popen.kill()
            try:
                popen.wait(10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass
            if popen.stdout is not None:
                popen.stdout.close()

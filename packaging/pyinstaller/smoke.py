"""Smoke test of the frozen one-folder build: ``python smoke.py dist/daemon/daemon``.

Run with a Python that has the project installed (build.sh uses its build venv): the
local test model (``tests/support/llm_server.py``) and the reference client come from
the source tree; everything else is the frozen executable, each step a real process:

1. ``daemon --version`` prints ``tether <version>``.
2. ``daemon run --port 0 --ready-json`` (its own TETHER_HOME in a temporary folder,
   the test model as ``openai/office``, an ``agents.toml`` with one local_directory
   agent over a folder holding one marker line) prints its ready line.
3. A hello from the reference client (a control session) is answered, and
   ``status`` lists the agent; so does the frozen ``daemon status``.
4. ``daemon dev-client --db app.db`` (the frozen stand-in app) connects as the device.
5. ``daemon trigger smoke --wait`` exits 0 after a successful run: litellm in the
   frozen build called the test model with the agent's tools, the model called
   ``create_task``, and the marker task is in ``app.db``.
6. A chat (``home_request``, streamed) from the reference client as the device: the
   model calls ``list_tasks``, the device serves it, the answer streams back.
7. SIGTERM stops the daemon with exit code 0 and its runtime file removed, and its
   log shows no import failure.

Prints one line per step; exits 0 when all pass, 1 with what failed otherwise.
Talks only to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from protocol.reference import ProtocolClient, ReferenceClient  # noqa: E402
from protocol.frames import Status  # noqa: E402
from protocol.reference import SqliteStore  # noqa: E402
from tests.support.agent_model import OfficeModel  # noqa: E402
from tests.support.llm_server import Call, FakeLLMServer, Text, ToolCalls  # noqa: E402

MARKER = "Smoke marker from the frozen build"
TIMEOUT_S = 60.0


class SmokeFailed(Exception):
    pass


class Process:
    """A child whose stdout lines are read by a thread; stderr goes to a file."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._err = log.open("w", encoding="utf-8")
        self.popen = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=self._err, text=True
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_line(self, predicate: Any, what: str, timeout: float = TIMEOUT_S) -> str:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                raise SmokeFailed(
                    f"{what}: the process exited ({self.popen.wait()}); {self.tail()}"
                )
            if predicate(line):
                return line
        raise SmokeFailed(f"{what}: nothing within {timeout:.0f} s; {self.tail()}")

    def tail(self) -> str:
        self._err.flush()
        text = self.log.read_text(encoding="utf-8", errors="replace").strip()
        return "stderr: " + (text[-2000:] if text else "(empty)")

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(15)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise SmokeFailed(f"{self.popen.args[1]} did not stop on SIGTERM") from None
        finally:
            self._err.close()


def step(name: str) -> None:
    print(f"ok   {name}", flush=True)


def agents_toml(folder: Path) -> str:
    return (
        "[[agents]]\n"
        'id = "smoke"\n'
        'name = "Smoke"\n'
        'kind = "local_directory"\n'
        'schedule_cron = "0 */6 * * *"\n'
        f"directory_paths = [{json.dumps(str(folder))}]\n"
        'data_types = ["tasks"]\n'
        "enabled = false\n"
    )


async def status(port: int, token: str) -> Status:
    """A control session's hello, then a status request."""
    client = ProtocolClient(f"ws://127.0.0.1:{port}/", token, client_name="smoke", subscribe=False)
    ack = await client.connect()
    try:
        if not ack.session_id:
            raise SmokeFailed("hello_ack without a session id")
        return await client.status()
    finally:
        await client.close()


def wait_device(port: int, token: str, device_id: str, client: Process) -> None:
    """Until ``status`` lists ``device_id`` (the dev-client's stdout is a pipe, so its
    "connected" line may sit in a buffer)."""
    deadline = time.monotonic() + TIMEOUT_S
    while device_id not in asyncio.run(status(port, token)).devices:
        if client.popen.poll() is not None:
            raise SmokeFailed(f"dev-client exited ({client.popen.returncode}); {client.tail()}")
        if time.monotonic() > deadline:
            raise SmokeFailed(
                f"dev-client: not connected within {TIMEOUT_S:.0f} s; {client.tail()}"
            )
        time.sleep(0.2)


async def chat(port: int, token: str, db: Path) -> tuple[str, list[str]]:
    """A device's home_request (streamed); the answer and the tool calls it served."""
    device = ReferenceClient(f"ws://127.0.0.1:{port}/", token, db=str(db), device_id="smoke-app")
    await device.connect()
    try:
        result = await device.home("what is on my plate?", timeout=TIMEOUT_S)
        if result.error is not None:
            raise SmokeFailed(f"chat: {result.error}")
        served = [f"{call.action} {call.table}" for call in device.tool_calls]
        return "".join(result.chunks), served
    finally:
        await device.close()


def smoke(exe: Path, tmp: Path) -> None:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("TETHER_", "LITELLM_", "OPENAI_"))
    }
    home = tmp / "home"
    env["TETHER_HOME"] = str(home)

    version = subprocess.run(
        [str(exe), "--version"], env=env, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    if version.returncode != 0 or not version.stdout.startswith("tether "):
        raise SmokeFailed(f"--version: exit {version.returncode}: {version.stdout}{version.stderr}")
    step(f"--version: {version.stdout.strip()}")

    folder = tmp / "work"
    folder.mkdir()
    (folder / "notes.md").write_text(f"# Notes\nTASK: {MARKER} | priority high\n", "utf-8")
    (home / "config").mkdir(parents=True)
    (home / "config" / "agents.toml").write_text(agents_toml(folder), "utf-8")

    model = OfficeModel()
    with FakeLLMServer(responder=model) as llm:
        env.update(TETHER_MODEL="openai/office", TETHER_API_BASE=llm.base_url)
        daemon = Process([str(exe), "run", "--port", "0", "--ready-json"], env, tmp / "daemon.err")
        client: Process | None = None
        try:
            line = daemon.wait_line(lambda s: s.startswith("{"), "run --ready-json")
            ready = json.loads(line)
            port = int(ready["port"])
            step(f"run --port 0 --ready-json: listening on port {port}")

            token = (home / "config" / "token").read_text("utf-8").strip()
            ids = [agent.id for agent in asyncio.run(status(port, token)).agents]
            if ids != ["smoke"]:
                raise SmokeFailed(f"status lists agents {ids}, expected ['smoke']")
            step("hello from the reference client; status lists the agent")

            frozen = subprocess.run(
                [str(exe), "status"], env=env, capture_output=True, text=True, timeout=30
            )
            if frozen.returncode != 0 or "smoke" not in frozen.stdout:
                raise SmokeFailed(
                    f"daemon status: exit {frozen.returncode}: {frozen.stdout}{frozen.stderr}"
                )
            step("daemon status (the CLI's blocking client) lists the agent")

            db = tmp / "app.db"
            client = Process([str(exe), "dev-client", "--db", str(db)], env, tmp / "client.err")
            wait_device(port, token, "dev-client", client)
            step("dev-client connected as the device")

            trigger = subprocess.run(
                [str(exe), "trigger", "smoke", "--wait", "--timeout", str(TIMEOUT_S)],
                env=env,
                capture_output=True,
                text=True,
                timeout=TIMEOUT_S + 30,
            )
            if trigger.returncode != 0:
                raise SmokeFailed(
                    f"trigger --wait: exit {trigger.returncode}: {trigger.stdout}{trigger.stderr}"
                    f"\n{daemon.tail()}"
                )
            summary = trigger.stdout.strip().splitlines()[-1]
            with_tools = [r for r in llm.requests if r.get("tools")]
            if not with_tools:
                raise SmokeFailed("the model was never sent the agent's tools")
            with SqliteStore(db) as store:
                titles = [row["title"] for row in store.rows("tasks")]
            if titles != [MARKER]:
                raise SmokeFailed(f"app.db has tasks {titles}, expected [{MARKER!r}]")
            step(
                f"trigger --wait: {summary} ({llm.calls} model calls, {len(with_tools)} with "
                "tools); the marker task is in app.db"
            )

            client.stop()
            client = None
            llm.script(ToolCalls([Call("list_tasks", {})]), Text(f"On your plate: {MARKER}."))
            answer, served = asyncio.run(chat(port, token, db))
            echoed = MARKER in json.dumps(llm.requests[-1]["messages"])
            if answer != f"On your plate: {MARKER}." or not served or not echoed:
                raise SmokeFailed(
                    f"chat: answer {answer!r}, tool calls served {served}, "
                    f"tool result sent back to the model: {echoed}"
                )
            step(f"chat: streamed {answer!r} after a list_tasks tool call ({served})")
        finally:
            if client is not None:
                client.stop()
            code = daemon.stop()
        problems = [
            line
            for line in (home / "log" / "daemon.log").read_text("utf-8").splitlines()
            if any(word in line for word in ("Traceback", "ImportError", "No module named"))
        ]
        if problems:
            raise SmokeFailed("the daemon's log shows import failures:\n" + "\n".join(problems))
        if code != 0:
            raise SmokeFailed(f"daemon exited {code} on SIGTERM; {daemon.tail()}")
        if (home / "state" / "daemon.json").exists():
            raise SmokeFailed("the runtime file is left behind after SIGTERM")
        step("SIGTERM: exit 0, runtime file removed")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: smoke.py PATH/TO/dist/daemon/daemon", file=sys.stderr)
        return 2
    exe = Path(argv[0]).resolve()
    if not exe.is_file():
        print(f"smoke: no executable at {exe} (build it first)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="tether-smoke-") as tmp:
        try:
            smoke(exe, Path(tmp))
        except SmokeFailed as exc:
            print(f"FAIL {exc}", file=sys.stderr)
            return 1
    print("smoke test passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

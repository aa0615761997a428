"""Shared fixtures: an isolated home, an in-process daemon on a loopback port, clients.

Everything here is real: the daemon's server, the reference client over a real
WebSocket, SQLite files in tmp_path. Only the LLM provider is a local fake
(``tests/support/llm_server.py``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from daemon.app import Daemon
from daemon.config import load_config
from daemon.paths import Paths
from daemon.state import StateStore
from protocol.client import ProtocolClient, ReferenceClient
from tests.support.llm_server import FakeLLMServer

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

_TETHER_VARS = (
    "TETHER_MODEL",
    "TETHER_API_BASE",
    "TETHER_API_KEY",
    "TETHER_PORT",
    "TETHER_HOST",
    "TETHER_TOKEN",
    "TETHER_TOOL_CALL_TIMEOUT_S",
    "TETHER_LOG_LEVEL",
)


@pytest.fixture
def tether_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Paths:
    """Every path of the daemon under tmp_path; no TETHER_* leaks from the shell.

    In-process code gets the paths; the variable is for subprocesses a test spawns.
    """
    for var in _TETHER_VARS:
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("TETHER_HOME", str(home))
    return Paths.under(home).ensure()


@pytest.fixture
def llm_server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


@dataclass
class DaemonHarness:
    daemon: Daemon
    paths: Paths
    token: str
    port: int
    clients: list[ProtocolClient] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    async def device(self, db: str | Path, **kwargs: Any) -> ReferenceClient:
        """A connected reference client (the desktop app) serving ``db``."""
        kwargs.setdefault("token", self.token)
        token = kwargs.pop("token")
        client = ReferenceClient(self.url, token, db=str(db), **kwargs)
        self.clients.append(client)
        await client.connect()
        return client

    async def control(self, **kwargs: Any) -> ProtocolClient:
        client = ProtocolClient(self.url, self.token, client_name="test-cli", **kwargs)
        self.clients.append(client)
        await client.connect()
        return client


DaemonFactory = Callable[..., Awaitable[DaemonHarness]]


@pytest.fixture
async def make_daemon(tether_home: Paths) -> AsyncIterator[DaemonFactory]:
    """Start in-process daemons with config overrides (dotted keys: ``llm.model``)."""
    started: list[DaemonHarness] = []

    async def start(token: str = "test-token", **overrides: Any) -> DaemonHarness:
        overrides.setdefault("port", 0)
        dotted = {k.replace("__", "."): v for k, v in overrides.items()}
        config = load_config(tether_home, {}, overrides=dotted)
        state = StateStore.open(tether_home.state_db)
        daemon = Daemon(config=config, paths=tether_home, token=token, state=state, pid=os.getpid())
        port = await daemon.start()
        harness = DaemonHarness(daemon, tether_home, token, port)
        started.append(harness)
        return harness

    yield start
    for harness in started:
        for client in harness.clients:
            await client.close()
        await harness.daemon.stop()


@pytest.fixture
async def harness(make_daemon: DaemonFactory) -> DaemonHarness:
    return await make_daemon()

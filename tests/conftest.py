"""Shared fixtures: an isolated home, an in-process daemon on a loopback port, clients.

Everything here is real: the daemon's server, the reference client over a real
WebSocket, SQLite files in tmp_path. Only the LLM provider is a local fake
(``tests/support/llm_server.py``).

Rules:

- Tests talk only to 127.0.0.1 (``loopback_only``, autouse): an HTTP request
  (httpx, which litellm and the OpenAI SDK use) to any other host, a name lookup
  of any other host, or a socket connect to any other address is refused before
  it reaches the network, and the test fails at teardown even if the code under
  test swallowed the error. Nothing of ours is patched: the guard sits in httpx
  and the socket module. Daemons spawned as subprocesses are not covered; they
  get a loopback ``TETHER_API_BASE`` from their tests.
- Wait on a condition (``wait_until``) or an event, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from daemon.app import Daemon
from daemon.config import load_config
from daemon.paths import Paths
from daemon.state import StateStore
from protocol.reference import ProtocolClient, ReferenceClient
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


# --- tests talk only to 127.0.0.1 ----------------------------------------------------

_LOOPBACK_NAMES = {"localhost", "localhost.", "ip6-localhost"}


def is_loopback(host: str | bytes | None) -> bool:
    """A loopback name or address; also the unspecified ones, which only ``bind`` uses."""
    if host is None:
        return True
    name = (host.decode() if isinstance(host, bytes) else host).strip("[]").lower()
    if name in _LOOPBACK_NAMES or name == "":
        return True
    try:
        address = ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


@dataclass
class LoopbackGuard:
    """What ``loopback_only`` refused during the test (see the module's rules)."""

    refused: list[str] = field(default_factory=list)

    def refuse(self, what: str) -> str:
        message = f"tests talk only to 127.0.0.1: refused {what}"
        self.refused.append(message)
        return message


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackGuard]:
    guard = LoopbackGuard()

    def check(request: httpx.Request) -> None:
        if not is_loopback(request.url.host):
            raise httpx.ConnectError(
                guard.refuse(f"{request.method} {request.url}"), request=request
            )

    sync_send = httpx.Client.send
    async_send = httpx.AsyncClient.send

    def send(self: httpx.Client, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        check(request)
        return sync_send(self, request, **kwargs)

    async def asend(
        self: httpx.AsyncClient, request: httpx.Request, **kwargs: Any
    ) -> httpx.Response:
        check(request)
        return await async_send(self, request, **kwargs)

    getaddrinfo = socket.getaddrinfo

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not is_loopback(host):
            raise socket.gaierror(socket.EAI_NONAME, guard.refuse(f"a name lookup of {host!r}"))
        return getaddrinfo(host, *args, **kwargs)

    connect = socket.socket.connect
    connect_ex = socket.socket.connect_ex

    def checked(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not is_loopback(address[0]):
            raise ConnectionRefusedError(guard.refuse(f"a connection to {address!r}"))

    def guarded_connect(self: socket.socket, address: Any) -> None:
        checked(self, address)
        connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: Any) -> int:
        checked(self, address)
        return connect_ex(self, address)

    monkeypatch.setattr(httpx.Client, "send", send)
    monkeypatch.setattr(httpx.AsyncClient, "send", asend)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
    yield guard
    if guard.refused:
        pytest.fail("\n".join(guard.refused), pytrace=False)


# --- waiting -------------------------------------------------------------------------


async def wait_until(predicate: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    """Re-check ``predicate`` every few milliseconds until it holds; fail naming
    ``what`` after ``timeout`` seconds (a bound for a stuck test, not a measurement)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.005)


# --- an isolated home and in-process daemons ---------------------------------------------


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

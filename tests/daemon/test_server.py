"""The daemon's WebSocket server over real loopback connections.

protocol.md "Transport", "Handshake", "Errors" and "Close codes": every refusal is
checked with what actually reaches a client — an HTTP status before the upgrade,
or an ``error`` frame followed by the close code.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from daemon.config import Config
from daemon.server import FEATURES
from protocol.codec import decode, encode
from protocol.frames import (
    ControlHello,
    DeviceHello,
    Error,
    HelloAck,
    Pong,
    Status,
    _Frame,
)
from protocol.reference import HandshakeRefused, ReferenceClient
from tests.conftest import DaemonFactory, DaemonHarness, wait_until

# --- raw client helpers (the reference client hides what these tests look at) ---------


async def open_ws(url: str, headers: dict[str, str] | None = None) -> ClientConnection:
    return await connect(
        url,
        additional_headers=headers,
        compression=None,
        max_size=None,
        open_timeout=5,
        ping_interval=None,
        close_timeout=1,
    )


async def recv_frame(ws: ClientConnection, within: float = 5.0) -> _Frame:
    return decode(await asyncio.wait_for(ws.recv(), within))


async def close_code(ws: ClientConnection, within: float = 5.0) -> int | None:
    """Read (and drop) frames until the daemon closes; the close code it sent."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), within)
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None


def device_hello(token: str | None, device_id: str = "laptop-1", **kw: Any) -> str:
    frame = DeviceHello(protocol=kw.pop("protocol", 1), device_id=device_id, **kw)
    if token is not None:
        frame.token = token
    return encode(frame)


async def hello(ws: ClientConnection, text: str) -> HelloAck:
    await ws.send(text)
    ack = await recv_frame(ws)
    assert isinstance(ack, HelloAck), ack
    return ack


async def device(harness: DaemonHarness, device_id: str = "laptop-1") -> ClientConnection:
    """A raw connection that completed a device hello."""
    ws = await open_ws(harness.url)
    await hello(ws, device_hello(harness.token, device_id))
    return ws


async def control(harness: DaemonHarness) -> ClientConnection:
    ws = await open_ws(harness.url)
    await hello(ws, encode(ControlHello(protocol=1, token=harness.token)))
    return ws


async def expect_error(ws: ClientConnection, code: str) -> Error:
    frame = await recv_frame(ws)
    assert isinstance(frame, Error), frame
    assert frame.code == code, frame
    assert frame.message
    return frame


async def http_upgrade_status(port: int, host: str, extra: str = "") -> int:
    """Send an upgrade request by hand (to control the Host header); the HTTP status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                "GET / HTTP/1.1\r\n"
                f"Host: {host}\r\n"
                "Upgrade: websocket\r\n"
                "Connection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n"
                f"{extra}"
                "\r\n"
            ).encode()
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 5)
    finally:
        writer.close()
    parts = status_line.decode().split()
    assert parts and parts[0] == "HTTP/1.1", status_line
    return int(parts[1])


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "app.db"


# --- handshake: success ---------------------------------------------------------------


async def test_right_token_gets_hello_ack(harness: DaemonHarness, db: Path) -> None:
    client = await harness.device(db)
    ack = client.hello_ack
    assert ack is not None
    assert ack.protocol == 1
    assert ack.session_id and len(ack.session_id) >= 16
    assert ack.features == FEATURES
    assert set(ack.features) >= {"agents", "chat", "cancel", "status"}
    assert ack.daemon.name == "tether"
    assert ack.daemon.port == harness.port
    assert ack.heartbeat_s == harness.daemon.config.heartbeat_s
    assert ack.agents is None  # the hello carried no agents
    assert harness.daemon.server.device("reference-device") is not None
    # two sessions never share an id
    other = await harness.control()
    assert other.hello_ack is not None and other.hello_ack.session_id != ack.session_id


async def test_token_in_authorization_header(harness: DaemonHarness, db: Path) -> None:
    client = ReferenceClient(harness.url, harness.token, db=str(db), authorization_header=True)
    harness.clients.append(client)
    assert client.hello().token == harness.token  # the hello carries it too
    ack = await client.connect()
    assert ack.protocol == 1
    # the header alone is enough: a hello without any token is accepted
    ws = await open_ws(harness.url, {"Authorization": f"Bearer {harness.token}"})
    try:
        ack2 = await hello(ws, device_hello(None, "header-only"))
        assert ack2.protocol == 1
        await ws.send(json.dumps({"type": "status_request", "id": "s1"}))
        status = await recv_frame(ws)
        assert isinstance(status, Status) and "header-only" in status.devices
    finally:
        await ws.close()


async def test_protocol_list_gets_the_highest_common_version(harness: DaemonHarness) -> None:
    ws = await open_ws(harness.url)
    try:
        ack = await hello(ws, device_hello(harness.token, protocol=[1, 2]))
        assert ack.protocol == 1
    finally:
        await ws.close()


# --- handshake: refusals after the upgrade --------------------------------------------


@pytest.mark.parametrize("token", ["wrong-token", "", "test-token-but-longer"])
async def test_wrong_token_is_unauthorized_4401(harness: DaemonHarness, token: str) -> None:
    ws = await open_ws(harness.url)
    await ws.send(device_hello(token))
    error = await expect_error(ws, "unauthorized")
    assert token not in error.message or not token
    assert harness.token not in error.message
    assert await close_code(ws) == 4401
    assert harness.daemon.server.devices == {}


async def test_missing_token_is_unauthorized_4401(harness: DaemonHarness) -> None:
    ws = await open_ws(harness.url)
    await ws.send(device_hello(None))
    await expect_error(ws, "unauthorized")
    assert await close_code(ws) == 4401
    # and through the reference client
    client = ReferenceClient(harness.url, None, db=":memory:")
    with pytest.raises(HandshakeRefused) as info:
        await client.connect()
    assert info.value.code == 4401


async def test_wrong_authorization_header_is_http_401(harness: DaemonHarness, db: Path) -> None:
    client = ReferenceClient(harness.url, "wrong", db=str(db), authorization_header=True)
    with pytest.raises(HandshakeRefused) as info:
        await client.connect()
    assert info.value.status == 401
    assert info.value.code is None  # refused before any WebSocket frame
    with pytest.raises(InvalidStatus) as raw:
        await open_ws(harness.url, {"Authorization": f"Bearer {harness.token}x"})
    assert raw.value.response.status_code == 401


@pytest.mark.parametrize(
    "first",
    [
        json.dumps({"type": "status_request", "id": "s1"}),
        json.dumps({"type": "ping", "id": "p1"}),
        "this is not json",
        json.dumps({"type": "no_such_frame"}),
        json.dumps({"type": "device_hello", "protocol": 1}),  # invalid hello: no device_id
    ],
)
async def test_first_frame_not_a_hello_is_4400(harness: DaemonHarness, first: str) -> None:
    ws = await open_ws(harness.url)
    await ws.send(first)
    error = await expect_error(ws, "expected_hello")
    assert "hello" in error.message
    assert await close_code(ws) == 4400


async def test_no_hello_in_time_is_4408(make_daemon: DaemonFactory) -> None:
    harness = await make_daemon(hello_timeout_s=0.3)
    ws = await open_ws(harness.url)
    started = time.monotonic()
    assert await close_code(ws) == 4408
    elapsed = time.monotonic() - started
    assert 0.2 <= elapsed < 3.0


def test_hello_timeout_defaults_to_five_seconds() -> None:
    config = Config()
    assert config.hello_timeout_s == 5.0
    assert config.max_bad_frames == 20
    assert config.max_message_bytes == 16 * 1024 * 1024
    assert config.max_in_flight == 64
    assert config.tool_call_timeout_s == 30.0


async def test_unsupported_protocol_is_4402(harness: DaemonHarness) -> None:
    ws = await open_ws(harness.url)
    await ws.send(device_hello(harness.token, protocol=99))
    error = await expect_error(ws, "unsupported_protocol")
    assert error.supported == [1]
    assert "99" in error.message
    assert await close_code(ws) == 4402
    # a list with no common version is refused the same way
    ws = await open_ws(harness.url)
    await ws.send(encode(ControlHello(protocol=[2, 3], token=harness.token)))
    error = await expect_error(ws, "unsupported_protocol")
    assert error.supported == [1]
    assert await close_code(ws) == 4402


# --- handshake: refusals before the upgrade (Origin, Host, pending cap) ----------------


@pytest.mark.parametrize(
    "origin", ["https://evil.example", "null", "http://127.0.0.1", "app://tether"]
)
async def test_origin_not_allowed_is_http_403(harness: DaemonHarness, origin: str) -> None:
    with pytest.raises(InvalidStatus) as info:
        await open_ws(harness.url, {"Origin": origin})
    assert info.value.response.status_code == 403


async def test_allowed_origin_is_accepted(make_daemon: DaemonFactory) -> None:
    harness = await make_daemon(allowed_origins=["app://tether"])
    ws = await open_ws(harness.url, {"Origin": "app://tether"})
    try:
        ack = await hello(ws, device_hello(harness.token))
        assert ack.protocol == 1
    finally:
        await ws.close()
    with pytest.raises(InvalidStatus) as info:
        await open_ws(harness.url, {"Origin": "https://evil.example"})
    assert info.value.response.status_code == 403


@pytest.mark.parametrize(
    "host",
    [
        "evil.example:1234",
        "evil.example",
        "localhost.evil.example",
        "127.0.0.1.nip.io:80",
        "192.168.1.10:47821",
    ],
)
async def test_non_loopback_host_is_http_403(harness: DaemonHarness, host: str) -> None:
    assert await http_upgrade_status(harness.port, host) == 403


@pytest.mark.parametrize(
    "host", ["127.0.0.1:{port}", "localhost:{port}", "[::1]:{port}", "localhost"]
)
async def test_loopback_host_is_upgraded(harness: DaemonHarness, host: str) -> None:
    assert await http_upgrade_status(harness.port, host.format(port=harness.port)) == 101


async def test_too_many_connections_without_hello_is_http_503(make_daemon: DaemonFactory) -> None:
    harness = await make_daemon(max_pending_handshakes=2)
    silent = [await open_ws(harness.url), await open_ws(harness.url)]
    try:
        server = harness.daemon.server
        await wait_until(lambda: len(server._awaiting_hello) == 2, "the server counts both")
        with pytest.raises(InvalidStatus) as info:
            await open_ws(harness.url)
        assert info.value.response.status_code == 503
        # a connection that said hello no longer counts
        await hello(silent[0], device_hello(harness.token))  # uncounted before hello_ack
        ws = await open_ws(harness.url)
        await hello(ws, device_hello(harness.token, "second"))
        await ws.close()
    finally:
        for ws in silent:
            await ws.close()


# --- after the hello: bad frames are answered, not fatal ------------------------------


async def test_bad_frames_are_answered_and_the_session_goes_on(harness: DaemonHarness) -> None:
    ws = await device(harness)
    try:
        await ws.send('{"type": "status_request", "id": ')
        error = await expect_error(ws, "bad_frame")
        assert "malformed JSON" in error.message

        await ws.send(json.dumps({"type": "trigger", "id": "t1"}))
        error = await expect_error(ws, "bad_frame")
        assert "agent_id" in error.message and "trigger" in error.message
        assert error.id == "t1"  # correlated with the request it answers

        await ws.send(json.dumps({"type": "teleport", "id": "x9"}))
        error = await expect_error(ws, "unknown_type")
        assert "teleport" in error.message
        assert error.id == "x9"

        await ws.send(json.dumps(["not", "an", "object"]))
        await expect_error(ws, "bad_frame")

        await ws.send(b'{"type": "ping"}')  # binary messages are not the protocol
        error = await expect_error(ws, "bad_frame")
        assert "binary" in error.message

        await ws.send(device_hello(harness.token))  # a second hello
        error = await expect_error(ws, "bad_frame")
        assert "hello" in error.message

        await ws.send(json.dumps({"type": "status_request", "id": "s1", "future_field": 1}))
        status = await recv_frame(ws)
        assert isinstance(status, Status) and status.id == "s1"
        assert status.device_online is True
    finally:
        await ws.close()


async def test_daemon_only_frames_from_a_client_are_bad_frames(harness: DaemonHarness) -> None:
    ws = await device(harness)
    try:
        await ws.send(json.dumps({"type": "stream_text", "request_id": "h1", "chunk": "hi"}))
        error = await expect_error(ws, "bad_frame")
        assert "stream_text" in error.message and "daemon" in error.message
        await ws.send(json.dumps({"type": "tool_call", "id": "c1", "action": "get"}))
        error = await expect_error(ws, "bad_frame")
        assert "tool_call" in error.message
        assert error.id == "c1"
        await ws.send(json.dumps({"type": "ack", "id": "a1"}))
        await expect_error(ws, "bad_frame")
        await ws.send(json.dumps({"type": "ping", "id": "still-open"}))
        pong = await recv_frame(ws)
        assert isinstance(pong, Pong) and pong.id == "still-open"
    finally:
        await ws.close()


async def test_twenty_bad_frames_in_a_row_close_1008(harness: DaemonHarness) -> None:
    assert harness.daemon.config.max_bad_frames == 20
    ws = await device(harness)
    for i in range(19):
        await ws.send(f"garbage {i}")
        await expect_error(ws, "bad_frame")
    # a good frame resets the count: 19 more bad ones keep the session open
    await ws.send(json.dumps({"type": "ping", "id": "reset"}))
    assert isinstance(await recv_frame(ws), Pong)
    for i in range(19):
        await ws.send(json.dumps({"type": f"unknown_{i}"}))
        await expect_error(ws, "unknown_type")
    await ws.send(json.dumps({"type": "ping", "id": "alive"}))
    pong = await recv_frame(ws)
    assert isinstance(pong, Pong) and pong.id == "alive"
    for i in range(20):
        await ws.send(f"garbage {i}")
    assert await close_code(ws) == 1008
    await wait_until(lambda: harness.daemon.server.devices == {}, "the session to unregister")


async def test_message_larger_than_the_limit_closes_1009(make_daemon: DaemonFactory) -> None:
    harness = await make_daemon(max_message_bytes=2048)
    ws = await device(harness)
    # just under the limit is fine
    await ws.send(json.dumps({"type": "ping", "id": "p", "pad": "x" * 1900}))
    assert isinstance(await recv_frame(ws), Pong)
    await ws.send(json.dumps({"type": "ping", "id": "big", "pad": "x" * 4096}))
    assert await close_code(ws) == 1009


# --- sessions -------------------------------------------------------------------------


async def test_second_session_of_a_device_supersedes_the_first(
    harness: DaemonHarness, tmp_path: Path
) -> None:
    first = await device(harness, "laptop-1")
    first_session = harness.daemon.server.device("laptop-1")
    assert first_session is not None
    second = await harness.device(tmp_path / "second.db", device_id="laptop-1")
    assert await close_code(first) == 4409
    assert first_session.closed
    current = harness.daemon.server.device("laptop-1")
    assert current is not None and current is not first_session
    assert second.hello_ack is not None and current.session_id == second.hello_ack.session_id
    # the second works: its status says the device is online and tool calls reach it
    status = await second.status()
    assert status.device_online and status.devices == ["laptop-1"]
    row = await current.store().insert("tasks", {"title": "after supersede"})
    assert second.store.count("tasks") == 1 and row["title"] == "after supersede"
    # another device_id does not supersede anyone
    third = await device(harness, "desktop-2")
    try:
        assert sorted(harness.daemon.server.devices) == ["desktop-2", "laptop-1"]
        assert second.connected
    finally:
        await third.close()


async def test_control_session_asks_status_but_serves_no_tool_calls(
    harness: DaemonHarness,
) -> None:
    ws = await control(harness)
    try:
        await ws.send(json.dumps({"type": "status_request", "id": "s1"}))
        status = await recv_frame(ws)
        assert isinstance(status, Status) and status.id == "s1"
        assert status.device_online is False and status.devices == []
        await ws.send(json.dumps({"type": "tool_result", "id": "c1", "ok": True, "rows": []}))
        error = await expect_error(ws, "bad_frame")
        assert "control" in error.message
        assert harness.daemon.server.devices == {}
        await ws.send(json.dumps({"type": "ping", "id": "p"}))
        assert isinstance(await recv_frame(ws), Pong)
    finally:
        await ws.close()


async def test_ping_is_answered_with_pong_of_the_same_id(harness: DaemonHarness) -> None:
    ws = await device(harness)
    try:
        for ping_id in ("p-1", "ü-ñ", "x" * 100):
            await ws.send(json.dumps({"type": "ping", "id": ping_id}))
            pong = await recv_frame(ws)
            assert isinstance(pong, Pong) and pong.id == ping_id
        await ws.send(json.dumps({"type": "ping"}))
        raw = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert raw == {"type": "pong"}
    finally:
        await ws.close()
    # the reference client's ping round-trips too
    client = await harness.control()
    await client.ping()


async def test_status_request_reports_device_online(harness: DaemonHarness, db: Path) -> None:
    cli = await harness.control()
    status = await cli.status()
    assert status.device_online is False
    assert status.devices == []
    assert status.agents == [] and status.active_runs == []
    assert status.daemon is not None and status.daemon.port == harness.port
    app = await harness.device(db, device_id="laptop-1")
    status = await cli.status()
    assert status.device_online is True
    assert status.devices == ["laptop-1"]
    await app.close()
    for _ in range(100):
        status = await cli.status()
        if not status.device_online:
            break
        await asyncio.sleep(0.01)
    assert status.device_online is False


async def hung_device(harness: DaemonHarness, device_id: str) -> asyncio.StreamWriter:
    """A device session whose app froze: it said hello, then never reads or answers again.

    Written by hand over TCP so nothing on the client side answers the close handshake.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", harness.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{harness.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert response.startswith(b"HTTP/1.1 101")
    payload = device_hello(harness.token, device_id).encode()
    assert len(payload) < 126
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    writer.write(bytes([0x81, 0x80 | len(payload)]) + mask + masked)  # FIN, text, masked
    await writer.drain()
    for _ in range(200):
        if harness.daemon.server.device(device_id) is not None:
            return writer
        await asyncio.sleep(0.01)
    raise AssertionError("the hung device never got a session")


async def test_superseding_a_frozen_session_does_not_delay_the_new_one(
    harness: DaemonHarness, tmp_path: Path
) -> None:
    frozen = await hung_device(harness, "laptop-1")
    try:
        started = time.monotonic()
        client = await asyncio.wait_for(
            harness.device(tmp_path / "app.db", device_id="laptop-1"), 2.0
        )
        assert client.hello_ack is not None
        assert time.monotonic() - started < 1.0
    finally:
        frozen.close()  # lets the daemon finish the old close handshake

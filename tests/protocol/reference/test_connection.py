"""BatchedServerConnection / BatchedClientConnection over a real loopback WebSocket.

Nothing of ours is mocked: the only instrumentation is a counting wrapper around
the transport's ``write`` (the far edge), installed by subclasses defined here.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.connection import Connection
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

from protocol.reference.connection import (
    FLUSH_BYTES,
    FLUSH_MESSAGES,
    BatchedClientConnection,
    BatchedServerConnection,
)


class _CountingWrites(Connection):
    """Mixin: the transport records the size of every ``write`` (then does it)."""

    writes: list[int]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        writes: list[int] = []
        self.writes = writes
        real_write: Callable[[Any], None] = self.transport.write

        def write(data: Any) -> None:
            writes.append(len(data))
            real_write(data)

        self.transport.write = write  # type: ignore[method-assign]


class CountingServerConnection(_CountingWrites, BatchedServerConnection):
    """BatchedServerConnection whose transport counts its writes."""


class CountingClientConnection(_CountingWrites, BatchedClientConnection):
    """BatchedClientConnection whose transport counts its writes."""


@dataclass
class Peers:
    server: CountingServerConnection
    client: ClientConnection


@asynccontextmanager
async def open_peers(
    server_kwargs: dict[str, Any] | None = None,
    client_kwargs: dict[str, Any] | None = None,
) -> AsyncIterator[Peers]:
    """A CountingServerConnection on 127.0.0.1 and a plain client connected to it.

    The server handler only keeps its connection open; the test drives it."""
    accepted: asyncio.Queue[CountingServerConnection] = asyncio.Queue()

    async def handler(ws: ServerConnection) -> None:
        assert isinstance(ws, CountingServerConnection)
        await accepted.put(ws)
        await ws.wait_closed()

    async with serve(
        handler,
        "127.0.0.1",
        0,
        create_connection=CountingServerConnection,
        compression=None,
        ping_interval=None,
        **(server_kwargs or {}),
    ) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(
            f"ws://127.0.0.1:{port}",
            compression=None,
            ping_interval=None,
            **(client_kwargs or {}),
        ) as client:
            conn = await asyncio.wait_for(accepted.get(), 5)
            conn.writes.clear()  # forget the handshake response
            yield Peers(server=conn, client=client)


@pytest.fixture
async def peers() -> AsyncIterator[Peers]:
    async with open_peers() as p:
        yield p


def _message(i: int, pad: int = 0) -> bytes:
    """A distinct UTF-8 JSON text message; same length for the same ``pad``."""
    return json.dumps({"i": f"{i:05d}", "pad": "x" * pad}).encode()


def _marker(loop: asyncio.AbstractEventLoop) -> list[int]:
    """A list that gets an item as soon as the loop runs a pass."""
    ran: list[int] = []
    loop.call_soon(ran.append, 1)
    return ran


async def _recv_all(client: ClientConnection, n: int) -> list[str]:
    async with asyncio.timeout(5):
        return [str(await client.recv()) for _ in range(n)]


async def test_one_pass_burst_is_written_in_batches(peers: Peers) -> None:
    conn = peers.server
    n = 1 + 2 * FLUSH_MESSAGES + 7  # 40 with FLUSH_MESSAGES = 16
    messages = [_message(i) for i in range(n)]
    assert len({len(m) for m in messages}) == 1  # equal frames: sizes tell batches apart
    frame = 2 + len(messages[0])  # server frames: 2-byte header, no mask
    assert frame * FLUSH_MESSAGES < FLUSH_BYTES  # only the message count triggers writes

    ran = _marker(asyncio.get_running_loop())
    for m in messages:
        await conn.send_text_batched(m)
    assert not ran, "send_text_batched yielded to the event loop"
    # The first message at once, then a write each FLUSH_MESSAGES queued messages.
    full, rest = divmod(n - 1, FLUSH_MESSAGES)
    assert conn.writes == [frame] + [frame * FLUSH_MESSAGES] * full

    received = await _recv_all(peers.client, n)
    assert received == [m.decode() for m in messages]
    # The rest went in one write at the end of the pass.
    assert conn.writes == [frame] + [frame * FLUSH_MESSAGES] * full + [frame * rest]
    assert len(conn.writes) == 4  # 1 + 16 + 16 + 7 with the values of today


async def test_lone_message_is_written_at_once(peers: Peers) -> None:
    conn = peers.server
    ran = _marker(asyncio.get_running_loop())
    await conn.send_text_batched(_message(1))
    assert not ran, "send_text_batched yielded to the event loop"
    assert len(conn.writes) == 1

    assert await _recv_all(peers.client, 1) == [_message(1).decode()]
    await asyncio.sleep(0)  # the end-of-pass flush has nothing left to write
    assert len(conn.writes) == 1


async def _recv_until_closed(client: ClientConnection) -> tuple[list[str], ConnectionClosed]:
    received: list[str] = []
    while True:
        try:
            received.append(str(await client.recv()))
        except ConnectionClosed as exc:
            return received, exc


async def test_close_in_the_same_pass_keeps_queued_messages(peers: Peers) -> None:
    conn = peers.server
    # The peer reads as messages arrive: websockets 14.0 drops messages still unread
    # when the connection closes (a receiver-side limit that later versions lifted).
    receiver = asyncio.create_task(_recv_until_closed(peers.client))
    await asyncio.sleep(0)

    messages = [_message(i) for i in range(5)]
    for m in messages:
        await conn.send_text_batched(m)
    await asyncio.wait_for(conn.close(), 5)

    received, exc = await asyncio.wait_for(receiver, 5)
    assert received == [m.decode() for m in messages]
    assert isinstance(exc, ConnectionClosedOK)


@pytest.mark.parametrize("closer", ["server", "client"])
async def test_send_on_closed_connection_raises(peers: Peers, closer: str) -> None:
    conn = peers.server
    if closer == "server":
        await asyncio.wait_for(conn.close(), 5)
    else:
        await asyncio.wait_for(peers.client.close(), 5)
        await asyncio.wait_for(conn.wait_closed(), 5)
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(conn.send_text_batched(_message(1)), 5)


async def test_message_over_flush_bytes_is_written_at_once() -> None:
    # A write limit above the message size: no pause, so no await yields.
    async with open_peers(
        server_kwargs={"write_limit": 8 * FLUSH_BYTES},
        client_kwargs={"max_size": None},
    ) as p:
        conn = p.server
        big = _message(2, pad=FLUSH_BYTES)
        ran = _marker(asyncio.get_running_loop())
        await conn.send_text_batched(_message(1))
        assert len(conn.writes) == 1
        await conn.send_text_batched(big)
        assert not ran, "send_text_batched yielded to the event loop"
        assert not conn.paused
        assert len(conn.writes) == 2

        assert await _recv_all(p.client, 2) == [_message(1).decode(), big.decode()]
        assert len(conn.writes) == 2


async def test_backpressure_waits_then_delivers_everything() -> None:
    size = 1024 * 1024
    max_messages = 48  # < 64 MiB in all; loopback buffers fill long before
    async with open_peers(client_kwargs={"max_size": None}) as p:
        conn = p.server
        p.client.transport.pause_reading()
        sent: list[bytes] = []
        pending: asyncio.Task[None] | None = None
        for i in range(max_messages):
            data = _message(i, pad=size)
            sent.append(data)
            task = asyncio.create_task(conn.send_text_batched(data))
            done, _ = await asyncio.wait({task}, timeout=0.5)
            if not done:
                pending = task
                break
            task.result()
        assert pending is not None, f"no send waited after {max_messages} MiB unread"
        assert conn.paused
        assert not pending.done()

        p.client.transport.resume_reading()
        async with asyncio.timeout(8):
            received = [await p.client.recv() for _ in sent]
            await pending
        assert len(received) == len(sent)
        for i, (got, data) in enumerate(zip(received, sent, strict=True)):
            assert got == data.decode(), f"message {i} differs"


async def test_client_batches_are_masked_and_echoed_in_order() -> None:
    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with serve(echo, "127.0.0.1", 0, compression=None, ping_interval=None) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(
            f"ws://127.0.0.1:{port}",
            create_connection=CountingClientConnection,
            compression=None,
            ping_interval=None,
        ) as client:
            assert isinstance(client, CountingClientConnection)
            client.writes.clear()  # forget the handshake request
            n = 20
            messages = [_message(i) for i in range(n)]
            for m in messages:
                await client.send_text_batched(m)
            # Batched for real: 1 at once, one write of FLUSH_MESSAGES, the rest later.
            assert len(client.writes) == 1 + (n - 1) // FLUSH_MESSAGES
            assert await _recv_all(client, n) == [m.decode() for m in messages]
            assert len(client.writes) == 1 + (n - 1) // FLUSH_MESSAGES + 1


async def test_send_after_queued_messages_keeps_order(peers: Peers) -> None:
    conn = peers.server
    await conn.send_text_batched(_message(0))  # written at once
    await conn.send_text_batched(_message(1))  # queued
    await conn.send_text_batched(_message(2))  # queued
    await conn.send(_message(3).decode())  # websockets' send carries 1 and 2 with it
    await conn.send_text_batched(_message(4))  # queued until the end of the pass
    assert len(conn.writes) == 2

    expected = [_message(i).decode() for i in range(5)]
    assert await _recv_all(peers.client, 5) == expected
    assert len(conn.writes) == 3

"""websockets connections that write a burst of messages with one system call.

websockets writes every message with its own ``transport.write``: one ``send(2)``
per message, and the peer wakes and reads once per message. With many tool calls
in flight those system calls were about a third of each side's CPU time in the rpc
benchmark (py-spy).

``send_text_batched(data)`` sends one text message. The first message of an
event-loop pass is written at once, so a lone message (a single tool call, a chat
chunk) waits for nothing. Messages that follow in the same pass are queued in the
sans-I/O protocol and written together: at the end of the pass, or as soon as
``FLUSH_MESSAGES`` messages or ``FLUSH_BYTES`` bytes are queued. websockets' own
writes (``send``, pings, close frames, replies while reading) carry anything
queued with them, in order, so a close never loses or reorders a queued message.
The daemon's server uses ``BatchedServerConnection`` too (one of the rpc hot-path
places listed in protocol/README.md "Hot path").

Rules:

- Only for unfragmented text messages; none of our code sends fragmented ones.
- A connection that is not open raises ``ConnectionClosed``, as ``send`` does.
- Backpressure as in ``send``: when the transport's buffer is over its high-water
  mark, ``send_text_batched`` waits until it drains.
- It relies on documented attributes of websockets' asyncio ``Connection``
  (``protocol``, ``transport``) and overrides its ``send_data``; checked with
  websockets 15 to 17 (pyproject allows >=15: 14 drops messages
  received but not yet read when the connection closes).
"""

from __future__ import annotations

import asyncio
import logging

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.connection import Connection
from websockets.asyncio.server import ServerConnection
from websockets.protocol import State

__all__ = ["FLUSH_BYTES", "FLUSH_MESSAGES", "BatchedClientConnection", "BatchedServerConnection"]

log = logging.getLogger("tether.connection")

# A write carries at most this many queued messages (or bytes). Smaller batches let
# the peer start on the first messages while we produce the rest: with 64 calls in
# flight, batches of 16-32 gave the best rpc figures; 48 and more made the two sides
# take turns (one idle while the other works) and halved the rate.
FLUSH_MESSAGES = 16
FLUSH_BYTES = 256 * 1024


class _BatchedWrites(Connection):
    """Mixin for websockets' asyncio client and server connections."""

    _flush_handle: asyncio.Handle | None = None
    _queued_bytes = 0
    _queued = 0

    async def send_text_batched(self, data: bytes) -> None:
        """Send ``data`` (UTF-8 JSON) as one text message. The first message of an
        event-loop pass is written at once; the ones that follow in the same pass
        are written together when the pass ends."""
        if self.protocol.state is not State.OPEN:
            # Let websockets raise the right ConnectionClosed (after the close).
            await self.send(data, text=True)
            return
        self.protocol.send_text(data)
        if self._flush_handle is None:
            self._write()  # before scheduling the flush: the write is what the peer awaits
            self._flush_handle = self.loop.call_soon(self._flush)
        else:
            self._queued += 1
            self._queued_bytes += len(data)
            if self._queued >= FLUSH_MESSAGES or self._queued_bytes >= FLUSH_BYTES:
                self._write()
        if self.paused:
            await self.drain()

    def _flush(self) -> None:
        self._flush_handle = None
        self._write()

    def _write(self) -> None:
        try:
            self.send_data()
        except Exception as exc:  # a broken transport: websockets would abort too
            log.debug("writing queued messages failed: %s", exc)
            self.transport.abort()

    def send_data(self) -> None:
        """Write everything the protocol has queued, as one write (websockets writes
        each frame separately)."""
        self._queued = self._queued_bytes = 0
        chunks = self.protocol.data_to_send()
        if not chunks:
            return
        if len(chunks) == 1 and chunks[0]:
            self.transport.write(chunks[0])
            return
        run: list[bytes] = []
        for data in chunks:
            if data:
                run.append(data)
                continue
            # b"" means end of stream: write what came before, then half-close.
            if run:
                self.transport.write(b"".join(run))
                run = []
            if self.transport.can_write_eof():
                try:
                    self.transport.write_eof()
                except (OSError, RuntimeError):
                    pass
            else:
                self.transport.close()
        if run:
            self.transport.write(b"".join(run))


class BatchedClientConnection(_BatchedWrites, ClientConnection):
    """``ClientConnection`` with ``send_text_batched`` (``connect(create_connection=...)``)."""


class BatchedServerConnection(_BatchedWrites, ServerConnection):
    """``ServerConnection`` with ``send_text_batched`` (``serve(create_connection=...)``)."""

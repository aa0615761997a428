"""A stand-in for the daemon at the far edge: a WebSocket server on 127.0.0.1 that
answers every message with the next scripted reply, for the CLI's blocking client
(``daemon.cli.oneshot``) to meet a peer that is not tether."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from websockets.sync.server import ServerConnection, serve

__all__ = ["scripted_peer"]


@contextmanager
def scripted_peer(replies: list[str]) -> Iterator[int]:
    """Serve on a free port (yielded); each received message gets the next reply."""

    def handler(ws: ServerConnection) -> None:
        for reply in replies:
            ws.recv()
            ws.send(reply)

    with serve(handler, "127.0.0.1", 0) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server.socket.getsockname()[1]
        finally:
            server.shutdown()
            thread.join(5)

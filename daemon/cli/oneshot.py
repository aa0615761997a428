"""One request to the running daemon, blocking, for verbs that must start fast.

``daemon status`` is what scripts, panels and a worried user run again and again; the
full control client (``protocol.reference.ProtocolClient``: asyncio, every frame as a
pydantic model) costs about 0.2 s of imports before the first byte is sent. This
module speaks the same protocol with ``websockets.sync`` and plain JSON: connect with
the token, ``control_hello`` without a subscription, one request, the answer with its
id, close. Nothing else.

Rules:

- Same endpoint, token and errors as :func:`daemon.cli.common.control_client`
  (:func:`~daemon.cli.common.endpoint`): not running or nothing listening ->
  ``NotRunning``; the token refused (401 at the upgrade, or ``unauthorized`` and 4401
  after the hello) -> ``DaemonError`` saying what to do; an ``error`` answer ->
  ``RequestFailed``; no answer within ``timeout`` (a stopped or stuck process) or a
  reply that is not a frame -> ``DaemonError``.
- Frames are the protocol's own JSON: the daemon decodes what this sends with
  ``protocol.codec`` (a bad frame would be refused), and a test decodes the answer
  the same way and compares it with the full client's.
- The answer is the frame as the daemon sent it (a ``dict``): the caller reads it
  without building models.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from daemon import __version__
from daemon.errors import DaemonError, NotRunning
from daemon.paths import Paths
from protocol.errors import CloseCode, RequestFailed

from .common import endpoint, token_refused

__all__ = ["ask"]

PROTOCOL = 1  # protocol.frames.PROTOCOL_VERSION (a test keeps them equal)


def ask(paths: Paths, request: dict[str, Any], *, timeout: float = 10.0) -> dict[str, Any]:
    """Send ``request`` (its ``id`` is set here) in a fresh control session and return
    the daemon's answer to it."""
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
    from websockets.sync.client import connect

    url, token, info = endpoint(paths)
    request = {**request, "id": request.get("id") or f"cli-{os.urandom(6).hex()}"}
    hello: dict[str, Any] = {
        "type": "control_hello",
        "protocol": PROTOCOL,
        "client": {"name": "tether-cli", "version": __version__},
        "subscribe": False,
    }
    if token is not None:
        hello["token"] = token
    headers = {"Authorization": f"Bearer {token}"} if token is not None else None
    deadline = time.monotonic() + timeout
    try:
        with connect(
            url,
            additional_headers=headers,
            open_timeout=timeout,
            compression=None,
            max_size=None,  # a status with many agents may pass 1 MiB (the daemon caps frames)
            proxy=None,  # loopback: never through an http_proxy from the environment
        ) as ws:
            ws.send(json.dumps(hello))
            first = _receive(ws, deadline)
            if first.get("type") == "error" and first.get("code") == "unauthorized":
                raise token_refused(info)  # e.g. no token file: the app gave TETHER_TOKEN
            if first.get("type") != "hello_ack":
                raise _refused(first, info.port)
            ws.send(json.dumps(request))
            while True:
                frame = _receive(ws, deadline)
                if frame.get("id") != request["id"]:
                    continue  # a heartbeat or anything else that is not the answer
                if frame.get("type") == "error":
                    raise RequestFailed(
                        str(frame.get("code", "internal")), str(frame.get("message", ""))
                    )
                return frame
    except InvalidStatus as exc:
        if exc.response.status_code == 401:
            raise token_refused(info) from None
        raise NotRunning(f"the daemon at port {info.port} refused the CLI: {exc}") from None
    except ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd is not None else None
        if code == CloseCode.UNAUTHORIZED:
            raise token_refused(info) from None
        raise DaemonError(
            f"the daemon at port {info.port} closed the connection ({code or 'no code'})"
        ) from None
    except TimeoutError:  # the port is open (the handshake began) but nobody answers
        raise _no_answer(info.pid, info.port, timeout) from None
    except (OSError, InvalidHandshake) as exc:
        raise NotRunning(f"cannot reach the daemon at port {info.port}: {exc}") from None


def _receive(ws: Any, deadline: float) -> dict[str, Any]:
    remaining = deadline - time.monotonic()
    message = ws.recv(timeout=max(remaining, 0.0))  # TimeoutError: see ask()
    try:
        frame = json.loads(message)
    except ValueError:
        frame = None
    if not isinstance(frame, dict):
        raise DaemonError("the daemon sent something that is not a frame (is it tether?)")
    return frame


def _no_answer(pid: int, port: int, timeout: float) -> DaemonError:
    return DaemonError(
        f"the daemon (pid {pid}, port {port}) is running but did not answer within "
        f"{timeout:g} s; `daemon logs` may say why, or restart it"
    )


def _refused(frame: dict[str, Any], port: int) -> DaemonError:
    what = frame.get("message") or frame.get("code") or frame.get("type")
    return DaemonError(f"the daemon at port {port} did not accept the CLI: {what}")

"""A local OpenAI-compatible chat-completions server for tests and benchmarks.

Rules:

- It listens on 127.0.0.1, port 0 (the OS picks), in a background thread
  (``ThreadingHTTPServer``), so in-process code and subprocesses can both use it.
- ``POST /v1/chat/completions`` (and ``/chat/completions``) answers with the real
  OpenAI shapes: a ``chat.completion`` object, or, when the body has
  ``"stream": true``, ``text/event-stream`` ``chat.completion.chunk`` deltas ending
  with ``data: [DONE]`` (plus a usage chunk when ``stream_options.include_usage``).
- What it answers: first the replies queued with :meth:`FakeLLMServer.script`
  (FIFO), then whatever :attr:`FakeLLMServer.responder` returns for the request
  body (default: the text ``"ok"``).
- Prompt tokens are a deterministic estimate, ``len(json([messages, tools])) // 4``, so
  tests and benchmarks can compare token volumes; completion tokens are
  ``len(text) // 4 + 1``.
- Every received JSON body is recorded in :attr:`FakeLLMServer.requests`, even
  for replies that fail (``Error``, ``Garbage``, ``Hang``).
- :attr:`FakeLLMServer.in_flight` counts the completions being answered right now
  (from the parsed body to the last byte sent) and :attr:`FakeLLMServer.max_in_flight`
  the most there were at once: tests prove concurrency by overlap, not by timing.

Usage::

    with FakeLLMServer() as server:
        server.script(ToolCalls([Call("read_file", {"path": "a.txt"})]), Text("done"))
        ...  # model="openai/fake", api_base=server.base_url
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "Call",
    "Error",
    "FakeLLMServer",
    "Garbage",
    "Hang",
    "Length",
    "Reply",
    "Text",
    "ToolCalls",
    "estimate_prompt_tokens",
]


@dataclass(frozen=True)
class Text:
    """A plain assistant message (finish_reason ``stop``)."""

    content: str
    chunk_size: int = 4  # characters per streamed delta
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0  # pause after each streamed content/arguments delta
    # Streamed only: after the first content delta, wait until this is set (at most
    # 30 s), so a test can see what a client shows before the answer is complete.
    hold: threading.Event | None = None


@dataclass(frozen=True)
class Call:
    """One tool call; a ``str`` ``arguments`` is sent verbatim (e.g. malformed JSON)."""

    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    id: str | None = None

    def arguments_text(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments)


@dataclass(frozen=True)
class ToolCalls:
    """An assistant message with tool calls (finish_reason ``tool_calls``)."""

    calls: list[Call]
    content: str = ""
    chunk_size: int = 4
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0


@dataclass(frozen=True)
class Length:
    """A reply cut off by the token limit (finish_reason ``length``)."""

    content: str
    chunk_size: int = 4
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0


@dataclass(frozen=True)
class Error:
    """An HTTP error; ``retry_after`` becomes a ``Retry-After`` header."""

    status: int
    body: dict[str, Any] | str | None = None
    retry_after: str | float | None = None
    delay_s: float = 0.0


@dataclass(frozen=True)
class Hang:
    """Sleep ``seconds`` before answering "ok" (to trip client timeouts)."""

    seconds: float
    delay_s: float = 0.0


@dataclass(frozen=True)
class Garbage:
    """A 200 response whose body is not JSON."""

    text: str = "<html>definitely not json</html>"
    delay_s: float = 0.0


Reply = Text | ToolCalls | Length | Error | Hang | Garbage


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """The deterministic prompt-token estimate the server reports: the messages and the
    tool schemas (providers bill both), at 4 characters a token."""
    sent = [body.get("messages", []), body.get("tools") or []]
    return len(json.dumps(sent, sort_keys=True)) // 4


def _completion_tokens(text: str) -> int:
    return len(text) // 4 + 1


def _default_responder(body: dict[str, Any]) -> Reply:
    return Text("ok")


class FakeLLMServer:
    """A scripted OpenAI-compatible server on 127.0.0.1 (see module docstring)."""

    def __init__(self, responder: Callable[[dict[str, Any]], Reply] | None = None) -> None:
        self._initial_responder = responder or _default_responder
        self.responder: Callable[[dict[str, Any]], Reply] = self._initial_responder
        self._connections: set[socket.socket] = set()
        self._queue: deque[Reply] = deque()
        self._requests: list[dict[str, Any]] = []
        self._authorizations: list[str | None] = []
        self._in_flight = 0
        self._max_in_flight = 0
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> FakeLLMServer:
        if self._httpd is not None:
            return self
        handler = type("_Handler", (_Handler,), {"fake": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="fake-llm-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        with self._lock:  # keep-alive connections would otherwise outlive the server
            connections, self._connections = list(self._connections), set()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- scripting and inspection -----------------------------------------

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *replies: Reply) -> None:
        """Queue replies; each request takes the next one."""
        with self._lock:
            self._queue.extend(replies)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """A copy of the JSON bodies received so far."""
        with self._lock:
            return list(self._requests)

    @property
    def authorizations(self) -> list[str | None]:
        """The ``Authorization`` header of each request so far (None when absent)."""
        with self._lock:
            return list(self._authorizations)

    @property
    def calls(self) -> int:
        with self._lock:
            return len(self._requests)

    @property
    def in_flight(self) -> int:
        """Completions being answered right now."""
        with self._lock:
            return self._in_flight

    @property
    def max_in_flight(self) -> int:
        """The most completions answered at once since start (or ``reset``)."""
        with self._lock:
            return self._max_in_flight

    def reset(self) -> None:
        """Forget queued replies, recorded requests and the overlap peak; restore the
        first responder."""
        with self._lock:
            self._queue.clear()
            self._requests.clear()
            self._authorizations.clear()
            self._max_in_flight = self._in_flight
        self.responder = self._initial_responder

    def _begin(self) -> None:
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def _end(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _next_reply(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            self._requests.append(body)
            if self._queue:
                return self._queue.popleft()
        return self.responder(body)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeLLMServer  # set on the per-server subclass
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        with self.fake._lock:
            self.fake._connections.add(self.connection)

    def finish(self) -> None:
        with self.fake._lock:
            self.fake._connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "x"}})
            return
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._send_json(400, {"error": {"message": "body is not JSON", "type": "x"}})
            return
        with self.fake._lock:
            self.fake._authorizations.append(self.headers.get("Authorization"))
        self.fake._begin()
        try:
            self._reply(body, self.fake._next_reply(body))
        finally:
            self.fake._end()

    def _reply(self, body: dict[str, Any], reply: Reply) -> None:
        if reply.delay_s:
            time.sleep(reply.delay_s)
        if isinstance(reply, Error):
            self._send_error(reply)
        elif isinstance(reply, Garbage):
            self._send_raw(200, reply.text.encode(), "application/json")
        elif isinstance(reply, Hang):
            time.sleep(reply.seconds)
            self._answer(body, Text("ok"))
        else:
            self._answer(body, reply)

    # -- answers -----------------------------------------------------------

    def _answer(self, body: dict[str, Any], reply: Text | ToolCalls | Length) -> None:
        model = str(body.get("model", "fake"))
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            self._send_stream(_chunks(body, model, reply, include_usage))
        else:
            self._send_json(200, _completion(body, model, reply))

    def _send_error(self, reply: Error) -> None:
        payload: Any = reply.body
        if payload is None:
            payload = {
                "error": {
                    "message": f"fake server error {reply.status}",
                    "type": "server_error" if reply.status >= 500 else "invalid_request_error",
                    "code": str(reply.status),
                }
            }
        extra = {} if reply.retry_after is None else {"Retry-After": str(reply.retry_after)}
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        self._send_raw(reply.status, data, "application/json", extra)

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        self._send_raw(status, json.dumps(payload).encode(), "application/json")

    def _send_raw(
        self, status: int, data: bytes, ctype: str, extra: dict[str, str] | None = None
    ) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (e.g. timed out); nothing to do

    def _send_stream(self, events: Iterator[tuple[dict[str, Any], float]]) -> None:
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            for event, pause in events:
                self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
                self.wfile.flush()
                if pause:
                    time.sleep(pause)
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True


def _content_and_finish(reply: Text | ToolCalls | Length) -> tuple[str, str]:
    if isinstance(reply, ToolCalls):
        return reply.content, "tool_calls"
    if isinstance(reply, Length):
        return reply.content, "length"
    return reply.content, "stop"


def _call_ids(reply: Text | ToolCalls | Length) -> list[tuple[Call, str]]:
    if not isinstance(reply, ToolCalls):
        return []
    return [(c, c.id or f"call_{uuid.uuid4().hex[:24]}") for c in reply.calls]


def _usage(body: dict[str, Any], reply: Text | ToolCalls | Length) -> dict[str, int]:
    content, _ = _content_and_finish(reply)
    args = "".join(c.arguments_text() for c, _ in _call_ids(reply))
    prompt = estimate_prompt_tokens(body)
    completion = _completion_tokens(content + args)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _completion(body: dict[str, Any], model: str, reply: Text | ToolCalls | Length) -> Any:
    content, finish = _content_and_finish(reply)
    message: dict[str, Any] = {"role": "assistant", "content": content or None}
    calls = _call_ids(reply)
    if calls:
        message["tool_calls"] = [
            {
                "id": call_id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments_text()},
            }
            for c, call_id in calls
        ]
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": _usage(body, reply),
    }


def _pieces(text: str, size: int) -> list[str]:
    size = max(1, size)
    return [text[i : i + size] for i in range(0, len(text), size)]


def _chunks(
    body: dict[str, Any], model: str, reply: Text | ToolCalls | Length, include_usage: bool
) -> Iterator[tuple[dict[str, Any], float]]:
    """The stream's events, each with the pause to make after sending it."""
    ident = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }

    pause = reply.chunk_delay_s
    content, finish = _content_and_finish(reply)
    yield chunk({"role": "assistant", "content": ""}), 0.0
    hold = reply.hold if isinstance(reply, Text) else None
    for index, piece in enumerate(_pieces(content, reply.chunk_size)):
        if index == 1 and hold is not None:
            hold.wait(30)  # the first delta is written and flushed by now
        yield chunk({"content": piece}), pause
    for index, (call, call_id) in enumerate(_call_ids(reply)):
        # First delta names the call; the arguments follow in pieces, as OpenAI does.
        yield (
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": call_id,
                            "type": "function",
                            "function": {"name": call.name, "arguments": ""},
                        }
                    ]
                }
            ),
            0.0,
        )
        for piece in _pieces(call.arguments_text(), reply.chunk_size):
            delta = {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
            yield chunk(delta), pause
    yield chunk({}, finish), 0.0
    if include_usage:
        yield (
            {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": _usage(body, reply),
            },
            0.0,
        )


if __name__ == "__main__":
    # A standalone fake LLM for tests in other languages (packaging/electron's Node
    # test): ``python -m tests.support.llm_server [--tool NAME [--tool-args JSON]]
    # [--reply TEXT] [--exit-on-stdin-eof]`` (run from the repository root). It prints
    # one JSON line, {"event": "ready", "port": …, "base_url": …}, then serves until
    # killed (or, with --exit-on-stdin-eof, until its stdin closes: a test that dies
    # leaves no server behind).
    # Each request is answered from its last message: after a tool result, a text
    # quoting it ("<reply>\n<tool result>"); otherwise a call of --tool, or, without
    # --tool, the text --reply.
    import argparse
    import sys

    def _main() -> int:
        parser = argparse.ArgumentParser(prog="python -m tests.support.llm_server")
        parser.add_argument("--tool", help="answer a user message by calling this tool")
        parser.add_argument("--tool-args", default="{}", help="the tool call's arguments (JSON)")
        parser.add_argument("--reply", default="ok", help="the text of a final answer")
        parser.add_argument(
            "--exit-on-stdin-eof", action="store_true", help="stop when stdin is closed"
        )
        args = parser.parse_args()
        try:
            tool_args = json.loads(args.tool_args)
        except ValueError as e:
            parser.error(f"--tool-args is not JSON: {e}")
        if not isinstance(tool_args, dict):
            parser.error("--tool-args must be a JSON object")

        def respond(body: dict[str, Any]) -> Reply:
            messages = body.get("messages") or [{}]
            last = messages[-1]
            if last.get("role") == "tool":
                return Text(f"{args.reply}\n{last.get('content') or ''}")
            if args.tool:
                return ToolCalls([Call(args.tool, tool_args)])
            return Text(args.reply)

        server = FakeLLMServer(respond).start()
        ready = {"event": "ready", "port": server.port, "base_url": server.base_url}
        sys.stdout.write(json.dumps(ready) + "\n")
        sys.stdout.flush()
        try:
            if args.exit_on_stdin_eof:
                sys.stdin.read()
            else:
                threading.Event().wait()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
        return 0

    sys.exit(_main())

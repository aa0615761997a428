"""``daemon chat "question"``: ask the home chat from a terminal.

Rules:

- The question goes as a ``home_request`` over a control session; the answer is
  printed to stdout as it streams (each chunk flushed), then the changes the
  request made (``stream_end.mutations``), one line each.
- The desktop app owns the data: with no app connected the CLI says so on stderr
  and exits 1 without asking anything (the daemon would answer the same, as an
  error in ``stream_end``, if the app leaves meanwhile).
- A failed answer (model unreachable, no model configured, ...) is one line on
  stderr and exit 1; text already printed stays.
- Ctrl-C or ``--timeout`` cancels the request in the daemon (``cancel``) before
  exiting (130, or 1 for the timeout); writes the app already made stay made.
- ``--json`` prints one object at the end instead: ``{request_id, text, mutations,
  error}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import uuid
from typing import Any, TextIO

from protocol.frames import Mutation

from .common import control_client, load

__all__ = ["NO_APP", "add_arguments", "format_mutation", "run"]

NO_APP = (
    "the desktop app is not connected: it owns your tasks, notes and projects, "
    "so the chat needs it. Open the app, then ask again."
)
_SIGN = {"insert": "+", "update": "~", "delete": "-"}
_LABELS = ("title", "name")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("question", help="what to ask, in quotes")
    p.add_argument("--json", action="store_true", help="print one JSON object at the end")
    p.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for the whole answer"
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    question = args.question.strip()
    if not question:
        print("daemon: the question is empty", file=sys.stderr)
        return 2
    paths, _ = load()
    return asyncio.run(_chat(paths, question, as_json=args.json, timeout=args.timeout))


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_mutation(mutation: Mutation) -> str:
    """One change as a line: ``+ tasks t1: Send invoice``, ``~ tasks t1: status=done``."""
    data = mutation.data
    head = f"{_SIGN.get(mutation.action, '?')} {mutation.table} {data.get('id', '?')}"
    if mutation.action == "update" and isinstance(data.get("updates"), dict):
        changes = ", ".join(f"{k}={_short(v)}" for k, v in data["updates"].items())
        return f"{head}: {changes}" if changes else head
    label = next((data[k] for k in _LABELS if isinstance(data.get(k), str)), None)
    return f"{head}: {_short(label)}" if label else head


def _write(out: TextIO, text: str) -> None:
    out.write(text)
    out.flush()


async def _chat(paths: Any, question: str, *, as_json: bool, timeout: float) -> int:
    client = await control_client(paths)
    request_id = f"cli-{uuid.uuid4().hex[:12]}"
    printed: list[str] = []

    def on_text(chunk: str) -> None:
        printed.append(chunk)
        if not as_json:
            _write(sys.stdout, chunk)

    try:
        status = await client.status()
        if not status.device_online:
            print(f"daemon: {NO_APP}", file=sys.stderr)
            return 1
        try:
            result = await client.home(
                question, request_id=request_id, on_text=on_text, timeout=timeout
            )
        except (TimeoutError, asyncio.CancelledError) as exc:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.cancel(request_id), 2.0)
            if isinstance(exc, asyncio.CancelledError):
                raise
            if printed and not as_json:
                _write(sys.stdout, "\n")
            print(f"daemon: no complete answer within {timeout:g} s; cancelled", file=sys.stderr)
            return 1
        if as_json:
            payload = {
                "request_id": result.request_id,
                "text": result.text,
                "mutations": [m.model_dump(mode="json") for m in result.mutations],
                "error": result.error,
            }
            print(json.dumps(payload, ensure_ascii=False, indent=2))
        else:
            if printed and not result.text.endswith("\n"):
                _write(sys.stdout, "\n")
            if result.mutations:
                print("changes:")
                for mutation in result.mutations:
                    print(f"  {format_mutation(mutation)}")
            sys.stdout.flush()
        if result.error is not None:
            if "no desktop app is connected" in result.error:
                print(f"daemon: {NO_APP}", file=sys.stderr)
            else:
                print(f"daemon: the chat failed: {result.error}", file=sys.stderr)
            return 1
        return 0
    finally:
        await client.close()

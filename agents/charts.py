"""Chart blocks in a chat answer: ``<chart>{json}</chart>``, checked before they stream.

Rules (issue 11, agents.md "Chat"):

- The home chat may answer with ``<chart>{"chartType", "title", "data": [...],
  "config": {...}}</chart>``; the app renders it (shadcn charts: area, bar, line,
  pie, radar, radial; ``config`` is shadcn's ``ChartConfig``).
- :class:`ChartFilter` is a sans-I/O stream filter: ``feed(chunk)`` returns the
  text to forward now, ``finish()`` what is left at the end of the stream. Text
  outside a block passes at once (only a tail that may be the start of
  ``<chart>`` waits for the next chunk); a block is held from ``<chart>`` to
  ``</chart>`` and forwarded whole, as one piece, so the app never sees half of one.
- A block is valid when its body is a JSON object with a known ``chartType``, a
  ``data`` list of objects (at least one), a string ``title`` when given and an
  object ``config`` when given. An invalid block, or one still open when the
  stream ends, is dropped (logged, counted in ``dropped``); the rest of the answer
  still streams.
"""

from __future__ import annotations

import json
import logging
from typing import Any

__all__ = ["CHART_TYPES", "ChartFilter", "chart_problem"]

log = logging.getLogger("tether.chat")

CHART_TYPES = ("area", "bar", "line", "pie", "radar", "radial")
OPEN = "<chart>"
CLOSE = "</chart>"


def chart_problem(body: str) -> str | None:
    """Why the body of a ``<chart>`` block is not a chart; ``None`` when it is one."""
    try:
        chart: Any = json.loads(body)
    except ValueError as exc:
        return f"not well-formed JSON ({exc})"
    if not isinstance(chart, dict):
        return "not a JSON object"
    if chart.get("chartType") not in CHART_TYPES:
        return f"chartType {chart.get('chartType')!r} is not one of {', '.join(CHART_TYPES)}"
    data = chart.get("data")
    if not isinstance(data, list) or not data or not all(isinstance(d, dict) for d in data):
        return "data is not a non-empty list of objects"
    if "title" in chart and not isinstance(chart["title"], str):
        return "title is not a string"
    if "config" in chart and not isinstance(chart["config"], dict):
        return "config is not an object"
    return None


def _partial_open(text: str) -> int:
    """How many trailing characters of ``text`` may begin ``<chart>``."""
    for size in range(min(len(OPEN) - 1, len(text)), 0, -1):
        if OPEN.startswith(text[-size:]):
            return size
    return 0


class ChartFilter:
    """Holds chart blocks until they are whole and valid (see the module rules)."""

    def __init__(self) -> None:
        self._pending = ""  # text not yet forwarded: a partial "<chart>" or an open block
        self._in_block = False
        self.forwarded = 0
        self.dropped = 0

    def feed(self, chunk: str) -> list[str]:
        """The pieces of text to forward now, in order."""
        out: list[str] = []
        text = self._pending + chunk
        self._pending = ""
        while text:
            if not self._in_block:
                start = text.find(OPEN)
                if start < 0:
                    keep = _partial_open(text)
                    if keep < len(text):
                        out.append(text[: len(text) - keep])
                    self._pending = text[len(text) - keep :]
                    break
                if start:
                    out.append(text[:start])
                text = text[start:]
                self._in_block = True
            end = text.find(CLOSE)
            if end < 0:
                self._pending = text
                break
            block, text = text[: end + len(CLOSE)], text[end + len(CLOSE) :]
            self._in_block = False
            problem = chart_problem(block[len(OPEN) : -len(CLOSE)])
            if problem is None:
                self.forwarded += 1
                out.append(block)
            else:
                self._drop(block, problem)
        return out

    def finish(self) -> list[str]:
        """What is left at the end of the stream: a partial tag is text, an open block
        is dropped."""
        pending, self._pending = self._pending, ""
        if self._in_block:
            self._in_block = False
            self._drop(pending, "the answer ended before </chart>")
            return []
        return [pending] if pending else []

    def _drop(self, block: str, problem: str) -> None:
        self.dropped += 1
        log.warning("dropped a chart block from a chat answer: %s (%d chars)", problem, len(block))

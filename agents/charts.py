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
    """How many trailing characters of ``text`` may begin ``<chart>`` (only its last
    ``<`` can: ``<chart>`` holds one ``<``, at the start)."""
    start = text.rfind("<", max(0, len(text) - len(OPEN) + 1))
    if start < 0 or not OPEN.startswith(text[start:]):
        return 0
    return len(text) - start


class ChartFilter:
    """Holds chart blocks until they are whole and valid (see the module rules).

    Linear in the text fed: an open block is kept as a list of pieces, and only the
    last few characters are searched again for ``</chart>``."""

    def __init__(self) -> None:
        self._pending = ""  # outside a block: a tail that may begin "<chart>"
        self._block: list[str] | None = None  # inside a block: its pieces so far
        self._tail = ""  # inside a block: its last characters, to find a split "</chart>"
        self.forwarded = 0
        self.dropped = 0

    def feed(self, chunk: str) -> list[str]:
        """The pieces of text to forward now, in order."""
        out: list[str] = []
        text = chunk
        while text:
            if self._block is None:
                text = self._pending + text
                self._pending = ""
                start = text.find(OPEN)
                if start < 0:
                    keep = _partial_open(text)
                    if keep < len(text):
                        out.append(text[: len(text) - keep])
                    self._pending = text[len(text) - keep :]
                    return out
                if start:
                    out.append(text[:start])
                self._block, self._tail = [], ""
                text = text[start:]
            window = self._tail + text
            end = window.find(CLOSE)
            if end < 0:
                self._block.append(text)
                self._tail = window[-(len(CLOSE) - 1) :]
                return out
            cut = end + len(CLOSE) - len(self._tail)  # where the block ends in ``text``
            self._block.append(text[:cut])
            block, text = "".join(self._block), text[cut:]
            self._block, self._tail = None, ""
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
        if self._block is not None:
            block = "".join(self._block)
            self._block, self._tail = None, ""
            self._drop(block, "the answer ended before </chart>")
            return []
        pending, self._pending = self._pending, ""
        return [pending] if pending else []

    def _drop(self, block: str, problem: str) -> None:
        self.dropped += 1
        log.warning("dropped a chart block from a chat answer: %s (%d chars)", problem, len(block))

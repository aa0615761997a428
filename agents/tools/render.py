"""Rows of the client's tables as short text for the model.

Rules:

- One row is one line: ``task id=… title="…" status=todo due_date=2025-03-14 …``, in
  the model's names (snake_case) and ISO dates in the user's zone; ``None`` and empty
  columns are left out; long fields are clipped with the number of characters left.
- A list shows at most ``LIST_CAP`` rows and says how many more there are (and that
  the store had more than were fetched, when the fetch limit was reached).
- A suggestion the user has not approved yet says so.
"""

from __future__ import annotations

import json
from datetime import tzinfo
from typing import Any

from protocol.storage import TABLES, Table

from ..store import Row
from .dates import iso_from_ms

__all__ = ["CLIP_IN_GET", "CLIP_IN_LIST", "LIST_CAP", "noun", "render_list", "render_row"]

LIST_CAP = 50  # rows shown per list
CLIP_IN_LIST = 160  # characters of a long field in a list
CLIP_IN_GET = 4000  # characters of a long field when one row is asked for

# table -> (column, name shown to the model, kind) in display order
_SHOWN: dict[str, tuple[tuple[str, str, str], ...]] = {
    "tasks": (
        ("title", "title", "text"),
        ("status", "status", "word"),
        ("priority", "priority", "word"),
        ("dueDate", "due_date", "time"),
        ("assignee", "assignees", "list"),
        ("projectId", "project_id", "word"),
        ("description", "description", "long"),
    ),
    "projects": (
        ("name", "name", "text"),
        ("status", "status", "word"),
        ("clientId", "client_id", "word"),
        ("aiSummary", "ai_summary", "long"),
    ),
    "timelines": (
        ("title", "title", "text"),
        ("date", "date", "time"),
        ("projectId", "project_id", "word"),
    ),
    "notes": (
        ("title", "title", "text"),
        ("projectId", "project_id", "word"),
        ("updatedAt", "updated", "time"),
        ("content", "content", "long"),
    ),
    "taskComments": (
        ("taskId", "task_id", "word"),
        ("author", "author", "text"),
        ("createdAt", "created", "time"),
        ("content", "content", "long"),
    ),
}


def noun(table: str) -> str:
    """What one row of ``table`` is called (``task``, ``timeline entry``, ...)."""
    return TABLES[Table(table)].noun


def _clip(text: str, limit: int) -> str:
    text = text.strip()
    if len(text) <= limit:
        return text
    return f"{text[:limit].rstrip()}… [{len(text) - limit} more chars]"


def _assignees(raw: Any) -> list[str] | None:
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return [str(raw)]
    return [str(v) for v in value] if isinstance(value, list) else None


def render_row(table: str, row: Row, tz: tzinfo, clip: int = CLIP_IN_LIST) -> str:
    """``task id=… title="…" status=todo due_date=2025-03-14 …``; ``None`` columns left out."""
    parts = [f"{noun(table)} id={row.get('id')}"]
    for column, name, kind in _SHOWN[table]:
        value = row.get(column)
        if value is None or value == "":
            continue
        if kind == "time" and isinstance(value, int | float):
            shown = iso_from_ms(int(value), tz)
        elif kind == "list":
            names = _assignees(value)
            if not names:
                continue
            shown = json.dumps(names, ensure_ascii=False)
        elif kind == "word":
            shown = str(value)
        else:
            text = _clip(str(value), clip) if kind == "long" else str(value)
            shown = json.dumps(text, ensure_ascii=False)
        parts.append(f"{name}={shown}")
    if row.get("isAiSuggested") == 1 and row.get("isApproved") == 0:
        parts.append("(suggestion awaiting approval)")
    return " ".join(parts)


def render_list(table: str, rows: list[Row], tz: tzinfo, fetch_limit: int | None) -> str:
    """A header line with the count, then one line per row (at most ``LIST_CAP``)."""
    one = noun(table)
    plural = one + "s"
    if not rows:
        return f"no {plural} found"
    shown = rows[:LIST_CAP]
    lines = [f"{len(rows)} {one if len(rows) == 1 else plural}:"]
    lines += [f"- {render_row(table, r, tz)}" for r in shown]
    left = len(rows) - len(shown)
    if fetch_limit is not None and len(rows) >= fetch_limit:
        lines[0] = f"more than {len(rows) - 1} {plural} (narrow the filters):"
        lines.append(f"({left} more, and others not fetched)")
    elif left:
        lines.append(f"({left} more)")
    return "\n".join(lines)

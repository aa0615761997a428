"""Every tool the model may call, declared once: name, one-line description,
pydantic argument model, handler.

Rules:

- A tool's JSON schema is generated from its argument model and cleaned for
  OpenAI function tools: no ``title``, no ``default: null``, optional fields shown
  as their plain type, ``additionalProperties: false`` on every object.
- Arguments are validated before anything is sent to the store. Unknown tool,
  arguments that are not a JSON object, an unknown argument (extra fields are
  *rejected*: a ``dueDate`` typo must not silently drop the due date), a bad enum,
  an empty title, a date that is not ISO 8601: an error outcome for the model and
  no store call. A referenced project or task that does not exist is an error too
  (checked with ``get`` before a create, so no orphan rows).
- The model speaks snake_case and ISO 8601; the store speaks camelCase and Unix
  milliseconds. A date without a time is local midnight in ``ToolContext.tz``; a
  date-time without an offset is local time in ``tz``. Rows go back to the model
  with the model's names and ISO dates, long fields clipped, lists capped.
- ``assignees`` (a list of names) is stored as a JSON-array string in ``assignee``.
- In an update, an omitted or ``null`` argument leaves the column unchanged (models
  send ``null`` for "no change" far more often than for "clear"); an update that
  changes nothing is a validation error.
- Background runs (``ToolContext.background``): inserts always carry
  ``isAiSuggested: 1, isApproved: 0`` where the table has them, set here whatever the
  model sent (the argument models do not even offer them). Background runs never
  delete: their toolsets cannot contain chat-only tools (``Toolset`` refuses at build
  time) and the delete handlers refuse a background context as well.
- With ``ToolContext.idempotency_scope`` set, every insert carries
  ``idempotency_key = "sha256:" + sha256(scope, table, identity)``, the identity being
  the normalised (case-folded, whitespace-collapsed) title or name; for timelines
  project + title + date, for comments task + content. A re-run after a crash with
  the same scope sends the same keys, so the client creates nothing twice.
- Failures the model can act on become error outcomes whose text starts with
  ``error:`` (``ToolError``, ``ToolCallError``, ``ToolCallTimeout``).
  ``DeviceOffline`` and ``RunCancelled`` propagate: the run must stop.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Annotated, Any, ClassVar, Final, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from agents.errors import DeviceOffline, RunCancelled, StoreError, ToolError
from agents.local_dir import roots as file_roots
from agents.store import Row, Store
from protocol.errors import StorageError
from protocol.storage import (
    TABLES,
    OrderBy,
    Priority,
    ProjectStatus,
    Table,
    TaskStatus,
    check_insert,
    check_updates,
)

__all__ = [
    "ALL_TOOLS",
    "COMMENT_AUTHOR",
    "MutationRecord",
    "Tool",
    "ToolContext",
    "ToolGroup",
    "ToolOutcome",
    "Toolset",
    "background_toolset",
    "chat_toolset",
    "idempotency_key",
    "iso_from_ms",
    "local_timezone",
    "ms_from_iso",
    "render_row",
]

ToolGroup = Literal["files", "tasks", "notes", "timelines", "projects"]
Handler = Callable[["ToolContext", Any], Awaitable["ToolOutcome"]]

# Who wrote a comment added through add_task_comment.
COMMENT_AUTHOR = "AI assistant"

LIST_CAP = 50  # rows shown per list
FETCH_LIMIT = 500  # rows asked of the store per list (to say how many were left out)
CLIP_IN_LIST = 160  # characters of a long field in a list
CLIP_IN_GET = 4000  # characters of a long field when one row is asked for
DIRECTORY_LIMIT = 200
READ_DEFAULT_CHARS = 8000
READ_MAX_CHARS = 20_000


# --- time -----------------------------------------------------------------------------


class _SystemLocalTime(tzinfo):
    """The OS's local zone with its DST rules (a fixed offset would be wrong half the year)."""

    def _local(self, dt: datetime | None) -> time.struct_time | None:
        """The OS's view of local wall time ``dt`` (``None`` when out of its range)."""
        try:
            stamp = time.mktime((*(dt or datetime.now()).timetuple()[:8], -1))
            return time.localtime(stamp)
        except (OverflowError, ValueError, OSError):
            return None

    def utcoffset(self, dt: datetime | None) -> timedelta:
        local = self._local(dt)
        return timedelta(seconds=local.tm_gmtoff if local else -time.timezone)

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)  # folded into utcoffset; nothing here needs it separately

    def tzname(self, dt: datetime | None) -> str:
        local = self._local(dt)
        return local.tm_zone if local else time.tzname[0]

    def fromutc(self, dt: datetime) -> datetime:
        naive = dt.replace(tzinfo=None)
        try:
            stamp = (naive - datetime(1970, 1, 1)).total_seconds()
            offset = timedelta(seconds=time.localtime(stamp).tm_gmtoff)
        except (OverflowError, ValueError, OSError):
            offset = timedelta(seconds=-time.timezone)
        return (naive + offset).replace(tzinfo=self)

    def __repr__(self) -> str:
        return "local_timezone()"


_LOCAL = _SystemLocalTime()


def local_timezone() -> tzinfo:
    """The machine's local time zone, DST included."""
    return _LOCAL


def _parse_iso(text: str) -> date | datetime:
    value = text.strip()
    if len(value) <= 10 and "T" not in value:
        return date.fromisoformat(value)
    return datetime.fromisoformat(value.replace("z", "Z"))


def ms_from_iso(text: str, tz: tzinfo) -> int:
    """Unix ms of an ISO 8601 date (local midnight in ``tz``) or date-time (local in ``tz``
    unless it has an offset)."""
    parsed = _parse_iso(text)
    if not isinstance(parsed, datetime):
        parsed = datetime(parsed.year, parsed.month, parsed.day)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return int(parsed.timestamp() * 1000)


def iso_from_ms(ms: int, tz: tzinfo) -> str:
    """``2025-03-14`` for local midnight, else ``2025-03-14T17:00`` (seconds when not 0)."""
    local = datetime.fromtimestamp(ms / 1000, UTC).astimezone(tz)
    if (local.hour, local.minute, local.second, local.microsecond) == (0, 0, 0, 0):
        return local.date().isoformat()
    return local.replace(tzinfo=None).isoformat(
        timespec="minutes" if not local.second else "seconds"
    )


def _check_iso(value: str) -> str:
    try:
        parsed = _parse_iso(value)
    except ValueError:
        raise ValueError(
            f"not an ISO 8601 date: {value!r}; use YYYY-MM-DD or YYYY-MM-DDTHH:MM"
        ) from None
    if not 1900 <= parsed.year <= 2200:
        raise ValueError(f"year {parsed.year} is out of range in {value!r}")
    return value.strip()


# --- argument types -------------------------------------------------------------------

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
IsoDate = Annotated[str, AfterValidator(_check_iso)]
TaskStatusArg = Literal["todo", "in_progress", "done"]
PriorityArg = Literal["high", "medium", "low"]
ProjectStatusArg = Literal["active", "archived"]
OrderByArg = Literal["dueDate", "priority", "createdAt"]

# The Literals above are the model's view of protocol.storage's enums; keep them equal.
for _lit, _enum in (
    (TaskStatusArg, TaskStatus),
    (PriorityArg, Priority),
    (ProjectStatusArg, ProjectStatus),
    (OrderByArg, OrderBy),
):
    assert set(get_args(_lit)) == {str(m) for m in _enum}, (_lit, _enum)


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


Assignees = Annotated[list[Text], BeforeValidator(_one_or_many)]

_DATE_HELP = "ISO 8601 date (YYYY-MM-DD) or date-time (YYYY-MM-DDTHH:MM), local time"


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _UpdateArgs(_Args):
    """An update must change something; ``id_field`` names the id argument."""

    id_field: ClassVar[str] = "id"

    @model_validator(mode="after")
    def _changes_something(self) -> _UpdateArgs:
        others = [n for n in type(self).model_fields if n != self.id_field]
        if all(getattr(self, n) is None for n in others):
            raise ValueError(f"nothing to change: give at least one of {', '.join(others)}")
        return self


class NoArgs(_Args):
    pass


class PathArgs(_Args):
    path: str = Field(min_length=1, description="Absolute path, or relative to the first root")


class ReadFileArgs(_Args):
    path: str = Field(min_length=1, description="Absolute path, or relative to the first root")
    offset: int = Field(0, ge=0, description="Character offset to start reading at")
    max_chars: int = Field(
        READ_DEFAULT_CHARS, ge=1, le=READ_MAX_CHARS, description="Characters to return at most"
    )


class ListTasksArgs(_Args):
    project_id: str | None = Field(None, description="Only tasks of this project")
    status: TaskStatusArg | None = Field(None, description="Only tasks with this status")
    search: str | None = Field(None, description="Substring of the title or description")
    order_by: OrderByArg | None = Field(None, description="Sort order (default: createdAt)")


class CreateTaskArgs(_Args):
    title: Text = Field(description="Short, actionable title")
    description: str | None = Field(None, description="Details (Markdown)")
    status: TaskStatusArg | None = Field(None, description="Default: todo")
    priority: PriorityArg | None = Field(None, description="Default: medium")
    assignees: Assignees | None = Field(None, description="Names of the people responsible")
    due_date: IsoDate | None = Field(None, description=_DATE_HELP)
    project_id: Text | None = Field(None, description="Id of an existing project")


class UpdateTaskArgs(_UpdateArgs):
    id_field: ClassVar[str] = "task_id"
    task_id: Text = Field(description="Id of the task")
    title: Text | None = Field(None, description="New title")
    description: str | None = Field(None, description="New description (Markdown)")
    status: TaskStatusArg | None = Field(None, description="New status")
    priority: PriorityArg | None = Field(None, description="New priority")
    assignees: Assignees | None = Field(None, description="New list of assignees (replaces)")
    due_date: IsoDate | None = Field(None, description=_DATE_HELP)


class TaskIdArgs(_Args):
    task_id: Text = Field(description="Id of the task")


class AddCommentArgs(_Args):
    task_id: Text = Field(description="Id of the task")
    content: Text = Field(description="The comment (Markdown)")


class CommentIdArgs(_Args):
    comment_id: Text = Field(description="Id of the comment")


class ProjectFilterArgs(_Args):
    project_id: str | None = Field(None, description="Only those of this project")


class NoteIdArgs(_Args):
    note_id: Text = Field(description="Id of the note")


class CreateNoteArgs(_Args):
    title: Text = Field(description="Title of the note")
    content: str = Field(description="Body (Markdown)")
    project_id: Text | None = Field(None, description="Id of an existing project")


class UpdateNoteArgs(_UpdateArgs):
    id_field: ClassVar[str] = "note_id"
    note_id: Text = Field(description="Id of the note")
    title: Text | None = Field(None, description="New title")
    content: str | None = Field(None, description="New body (Markdown; replaces the old one)")


class CreateTimelineArgs(_Args):
    project_id: Text = Field(description="Id of an existing project (required)")
    title: Text = Field(description="The milestone or event")
    date: IsoDate = Field(description=_DATE_HELP)


class UpdateTimelineArgs(_UpdateArgs):
    id_field: ClassVar[str] = "timeline_id"
    timeline_id: Text = Field(description="Id of the timeline entry")
    title: Text | None = Field(None, description="New title")
    date: IsoDate | None = Field(None, description=_DATE_HELP)


class TimelineIdArgs(_Args):
    timeline_id: Text = Field(description="Id of the timeline entry")


class ListProjectsArgs(_Args):
    client_id: str | None = Field(None, description="Only projects of this client")
    include_archived: bool | None = Field(None, description="Also archived projects")


class ProjectIdArgs(_Args):
    project_id: Text = Field(description="Id of the project")


class CreateProjectArgs(_Args):
    name: Text = Field(description="Project name")
    client_id: Text | None = Field(None, description="Id of the client")


class UpdateProjectArgs(_UpdateArgs):
    id_field: ClassVar[str] = "project_id"
    project_id: Text = Field(description="Id of the project")
    name: Text | None = Field(None, description="New name")
    status: ProjectStatusArg | None = Field(None, description="active or archived")
    ai_summary: str | None = Field(None, description="Short summary of the project's state")


# --- outcomes and context -------------------------------------------------------------


@dataclass
class MutationRecord:
    """One change to the client's data: the row the client returned (``{"id"}`` for delete)."""

    action: Literal["insert", "update", "delete"]
    table: str
    data: dict[str, Any]


@dataclass
class ToolOutcome:
    """What a tool call gives back: text for the model and the changes it made."""

    text: str
    mutations: list[MutationRecord] = field(default_factory=list)
    is_error: bool = False


@dataclass
class ToolContext:
    """What the handlers of one run or chat request work with."""

    store: Store
    roots: tuple[str, ...] = ()
    background: bool = False
    idempotency_scope: str | None = None
    tz: tzinfo = field(default_factory=local_timezone)
    run_id: str | None = None


@dataclass(frozen=True)
class Tool:
    """One tool: what the model sees (name, description, schema) and what runs."""

    name: str
    description: str
    args: type[BaseModel]
    handler: Handler
    table: str | None
    writes: bool
    chat_only: bool
    group: ToolGroup

    def schema(self) -> dict[str, Any]:
        """The OpenAI function-tool schema (a fresh copy)."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": copy.deepcopy(_parameters(self.args)),
            },
        }


@functools.cache
def _parameters(args: type[BaseModel]) -> dict[str, Any]:
    """The cleaned JSON schema of an argument model (generated once; callers copy it)."""
    return _clean_schema(args.model_json_schema())


def _clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    defs = schema.get("$defs", {})

    def clean(node: Any, required: bool = True) -> Any:
        if isinstance(node, list):
            return [clean(n) for n in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            target = defs[node["$ref"].rsplit("/", 1)[-1]]
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        node = dict(node)
        any_of = node.get("anyOf")
        if not required and isinstance(any_of, list):
            kept = [s for s in any_of if s != {"type": "null"}]
            if len(kept) == 1:  # Optional[X] that may be omitted: show X
                del node["anyOf"]
                node = {**kept[0], **node}
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in ("title", "$defs") or (key == "default" and value is None):
                continue
            if key == "properties":
                needed = set(node.get("required", ()))
                out[key] = {name: clean(sub, name in needed) for name, sub in value.items()}
            else:
                out[key] = clean(value)
        if out.get("type") == "object":
            out.setdefault("properties", {})
            out["additionalProperties"] = False
        return out

    cleaned: dict[str, Any] = clean(schema)
    return cleaned


# --- rendering rows for the model -----------------------------------------------------

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


def _noun(table: str) -> str:
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
    parts = [f"{_noun(table)} id={row.get('id')}"]
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


def _render_list(table: str, rows: list[Row], tz: tzinfo, fetch_limit: int | None) -> str:
    noun = _noun(table)
    plural = noun + "s"
    if not rows:
        return f"no {plural} found"
    shown = rows[:LIST_CAP]
    lines = [f"{len(rows)} {noun if len(rows) == 1 else plural}:"]
    lines += [f"- {render_row(table, r, tz)}" for r in shown]
    left = len(rows) - len(shown)
    if fetch_limit is not None and len(rows) >= fetch_limit:
        lines[0] = f"more than {len(rows) - 1} {plural} (narrow the filters):"
        lines.append(f"({left} more, and others not fetched)")
    elif left:
        lines.append(f"({left} more)")
    return "\n".join(lines)


# --- store helpers --------------------------------------------------------------------


def _normalise(text: str) -> str:
    return " ".join(text.split()).casefold()


def idempotency_key(scope: str, table: str, identity: Iterable[object]) -> str:
    """``"sha256:" + hex`` of the scope, the table and the normalised identity."""
    parts = [scope, table, *(_normalise(p) if isinstance(p, str) else p for p in identity)]
    payload = json.dumps(parts, ensure_ascii=False, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(payload.encode()).hexdigest()


def _ms(text: str | None, ctx: ToolContext) -> int | None:
    return None if text is None else ms_from_iso(text, ctx.tz)


def _columns(values: Mapping[str, Any]) -> dict[str, Any]:
    """The given values with ``None`` ones left out."""
    return {k: v for k, v in values.items() if v is not None}


async def _select(ctx: ToolContext, table: str, filters: dict[str, Any] | None = None) -> str:
    rows = await ctx.store.select(table, filters or None, FETCH_LIMIT)
    return _render_list(table, rows, ctx.tz, FETCH_LIMIT)


async def _require(ctx: ToolContext, table: str, row_id: str, hint: str) -> Row:
    row = await ctx.store.get(table, row_id)
    if row is None:
        raise ToolError(f"not_found: no {_noun(table)} {row_id}; {hint}")
    return row


async def _get(ctx: ToolContext, table: str, row_id: str, hint: str) -> ToolOutcome:
    row = await _require(ctx, table, row_id, hint)
    return ToolOutcome(render_row(table, row, ctx.tz, CLIP_IN_GET))


# Background inserts first look for the same item (same title/name in the same
# project): a changed file re-read by the model must update, never duplicate.
_SAME_ITEM = {"tasks": "title", "notes": "title", "timelines": "title", "projects": "name"}


async def _existing(ctx: ToolContext, table: str, values: Mapping[str, Any]) -> Row | None:
    field = _SAME_ITEM.get(table)
    if field is None or not isinstance(values.get(field), str):
        return None
    wanted = _normalise(values[field])
    filters: dict[str, Any] = {"includeArchived": True} if table == "projects" else {}
    if table != "projects" and values.get("projectId") is not None:
        filters["projectId"] = values["projectId"]
    # No limit: a capped list would miss a match once the table outgrows it.
    for row in await ctx.store.select(table, filters or None, None):
        same_project = table == "projects" or row.get("projectId") == values.get("projectId")
        if same_project and _normalise(str(row.get(field) or "")) == wanted:
            return row
    return None


async def _update_existing(
    ctx: ToolContext, table: str, row: Row, values: Mapping[str, Any]
) -> ToolOutcome:
    skip = {_SAME_ITEM[table], "projectId", "isAiSuggested", "isApproved"}
    changes = {k: v for k, v in values.items() if k not in skip and row.get(k) != v}
    if not changes:
        return ToolOutcome(f"already recorded, unchanged: {render_row(table, row, ctx.tz)}")
    updated = await ctx.store.update(table, str(row["id"]), changes)
    return ToolOutcome(
        f"already recorded; updated {render_row(table, updated, ctx.tz)}",
        [MutationRecord("update", table, updated)],
    )


async def _insert(
    ctx: ToolContext, table: str, data: dict[str, Any], identity: tuple[object, ...]
) -> ToolOutcome:
    values = _columns(data)
    if ctx.background:
        existing = await _existing(ctx, table, values)
        if existing is not None:
            return await _update_existing(ctx, table, existing, values)
    if ctx.background and TABLES[Table(table)].ai_flags:
        # Set here, whatever the model asked: the user approves suggestions in the app.
        values["isAiSuggested"] = 1
        values["isApproved"] = 0
    try:
        values = check_insert(table, values)
    except StorageError as exc:
        raise ToolError(exc.message) from None
    key = None
    if ctx.idempotency_scope is not None:
        key = idempotency_key(ctx.idempotency_scope, table, identity)
    row = await ctx.store.insert(table, values, idempotency_key=key)
    return ToolOutcome(
        f"created {render_row(table, row, ctx.tz)}", [MutationRecord("insert", table, row)]
    )


async def _update(ctx: ToolContext, table: str, row_id: str, data: dict[str, Any]) -> ToolOutcome:
    try:
        updates = check_updates(table, _columns(data))
    except StorageError as exc:
        raise ToolError(exc.message) from None
    row = await ctx.store.update(table, row_id, updates)
    return ToolOutcome(
        f"updated {render_row(table, row, ctx.tz)}", [MutationRecord("update", table, row)]
    )


async def _delete(ctx: ToolContext, table: str, row_id: str) -> ToolOutcome:
    if ctx.background:
        raise ToolError("deleting is not allowed in background runs")
    await ctx.store.delete(table, row_id)
    return ToolOutcome(
        f"deleted {_noun(table)} {row_id}", [MutationRecord("delete", table, {"id": row_id})]
    )


_PROJECT_HINT = "call list_projects for the ids"
_TASK_HINT = "call list_tasks for the ids"


async def _check_project(ctx: ToolContext, project_id: str | None) -> None:
    if project_id is not None:
        await _require(ctx, "projects", project_id, _PROJECT_HINT)


def _assignee_column(names: list[str] | None) -> str | None:
    return None if names is None else json.dumps(names, ensure_ascii=False)


# --- handlers: files ------------------------------------------------------------------


async def _list_directory(ctx: ToolContext, a: PathArgs) -> ToolOutcome:
    entries = await asyncio.to_thread(
        file_roots.list_directory, ctx.roots, a.path, DIRECTORY_LIMIT + 1
    )
    if not entries:
        return ToolOutcome(f"{a.path} is empty")
    lines = []
    for e in entries[:DIRECTORY_LIMIT]:
        size = "" if e["size"] is None else f" {e['size']} bytes"
        lines.append(f"- {e['kind']} {e['path']}{size} modified {e['modified']}")
    if len(entries) > DIRECTORY_LIMIT:
        lines.append(f"(more than {DIRECTORY_LIMIT} entries; only the first are shown)")
    return ToolOutcome("\n".join(lines))


async def _get_file_metadata(ctx: ToolContext, a: PathArgs) -> ToolOutcome:
    meta = await asyncio.to_thread(file_roots.get_file_metadata, ctx.roots, a.path)
    return ToolOutcome(" ".join(f"{k}={v}" for k, v in meta.items()))


async def _read_file_content(ctx: ToolContext, a: ReadFileArgs) -> ToolOutcome:
    got = await asyncio.to_thread(
        file_roots.read_file_content, ctx.roots, a.path, a.offset, a.max_chars
    )
    head = (
        f"{got['path']} characters {got['offset']}-{got['offset'] + got['returned_chars']}"
        f" of {got['total_chars']}"
    )
    if got["truncated"]:
        head += f" (more: offset={got['offset'] + got['returned_chars']})"
    return ToolOutcome(f"{head}\n{got['text']}")


# --- handlers: tasks ------------------------------------------------------------------


async def _list_tasks(ctx: ToolContext, a: ListTasksArgs) -> ToolOutcome:
    filters = _columns(
        {"projectId": a.project_id, "status": a.status, "search": a.search, "orderBy": a.order_by}
    )
    return ToolOutcome(await _select(ctx, "tasks", filters))


async def _list_tasks_due_today(ctx: ToolContext, a: NoArgs) -> ToolOutcome:
    today = datetime.now(ctx.tz).date()
    start = ms_from_iso(today.isoformat(), ctx.tz)
    end = ms_from_iso((today + timedelta(days=1)).isoformat(), ctx.tz) - 1
    filters = {"dueDateFrom": start, "dueDateTo": end, "orderBy": "dueDate"}
    return ToolOutcome(await _select(ctx, "tasks", filters))


async def _create_task(ctx: ToolContext, a: CreateTaskArgs) -> ToolOutcome:
    await _check_project(ctx, a.project_id)
    data = {
        "title": a.title,
        "description": a.description,
        "status": a.status,
        "priority": a.priority,
        "assignee": _assignee_column(a.assignees),
        "dueDate": _ms(a.due_date, ctx),
        "projectId": a.project_id,
    }
    return await _insert(ctx, "tasks", data, (a.project_id, a.title))


async def _update_task(ctx: ToolContext, a: UpdateTaskArgs) -> ToolOutcome:
    data = {
        "title": a.title,
        "description": a.description,
        "status": a.status,
        "priority": a.priority,
        "assignee": _assignee_column(a.assignees),
        "dueDate": _ms(a.due_date, ctx),
    }
    return await _update(ctx, "tasks", a.task_id, data)


async def _delete_task(ctx: ToolContext, a: TaskIdArgs) -> ToolOutcome:
    return await _delete(ctx, "tasks", a.task_id)


async def _add_task_comment(ctx: ToolContext, a: AddCommentArgs) -> ToolOutcome:
    await _require(ctx, "tasks", a.task_id, _TASK_HINT)
    data = {"taskId": a.task_id, "content": a.content, "author": COMMENT_AUTHOR}
    return await _insert(ctx, "taskComments", data, (a.task_id, a.content))


async def _list_task_comments(ctx: ToolContext, a: TaskIdArgs) -> ToolOutcome:
    return ToolOutcome(await _select(ctx, "taskComments", {"taskId": a.task_id}))


async def _delete_task_comment(ctx: ToolContext, a: CommentIdArgs) -> ToolOutcome:
    return await _delete(ctx, "taskComments", a.comment_id)


# --- handlers: notes ------------------------------------------------------------------


async def _list_notes(ctx: ToolContext, a: ProjectFilterArgs) -> ToolOutcome:
    return ToolOutcome(await _select(ctx, "notes", _columns({"projectId": a.project_id})))


async def _get_note(ctx: ToolContext, a: NoteIdArgs) -> ToolOutcome:
    return await _get(ctx, "notes", a.note_id, "call list_notes for the ids")


async def _create_note(ctx: ToolContext, a: CreateNoteArgs) -> ToolOutcome:
    await _check_project(ctx, a.project_id)
    data = {"title": a.title, "content": a.content, "projectId": a.project_id}
    return await _insert(ctx, "notes", data, (a.project_id, a.title))


async def _update_note(ctx: ToolContext, a: UpdateNoteArgs) -> ToolOutcome:
    return await _update(ctx, "notes", a.note_id, {"title": a.title, "content": a.content})


async def _delete_note(ctx: ToolContext, a: NoteIdArgs) -> ToolOutcome:
    return await _delete(ctx, "notes", a.note_id)


# --- handlers: timelines --------------------------------------------------------------


async def _list_timelines(ctx: ToolContext, a: ProjectFilterArgs) -> ToolOutcome:
    return ToolOutcome(await _select(ctx, "timelines", _columns({"projectId": a.project_id})))


async def _create_timeline(ctx: ToolContext, a: CreateTimelineArgs) -> ToolOutcome:
    await _check_project(ctx, a.project_id)
    when = ms_from_iso(a.date, ctx.tz)
    data = {"projectId": a.project_id, "title": a.title, "date": when}
    return await _insert(ctx, "timelines", data, (a.project_id, a.title, when))


async def _update_timeline(ctx: ToolContext, a: UpdateTimelineArgs) -> ToolOutcome:
    data = {"title": a.title, "date": _ms(a.date, ctx)}
    return await _update(ctx, "timelines", a.timeline_id, data)


async def _delete_timeline(ctx: ToolContext, a: TimelineIdArgs) -> ToolOutcome:
    return await _delete(ctx, "timelines", a.timeline_id)


# --- handlers: projects ---------------------------------------------------------------


async def _list_projects(ctx: ToolContext, a: ListProjectsArgs) -> ToolOutcome:
    filters = _columns({"clientId": a.client_id, "includeArchived": a.include_archived})
    return ToolOutcome(await _select(ctx, "projects", filters))


async def _list_all_projects(ctx: ToolContext, a: NoArgs) -> ToolOutcome:
    return ToolOutcome(await _select(ctx, "projects", {"includeArchived": True}))


async def _get_project(ctx: ToolContext, a: ProjectIdArgs) -> ToolOutcome:
    return await _get(ctx, "projects", a.project_id, _PROJECT_HINT)


async def _create_project(ctx: ToolContext, a: CreateProjectArgs) -> ToolOutcome:
    data = {"name": a.name, "clientId": a.client_id}
    return await _insert(ctx, "projects", data, (a.name,))


async def _update_project(ctx: ToolContext, a: UpdateProjectArgs) -> ToolOutcome:
    data = {"name": a.name, "status": a.status, "aiSummary": a.ai_summary}
    return await _update(ctx, "projects", a.project_id, data)


async def _delete_project(ctx: ToolContext, a: ProjectIdArgs) -> ToolOutcome:
    return await _delete(ctx, "projects", a.project_id)


# --- the declarations -----------------------------------------------------------------


def _tool(
    name: str,
    description: str,
    args: type[BaseModel],
    handler: Handler,
    group: ToolGroup,
    table: str | None,
    *,
    writes: bool = False,
    chat_only: bool = False,
) -> Tool:
    return Tool(name, description, args, handler, table, writes, chat_only, group)


_T: Final = "tasks"
_N: Final = "notes"
_L: Final = "timelines"
_P: Final = "projects"

# fmt: off
ALL_TOOLS: dict[str, Tool] = {
    t.name: t
    for t in (
        # files (read-only, confined to the roots)
        _tool("list_directory", "List a folder's files and subfolders.", PathArgs,
              _list_directory, "files", None),
        _tool("get_file_metadata", "Size, modification time and type of a file.", PathArgs,
              _get_file_metadata, "files", None),
        _tool("read_file_content", "Read a file's text, in pages (offset, max_chars).",
              ReadFileArgs, _read_file_content, "files", None),
        # tasks
        _tool("list_tasks", "List tasks, optionally filtered by project, status or text.",
              ListTasksArgs, _list_tasks, _T, _T),
        _tool("create_task", "Create a task.", CreateTaskArgs, _create_task, _T, _T,
              writes=True),
        _tool("update_task", "Change fields of an existing task.", UpdateTaskArgs,
              _update_task, _T, _T, writes=True),
        _tool("add_task_comment", "Add a comment to an existing task.", AddCommentArgs,
              _add_task_comment, _T, "taskComments", writes=True),
        # notes
        _tool("list_notes", "List notes, optionally of one project.", ProjectFilterArgs,
              _list_notes, _N, _N),
        _tool("get_note", "Read one note in full.", NoteIdArgs, _get_note, _N, _N),
        _tool("create_note", "Create a note.", CreateNoteArgs, _create_note, _N, _N,
              writes=True),
        _tool("update_note", "Change the title or body of an existing note.", UpdateNoteArgs,
              _update_note, _N, _N, writes=True),
        # timelines
        _tool("list_timelines", "List timeline entries (milestones), optionally of one project.",
              ProjectFilterArgs, _list_timelines, _L, _L),
        _tool("create_timeline", "Add a dated milestone to a project's timeline.",
              CreateTimelineArgs, _create_timeline, _L, _L, writes=True),
        _tool("update_timeline", "Change the title or date of a timeline entry.",
              UpdateTimelineArgs, _update_timeline, _L, _L, writes=True),
        # projects
        _tool("list_projects", "List active projects (archived too if asked), optionally of "
              "one client.", ListProjectsArgs, _list_projects, _P, _P),
        _tool("list_all_projects", "List every project, archived ones included.", NoArgs,
              _list_all_projects, _P, _P),
        _tool("get_project", "Read one project in full.", ProjectIdArgs, _get_project, _P, _P),
        _tool("create_project", "Create a project (only for clearly significant new work).",
              CreateProjectArgs, _create_project, _P, _P, writes=True),
        _tool("update_project", "Rename, archive or summarise a project.", UpdateProjectArgs,
              _update_project, _P, _P, writes=True),
        # chat only
        _tool("delete_task", "Delete a task.", TaskIdArgs, _delete_task, _T, _T,
              writes=True, chat_only=True),
        _tool("delete_note", "Delete a note.", NoteIdArgs, _delete_note, _N, _N,
              writes=True, chat_only=True),
        _tool("delete_timeline", "Delete a timeline entry.", TimelineIdArgs, _delete_timeline,
              _L, _L, writes=True, chat_only=True),
        _tool("delete_project", "Delete a project.", ProjectIdArgs, _delete_project, _P, _P,
              writes=True, chat_only=True),
        _tool("list_tasks_due_today", "List the tasks due today.", NoArgs,
              _list_tasks_due_today, _T, _T, chat_only=True),
        _tool("list_task_comments", "List the comments of a task.", TaskIdArgs,
              _list_task_comments, _T, "taskComments", chat_only=True),
        _tool("delete_task_comment", "Delete a task comment.", CommentIdArgs,
              _delete_task_comment, _T, "taskComments", writes=True, chat_only=True),
    )
}
# fmt: on

# Always in a background toolset, whatever its data types: the model matches work to projects.
_PROJECT_LOOKUP = ("list_projects", "list_all_projects", "get_project")


# --- toolsets -------------------------------------------------------------------------


def _validation_message(tool: Tool, exc: ValidationError) -> str:
    allowed = ", ".join(tool.args.model_fields) or "none"
    problems = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        if err["type"] == "extra_forbidden":
            problems.append(f"{where}: unknown argument (allowed: {allowed})")
            continue
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "string_too_short" and err.get("ctx", {}).get("min_length") == 1:
            msg = "must not be empty"
        if err["type"] not in ("missing", "value_error") and "input" in err:
            msg += f" (got {json.dumps(err['input'], ensure_ascii=False, default=str)[:80]})"
        problems.append(f"{where}: {msg}" if err["loc"] else msg)
    return f"invalid arguments for {tool.name}: " + "; ".join(problems)


class Toolset:
    """The tools one run or chat request may use, by name."""

    def __init__(self, tools: Iterable[Tool], *, background: bool = False) -> None:
        self.tools: dict[str, Tool] = {t.name: t for t in tools}
        self.background = background
        if background:
            refused = sorted(n for n, t in self.tools.items() if t.chat_only)
            if refused:
                raise ValueError(f"chat-only tools in a background toolset: {', '.join(refused)}")

    def names(self) -> list[str]:
        return list(self.tools)

    def table_of(self, name: str) -> str | None:
        """The table a tool works on (``None`` for the file tools and unknown names)."""
        tool = self.tools.get(name)
        return None if tool is None else tool.table

    def schemas(self) -> list[dict[str, Any]]:
        """OpenAI function-tool schemas, one per tool (fresh copies: callers may mutate)."""
        return [t.schema() for t in self.tools.values()]

    async def call(self, name: str, arguments: str, ctx: ToolContext) -> ToolOutcome:
        """Validate and run one tool call; failures the model can fix are error outcomes."""
        tool = self.tools.get(name)
        if tool is None:
            return _error(f"unknown tool {name!r}; available tools: {', '.join(self.tools)}")
        if tool.chat_only and (ctx.background or self.background):
            return _error(f"{name} is not available in background runs")
        try:
            raw = json.loads(arguments.strip() or "{}")
        except ValueError as exc:
            return _error(f"arguments for {name} are not valid JSON ({exc}); send one JSON object")
        if not isinstance(raw, dict):
            return _error(f"arguments for {name} must be a JSON object, got {type(raw).__name__}")
        if ctx.background or self.background:
            # The approval flags are the daemon's to set in background runs (see _insert):
            # a model asking for them is overruled, not refused.
            for flag in _APPROVAL_FLAGS:
                raw.pop(flag, None)
        try:
            args = tool.args.model_validate(raw)
        except ValidationError as exc:
            return _error(_validation_message(tool, exc))
        try:
            return await tool.handler(ctx, args)
        except (DeviceOffline, RunCancelled):
            raise
        except (ToolError, StoreError) as exc:
            return _error(str(exc))


_APPROVAL_FLAGS = ("isAiSuggested", "isApproved", "is_ai_suggested", "is_approved")


def _error(message: str) -> ToolOutcome:
    return ToolOutcome(f"error: {message}", is_error=True)


def background_toolset(data_types: Collection[str], *, files: bool = False) -> Toolset:
    """The entity tools of ``data_types`` plus project lookup (and the file tools if
    ``files``); never a chat-only or delete tool."""
    unknown = set(data_types) - {"tasks", "notes", "timelines", "projects"}
    if unknown:
        raise ValueError(f"unknown data types: {', '.join(sorted(unknown))}")
    chosen = [
        t
        for t in ALL_TOOLS.values()
        if not t.chat_only
        and (t.group in data_types or t.name in _PROJECT_LOOKUP or (files and t.group == "files"))
    ]
    return Toolset(chosen, background=True)


def chat_toolset() -> Toolset:
    """Every entity tool, deletes included (chat requests are typed by the user)."""
    return Toolset(t for t in ALL_TOOLS.values() if t.group != "files")

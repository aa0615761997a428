"""The client-owned storage contract (spec: storage.md) as types and pure validators.

Rules, as the daemon enforces them before a value leaves it:

- Seven tables (``Table``): storage.md's six, plus ``coreMemory`` (what the user
  asked the assistant to remember: ``id``, ``key``, ``value``, ``createdAt``,
  ``updatedAt``; one row per ``key``), which the daemon uses only when the client
  lists it in ``capabilities.tables``. Column names are camelCase on the wire; timestamps are
  Unix milliseconds (``int``); ``isAiSuggested``/``isApproved`` are integers ``0``/``1``.
- The client generates ``id``, ``createdAt`` and ``updatedAt``: they are never sent in
  ``insert`` data and never updated. ``id`` is also not an update column.
- ``insert`` data must name known columns only and carry the table's required
  columns (``TableSpec.required``), not ``None`` and not blank.
- ``update`` needs at least one column; a required column cannot be set to ``None``.
- Enum columns (``status``, ``priority``) take only their enum's values; ``assignee``
  is a JSON array encoded as a string; text columns take ``str`` or ``None``.
- ``select`` filters: only the keys of storage.md's filter table for that table; a
  ``None`` value means "no filter" and is dropped; an unknown key is an error so a
  typo cannot silently return everything.

Every violation raises ``StorageError(code="bad_request")`` with a message naming
the table, the column and the value. Validators return a normalised copy (``True``
becomes ``1`` for flag columns, an integral float timestamp becomes ``int``); they
never mutate their input.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from protocol.errors import ErrorCode, StorageError

__all__ = [
    "CLIENT_GENERATED",
    "ROW_MODELS",
    "TABLES",
    "Action",
    "ClientRow",
    "CoreMemoryRow",
    "NoteRow",
    "OrderBy",
    "Priority",
    "ProjectRow",
    "ProjectStatus",
    "Table",
    "TableSpec",
    "TaskCommentRow",
    "TaskRow",
    "TaskStatus",
    "TimelineRow",
    "check_filters",
    "check_insert",
    "check_table",
    "check_updates",
]


class Table(StrEnum):
    TASKS = "tasks"
    PROJECTS = "projects"
    TIMELINES = "timelines"
    NOTES = "notes"
    TASK_COMMENTS = "taskComments"
    CLIENTS = "clients"
    CORE_MEMORY = "coreMemory"


class Action(StrEnum):
    SELECT = "select"
    GET = "get"
    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"
    VECTOR_UPSERT = "vector_upsert"
    VECTOR_SEARCH = "vector_search"


class TaskStatus(StrEnum):
    TODO = "todo"
    IN_PROGRESS = "in_progress"
    DONE = "done"


class Priority(StrEnum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class ProjectStatus(StrEnum):
    ACTIVE = "active"
    ARCHIVED = "archived"


class OrderBy(StrEnum):
    DUE_DATE = "dueDate"
    PRIORITY = "priority"
    CREATED_AT = "createdAt"


# --- row models (what the client returns; they feed the JSON Schema export) ---------


class _Row(BaseModel):
    # A newer desktop app may add columns; they pass through untouched.
    model_config = ConfigDict(extra="allow")


class TaskRow(_Row):
    id: str
    projectId: str | None = None
    title: str
    description: str | None = None
    status: TaskStatus = TaskStatus.TODO
    priority: Priority = Priority.MEDIUM
    assignee: str | None = None  # JSON array encoded as a string
    dueDate: int | None = None
    isAiSuggested: int = 0
    isApproved: int = 1
    createdAt: int


class ProjectRow(_Row):
    id: str
    clientId: str | None = None
    name: str
    status: ProjectStatus = ProjectStatus.ACTIVE
    aiSummary: str | None = None
    isAiSuggested: int = 0
    isApproved: int = 1
    createdAt: int


class TimelineRow(_Row):
    id: str
    projectId: str
    title: str
    date: int | None = None
    isAiSuggested: int = 0
    isApproved: int = 1
    createdAt: int


class NoteRow(_Row):
    id: str
    projectId: str | None = None
    title: str
    content: str | None = None  # Markdown
    isAiSuggested: int = 0
    isApproved: int = 1
    createdAt: int
    updatedAt: int | None = None


class TaskCommentRow(_Row):
    id: str
    taskId: str
    author: str | None = None
    content: str
    createdAt: int


class ClientRow(_Row):
    id: str
    parentId: str | None = None
    name: str
    industry: str | None = None
    createdAt: int


class CoreMemoryRow(_Row):
    """A preference the user stated ("I work 9 to 5 CET"), under a short ``key``."""

    id: str
    key: str
    value: str
    createdAt: int
    updatedAt: int | None = None


ROW_MODELS: dict[Table, type[BaseModel]] = {
    Table.TASKS: TaskRow,
    Table.PROJECTS: ProjectRow,
    Table.TIMELINES: TimelineRow,
    Table.NOTES: NoteRow,
    Table.TASK_COMMENTS: TaskCommentRow,
    Table.CLIENTS: ClientRow,
    Table.CORE_MEMORY: CoreMemoryRow,
}


# --- table specs ----------------------------------------------------------------------

CLIENT_GENERATED: tuple[str, ...] = ("id", "createdAt", "updatedAt")
_AI_FLAGS = ("isAiSuggested", "isApproved")


@dataclass(frozen=True)
class TableSpec:
    """One table of storage.md: its columns and the rules the validators apply."""

    noun: str  # singular, for messages: "no task t7"
    columns: tuple[str, ...]
    required: tuple[str, ...]  # on insert
    ai_flags: bool  # has isAiSuggested / isApproved
    filters: tuple[str, ...]  # keys ``select`` understands
    enums: dict[str, type[StrEnum]]
    timestamps: tuple[str, ...]  # integer milliseconds
    client_generated: tuple[str, ...] = CLIENT_GENERATED

    @property
    def text_columns(self) -> frozenset[str]:
        """Columns that hold ``str`` (or ``None``): all but flags and timestamps."""
        flags = set(_AI_FLAGS) if self.ai_flags else set()
        return frozenset(self.columns) - flags - set(self.timestamps)

    @property
    def defaulted(self) -> tuple[str, ...]:
        """Columns the client fills with a default on insert; never null."""
        flags = _AI_FLAGS if self.ai_flags else ()
        return (*self.enums, *flags)


TABLES: dict[Table, TableSpec] = {
    Table.TASKS: TableSpec(
        noun="task",
        columns=(
            "id",
            "projectId",
            "title",
            "description",
            "status",
            "priority",
            "assignee",
            "dueDate",
            "isAiSuggested",
            "isApproved",
            "createdAt",
        ),
        required=("title",),
        ai_flags=True,
        filters=("projectId", "status", "search", "orderBy", "dueDateFrom", "dueDateTo"),
        enums={"status": TaskStatus, "priority": Priority},
        timestamps=("dueDate", "createdAt"),
    ),
    Table.PROJECTS: TableSpec(
        noun="project",
        columns=(
            "id",
            "clientId",
            "name",
            "status",
            "aiSummary",
            "isAiSuggested",
            "isApproved",
            "createdAt",
        ),
        required=("name",),
        ai_flags=True,
        filters=("clientId", "includeArchived"),
        enums={"status": ProjectStatus},
        timestamps=("createdAt",),
    ),
    Table.TIMELINES: TableSpec(
        noun="timeline",
        columns=("id", "projectId", "title", "date", "isAiSuggested", "isApproved", "createdAt"),
        required=("projectId", "title", "date"),
        ai_flags=True,
        filters=("projectId",),
        enums={},
        timestamps=("date", "createdAt"),
    ),
    Table.NOTES: TableSpec(
        noun="note",
        columns=(
            "id",
            "projectId",
            "title",
            "content",
            "isAiSuggested",
            "isApproved",
            "createdAt",
            "updatedAt",
        ),
        required=("title",),
        ai_flags=True,
        filters=("projectId",),
        enums={},
        timestamps=("createdAt", "updatedAt"),
    ),
    Table.TASK_COMMENTS: TableSpec(
        noun="task comment",
        columns=("id", "taskId", "author", "content", "createdAt"),
        required=("taskId", "content"),
        ai_flags=False,
        filters=("taskId",),
        enums={},
        timestamps=("createdAt",),
    ),
    Table.CLIENTS: TableSpec(
        noun="client",
        columns=("id", "parentId", "name", "industry", "createdAt"),
        required=("name",),
        ai_flags=False,
        filters=("parentId",),
        enums={},
        timestamps=("createdAt",),
    ),
    Table.CORE_MEMORY: TableSpec(
        noun="core memory entry",
        columns=("id", "key", "value", "createdAt", "updatedAt"),
        required=("key", "value"),
        ai_flags=False,
        filters=("key",),
        enums={},
        timestamps=("createdAt", "updatedAt"),
    ),
}

# Filters that are not plain "column = value" string matches.
_TIMESTAMP_FILTERS = ("dueDateFrom", "dueDateTo")
_BOOL_FILTERS = ("includeArchived",)
_STRING_FILTERS = ("projectId", "clientId", "parentId", "taskId", "search", "key")

# Year 9999 in ms: anything larger is micro- or nanoseconds, not milliseconds.
_MAX_MS = 253_402_300_799_999


# --- validators -------------------------------------------------------------------------


def _bad(message: str) -> StorageError:
    return StorageError(message, code=ErrorCode.BAD_REQUEST)


def _allowed(values: Any) -> str:
    return ", ".join(str(v) for v in values)


def check_table(name: object) -> Table:
    """The ``Table`` called ``name``; ``bad_request`` if there is none."""
    if isinstance(name, Table):
        return name
    if isinstance(name, str):
        try:
            return Table(name)
        except ValueError:
            pass
    raise _bad(f"unknown table {name!r}; allowed: {_allowed(Table)}")


def _check_ms(table: Table, column: str, value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(
            f"{column} for {table} must be an integer Unix timestamp in milliseconds, got {value!r}"
        )
    if not -_MAX_MS <= value <= _MAX_MS:
        raise _bad(f"{column} for {table} is not a timestamp in milliseconds: {value!r}")
    return value


def _check_enum(table: Table, column: str, value: Any, enum: type[StrEnum]) -> str:
    if isinstance(value, str):
        try:
            return str(enum(value))
        except ValueError:
            pass
    raise _bad(f"invalid {column} {value!r} for {table}; allowed: {_allowed(enum)}")


def check_filters(table: Table | str, filters: Any) -> dict[str, Any]:
    """Validated ``select`` filters for ``table``, with ``None`` values dropped."""
    t = check_table(table)
    if filters is None:
        return {}
    if not isinstance(filters, dict):
        raise _bad(f"filters for {t} must be an object, got {type(filters).__name__}")
    spec = TABLES[t]
    out: dict[str, Any] = {}
    for key, value in filters.items():
        if key not in spec.filters:
            raise _bad(f"unknown filter {key!r} for table {t}; allowed: {_allowed(spec.filters)}")
        if value is None:
            continue
        if key == "orderBy":
            out[key] = _check_enum(t, key, value, OrderBy)
        elif key in spec.enums:
            out[key] = _check_enum(t, key, value, spec.enums[key])
        elif key in _TIMESTAMP_FILTERS:
            out[key] = _check_ms(t, key, value)
        elif key in _BOOL_FILTERS:
            if value not in (True, False):  # 0/1 compare equal to False/True
                raise _bad(f"filter {key} for {t} must be true or false, got {value!r}")
            out[key] = bool(value)
        else:
            assert key in _STRING_FILTERS, key
            if not isinstance(value, str):
                raise _bad(f"filter {key} for {t} must be a string, got {value!r}")
            out[key] = value
    return out


def _check_value(t: Table, spec: TableSpec, column: str, value: Any) -> Any:
    """One column's value, normalised; ``None`` is accepted here (callers check required)."""
    if value is None:
        return None
    if column in spec.timestamps:
        return _check_ms(t, column, value)
    if spec.ai_flags and column in _AI_FLAGS:
        if value not in (0, 1) or isinstance(value, float):
            raise _bad(f"{column} for {t} must be 0 or 1, got {value!r}")
        return int(value)
    if column in spec.enums:
        return _check_enum(t, column, value, spec.enums[column])
    if not isinstance(value, str):
        raise _bad(f"{column} for {t} must be a string, got {value!r}")
    if column == "assignee":
        try:
            decoded = json.loads(value)
        except ValueError:
            decoded = None
        if not isinstance(decoded, list):
            raise _bad(
                f"assignee for {t} must be a JSON array encoded as a string "
                f"(e.g. '[\"Ana\"]'), got {value!r}"
            )
    return value


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _check_columns(t: Table, spec: TableSpec, data: dict[str, Any], verb: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column, value in data.items():
        if column == "id" and verb == "update":
            raise _bad(f"id of {t} is not updatable")
        if column in spec.client_generated:
            raise _bad(f"{column} is generated by the client and cannot be given on {verb} of {t}")
        if column not in spec.columns:
            raise _bad(
                f"unknown column {column!r} for table {t}; allowed: {_allowed(spec.columns)}"
            )
        out[column] = _check_value(t, spec, column, value)
    return out


def check_insert(table: Table | str, data: Any) -> dict[str, Any]:
    """Validated ``insert`` data for ``table`` (a normalised copy)."""
    t = check_table(table)
    if not isinstance(data, dict):
        raise _bad(f"insert data for {t} must be an object, got {type(data).__name__}")
    spec = TABLES[t]
    out = _check_columns(t, spec, data, "insert")
    # None for a column with a default (enums, flags) means "the default": leave it out.
    for column in [c for c, v in out.items() if v is None and c in spec.defaulted]:
        del out[column]
    missing = [c for c in spec.required if _is_blank(out.get(c))]
    if missing:
        raise _bad(f"missing required column(s) for {t}: {', '.join(missing)}")
    return out


def check_updates(table: Table | str, updates: Any) -> dict[str, Any]:
    """Validated ``update`` columns for ``table`` (a normalised copy)."""
    t = check_table(table)
    if not isinstance(updates, dict):
        raise _bad(f"updates for {t} must be an object, got {type(updates).__name__}")
    if not updates:
        raise _bad(f"updates for {t} are empty; name at least one column")
    spec = TABLES[t]
    out = _check_columns(t, spec, updates, "update")
    cleared = [c for c in spec.required if c in out and _is_blank(out[c])]
    if cleared:
        raise _bad(f"required column(s) of {t} cannot be empty: {', '.join(cleared)}")
    nulled = [c for c in spec.defaulted if c in out and out[c] is None]
    if nulled:
        raise _bad(f"column(s) of {t} cannot be set to null: {', '.join(nulled)}")
    return out

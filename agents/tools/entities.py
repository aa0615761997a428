"""The entity tools: tasks, notes, timelines and projects over the ``Store``.

Rules:

- The model speaks snake_case and ISO 8601; the store speaks camelCase and Unix
  milliseconds (``dates.py``). ``assignees`` (a list of names) is stored as a
  JSON-array string in ``assignee``.
- Values are checked against the storage contract before anything is sent
  (``protocol.storage.check_insert``/``check_updates``); a referenced project or task
  that does not exist is an error (checked with ``get`` before a create: no orphans).
- Background runs never overwrite what the user made or approved (``user_owned``):
  such a task moves only in status, priority, due date and assignees (a timeline in
  its date, a project in status and AI summary); a note's content gets an appended,
  dated section; titles and descriptions stay. Every such change is returned in
  ``ToolOutcome.changes`` (``{table, id, field, before, after}``) for run_complete.
- Background runs (``ToolContext.background``): an insert first looks for the same
  item (same title or name in the same project, among *all* rows) and updates it
  instead of duplicating it; inserts always carry ``isAiSuggested: 1, isApproved: 0``
  where the table has them, whatever the model sent; deletes are refused.
- With ``ToolContext.idempotency_scope`` set, every insert carries
  ``idempotency_key = "sha256:" + sha256(scope, table, identity)``, the identity being
  the normalised (case-folded, whitespace-collapsed) title or name; for timelines
  project + title + date, for comments task + content. A re-run after a crash with
  the same scope sends the same keys, so the client creates nothing twice.
- Failures the model can act on raise ``ToolError`` (the toolset turns it into an
  ``error:`` outcome); ``DeviceOffline`` and ``RunCancelled`` propagate.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from protocol.errors import StorageError
from protocol.storage import TABLES, Table, check_insert, check_updates

from ..errors import ToolError
from ..store import Row
from .args import (
    AddCommentArgs,
    CommentIdArgs,
    CreateNoteArgs,
    CreateProjectArgs,
    CreateTaskArgs,
    CreateTimelineArgs,
    ListProjectsArgs,
    ListTasksArgs,
    NoArgs,
    NoteIdArgs,
    ProjectFilterArgs,
    ProjectIdArgs,
    TaskIdArgs,
    TimelineIdArgs,
    UpdateNoteArgs,
    UpdateProjectArgs,
    UpdateTaskArgs,
    UpdateTimelineArgs,
)
from .base import MutationRecord, Tool, ToolContext, ToolOutcome, tool
from .dates import ms_from_iso
from .render import CLIP_IN_GET, noun, render_list, render_row

__all__ = ["COMMENT_AUTHOR", "ENTITY_TOOLS", "FETCH_LIMIT", "idempotency_key"]

# Who wrote a comment added through add_task_comment.
COMMENT_AUTHOR = "AI assistant"
FETCH_LIMIT = 500  # rows asked of the store per list (to say how many were left out)


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
    return render_list(table, rows, ctx.tz, FETCH_LIMIT)


async def _require(ctx: ToolContext, table: str, row_id: str, hint: str) -> Row:
    row = await ctx.store.get(table, row_id)
    if row is None:
        raise ToolError(f"not_found: no {noun(table)} {row_id}; {hint}")
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
    if ctx.background and user_owned(row):
        try:
            return await _update_user_owned(ctx, table, row, changes)
        except ToolError:
            return ToolOutcome(
                f"already recorded by the user, left as it is: {render_row(table, row, ctx.tz)}"
            )
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
    if ctx.background:
        row = await ctx.store.get(table, row_id)
        if row is None:
            raise ToolError(f"not_found: no {noun(table)} {row_id}")
        if user_owned(row):
            return await _update_user_owned(ctx, table, row, updates)
    row = await ctx.store.update(table, row_id, updates)
    return ToolOutcome(
        f"updated {render_row(table, row, ctx.tz)}", [MutationRecord("update", table, row)]
    )


# Background runs change a record the user created or approved only in these columns
# (and by comments); a note's content grows by an appended, dated section instead.
_MOVABLE = {
    "tasks": frozenset({"status", "priority", "dueDate", "assignee"}),
    "timelines": frozenset({"date"}),
    "projects": frozenset({"status", "aiSummary"}),
    "notes": frozenset(),
}


def user_owned(row: Row) -> bool:
    """A record the user made (not an AI suggestion) or approved."""
    return row.get("isAiSuggested") in (0, False, None) or row.get("isApproved") in (1, True)


def _appended(ctx: ToolContext, old: str, new: str) -> str | None:
    """``old`` with ``new`` as a dated section below it; ``None`` when already there."""
    if new.strip() in old:
        return None
    today = datetime.now(ctx.tz).date().isoformat()
    return f"{old.rstrip()}\n\n## Added by the assistant on {today}\n\n{new.strip()}\n"


async def _update_user_owned(
    ctx: ToolContext, table: str, row: Row, updates: dict[str, Any]
) -> ToolOutcome:
    """A background change to a record the user owns: only what the rules allow, every
    change listed; a refusal the model can act on otherwise."""
    allowed = {k: v for k, v in updates.items() if k in _MOVABLE.get(table, frozenset())}
    if table == "notes" and isinstance(updates.get("content"), str):
        merged = _appended(ctx, str(row.get("content") or ""), updates["content"])
        if merged is not None:
            allowed["content"] = merged
    allowed = {k: v for k, v in allowed.items() if row.get(k) != v}
    refused = sorted(set(updates) - set(_MOVABLE.get(table, frozenset())) - {"content"})
    if not allowed:
        what = ", ".join(refused) or "nothing new"
        raise ToolError(
            f"this {noun(table)} belongs to the user: background runs do not change its "
            f"{what}; add a comment (tasks) or leave it"
        )
    updated = await ctx.store.update(table, str(row["id"]), allowed)
    changes = [
        {"table": table, "id": str(row["id"]), "field": k, "before": row.get(k), "after": v}
        for k, v in allowed.items()
        if k != "content"
    ]
    if "content" in allowed:  # a note: only the appended section (undo = remove it)
        section = allowed["content"][len(str(row.get("content") or "").rstrip()) :]
        changes.append(
            {
                "table": table,
                "id": str(row["id"]),
                "field": "content",
                "before": None,
                "after": section.strip(),
            }
        )
    note = f" (not changed, the user's: {', '.join(refused)})" if refused else ""
    return ToolOutcome(
        f"updated {render_row(table, updated, ctx.tz)}{note}",
        [MutationRecord("update", table, updated)],
        changes=changes,
    )


async def _delete(ctx: ToolContext, table: str, row_id: str) -> ToolOutcome:
    if ctx.background:
        raise ToolError("deleting is not allowed in background runs")
    await ctx.store.delete(table, row_id)
    return ToolOutcome(
        f"deleted {noun(table)} {row_id}", [MutationRecord("delete", table, {"id": row_id})]
    )


_PROJECT_HINT = "call list_projects for the ids"
_TASK_HINT = "call list_tasks for the ids"


async def _check_project(ctx: ToolContext, project_id: str | None) -> None:
    if project_id is not None:
        await _require(ctx, "projects", project_id, _PROJECT_HINT)


def _assignee_column(names: list[str] | None) -> str | None:
    return None if names is None else json.dumps(names, ensure_ascii=False)


# --- handlers: tasks ------------------------------------------------------------------


@tool("tasks")
async def list_tasks(ctx: ToolContext, a: ListTasksArgs) -> ToolOutcome:
    """List tasks, optionally filtered by project, status or text."""
    filters = _columns(
        {"projectId": a.project_id, "status": a.status, "search": a.search, "orderBy": a.order_by}
    )
    return ToolOutcome(await _select(ctx, "tasks", filters))


@tool("tasks", chat_only=True)
async def list_tasks_due_today(ctx: ToolContext, a: NoArgs) -> ToolOutcome:
    """List the tasks due today."""
    today = datetime.now(ctx.tz).date()
    start = ms_from_iso(today.isoformat(), ctx.tz)
    end = ms_from_iso((today + timedelta(days=1)).isoformat(), ctx.tz) - 1
    filters = {"dueDateFrom": start, "dueDateTo": end, "orderBy": "dueDate"}
    return ToolOutcome(await _select(ctx, "tasks", filters))


def _task_columns(ctx: ToolContext, a: CreateTaskArgs | UpdateTaskArgs) -> dict[str, Any]:
    """The task columns both create_task and update_task take from the model."""
    return {
        "title": a.title,
        "description": a.description,
        "status": a.status,
        "priority": a.priority,
        "assignee": _assignee_column(a.assignees),
        "dueDate": _ms(a.due_date, ctx),
    }


@tool("tasks", writes=True)
async def create_task(ctx: ToolContext, a: CreateTaskArgs) -> ToolOutcome:
    """Create a task."""
    await _check_project(ctx, a.project_id)
    data = {**_task_columns(ctx, a), "projectId": a.project_id}
    return await _insert(ctx, "tasks", data, (a.project_id, a.title))


@tool("tasks", writes=True)
async def update_task(ctx: ToolContext, a: UpdateTaskArgs) -> ToolOutcome:
    """Change fields of an existing task."""
    return await _update(ctx, "tasks", a.task_id, _task_columns(ctx, a))


@tool("tasks", writes=True, chat_only=True)
async def delete_task(ctx: ToolContext, a: TaskIdArgs) -> ToolOutcome:
    """Delete a task."""
    return await _delete(ctx, "tasks", a.task_id)


@tool("tasks", table="taskComments", writes=True)
async def add_task_comment(ctx: ToolContext, a: AddCommentArgs) -> ToolOutcome:
    """Add a comment to an existing task."""
    await _require(ctx, "tasks", a.task_id, _TASK_HINT)
    data = {"taskId": a.task_id, "content": a.content, "author": COMMENT_AUTHOR}
    return await _insert(ctx, "taskComments", data, (a.task_id, a.content))


@tool("tasks", table="taskComments", chat_only=True)
async def list_task_comments(ctx: ToolContext, a: TaskIdArgs) -> ToolOutcome:
    """List the comments of a task."""
    return ToolOutcome(await _select(ctx, "taskComments", {"taskId": a.task_id}))


@tool("tasks", table="taskComments", writes=True, chat_only=True)
async def delete_task_comment(ctx: ToolContext, a: CommentIdArgs) -> ToolOutcome:
    """Delete a task comment."""
    return await _delete(ctx, "taskComments", a.comment_id)


# --- handlers: notes ------------------------------------------------------------------


@tool("notes")
async def list_notes(ctx: ToolContext, a: ProjectFilterArgs) -> ToolOutcome:
    """List notes, optionally of one project."""
    return ToolOutcome(await _select(ctx, "notes", _columns({"projectId": a.project_id})))


@tool("notes")
async def get_note(ctx: ToolContext, a: NoteIdArgs) -> ToolOutcome:
    """Read one note in full."""
    return await _get(ctx, "notes", a.note_id, "call list_notes for the ids")


@tool("notes", writes=True)
async def create_note(ctx: ToolContext, a: CreateNoteArgs) -> ToolOutcome:
    """Create a note."""
    await _check_project(ctx, a.project_id)
    data = {"title": a.title, "content": a.content, "projectId": a.project_id}
    return await _insert(ctx, "notes", data, (a.project_id, a.title))


@tool("notes", writes=True)
async def update_note(ctx: ToolContext, a: UpdateNoteArgs) -> ToolOutcome:
    """Change the title or body of an existing note."""
    return await _update(ctx, "notes", a.note_id, {"title": a.title, "content": a.content})


@tool("notes", writes=True, chat_only=True)
async def delete_note(ctx: ToolContext, a: NoteIdArgs) -> ToolOutcome:
    """Delete a note."""
    return await _delete(ctx, "notes", a.note_id)


# --- handlers: timelines --------------------------------------------------------------


@tool("timelines")
async def list_timelines(ctx: ToolContext, a: ProjectFilterArgs) -> ToolOutcome:
    """List timeline entries (milestones), optionally of one project."""
    return ToolOutcome(await _select(ctx, "timelines", _columns({"projectId": a.project_id})))


@tool("timelines", writes=True)
async def create_timeline(ctx: ToolContext, a: CreateTimelineArgs) -> ToolOutcome:
    """Add a dated milestone to a project's timeline."""
    await _check_project(ctx, a.project_id)
    when = ms_from_iso(a.date, ctx.tz)
    data = {"projectId": a.project_id, "title": a.title, "date": when}
    return await _insert(ctx, "timelines", data, (a.project_id, a.title, when))


@tool("timelines", writes=True)
async def update_timeline(ctx: ToolContext, a: UpdateTimelineArgs) -> ToolOutcome:
    """Change the title or date of a timeline entry."""
    data = {"title": a.title, "date": _ms(a.date, ctx)}
    return await _update(ctx, "timelines", a.timeline_id, data)


@tool("timelines", writes=True, chat_only=True)
async def delete_timeline(ctx: ToolContext, a: TimelineIdArgs) -> ToolOutcome:
    """Delete a timeline entry."""
    return await _delete(ctx, "timelines", a.timeline_id)


# --- handlers: projects ---------------------------------------------------------------


@tool("projects")
async def list_projects(ctx: ToolContext, a: ListProjectsArgs) -> ToolOutcome:
    """List active projects (archived too if asked), optionally of one client."""
    filters = _columns({"clientId": a.client_id, "includeArchived": a.include_archived})
    return ToolOutcome(await _select(ctx, "projects", filters))


@tool("projects")
async def list_all_projects(ctx: ToolContext, a: NoArgs) -> ToolOutcome:
    """List every project, archived ones included."""
    return ToolOutcome(await _select(ctx, "projects", {"includeArchived": True}))


@tool("projects")
async def get_project(ctx: ToolContext, a: ProjectIdArgs) -> ToolOutcome:
    """Read one project in full."""
    return await _get(ctx, "projects", a.project_id, _PROJECT_HINT)


@tool("projects", writes=True)
async def create_project(ctx: ToolContext, a: CreateProjectArgs) -> ToolOutcome:
    """Create a project (only for clearly significant new work)."""
    data = {"name": a.name, "clientId": a.client_id}
    return await _insert(ctx, "projects", data, (a.name,))


@tool("projects", writes=True)
async def update_project(ctx: ToolContext, a: UpdateProjectArgs) -> ToolOutcome:
    """Rename, archive or summarise a project."""
    data = {"name": a.name, "status": a.status, "aiSummary": a.ai_summary}
    return await _update(ctx, "projects", a.project_id, data)


@tool("projects", writes=True, chat_only=True)
async def delete_project(ctx: ToolContext, a: ProjectIdArgs) -> ToolOutcome:
    """Delete a project."""
    return await _delete(ctx, "projects", a.project_id)


# In the order the model sees them.
ENTITY_TOOLS: tuple[Tool, ...] = (
    list_tasks,
    create_task,
    update_task,
    add_task_comment,
    list_notes,
    get_note,
    create_note,
    update_note,
    list_timelines,
    create_timeline,
    update_timeline,
    list_projects,
    list_all_projects,
    get_project,
    create_project,
    update_project,
    delete_task,
    delete_note,
    delete_timeline,
    delete_project,
    list_tasks_due_today,
    list_task_comments,
    delete_task_comment,
)

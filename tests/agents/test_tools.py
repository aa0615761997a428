"""agents.tools against a real SQLite store (the reference client's), no mocks."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agents.errors import DeviceOffline
from agents.local_dir.file_tools import file_tools
from agents.tools import (
    ALL_TOOLS,
    MutationRecord,
    Tool,
    ToolContext,
    ToolOutcome,
    Toolset,
    background_toolset,
    chat_toolset,
    idempotency_key,
    iso_from_ms,
    ms_from_iso,
)
from agents.tools.notices import NOTICE_TOOLS
from scheduler.cron import local_tz
from tests.support.stores import SqliteBackedStore

PARIS = ZoneInfo("Europe/Paris")

# agents.md's tools table: name -> (required args, optional args)
SPEC: dict[str, tuple[set[str], set[str]]] = {
    "list_directory": ({"path"}, set()),
    "get_file_metadata": ({"path"}, set()),
    "read_file_content": ({"path"}, {"offset", "max_chars"}),
    "list_tasks": (set(), {"project_id", "status", "search", "order_by"}),
    "create_task": (
        {"title"},
        {"description", "status", "priority", "assignees", "due_date", "project_id"},
    ),
    "update_task": (
        {"task_id"},
        {"title", "description", "status", "priority", "assignees", "due_date"},
    ),
    "add_task_comment": ({"task_id", "content"}, set()),
    "list_notes": (set(), {"project_id"}),
    "get_note": ({"note_id"}, set()),
    "create_note": ({"title", "content"}, {"project_id"}),
    "update_note": ({"note_id"}, {"title", "content"}),
    "list_timelines": (set(), {"project_id"}),
    "create_timeline": ({"project_id", "title", "date"}, set()),
    "update_timeline": ({"timeline_id"}, {"title", "date"}),
    "list_projects": (set(), {"client_id", "include_archived"}),
    "list_all_projects": (set(), set()),
    "get_project": ({"project_id"}, set()),
    "create_project": ({"name"}, {"client_id"}),
    "update_project": ({"project_id"}, {"name", "status", "ai_summary"}),
    "delete_task": ({"task_id"}, set()),
    "delete_note": ({"note_id"}, set()),
    "delete_timeline": ({"timeline_id"}, set()),
    "delete_project": ({"project_id"}, set()),
    "list_tasks_due_today": (set(), set()),
    "list_task_comments": ({"task_id"}, set()),
    "delete_task_comment": ({"comment_id"}, set()),
    "report_unplaced": ({"kind", "title", "reason"}, {"date"}),
}
CHAT_ONLY = {
    "delete_task",
    "delete_note",
    "delete_timeline",
    "delete_project",
    "list_tasks_due_today",
    "list_task_comments",
    "delete_task_comment",
}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteBackedStore]:
    s = SqliteBackedStore(tmp_path / "app.db")
    yield s
    s.close()


@pytest.fixture
def ctx(store: SqliteBackedStore) -> ToolContext:
    return ToolContext(store, tz=PARIS)


async def call(ts: Toolset, ctx: ToolContext, name: str, args: dict[str, Any] | str) -> ToolOutcome:
    text = args if isinstance(args, str) else json.dumps(args)
    return await ts.call(name, text, ctx)


async def ok(ts: Toolset, ctx: ToolContext, name: str, args: dict[str, Any] | str) -> ToolOutcome:
    out = await call(ts, ctx, name, args)
    assert not out.is_error, out.text
    return out


def created_id(out: ToolOutcome) -> str:
    assert out.mutations and out.mutations[0].action == "insert"
    row_id = out.mutations[0].data["id"]
    assert f"id={row_id}" in out.text  # the model gets the id
    return str(row_id)


# --- declarations and schemas -----------------------------------------------------------


# The entity tools and the local directory's file tools: every tool of the spec.
DECLARED: dict[str, Tool] = {
    **ALL_TOOLS,
    **{t.name: t for t in (*file_tools(["/tmp"]), *NOTICE_TOOLS)},
}


def test_every_tool_of_the_spec_is_declared_once_with_its_arguments() -> None:
    assert set(DECLARED) == set(SPEC)
    for name, tool in DECLARED.items():
        required, optional = SPEC[name]
        params = tool.schema()["function"]["parameters"]
        assert set(params["properties"]) == required | optional, name
        assert set(params.get("required", [])) == required, name
        assert tool.chat_only == (name in CHAT_ONLY), name
        assert tool.description and "\n" not in tool.description
        assert tool.writes == name.startswith(("create_", "update_", "delete_", "add_"))
        assert (tool.group in ("files", "notices")) == (tool.table is None)


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


@pytest.mark.parametrize("name", sorted(SPEC))
def test_schema_is_a_clean_openai_function_tool(name: str) -> None:
    schema = DECLARED[name].schema()
    assert schema["type"] == "function"
    fn = schema["function"]
    assert fn["name"] == name and fn["description"] == DECLARED[name].description
    params = fn["parameters"]
    assert params["type"] == "object" and params["additionalProperties"] is False
    text = json.dumps(schema)
    assert "$ref" not in text and "$defs" not in text
    for node in _walk(params):
        if "type" in node:  # a schema node, not a "properties" mapping
            assert "title" not in node
        if node.get("type") == "object":
            assert node["additionalProperties"] is False
        assert node.get("default", 0) is not None
    for prop_name, prop in params["properties"].items():
        assert prop.get("description"), (name, prop_name)
        assert "anyOf" not in prop  # optional fields show their plain type
        assert "type" in prop


def test_enums_in_schemas_are_the_storage_enums() -> None:
    props = ALL_TOOLS["create_task"].schema()["function"]["parameters"]["properties"]
    assert props["status"]["enum"] == ["todo", "in_progress", "done"]
    assert props["priority"]["enum"] == ["high", "medium", "low"]
    assert props["assignees"]["type"] == "array"
    props = ALL_TOOLS["list_tasks"].schema()["function"]["parameters"]["properties"]
    assert props["order_by"]["enum"] == ["dueDate", "priority", "createdAt"]
    props = ALL_TOOLS["update_project"].schema()["function"]["parameters"]["properties"]
    assert props["status"]["enum"] == ["active", "archived"]


def test_toolset_schemas_names_and_tables() -> None:
    ts = chat_toolset()
    assert [s["function"]["name"] for s in ts.schemas()] == ts.names()
    assert not {"list_directory", "get_file_metadata", "read_file_content"} & set(ts.names())
    assert set(ts.names()) == set(SPEC) - {
        "list_directory",
        "get_file_metadata",
        "read_file_content",
        "report_unplaced",  # background runs only: chat answers the user directly
    }
    assert ts.table_of("add_task_comment") == "taskComments"
    assert ts.table_of("create_timeline") == "timelines"
    assert ts.table_of("nope") is None


# --- dates ----------------------------------------------------------------------------


def test_iso_dates_to_milliseconds_and_back() -> None:
    winter = int(datetime(2025, 1, 14, tzinfo=PARIS).timestamp() * 1000)
    summer = int(datetime(2025, 7, 14, tzinfo=PARIS).timestamp() * 1000)
    assert ms_from_iso("2025-01-14", PARIS) == winter
    assert ms_from_iso("2025-07-14", PARIS) == summer  # DST: UTC+2, not +1
    assert winter == int(datetime(2025, 1, 13, 23, tzinfo=UTC).timestamp() * 1000)
    assert summer == int(datetime(2025, 7, 13, 22, tzinfo=UTC).timestamp() * 1000)
    assert iso_from_ms(winter, PARIS) == "2025-01-14"
    assert iso_from_ms(summer, PARIS) == "2025-07-14"
    at = ms_from_iso("2025-07-14T17:30", PARIS)
    assert iso_from_ms(at, PARIS) == "2025-07-14T17:30"
    assert ms_from_iso("2025-07-14T15:30:00Z", PARIS) == at  # an explicit offset wins
    assert ms_from_iso("2025-07-14T17:30:00+02:00", ZoneInfo("UTC")) == at
    assert iso_from_ms(at + 15_000, PARIS) == "2025-07-14T17:30:15"


@pytest.mark.skipif(not hasattr(time, "tzset"), reason="needs time.tzset")
def test_the_daemons_zone_is_the_system_zone_with_its_dst_rules() -> None:
    old = os.environ.get("TZ")
    os.environ["TZ"] = "Europe/Paris"
    time.tzset()
    try:
        tz = local_tz()
        for day in ("2025-01-14", "2025-07-14", "2031-10-27"):
            assert ms_from_iso(day, tz) == ms_from_iso(day, PARIS), day
            assert iso_from_ms(ms_from_iso(day, PARIS), tz) == day
        assert iso_from_ms(ms_from_iso("2025-07-14T09:05", PARIS), tz) == "2025-07-14T09:05"
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


# --- round trips against SQLite ---------------------------------------------------------


async def test_tasks_create_list_update_comment_round_trip(
    store: SqliteBackedStore, ctx: ToolContext
) -> None:
    ts = chat_toolset()
    project_id = created_id(await ok(ts, ctx, "create_project", {"name": "Website"}))
    out = await ok(
        ts,
        ctx,
        "create_task",
        {
            "title": "Send invoice",
            "description": "March work",
            "priority": "high",
            "assignees": ["Ana", "Bo"],
            "due_date": "2025-03-14",
            "project_id": project_id,
        },
    )
    task_id = created_id(out)
    row = store.db.rows("tasks")[0]
    assert row["title"] == "Send invoice" and row["projectId"] == project_id
    assert row["dueDate"] == ms_from_iso("2025-03-14", PARIS)
    assert json.loads(row["assignee"]) == ["Ana", "Bo"]
    assert row["status"] == "todo" and row["priority"] == "high"
    assert (row["isAiSuggested"], row["isApproved"]) == (0, 1)  # chat: the user asked
    assert out.mutations == [MutationRecord("insert", "tasks", row)]

    listed = await ok(ts, ctx, "list_tasks", {"project_id": project_id})
    assert f"id={task_id}" in listed.text and "due_date=2025-03-14" in listed.text
    assert '"Ana"' in listed.text and listed.mutations == []
    assert "no tasks" in (await ok(ts, ctx, "list_tasks", {"status": "done"})).text
    assert task_id in (await ok(ts, ctx, "list_tasks", {"search": "invoice"})).text

    out = await ok(
        ts,
        ctx,
        "update_task",
        {"task_id": task_id, "status": "done", "due_date": "2025-03-20T09:30"},
    )
    row = store.db.rows("tasks")[0]
    assert row["status"] == "done" and row["title"] == "Send invoice"
    assert iso_from_ms(row["dueDate"], PARIS) == "2025-03-20T09:30"
    assert out.mutations == [MutationRecord("update", "tasks", row)]
    assert "due_date=2025-03-20T09:30" in out.text

    out = await ok(ts, ctx, "add_task_comment", {"task_id": task_id, "content": "Paid on the 21st"})
    comment = store.db.rows("taskComments")[0]
    assert comment["taskId"] == task_id and comment["author"]
    assert out.mutations[0].table == "taskComments"
    listed = await ok(ts, ctx, "list_task_comments", {"task_id": task_id})
    assert "Paid on the 21st" in listed.text and comment["id"] in listed.text

    out = await ok(ts, ctx, "delete_task_comment", {"comment_id": comment["id"]})
    assert out.mutations == [MutationRecord("delete", "taskComments", {"id": comment["id"]})]
    out = await ok(ts, ctx, "delete_task", {"task_id": task_id})
    assert out.mutations == [MutationRecord("delete", "tasks", {"id": task_id})]
    assert store.db.count("tasks") == 0 and store.db.count("taskComments") == 0


async def test_notes_round_trip(store: SqliteBackedStore, ctx: ToolContext) -> None:
    ts = chat_toolset()
    note_id = created_id(
        await ok(ts, ctx, "create_note", {"title": "Kickoff", "content": "# Goals\n" + "x" * 500})
    )
    listed = await ok(ts, ctx, "list_notes", {})
    assert note_id in listed.text and "more chars]" in listed.text  # long content clipped
    got = await ok(ts, ctx, "get_note", {"note_id": note_id})
    assert "x" * 500 in got.text
    await ok(ts, ctx, "update_note", {"note_id": note_id, "content": "Done."})
    assert store.db.rows("notes")[0]["content"] == "Done."
    assert store.db.rows("notes")[0]["title"] == "Kickoff"  # null/omitted = unchanged
    await ok(ts, ctx, "delete_note", {"note_id": note_id})
    assert store.db.count("notes") == 0


async def test_timelines_round_trip_and_need_an_existing_project(
    store: SqliteBackedStore, ctx: ToolContext
) -> None:
    ts = chat_toolset()
    missing = await call(ts, ctx, "create_timeline", {"title": "Launch", "date": "2025-05-01"})
    assert missing.is_error and "project_id" in missing.text and store.calls == []

    bogus = await call(
        ts, ctx, "create_timeline", {"project_id": "p404", "title": "Launch", "date": "2025-05-01"}
    )
    assert bogus.is_error and "no project p404" in bogus.text
    assert store.actions() == ["get"] and store.db.count("timelines") == 0

    project_id = created_id(await ok(ts, ctx, "create_project", {"name": "App"}))
    tl_id = created_id(
        await ok(
            ts,
            ctx,
            "create_timeline",
            {"project_id": project_id, "title": "Launch", "date": "2025-05-01"},
        )
    )
    listed = await ok(ts, ctx, "list_timelines", {"project_id": project_id})
    assert tl_id in listed.text and "date=2025-05-01" in listed.text
    await ok(ts, ctx, "update_timeline", {"timeline_id": tl_id, "date": "2025-06-02"})
    assert store.db.rows("timelines")[0]["date"] == ms_from_iso("2025-06-02", PARIS)
    await ok(ts, ctx, "delete_timeline", {"timeline_id": tl_id})
    assert store.db.count("timelines") == 0


async def test_projects_round_trip_archive_and_listing(
    store: SqliteBackedStore, ctx: ToolContext
) -> None:
    ts = chat_toolset()
    keep = created_id(await ok(ts, ctx, "create_project", {"name": "Keep", "client_id": "c1"}))
    old = created_id(await ok(ts, ctx, "create_project", {"name": "Old"}))
    out = await ok(
        ts,
        ctx,
        "update_project",
        {"project_id": old, "status": "archived", "ai_summary": "Wrapped up"},
    )
    assert out.mutations[0].data["status"] == "archived"
    active = (await ok(ts, ctx, "list_projects", {})).text
    assert keep in active and old not in active
    assert old in (await ok(ts, ctx, "list_projects", {"include_archived": True})).text
    assert old in (await ok(ts, ctx, "list_all_projects", {})).text
    by_client = (await ok(ts, ctx, "list_projects", {"client_id": "c1"})).text
    assert keep in by_client and old not in by_client
    got = (await ok(ts, ctx, "get_project", {"project_id": old})).text
    assert 'ai_summary="Wrapped up"' in got and "status=archived" in got
    await ok(ts, ctx, "delete_project", {"project_id": old})
    assert [p["id"] for p in store.db.rows("projects")] == [keep]


async def test_list_tasks_due_today(store: SqliteBackedStore, ctx: ToolContext) -> None:
    ts = chat_toolset()
    today = datetime.now(PARIS).date()
    await ok(ts, ctx, "create_task", {"title": "Today", "due_date": f"{today}T18:00"})
    await ok(ts, ctx, "create_task", {"title": "Later", "due_date": "2099-01-01"})
    await ok(ts, ctx, "create_task", {"title": "Whenever"})
    text = (await ok(ts, ctx, "list_tasks_due_today", {})).text
    assert '"Today"' in text and "Later" not in text and "Whenever" not in text


async def test_long_lists_are_capped_with_a_count(
    store: SqliteBackedStore, ctx: ToolContext
) -> None:
    for i in range(57):
        store.db.handle("insert", "tasks", data={"title": f"task {i}"})
    text = (await ok(chat_toolset(), ctx, "list_tasks", {})).text
    assert text.startswith("57 tasks:") and text.endswith("(7 more)")
    assert text.count("\n- ") == 50


# --- bad input never reaches the store ------------------------------------------------


@pytest.mark.parametrize(
    ("name", "args", "expected"),
    [
        ("create_task", {"title": "x", "status": "open"}, "status"),
        ("create_task", {"title": "x", "priority": "urgent"}, "priority"),
        ("create_task", {"title": "   "}, "title: must not be empty"),
        ("create_task", {"description": "no title"}, "title: Field required"),
        ("create_task", {"title": "x", "due_date": "next friday"}, "not an ISO 8601 date"),
        ("create_task", {"title": "x", "dueDate": "2025-01-01"}, "dueDate: unknown argument"),
        ("update_task", {"task_id": "t1"}, "nothing to change"),
        ("update_task", {"task_id": "t1", "status": None}, "nothing to change"),
        ("update_project", {"project_id": "p1", "status": "deleted"}, "status"),
        ("list_tasks", {"order_by": "due"}, "order_by"),
        ("create_timeline", {"project_id": "p", "title": "t", "date": "soon"}, "date"),
        ("create_task", "{not json", "not valid JSON"),
        ("create_task", '["title"]', "must be a JSON object"),
        ("create_task", '"title"', "must be a JSON object"),
        ("make_coffee", {}, "unknown tool 'make_coffee'; available tools: list_tasks"),
    ],
)
async def test_invalid_calls_never_reach_the_store(
    store: SqliteBackedStore, ctx: ToolContext, name: str, args: dict[str, Any] | str, expected: str
) -> None:
    out = await call(chat_toolset(), ctx, name, args)
    assert out.is_error and out.text.startswith("error: ")
    assert expected in out.text
    assert out.mutations == []
    assert store.calls == []


async def test_empty_arguments_mean_no_arguments(
    store: SqliteBackedStore, ctx: ToolContext
) -> None:
    out = await chat_toolset().call("list_all_projects", "", ctx)
    assert not out.is_error and store.actions() == ["select"]


async def test_a_single_assignee_string_becomes_a_list(
    store: SqliteBackedStore, ctx: ToolContext
) -> None:
    await ok(chat_toolset(), ctx, "create_task", {"title": "x", "assignees": "Ana"})
    assert store.db.rows("tasks")[0]["assignee"] == '["Ana"]'


async def test_store_errors_go_back_to_the_model(
    store: SqliteBackedStore, ctx: ToolContext
) -> None:
    ts = chat_toolset()
    out = await call(ts, ctx, "update_task", {"task_id": "t7", "title": "New"})
    assert out.is_error and out.text == "error: not_found: no task t7"
    out = await call(ts, ctx, "add_task_comment", {"task_id": "t7", "content": "hi"})
    assert out.is_error and "no task t7" in out.text
    assert store.db.count("taskComments") == 0  # checked before inserting an orphan
    out = await call(ts, ctx, "create_task", {"title": "x", "project_id": "nope"})
    assert out.is_error and "no project nope" in out.text and store.db.count("tasks") == 0


async def test_device_offline_propagates(store: SqliteBackedStore, ctx: ToolContext) -> None:
    store.offline = True
    with pytest.raises(DeviceOffline):
        await call(chat_toolset(), ctx, "list_tasks", {})


# --- background runs ------------------------------------------------------------------


def test_background_toolset_has_only_its_data_types_and_project_lookup() -> None:
    ts = background_toolset(["tasks"])
    assert set(ts.names()) == {
        "list_tasks",
        "create_task",
        "update_task",
        "add_task_comment",
        "list_projects",
        "report_unplaced",
    }
    files = background_toolset(["notes", "timelines"], file_tools(["/tmp"]))
    assert {"list_directory", "read_file_content", "create_note", "create_timeline"} <= set(
        files.names()
    )
    assert "create_task" not in files.names() and "create_project" not in files.names()
    everything = background_toolset(
        ["tasks", "notes", "timelines", "projects"], file_tools(["/tmp"])
    )
    assert not [n for n in everything.names() if everything.tools[n].chat_only or "delete" in n]
    # The existing records come with each item, so the list/get tools they make
    # redundant are not offered (each schema is paid for on every call of a run).
    assert set(everything.names()) == set(SPEC) - CHAT_ONLY - {
        "list_notes",
        "list_timelines",
        "list_all_projects",
        "get_project",
    }
    with pytest.raises(ValueError, match="unknown data types"):
        background_toolset(["emails"])


def test_a_background_toolset_refuses_delete_tools_at_build_time() -> None:
    with pytest.raises(ValueError, match="delete_task"):
        Toolset([ALL_TOOLS["create_task"], ALL_TOOLS["delete_task"]], background=True)


async def test_background_context_cannot_delete_even_through_a_chat_toolset(
    store: SqliteBackedStore,
) -> None:
    row = store.db.handle("insert", "tasks", data={"title": "keep me"})["row"]
    ctx = ToolContext(store, PARIS, background=True)
    out = await chat_toolset().call("delete_task", json.dumps({"task_id": row["id"]}), ctx)
    assert out.is_error and "background" in out.text
    assert store.calls == [] and store.db.count("tasks") == 1
    # The handler itself refuses too, whoever calls it.
    tool: Tool = ALL_TOOLS["delete_task"]
    out = await Toolset([tool]).call("delete_task", json.dumps({"task_id": row["id"]}), ctx)
    assert out.is_error and store.db.count("tasks") == 1


async def test_background_inserts_are_unapproved_suggestions(store: SqliteBackedStore) -> None:
    ts = background_toolset(["tasks", "notes", "timelines", "projects"])
    ctx = ToolContext(store, PARIS, background=True)
    # The model cannot approve its own suggestion: asking for it is overruled.
    sneaky = await ok(ts, ctx, "create_task", {"title": "Ship", "isApproved": 1})
    assert "suggestion awaiting approval" in sneaky.text
    (row,) = store.db.rows("tasks")
    assert (row["isAiSuggested"], row["isApproved"]) == (1, 0)
    store.db.handle("delete", "tasks", data={"id": row["id"]})

    project_id = created_id(await ok(ts, ctx, "create_project", {"name": "P"}))
    await ok(ts, ctx, "create_task", {"title": "Ship", "project_id": project_id})
    await ok(ts, ctx, "create_note", {"title": "N", "content": "c"})
    await ok(
        ts, ctx, "create_timeline", {"project_id": project_id, "title": "M", "date": "2025-01-01"}
    )
    for table in ("projects", "tasks", "notes", "timelines"):
        (row,) = store.db.rows(table)
        assert (row["isAiSuggested"], row["isApproved"]) == (1, 0), table
    listed = (await ok(ts, ctx, "list_tasks", {})).text
    assert "(suggestion awaiting approval)" in listed


async def test_idempotency_keys_are_stable_per_scope(store: SqliteBackedStore) -> None:
    ts = background_toolset(["tasks"])

    async def run(scope: str, title: str) -> str | None:
        # background=False: a background run would find the first row by title and
        # update it instead (see the next test); here only the keys are under test.
        ctx = ToolContext(store, PARIS, background=False, idempotency_scope=scope)
        await ok(ts, ctx, "create_task", {"title": title})
        action, table, params = store.calls[-1]
        assert (action, table) == ("insert", "tasks")
        key: str | None = params["idempotency_key"]
        return key

    first = await run("agent-1:sha256-of-file", "Send invoice")
    again = await run("agent-1:sha256-of-file", "  send   INVOICE ")  # normalised identity
    other = await run("agent-1:sha256-of-other-file", "Send invoice")
    assert first is not None and first.startswith("sha256:") and len(first) == 7 + 64
    assert again == first and other != first
    assert first == idempotency_key("agent-1:sha256-of-file", "tasks", [None, "Send invoice"])
    assert store.db.count("tasks") == 2  # the re-run created nothing new

    no_scope = ToolContext(store, PARIS, background=False)
    await ok(ts, no_scope, "create_task", {"title": "Send invoice"})
    assert store.calls[-1][2]["idempotency_key"] is None


async def test_background_create_of_an_existing_item_updates_it(store: SqliteBackedStore) -> None:
    ts = background_toolset(["tasks", "notes", "projects"])
    ctx = ToolContext(store, PARIS, background=True, idempotency_scope="a:v1")
    p1 = created_id(await ok(ts, ctx, "create_project", {"name": "Site"}))
    p2 = created_id(await ok(ts, ctx, "create_project", {"name": "Other"}))
    await ok(ts, ctx, "create_task", {"title": "Send invoice", "project_id": p1})
    # The file changed (new scope): the same task again, now with a priority.
    ctx2 = ToolContext(store, PARIS, background=True, idempotency_scope="a:v2")
    again = await ok(
        ts, ctx2, "create_task", {"title": " send  INVOICE", "project_id": p1, "priority": "high"}
    )
    assert again.mutations[0].action == "update"
    (task,) = store.db.rows("tasks")
    assert task["priority"] == "high" and task["title"] == "Send invoice"
    unchanged = await ok(ts, ctx2, "create_task", {"title": "Send invoice", "project_id": p1})
    assert unchanged.mutations == [] and "unchanged" in unchanged.text
    # Same title in another project, or standalone, is another item.
    await ok(ts, ctx2, "create_task", {"title": "Send invoice", "project_id": p2})
    await ok(ts, ctx2, "create_task", {"title": "Send invoice"})
    assert store.db.count("tasks") == 3
    assert (await ok(ts, ctx2, "create_project", {"name": "site"})).mutations == []
    assert store.db.count("projects") == 2


def test_idempotency_identity_of_timelines_and_comments() -> None:
    assert idempotency_key("s", "timelines", ["p1", "Launch", 1]) != idempotency_key(
        "s", "timelines", ["p2", "Launch", 1]
    )
    assert idempotency_key("s", "timelines", ["p1", "Launch", 1]) != idempotency_key(
        "s", "timelines", ["p1", "Launch", 2]
    )
    assert idempotency_key("s", "tasks", ["a"]) != idempotency_key("s", "notes", ["a"])


# --- file tools -----------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("hello " * 100)
    (root / "sub" / "b.md").write_text("# B")
    (root / ".env").write_text("SECRET=1")
    (tmp_path / "outside.txt").write_text("secret")
    (root / "escape.txt").symlink_to(tmp_path / "outside.txt")
    return root


async def test_file_tools_read_inside_the_roots(store: SqliteBackedStore, tree: Path) -> None:
    ts = background_toolset([], file_tools([str(tree)]))
    ctx = ToolContext(store, PARIS, background=True)
    listing = (await ok(ts, ctx, "list_directory", {"path": str(tree)})).text
    assert "a.txt" in listing and "sub" in listing
    assert ".env" not in listing and "escape.txt" not in listing
    meta = (await ok(ts, ctx, "get_file_metadata", {"path": "sub/b.md"})).text
    assert "size=3" in meta
    page = (await ok(ts, ctx, "read_file_content", {"path": "a.txt", "max_chars": 12})).text
    assert page.endswith("\nhello hello ") and "offset=12" in page
    assert store.calls == []


@pytest.mark.parametrize(
    "path", ["../outside.txt", "escape.txt", "/etc/hostname", ".env", "sub/../../outside.txt"]
)
async def test_file_tools_are_confined_to_the_roots(
    store: SqliteBackedStore, tree: Path, path: str
) -> None:
    ts = background_toolset([], file_tools([str(tree)]))
    ctx = ToolContext(store, PARIS, background=True)
    for name in ("read_file_content", "get_file_metadata", "list_directory"):
        out = await call(ts, ctx, name, {"path": path})
        assert out.is_error and "secret" not in out.text, (name, out.text)
        assert "outside" in out.text or "hidden" in out.text


async def test_missing_file_is_an_error_for_the_model(store: SqliteBackedStore, tree: Path) -> None:
    ctx = ToolContext(store, PARIS)
    out = await call(
        background_toolset([], file_tools([str(tree)])),
        ctx,
        "read_file_content",
        {"path": "no.txt"},
    )
    assert out.is_error and "does not exist" in out.text


# --- records the user owns ------------------------------------------------------------


async def test_a_background_run_cannot_rename_the_users_task_but_may_move_its_status(
    store: SqliteBackedStore,
) -> None:
    mine = store.db.handle("insert", "tasks", data={"title": "Pay rent", "description": "by hand"})
    task_id = mine["row"]["id"]
    ctx = ToolContext(store, PARIS, background=True)
    ts = background_toolset(["tasks"])
    out = await call(ts, ctx, "update_task", {"task_id": task_id, "title": "X", "status": "done"})
    assert not out.is_error, out.text
    row = store.db.handle("get", "tasks", data={"id": task_id})["row"]
    assert (row["title"], row["description"], row["status"]) == ("Pay rent", "by hand", "done")
    assert out.changes == [
        {"table": "tasks", "id": task_id, "field": "status", "before": "todo", "after": "done"}
    ]
    assert "not changed, the user's: title" in out.text
    refused = await call(ts, ctx, "update_task", {"task_id": task_id, "title": "Y"})
    assert refused.is_error and "belongs to the user" in refused.text
    assert store.db.handle("get", "tasks", data={"id": task_id})["row"]["title"] == "Pay rent"


async def test_a_background_run_appends_to_the_users_note_instead_of_replacing_it(
    store: SqliteBackedStore,
) -> None:
    note = store.db.handle("insert", "notes", data={"title": "Plan", "content": "Step one."})
    note_id = note["row"]["id"]
    ctx = ToolContext(store, PARIS, background=True)
    out = await call(
        background_toolset(["notes"]),
        ctx,
        "update_note",
        {"note_id": note_id, "title": "Hacked", "content": "Step two."},
    )
    assert not out.is_error, out.text
    row = store.db.handle("get", "notes", data={"id": note_id})["row"]
    assert row["title"] == "Plan"
    assert row["content"].startswith("Step one.") and row["content"].rstrip().endswith("Step two.")
    assert "Added by the assistant on" in row["content"]
    (change,) = out.changes
    assert change["field"] == "content" and change["after"].endswith("Step two.")


async def test_ai_suggestions_and_chat_are_not_restricted(store: SqliteBackedStore) -> None:
    suggested = store.db.handle(
        "insert", "tasks", data={"title": "Draft", "isAiSuggested": 1, "isApproved": 0}
    )
    ctx = ToolContext(store, PARIS, background=True)
    ts = background_toolset(["tasks"])
    out = await call(ts, ctx, "update_task", {"task_id": suggested["row"]["id"], "title": "Better"})
    assert not out.is_error and out.changes == []
    approved = store.db.handle(
        "insert", "tasks", data={"title": "Kept", "isAiSuggested": 1, "isApproved": 1}
    )
    refused = await call(ts, ctx, "update_task", {"task_id": approved["row"]["id"], "title": "Z"})
    assert refused.is_error
    chat = await call(
        chat_toolset(),
        ToolContext(store, PARIS),
        "update_task",
        {"task_id": approved["row"]["id"], "title": "Z"},
    )
    assert not chat.is_error  # the user typed it


def test_background_schemas_are_compact_and_still_validated(store: SqliteBackedStore) -> None:
    background = background_toolset(["tasks"]).schemas()
    full = {name: tool.schema() for name, tool in DECLARED.items()}
    for schema in background:
        name = schema["function"]["name"]
        assert len(json.dumps(schema)) < len(json.dumps(full[name])), name
        text = json.dumps(schema)
        assert "minLength" not in text
    due = next(s for s in background if s["function"]["name"] == "create_task")
    assert "YYYY-MM-DD" in due["function"]["parameters"]["properties"]["due_date"]["description"]


async def test_a_compact_schema_does_not_weaken_validation(store: SqliteBackedStore) -> None:
    ctx = ToolContext(store, PARIS, background=True)
    out = await call(background_toolset(["tasks"]), ctx, "create_task", {"title": "  "})
    assert out.is_error and "must not be empty" in out.text

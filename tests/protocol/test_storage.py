"""The storage contract's types and pure validators (protocol.storage)."""

from __future__ import annotations

from typing import Any

import pytest

from protocol.errors import ErrorCode, StorageError
from protocol.storage import (
    ROW_MODELS,
    TABLES,
    Action,
    OrderBy,
    Priority,
    ProjectStatus,
    Table,
    TaskRow,
    TaskStatus,
    check_filters,
    check_insert,
    check_table,
    check_updates,
)


def bad(match: str) -> Any:
    return pytest.raises(StorageError, match=match)


def test_enums_match_storage_md() -> None:
    assert [t.value for t in Table] == [
        "tasks",
        "projects",
        "timelines",
        "notes",
        "taskComments",
        "clients",
        "coreMemory",
    ]
    assert [a.value for a in Action] == [
        "select",
        "get",
        "insert",
        "update",
        "delete",
        "vector_upsert",
        "vector_search",
    ]
    assert list(TaskStatus) == ["todo", "in_progress", "done"]
    assert list(Priority) == ["high", "medium", "low"]
    assert list(ProjectStatus) == ["active", "archived"]
    assert list(OrderBy) == ["dueDate", "priority", "createdAt"]


def test_table_specs() -> None:
    assert set(TABLES) == set(Table)
    tasks = TABLES[Table.TASKS]
    assert tasks.columns == (
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
    )
    assert tasks.filters == (
        "projectId",
        "status",
        "search",
        "orderBy",
        "dueDateFrom",
        "dueDateTo",
    )
    assert tasks.timestamps == ("dueDate", "createdAt")
    assert tasks.client_generated == ("id", "createdAt", "updatedAt")
    assert TABLES[Table.TIMELINES].required == ("projectId", "title", "date")
    assert TABLES[Table.TASK_COMMENTS].required == ("taskId", "content")
    assert TABLES[Table.NOTES].timestamps == ("createdAt", "updatedAt")
    assert TABLES[Table.PROJECTS].filters == ("clientId", "includeArchived")
    assert [t for t, s in TABLES.items() if s.ai_flags] == [
        Table.TASKS,
        Table.PROJECTS,
        Table.TIMELINES,
        Table.NOTES,
    ]
    for table, spec in TABLES.items():
        assert set(spec.required) <= set(spec.columns), table
        assert set(spec.timestamps) <= set(spec.columns), table
        # the row model has exactly the spec's columns
        assert tuple(ROW_MODELS[table].model_fields) == spec.columns, table


def test_row_models_accept_newer_columns_and_export_schema() -> None:
    row = TaskRow.model_validate(
        {"id": "t1", "title": "x", "createdAt": 1, "colorTag": "red", "status": "done"}
    )
    assert row.status is TaskStatus.DONE
    assert row.model_dump()["colorTag"] == "red"
    schema = TaskRow.model_json_schema()
    assert set(schema["required"]) == {"id", "title", "createdAt"}
    assert "dueDate" in schema["properties"]
    with pytest.raises(ValueError):
        TaskRow.model_validate({"id": "t1", "title": "x", "createdAt": 1, "status": "doing"})


# --- check_table ------------------------------------------------------------------------


def test_check_table() -> None:
    assert check_table("taskComments") is Table.TASK_COMMENTS
    assert check_table(Table.NOTES) is Table.NOTES
    with bad(r"unknown table 'task'; allowed: tasks, projects") as e:
        check_table("task")
    assert e.value.code == ErrorCode.BAD_REQUEST
    with bad("unknown table 3"):
        check_table(3)


# --- check_filters ----------------------------------------------------------------------


def test_filters_valid_and_none_dropped() -> None:
    got = check_filters(
        "tasks",
        {
            "projectId": "p1",
            "status": "in_progress",
            "search": None,
            "orderBy": "priority",
            "dueDateFrom": 1,
            "dueDateTo": 2.0,
        },
    )
    assert got == {
        "projectId": "p1",
        "status": "in_progress",
        "orderBy": "priority",
        "dueDateFrom": 1,
        "dueDateTo": 2,
    }
    assert type(got["dueDateTo"]) is int
    assert check_filters("tasks", None) == {}
    assert check_filters("projects", {"includeArchived": 1}) == {"includeArchived": True}
    assert check_filters("clients", {"parentId": None}) == {}


def test_filters_do_not_mutate_input() -> None:
    filters: dict[str, Any] = {"projectId": None}
    check_filters("notes", filters)
    assert filters == {"projectId": None}


def test_unknown_filter_names_table_and_allowed_keys() -> None:
    with bad(
        r"unknown filter 'projectID' for table tasks; allowed: projectId, status, search, "
        r"orderBy, dueDateFrom, dueDateTo"
    ) as e:
        check_filters("tasks", {"projectID": "p1"})
    assert e.value.code == ErrorCode.BAD_REQUEST
    # a column that is not a filter of that table
    with bad("unknown filter 'status' for table projects"):
        check_filters("projects", {"status": "active"})
    # even a None value under an unknown key is a typo worth reporting
    with bad("unknown filter 'projectid'"):
        check_filters("notes", {"projectid": None})


@pytest.mark.parametrize(
    ("table", "filters", "message"),
    [
        ("tasks", {"status": "doing"}, r"invalid status 'doing' for tasks; allowed: todo, "),
        ("tasks", {"orderBy": "title"}, r"invalid orderBy 'title' for tasks; allowed: dueDate"),
        ("tasks", {"dueDateFrom": "2024-01-01"}, r"dueDateFrom for tasks must be an integer"),
        ("tasks", {"dueDateTo": 1.5}, r"dueDateTo for tasks must be an integer"),
        ("tasks", {"dueDateTo": True}, r"dueDateTo for tasks must be an integer"),
        ("tasks", {"projectId": 7}, r"filter projectId for tasks must be a string, got 7"),
        ("tasks", {"search": ["x"]}, r"filter search for tasks must be a string"),
        ("projects", {"includeArchived": "yes"}, r"includeArchived for projects must be true"),
        ("tasks", ["status"], r"filters for tasks must be an object, got list"),
        ("nope", {}, r"unknown table 'nope'"),
    ],
)
def test_bad_filter_values(table: str, filters: Any, message: str) -> None:
    with bad(message):
        check_filters(table, filters)


# --- check_insert -----------------------------------------------------------------------


def test_insert_valid_is_normalised_copy() -> None:
    data: dict[str, Any] = {
        "title": "Ship it",
        "status": "in_progress",
        "priority": "high",
        "assignee": '["Ana", "Bo"]',
        "dueDate": 1_700_000_000_000.0,
        "isAiSuggested": True,
        "isApproved": 0,
        "projectId": "p1",
        "description": None,
    }
    got = check_insert("tasks", data)
    assert got == {**data, "dueDate": 1_700_000_000_000, "isAiSuggested": 1}
    assert type(got["dueDate"]) is int and type(got["isAiSuggested"]) is int
    assert data["isAiSuggested"] is True  # input untouched


def test_insert_none_for_defaulted_column_means_default() -> None:
    got = check_insert("tasks", {"title": "t", "status": None, "isApproved": None})
    assert got == {"title": "t"}


@pytest.mark.parametrize(
    ("table", "data"),
    [
        ("tasks", {"title": "t"}),
        ("projects", {"name": "p", "status": "archived", "clientId": "c1", "aiSummary": "s"}),
        ("timelines", {"projectId": "p1", "title": "launch", "date": 0}),
        ("notes", {"title": "n", "content": "# md"}),
        ("taskComments", {"taskId": "t1", "content": "hi", "author": "me"}),
        ("clients", {"name": "Acme", "industry": "x", "parentId": None}),
    ],
)
def test_insert_minimal_valid_rows(table: str, data: dict[str, Any]) -> None:
    assert check_insert(table, data) == data


@pytest.mark.parametrize(
    ("table", "data", "message"),
    [
        ("tasks", {"title": "t", "colour": "red"}, r"unknown column 'colour' for table tasks"),
        ("tasks", {"title": "t", "id": "x"}, r"id is generated by the client .* insert of tasks"),
        ("tasks", {"title": "t", "createdAt": 1}, r"createdAt is generated by the client"),
        ("notes", {"title": "t", "updatedAt": 1}, r"updatedAt is generated by the client"),
        ("tasks", {"description": "d"}, r"missing required column\(s\) for tasks: title"),
        ("tasks", {"title": "   "}, r"missing required column\(s\) for tasks: title"),
        ("tasks", {"title": None}, r"missing required column\(s\) for tasks: title"),
        (
            "timelines",
            {"title": "x"},
            r"missing required column\(s\) for timelines: projectId, date",
        ),
        ("taskComments", {"taskId": "t1"}, r"for taskComments: content"),
        ("projects", {}, r"for projects: name"),
        ("clients", {"industry": "x"}, r"for clients: name"),
        ("tasks", {"title": "t", "status": "doing"}, r"invalid status 'doing' for tasks; allowed"),
        ("tasks", {"title": "t", "priority": "urgent"}, r"invalid priority 'urgent' for tasks"),
        ("tasks", {"title": "t", "priority": 1}, r"invalid priority 1 for tasks"),
        ("projects", {"name": "p", "status": "done"}, r"invalid status 'done' for projects"),
        ("tasks", {"title": "t", "dueDate": "2024-05-01"}, r"dueDate for tasks must be an integer"),
        ("tasks", {"title": "t", "dueDate": 1.5}, r"dueDate for tasks must be an integer"),
        ("tasks", {"title": "t", "dueDate": float("nan")}, r"dueDate for tasks must be an int"),
        ("tasks", {"title": "t", "dueDate": True}, r"dueDate for tasks must be an integer"),
        ("tasks", {"title": "t", "dueDate": 1_700_000_000_000_000}, r"not a timestamp in milli"),
        ("timelines", {"projectId": "p", "title": "t", "date": "soon"}, r"date for timelines"),
        ("tasks", {"title": "t", "assignee": "Ana"}, r"assignee for tasks must be a JSON array"),
        ("tasks", {"title": "t", "assignee": '{"a": 1}'}, r"must be a JSON array"),
        ("tasks", {"title": "t", "assignee": ["Ana"]}, r"assignee for tasks must be a string"),
        ("tasks", {"title": "t", "isApproved": 2}, r"isApproved for tasks must be 0 or 1, got 2"),
        ("tasks", {"title": "t", "isAiSuggested": "1"}, r"isAiSuggested for tasks must be 0 or 1"),
        ("tasks", {"title": 5}, r"title for tasks must be a string, got 5"),
        ("clients", {"name": "c", "isApproved": 1}, r"unknown column 'isApproved' for table"),
        ("tasks", "title=x", r"insert data for tasks must be an object, got str"),
    ],
)
def test_insert_rejects(table: str, data: Any, message: str) -> None:
    with bad(message) as e:
        check_insert(table, data)
    assert e.value.code == ErrorCode.BAD_REQUEST


# --- check_updates ----------------------------------------------------------------------


def test_updates_valid() -> None:
    assert check_updates("tasks", {"status": "done", "dueDate": None}) == {
        "status": "done",
        "dueDate": None,
    }
    assert check_updates("notes", {"content": "new"}) == {"content": "new"}


@pytest.mark.parametrize(
    ("table", "updates", "message"),
    [
        ("tasks", {}, r"updates for tasks are empty"),
        ("tasks", None, r"updates for tasks must be an object"),
        ("tasks", {"id": "t2"}, r"id of tasks is not updatable"),
        ("notes", {"updatedAt": 5}, r"updatedAt is generated by the client .* update of notes"),
        ("tasks", {"createdAt": 5}, r"createdAt is generated by the client"),
        ("tasks", {"nope": 1}, r"unknown column 'nope' for table tasks"),
        ("tasks", {"status": "doing"}, r"invalid status 'doing' for tasks"),
        ("tasks", {"status": None}, r"column\(s\) of tasks cannot be set to null: status"),
        ("tasks", {"isApproved": None}, r"cannot be set to null: isApproved"),
        ("tasks", {"title": ""}, r"required column\(s\) of tasks cannot be empty: title"),
        ("timelines", {"date": None}, r"required column\(s\) of timelines cannot be empty: date"),
        ("tasks", {"dueDate": "tomorrow"}, r"dueDate for tasks must be an integer"),
        ("tasks", {"assignee": "[oops"}, r"must be a JSON array"),
    ],
)
def test_updates_reject(table: str, updates: Any, message: str) -> None:
    with bad(message) as e:
        check_updates(table, updates)
    assert e.value.code == ErrorCode.BAD_REQUEST

"""The reference client's storage (protocol.reference.sqlite_store) over a real SQLite file."""

from __future__ import annotations

import itertools
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from protocol.errors import ErrorCode, StorageError
from protocol.reference.sqlite_store import SqliteStore
from protocol.storage import TABLES, Table


class Clock:
    """Milliseconds that advance by 1 on every reading."""

    def __init__(self, start: int = 1_700_000_000_000) -> None:
        self._it = itertools.count(start)

    def __call__(self) -> int:
        return next(self._it)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "app.db", clock=Clock())
    yield s
    s.close()


def insert(store: SqliteStore, table: str, **data: Any) -> dict[str, Any]:
    row: dict[str, Any] = store.handle("insert", table, data=data)["row"]
    return row


def select(store: SqliteStore, table: str, **filters: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = store.handle("select", table, filters=filters)["rows"]
    return rows


def titles(rows: list[dict[str, Any]]) -> list[str]:
    return [r["title"] for r in rows]


@contextmanager
def fails(code: str, match: str) -> Iterator[None]:
    with pytest.raises(StorageError, match=match) as info:
        yield
    assert info.value.code == code


MINIMAL: dict[str, dict[str, Any]] = {
    "tasks": {"title": "t"},
    "projects": {"name": "p"},
    "timelines": {"projectId": "p1", "title": "launch", "date": 1_700_000_000_000},
    "notes": {"title": "n", "content": "# hi"},
    "taskComments": {"taskId": "t1", "content": "c"},
    "clients": {"name": "Acme"},
}
UPDATE: dict[str, dict[str, Any]] = {
    "tasks": {"status": "done"},
    "projects": {"aiSummary": "sum"},
    "timelines": {"title": "moved"},
    "notes": {"content": "new"},
    "taskComments": {"content": "edited"},
    "clients": {"industry": "retail"},
}


# --- schema ---------------------------------------------------------------------------


def test_schema_created_with_camel_case_columns_wal_and_indexes(tmp_path: Path) -> None:
    SqliteStore(tmp_path / "a.db").close()
    db = sqlite3.connect(tmp_path / "a.db")
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        for table, spec in TABLES.items():
            cols = tuple(r[1] for r in db.execute(f'PRAGMA table_info("{table}")'))
            assert cols == spec.columns
        indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert {"ix_tasks_projectId", "ix_tasks_status", "ix_taskComments_taskId"} <= indexes
    finally:
        db.close()


def test_reopen_keeps_data_and_adds_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute('CREATE TABLE "clients" (id TEXT PRIMARY KEY, name TEXT, "createdAt" INTEGER)')
    db.execute("INSERT INTO clients VALUES ('c1', 'Old', 1)")
    db.commit()
    db.close()
    with SqliteStore(path) as s:
        assert s.rows("clients") == [
            {"id": "c1", "parentId": None, "name": "Old", "industry": None, "createdAt": 1}
        ]
        insert(s, "clients", name="New", industry="x")
    with SqliteStore(path) as s:
        assert [r["name"] for r in s.rows("clients")] == ["Old", "New"]


def test_close_is_idempotent_and_later_calls_fail(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "c.db")
    s.close()
    s.close()
    with fails(ErrorCode.INTERNAL, "closed"):
        s.handle("select", "tasks")


# --- every action on every table --------------------------------------------------------


@pytest.mark.parametrize("table", list(Table))
def test_crud_round_trip(store: SqliteStore, table: str) -> None:
    spec = TABLES[Table(table)]
    row = insert(store, table, **MINIMAL[table])
    assert tuple(row) == spec.columns  # every column, in order
    assert isinstance(row["id"], str) and len(row["id"]) == 32
    assert isinstance(row["createdAt"], int)
    for k, v in MINIMAL[table].items():
        assert row[k] == v

    assert store.handle("get", table, data={"id": row["id"]}) == {"row": row}
    assert store.handle("select", table) == {"rows": [row]}
    assert store.rows(table) == [row]

    after = store.handle("update", table, data={"id": row["id"], "updates": UPDATE[table]})
    assert after == {"row": {**row, **UPDATE[table], **after["row"]}}
    for k, v in UPDATE[table].items():
        assert after["row"][k] == v
    assert store.handle("get", table, data={"id": row["id"]})["row"] == after["row"]

    assert store.handle("delete", table, data={"id": row["id"]}) == {"deleted": True}
    assert store.handle("get", table, data={"id": row["id"]}) == {"row": None}
    assert store.count(table) == 0


def test_insert_defaults_and_unset_columns(store: SqliteStore) -> None:
    task = insert(store, "tasks", title="t")
    assert task["status"] == "todo" and task["priority"] == "medium"
    assert task["isAiSuggested"] == 0 and task["isApproved"] == 1
    assert task["projectId"] is None and task["dueDate"] is None and task["assignee"] is None
    assert insert(store, "projects", name="p")["status"] == "active"
    suggested = insert(store, "notes", title="n", isAiSuggested=1, isApproved=0)
    assert (suggested["isAiSuggested"], suggested["isApproved"]) == (1, 0)
    assert suggested["updatedAt"] == suggested["createdAt"]
    assert "updatedAt" not in insert(store, "clients", name="c")


def test_insert_returns_what_is_stored(store: SqliteStore) -> None:
    row = insert(
        store,
        "tasks",
        title="t",
        assignee='["Ana"]',
        dueDate=1_700_000_000_000.0,
        isAiSuggested=True,
        isApproved=False,
    )
    assert row["dueDate"] == 1_700_000_000_000 and type(row["dueDate"]) is int
    assert row["isAiSuggested"] == 1 and row["isApproved"] == 0
    assert store.rows("tasks") == [row]


def test_ids_are_unique(store: SqliteStore) -> None:
    ids = {insert(store, "clients", name=f"c{i}")["id"] for i in range(50)}
    assert len(ids) == 50


def test_notes_updated_at_changes_on_update(store: SqliteStore) -> None:
    note = insert(store, "notes", title="n")
    first = store.handle("update", "notes", data={"id": note["id"], "updates": {"title": "m"}})
    second = store.handle("update", "notes", data={"id": note["id"], "updates": {"title": "o"}})
    assert note["updatedAt"] < first["row"]["updatedAt"] < second["row"]["updatedAt"]
    assert second["row"]["createdAt"] == note["createdAt"]


def test_get_update_delete_missing(store: SqliteStore) -> None:
    assert store.handle("get", "tasks", data={"id": "t7"}) == {"row": None}
    with fails(ErrorCode.NOT_FOUND, r"^no task t7$"):
        store.handle("update", "tasks", data={"id": "t7", "updates": {"title": "x"}})
    with fails(ErrorCode.NOT_FOUND, r"^no task comment c9$"):
        store.handle("delete", "taskComments", data={"id": "c9"})
    note = insert(store, "notes", title="n")
    store.handle("delete", "notes", data={"id": note["id"]})
    with fails(ErrorCode.NOT_FOUND, f"no note {note['id']}"):
        store.handle("delete", "notes", data={"id": note["id"]})


@pytest.mark.parametrize(
    ("action", "table", "kwargs", "message"),
    [
        ("upsert", "tasks", {}, r"unknown action 'upsert'; allowed: select, get"),
        ("select", "task", {}, r"unknown table 'task'"),
        ("get", "tasks", {}, r"data for tasks must be an object with an id"),
        ("get", "tasks", {"data": {"id": 3}}, r"data.id for tasks must be a non-empty string"),
        ("delete", "tasks", {"data": {}}, r"data.id for tasks must be a non-empty string"),
        ("insert", "tasks", {}, r"insert data for tasks must be an object"),
        ("insert", "tasks", {"data": {"title": "t", "id": "x"}}, r"id is generated by the client"),
        ("insert", "tasks", {"data": {"status": "todo"}}, r"missing required"),
        ("insert", "timelines", {"data": {"title": "t", "date": 1}}, r"projectId"),
        ("insert", "tasks", {"data": {"title": "t", "status": "x"}}, r"invalid status 'x'"),
        ("update", "tasks", {"data": {"id": "t1"}}, r"update of tasks needs data.updates"),
        ("update", "tasks", {"data": {"id": "t1", "updates": {}}}, r"updates for tasks are empty"),
        ("update", "tasks", {"data": {"id": "t1", "updates": {"id": "t2"}}}, r"not updatable"),
        ("select", "tasks", {"limit": -1}, r"limit must be >= 0, got -1"),
        ("select", "tasks", {"limit": "5"}, r"limit must be an integer >= 0 or null"),
        ("select", "tasks", {"limit": True}, r"limit must be an integer"),
        ("select", "tasks", {"filters": {"title": "x"}}, r"unknown filter 'title' for table tasks"),
    ],
)
def test_bad_requests(
    store: SqliteStore, action: str, table: str, kwargs: dict[str, Any], message: str
) -> None:
    insert(store, "tasks", title="keep")
    with fails(ErrorCode.BAD_REQUEST, message):
        store.handle(action, table, **kwargs)
    assert titles(store.rows("tasks")) == ["keep"]  # nothing written or lost


def test_update_validation_happens_before_lookup(store: SqliteStore) -> None:
    # a bad update of a missing id is the caller's mistake first
    with fails(ErrorCode.BAD_REQUEST, "invalid priority"):
        store.handle("update", "tasks", data={"id": "t7", "updates": {"priority": "urgent"}})


def test_failed_update_changes_nothing(store: SqliteStore) -> None:
    task = insert(store, "tasks", title="t")
    with fails(ErrorCode.BAD_REQUEST, "dueDate"):
        store.handle(
            "update", "tasks", data={"id": task["id"], "updates": {"title": "x", "dueDate": "x"}}
        )
    assert store.rows("tasks") == [task]


# --- select filters ---------------------------------------------------------------------


def test_select_default_order_and_limit(store: SqliteStore) -> None:
    for i in range(5):
        insert(store, "tasks", title=f"t{i}")
    assert titles(select(store, "tasks")) == ["t0", "t1", "t2", "t3", "t4"]
    assert titles(store.handle("select", "tasks", limit=2)["rows"]) == ["t0", "t1"]
    assert store.handle("select", "tasks", limit=0) == {"rows": []}
    assert len(store.handle("select", "tasks", limit=None)["rows"]) == 5


def test_default_order_ties_on_created_at_keep_insertion_order(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "t.db", clock=lambda: 5) as s:
        for name in ["b", "a", "c"]:
            insert(s, "clients", name=name)
        assert [r["name"] for r in select(s, "clients")] == ["b", "a", "c"]


def test_tasks_filters(store: SqliteStore) -> None:
    insert(store, "tasks", title="a", projectId="p1", status="todo", dueDate=100)
    insert(store, "tasks", title="b", projectId="p1", status="done", dueDate=200)
    insert(store, "tasks", title="c", projectId="p2", status="todo", dueDate=300)
    insert(store, "tasks", title="d", projectId="p2", status="in_progress")
    assert titles(select(store, "tasks", projectId="p1")) == ["a", "b"]
    assert titles(select(store, "tasks", status="todo")) == ["a", "c"]
    assert titles(select(store, "tasks", projectId="p2", status="todo")) == ["c"]
    assert titles(select(store, "tasks", projectId="p3")) == []
    # inclusive on both ends; tasks without a due date are outside any range
    assert titles(select(store, "tasks", dueDateFrom=200)) == ["b", "c"]
    assert titles(select(store, "tasks", dueDateTo=200)) == ["a", "b"]
    assert titles(select(store, "tasks", dueDateFrom=100, dueDateTo=100)) == ["a"]
    assert titles(select(store, "tasks", dueDateFrom=150, dueDateTo=250)) == ["b"]
    # None-valued filters are ignored
    assert titles(select(store, "tasks", projectId=None, status=None, orderBy=None)) == [
        "a",
        "b",
        "c",
        "d",
    ]


def test_tasks_search_title_or_description_case_insensitive(store: SqliteStore) -> None:
    insert(store, "tasks", title="Write REPORT")
    insert(store, "tasks", title="other", description="about the report")
    insert(store, "tasks", title="unrelated", description="nothing")
    assert titles(select(store, "tasks", search="report")) == ["Write REPORT", "other"]
    assert titles(select(store, "tasks", search="ePoRt", projectId=None)) == [
        "Write REPORT",
        "other",
    ]
    assert titles(select(store, "tasks", search="")) == ["Write REPORT", "other", "unrelated"]


def test_tasks_search_escapes_like_wildcards(store: SqliteStore) -> None:
    insert(store, "tasks", title="50% done")
    insert(store, "tasks", title="500 done")
    insert(store, "tasks", title="file_name")
    insert(store, "tasks", title="filename")
    insert(store, "tasks", title=r"C:\temp")
    assert titles(select(store, "tasks", search="%")) == ["50% done"]
    assert titles(select(store, "tasks", search="0% d")) == ["50% done"]
    assert titles(select(store, "tasks", search="_")) == ["file_name"]
    assert titles(select(store, "tasks", search="e_n")) == ["file_name"]
    assert titles(select(store, "tasks", search="\\")) == [r"C:\temp"]
    assert titles(select(store, "tasks", search="\\t")) == [r"C:\temp"]


def test_tasks_order_by_priority(store: SqliteStore) -> None:
    for title, priority in [("l", "low"), ("h1", "high"), ("m", "medium"), ("h2", "high")]:
        insert(store, "tasks", title=title, priority=priority)
    assert titles(select(store, "tasks", orderBy="priority")) == ["h1", "h2", "m", "l"]


def test_tasks_order_by_due_date_nulls_last(store: SqliteStore) -> None:
    insert(store, "tasks", title="none1")
    insert(store, "tasks", title="late", dueDate=300)
    insert(store, "tasks", title="early", dueDate=100)
    insert(store, "tasks", title="none2")
    insert(store, "tasks", title="mid", dueDate=200)
    assert titles(select(store, "tasks", orderBy="dueDate")) == [
        "early",
        "mid",
        "late",
        "none1",
        "none2",
    ]
    rows = store.handle("select", "tasks", filters={"orderBy": "dueDate"}, limit=2)["rows"]
    assert titles(rows) == ["early", "mid"]
    assert titles(select(store, "tasks", orderBy="createdAt")) == [
        "none1",
        "late",
        "early",
        "none2",
        "mid",
    ]


def test_projects_include_archived(store: SqliteStore) -> None:
    insert(store, "projects", name="live", clientId="c1")
    archived = insert(store, "projects", name="old", clientId="c1", status="archived")
    insert(store, "projects", name="other", clientId="c2")

    def names(rows: list[dict[str, Any]]) -> list[str]:
        return [r["name"] for r in rows]

    assert names(select(store, "projects")) == ["live", "other"]
    assert names(select(store, "projects", includeArchived=False)) == ["live", "other"]
    assert names(select(store, "projects", includeArchived=None)) == ["live", "other"]
    assert names(select(store, "projects", includeArchived=True)) == ["live", "old", "other"]
    assert names(select(store, "projects", clientId="c1")) == ["live"]
    assert names(select(store, "projects", clientId="c1", includeArchived=True)) == [
        "live",
        "old",
    ]
    # archived projects stay reachable by id
    assert store.handle("get", "projects", data={"id": archived["id"]})["row"] == archived


@pytest.mark.parametrize(
    ("table", "key", "column"),
    [
        ("timelines", "projectId", "projectId"),
        ("notes", "projectId", "projectId"),
        ("taskComments", "taskId", "taskId"),
        ("clients", "parentId", "parentId"),
    ],
)
def test_simple_filters(store: SqliteStore, table: str, key: str, column: str) -> None:
    a = insert(store, table, **{**MINIMAL[table], column: "x1"})
    b = insert(store, table, **{**MINIMAL[table], column: "x2"})
    assert select(store, table, **{key: "x1"}) == [a]
    assert select(store, table, **{key: "x2"}) == [b]
    assert select(store, table, **{key: None}) == [a, b]
    with fails(ErrorCode.BAD_REQUEST, f"unknown filter 'status' for table {table}"):
        select(store, table, status="todo")


# --- idempotency --------------------------------------------------------------------------


def test_idempotent_insert_returns_first_row(store: SqliteStore) -> None:
    first = store.handle("insert", "tasks", data={"title": "a"}, idempotency_key="k1")["row"]
    again = store.handle("insert", "tasks", data={"title": "b"}, idempotency_key="k1")["row"]
    assert again == first
    assert store.count("tasks") == 1
    # the row as it is now, not as it was inserted
    store.handle("update", "tasks", data={"id": first["id"], "updates": {"status": "done"}})
    now = store.handle("insert", "tasks", data={"title": "a"}, idempotency_key="k1")["row"]
    assert now == {**first, "status": "done"}
    # another key inserts; no key always inserts
    store.handle("insert", "tasks", data={"title": "c"}, idempotency_key="k2")
    store.handle("insert", "tasks", data={"title": "d"})
    store.handle("insert", "tasks", data={"title": "d"})
    assert titles(store.rows("tasks")) == ["a", "c", "d", "d"]


def test_idempotency_survives_reopen(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "i.db") as s:
        first = s.handle("insert", "notes", data={"title": "n"}, idempotency_key="k")["row"]
    with SqliteStore(tmp_path / "i.db") as s:
        assert s.handle("insert", "notes", data={"title": "n"}, idempotency_key="k")["row"] == first
        assert s.count("notes") == 1


def test_idempotency_key_on_another_table_is_bad_request(store: SqliteStore) -> None:
    store.handle("insert", "tasks", data={"title": "a"}, idempotency_key="k1")
    with fails(ErrorCode.BAD_REQUEST, r"idempotency_key 'k1' was already used .* into tasks"):
        store.handle("insert", "notes", data={"title": "n"}, idempotency_key="k1")
    assert store.count("notes") == 0


def test_idempotency_key_of_deleted_row_is_conflict(store: SqliteStore) -> None:
    row = store.handle("insert", "tasks", data={"title": "a"}, idempotency_key="k1")["row"]
    store.handle("delete", "tasks", data={"id": row["id"]})
    with fails(ErrorCode.CONFLICT, f"already used for task {row['id']}, which has since been"):
        store.handle("insert", "tasks", data={"title": "a"}, idempotency_key="k1")
    assert store.count("tasks") == 0


def test_bad_insert_with_key_records_no_key(store: SqliteStore) -> None:
    with fails(ErrorCode.BAD_REQUEST, "invalid status"):
        store.handle("insert", "tasks", data={"title": "a", "status": "x"}, idempotency_key="k")
    row = store.handle("insert", "tasks", data={"title": "b"}, idempotency_key="k")["row"]
    assert row["title"] == "b" and store.count("tasks") == 1
    with fails(ErrorCode.BAD_REQUEST, "idempotency_key must be a non-empty string"):
        store.handle("insert", "tasks", data={"title": "c"}, idempotency_key="")


def test_idempotent_insert_is_atomic(tmp_path: Path) -> None:
    # a row without its key would be inserted again on retry; the insert and the key
    # are one transaction, so a failure recording the key leaves no row behind
    path = tmp_path / "a.db"
    with SqliteStore(path) as s:
        db = sqlite3.connect(path)
        db.execute(
            "CREATE TRIGGER fail_key BEFORE INSERT ON _idempotency "
            "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
        )
        db.commit()
        db.close()
        with fails(ErrorCode.BAD_REQUEST, "disk on fire"):
            s.handle("insert", "tasks", data={"title": "a"}, idempotency_key="k")
        assert s.count("tasks") == 0


def test_idempotent_inserts_from_threads_insert_once(store: SqliteStore) -> None:
    results: list[dict[str, Any]] = []

    def work() -> None:
        for _ in range(20):
            results.append(
                store.handle("insert", "tasks", data={"title": "a"}, idempotency_key="k")["row"]
            )

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 80 and all(r == results[0] for r in results)
    assert store.count("tasks") == 1


# --- vectors ------------------------------------------------------------------------------


def test_vector_upsert_and_search(store: SqliteStore) -> None:
    up = store.handle(
        "vector_upsert", "notes", data={"id": "x", "content": "east"}, vector=[1.0, 0.0]
    )
    assert up == {"ok": True}
    store.handle("vector_upsert", "", data={"id": "y", "content": "north"}, vector=[0, 1])
    store.handle("vector_upsert", "", data={"id": "z", "content": "ne"}, vector=[1, 1])
    got = store.handle("vector_search", "", vector=[2.0, 0.0], limit=2)["results"]
    assert [(r["id"], r["content"]) for r in got] == [("x", "east"), ("z", "ne")]
    assert got[0]["score"] == pytest.approx(1.0)
    assert got[1]["score"] == pytest.approx(2**-0.5)
    every = store.handle("vector_search", "", vector=[-1, 0])["results"]
    assert [r["id"] for r in every] == ["y", "z", "x"]
    assert every[-1]["score"] == pytest.approx(-1.0)
    # upsert replaces
    store.handle("vector_upsert", "", data={"id": "x", "content": "west"}, vector=[-1, 0])
    top = store.handle("vector_search", "", vector=[-1, 0], limit=1)["results"]
    assert top == [{"id": "x", "content": "west", "score": pytest.approx(1.0)}]
    assert store.handle("vector_search", "", vector=[1, 0], limit=0) == {"results": []}


def test_vector_search_empty_and_project_filter(store: SqliteStore) -> None:
    assert store.handle("vector_search", "", vector=[1.0]) == {"results": []}
    store.handle(
        "vector_upsert", "", data={"id": "a", "projectId": "p1", "content": "a"}, vector=[1]
    )
    store.handle(
        "vector_upsert", "", data={"id": "b", "projectId": "p2", "content": "b"}, vector=[1]
    )
    got = store.handle("vector_search", "", vector=[1], filters={"projectId": "p2"})
    assert [r["id"] for r in got["results"]] == ["b"]
    got = store.handle("vector_search", "", vector=[1], filters={"projectId": None})
    assert [r["id"] for r in got["results"]] == ["a", "b"]


@pytest.mark.parametrize(
    ("action", "kwargs", "message"),
    [
        ("vector_upsert", {"data": {"id": "a", "content": "c"}}, r"vector must be a non-empty"),
        ("vector_upsert", {"data": {"id": "a", "content": "c"}, "vector": []}, r"non-empty"),
        ("vector_upsert", {"data": {"id": "a", "content": "c"}, "vector": [1, "2"]}, r"finite"),
        (
            "vector_upsert",
            {"data": {"id": "a", "content": "c"}, "vector": [float("inf")]},
            r"finite numbers",
        ),
        ("vector_upsert", {"data": {"content": "c"}, "vector": [1]}, r"data.id for vector_upsert"),
        ("vector_upsert", {"data": {"id": "a"}, "vector": [1]}, r"data.content for vector_upsert"),
        (
            "vector_upsert",
            {"data": {"id": "a", "content": "c", "projectId": 1}, "vector": [1]},
            r"data.projectId",
        ),
        ("vector_search", {"vector": [1, 2]}, r"vector has 2 dimensions but the stored vector"),
        ("vector_search", {"vector": [1], "limit": -2}, r"limit must be >= 0"),
        ("vector_search", {"vector": [1], "filters": {"tag": "x"}}, r"unknown filter 'tag'"),
    ],
)
def test_vector_bad_requests(
    store: SqliteStore, action: str, kwargs: dict[str, Any], message: str
) -> None:
    store.handle("vector_upsert", "", data={"id": "s", "content": "stored"}, vector=[1])
    with fails(ErrorCode.BAD_REQUEST, message):
        store.handle(action, "", **kwargs)
    got = store.handle("vector_search", "", vector=[1])["results"]
    assert [r["id"] for r in got] == ["s"]


def test_zero_vector_scores_zero(store: SqliteStore) -> None:
    store.handle("vector_upsert", "", data={"id": "z", "content": "zero"}, vector=[0, 0])
    got = store.handle("vector_search", "", vector=[1, 0])["results"]
    assert got == [{"id": "z", "content": "zero", "score": 0.0}]


# --- snapshots (one read transaction shared by a burst of reads) --------------------


def test_held_snapshot_serves_reads_from_one_point_in_time(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "app.db", clock=Clock())
    task = insert(store, "tasks", title="before")
    other = sqlite3.connect(tmp_path / "app.db", isolation_level=None)
    try:
        store.hold_snapshot()
        assert store.handle("get", "tasks", data={"id": task["id"]})["row"]["title"] == "before"
        other.execute("UPDATE tasks SET title = 'after' WHERE id = ?", (task["id"],))
        # Same snapshot: the other connection's write is not visible yet ...
        assert store.handle("get", "tasks", data={"id": task["id"]})["row"]["title"] == "before"
        assert titles(select(store, "tasks")) == ["before"]
        store.release_snapshot()
        # ... and is once the snapshot ends.
        assert store.handle("get", "tasks", data={"id": task["id"]})["row"]["title"] == "after"
        store.release_snapshot()  # idempotent
    finally:
        other.close()
        store.close()


def test_write_ends_a_held_snapshot_and_commits_at_once(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "app.db", clock=Clock())
    other = sqlite3.connect(tmp_path / "app.db", isolation_level=None)
    try:
        store.hold_snapshot()
        assert select(store, "tasks") == []  # opens the snapshot
        row = insert(store, "tasks", title="new")
        # Committed: another connection sees it while the store still holds snapshots.
        assert other.execute("SELECT title FROM tasks").fetchall() == [("new",)]
        # A read after the write sees it too (a fresh snapshot).
        assert store.handle("get", "tasks", data={"id": row["id"]})["row"]["title"] == "new"
        updated = store.handle(
            "update", "tasks", data={"id": row["id"], "updates": {"title": "newer"}}
        )["row"]
        assert updated["title"] == "newer"
        assert other.execute("SELECT title FROM tasks").fetchall() == [("newer",)]
        # Idempotent inserts open their own write transaction: no nesting error.
        keyed = store.handle("insert", "tasks", data={"title": "k"}, idempotency_key="k1")
        keyed = keyed["row"]
        assert store.handle("get", "tasks", data={"id": keyed["id"]})["row"] == keyed
        store.handle("delete", "tasks", data={"id": keyed["id"]})
        assert other.execute("SELECT count(*) FROM tasks").fetchone() == (1,)
    finally:
        store.release_snapshot()
        other.close()
        store.close()


def test_rows_and_count_read_the_latest_data_under_a_snapshot(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "app.db", clock=Clock())
    other = sqlite3.connect(tmp_path / "app.db", isolation_level=None)
    try:
        store.hold_snapshot()
        assert store.handle("select", "projects")["rows"] == []
        other.execute("INSERT INTO projects (id, name, createdAt) VALUES ('p1', 'x', 1)")
        assert store.count("projects") == 1
        assert [r["id"] for r in store.rows("projects")] == ["p1"]
    finally:
        store.release_snapshot()
        other.close()
        store.close()


def test_close_with_a_held_snapshot(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "app.db", clock=Clock())
    store.hold_snapshot()
    assert select(store, "tasks") == []
    store.close()
    store.release_snapshot()  # after close: nothing to end, no error
    reopened = SqliteStore(tmp_path / "app.db", clock=Clock())
    assert insert(reopened, "tasks", title="t")["title"] == "t"
    reopened.close()

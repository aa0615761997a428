"""``ClientStore`` over a live device session: the daemon's side of storage.md.

Every call here goes daemon -> WebSocket -> reference client -> real SQLite file and
back. The in-flight cap, timeouts and disconnects are driven by a reference client
whose ``before_tool_call`` hook holds calls on an event.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from agents.errors import DeviceOffline, StoreError, ToolCallError, ToolCallTimeout
from daemon.session import ClientStore, DeviceSession
from protocol.codec import decode, encode
from protocol.frames import DeviceHello, HelloAck, Pong, ToolCall
from protocol.reference import ReferenceClient
from protocol.storage import TABLES, Table
from tests.conftest import DaemonFactory, DaemonHarness

# Minimal valid insert data and one update per table (storage.md).
INSERTS: dict[str, dict[str, Any]] = {
    "tasks": {"title": "Write report", "priority": "high", "dueDate": 1_700_000_000_000},
    "projects": {"name": "Apollo"},
    "timelines": {"projectId": "p1", "title": "Kick-off", "date": 1_700_000_000_000},
    "notes": {"title": "Minutes", "content": "# Minutes"},
    "taskComments": {"taskId": "t1", "content": "Looks good"},
    "clients": {"name": "ACME", "industry": "anvils"},
}
UPDATES: dict[str, dict[str, Any]] = {
    "tasks": {"status": "done", "title": "Report written"},
    "projects": {"name": "Apollo 2", "status": "archived"},
    "timelines": {"title": "Kick-off (moved)", "date": 1_700_000_100_000},
    "notes": {"content": "# Minutes\n\nupdated"},
    "taskComments": {"content": "Looks great"},
    "clients": {"industry": "rockets"},
}
TABLE_NAMES = sorted(INSERTS)


def session_of(harness: DaemonHarness, device_id: str | None = None) -> DeviceSession:
    session = harness.daemon.server.device(device_id)
    assert session is not None, "no device session"
    return session


async def wait_for(predicate: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


@pytest.fixture
async def app(harness: DaemonHarness, tmp_path: Path) -> ReferenceClient:
    return await harness.device(tmp_path / "app.db", device_id="laptop-1")


@pytest.fixture
def store(harness: DaemonHarness, app: ReferenceClient) -> ClientStore:
    return session_of(harness, "laptop-1").store()


class Gate:
    """A ``before_tool_call`` hook that holds every call until released."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.waiting = 0

    async def __call__(self, call: ToolCall) -> None:
        self.waiting += 1
        try:
            await self.open.wait()
        finally:
            self.waiting -= 1


def test_the_tables_under_test_are_storage_md() -> None:
    assert set(INSERTS) == set(UPDATES) == {str(t) for t in TABLES}


# --- every action x table ------------------------------------------------------------


@pytest.mark.parametrize("table", TABLE_NAMES)
async def test_crud_round_trip(store: ClientStore, app: ReferenceClient, table: str) -> None:
    data = INSERTS[table]
    row = await store.insert(table, data)
    assert row["id"] and isinstance(row["createdAt"], int)
    for column, value in data.items():
        assert row[column] == value
    assert set(row) == set(TABLES[Table(table)].columns)  # every column, as storage.md says
    assert app.store.count(table) == 1  # really in the app's SQLite file

    got = await store.get(table, row["id"])
    assert got == row
    assert await store.get(table, "missing-id") is None

    if table == "projects":  # archived projects are hidden unless asked for
        rows = await store.select(table, {"includeArchived": True})
    else:
        rows = await store.select(table)
    assert rows == [row]

    updated = await store.update(table, row["id"], UPDATES[table])
    assert updated["id"] == row["id"]
    for column, value in UPDATES[table].items():
        assert updated[column] == value
    assert await store.get(table, row["id"]) == updated
    assert app.store.rows(table) == [updated]

    with pytest.raises(ToolCallError) as missing:
        await store.update(table, "missing-id", UPDATES[table])
    assert missing.value.code == "not_found"
    assert "missing-id" in missing.value.message

    await store.delete(table, row["id"])
    assert await store.get(table, row["id"]) is None
    assert app.store.count(table) == 0
    with pytest.raises(ToolCallError) as gone:
        await store.delete(table, row["id"])
    assert gone.value.code == "not_found"

    actions = [c.action for c in app.tool_calls]
    assert {"insert", "get", "select", "update", "delete"} <= set(actions)
    assert all(c.table == table for c in app.tool_calls)


@pytest.mark.parametrize("table", TABLE_NAMES)
async def test_insert_and_update_refused_by_the_app(
    store: ClientStore, app: ReferenceClient, table: str
) -> None:
    with pytest.raises(ToolCallError) as bad_insert:
        await store.insert(table, {"noSuchColumn": "x", **INSERTS[table]})
    assert bad_insert.value.code == "bad_request"
    assert "noSuchColumn" in bad_insert.value.message
    row = await store.insert(table, INSERTS[table])
    with pytest.raises(ToolCallError) as bad_update:
        await store.update(table, row["id"], {"createdAt": 5})
    assert bad_update.value.code == "bad_request"
    assert app.store.rows(table) == [row]  # nothing half-written


async def test_unknown_table_is_bad_request(store: ClientStore) -> None:
    with pytest.raises(ToolCallError) as info:
        await store.select("emails")
    assert info.value.code == "bad_request"
    assert "emails" in info.value.message


# --- select filters -----------------------------------------------------------------------


async def test_task_filters(store: ClientStore) -> None:
    t1 = await store.insert(
        "tasks",
        {"title": "Write report", "projectId": "p1", "priority": "low", "dueDate": 3000},
    )
    t2 = await store.insert(
        "tasks",
        {
            "title": "Fix bug",
            "description": "the REPORT page crashes",
            "projectId": "p1",
            "status": "done",
            "priority": "high",
            "dueDate": 1000,
        },
    )
    t3 = await store.insert("tasks", {"title": "Other", "projectId": "p2", "status": "in_progress"})

    async def ids(filters: dict[str, Any] | None = None, limit: int | None = None) -> list[str]:
        return [r["id"] for r in await store.select("tasks", filters, limit)]

    everything = [t1["id"], t2["id"], t3["id"]]
    assert await ids() == everything
    assert await ids({"projectId": "p1"}) == [t1["id"], t2["id"]]
    assert await ids({"status": "done"}) == [t2["id"]]
    assert await ids({"status": "in_progress"}) == [t3["id"]]
    assert await ids({"search": "report"}) == [t1["id"], t2["id"]]  # title or description
    assert await ids({"search": "nothing like it"}) == []
    assert await ids({"orderBy": "priority"}) == [t2["id"], t3["id"], t1["id"]]
    assert await ids({"orderBy": "dueDate"}) == [t2["id"], t1["id"], t3["id"]]  # nulls last
    assert await ids({"orderBy": "createdAt"}) == everything
    assert await ids({"dueDateFrom": 2000}) == [t1["id"]]
    assert await ids({"dueDateTo": 2000}) == [t2["id"]]
    assert await ids({"dueDateFrom": 1000, "dueDateTo": 3000}) == [t1["id"], t2["id"]]
    assert await ids({"projectId": "p1", "status": "todo"}) == [t1["id"]]
    assert await ids({"projectId": None, "status": None}) == everything  # null = no filter
    assert await ids(limit=2) == everything[:2]
    assert await ids({"orderBy": "priority"}, limit=1) == [t2["id"]]


async def test_project_filters(store: ClientStore) -> None:
    p1 = await store.insert("projects", {"name": "Active", "clientId": "c1"})
    p2 = await store.insert("projects", {"name": "Old", "clientId": "c2", "status": "archived"})

    async def ids(filters: dict[str, Any] | None = None) -> list[str]:
        return [r["id"] for r in await store.select("projects", filters)]

    assert await ids() == [p1["id"]]  # archived hidden by default
    assert await ids({"includeArchived": False}) == [p1["id"]]
    assert await ids({"includeArchived": True}) == [p1["id"], p2["id"]]
    assert await ids({"clientId": "c1"}) == [p1["id"]]
    assert await ids({"clientId": "c2"}) == []
    assert await ids({"clientId": "c2", "includeArchived": True}) == [p2["id"]]


@pytest.mark.parametrize(
    ("table", "key", "data"),
    [
        ("timelines", "projectId", {"title": "T", "date": 1}),
        ("notes", "projectId", {"title": "N"}),
        ("taskComments", "taskId", {"content": "C"}),
        ("clients", "parentId", {"name": "Sub"}),
    ],
)
async def test_simple_filters(
    store: ClientStore, table: str, key: str, data: dict[str, Any]
) -> None:
    a = await store.insert(table, {**data, key: "a"})
    b = await store.insert(table, {**data, key: "b"})
    assert [r["id"] for r in await store.select(table, {key: "a"})] == [a["id"]]
    assert [r["id"] for r in await store.select(table, {key: "b"})] == [b["id"]]
    assert await store.select(table, {key: "zzz"}) == []
    assert [r["id"] for r in await store.select(table, {key: None})] == [a["id"], b["id"]]


@pytest.mark.parametrize(
    ("table", "filters"),
    [
        ("tasks", {"projectid": "p1"}),  # a typo must not return everything
        ("tasks", {"clientId": "c1"}),
        ("projects", {"projectId": "p1"}),
        ("timelines", {"status": "todo"}),
        ("notes", {"search": "x"}),
        ("taskComments", {"projectId": "p1"}),
        ("clients", {"name": "ACME"}),
    ],
)
async def test_unknown_filter_is_bad_request(
    store: ClientStore, table: str, filters: dict[str, Any]
) -> None:
    await store.insert(table, {**INSERTS[table]})
    with pytest.raises(ToolCallError) as info:
        await store.select(table, filters)
    assert info.value.code == "bad_request"
    assert repr(next(iter(filters))) in info.value.message


async def test_bad_filter_value_is_bad_request(store: ClientStore) -> None:
    with pytest.raises(ToolCallError) as info:
        await store.select("tasks", {"status": "someday"})
    assert info.value.code == "bad_request"
    assert "someday" in info.value.message


# --- idempotency, run attribution --------------------------------------------------------


async def test_repeated_insert_with_the_same_idempotency_key(
    store: ClientStore, app: ReferenceClient
) -> None:
    key = "sha256:agent-1/file-abc/item-0"
    first = await store.insert("tasks", {"title": "From the scan"}, idempotency_key=key)
    again = await store.insert("tasks", {"title": "From the scan (re-run)"}, idempotency_key=key)
    assert again == first
    assert app.store.count("tasks") == 1
    assert [c.idempotency_key for c in app.tool_calls] == [key, key]
    other = await store.insert("tasks", {"title": "Another item"}, idempotency_key=key + "-1")
    assert other["id"] != first["id"]
    plain = await store.insert("tasks", {"title": "No key"})
    assert app.tool_calls[-1].idempotency_key is None
    assert "idempotency_key" not in app.tool_calls[-1].model_fields_set
    assert app.store.count("tasks") == 3 and plain["id"] not in (first["id"], other["id"])


async def test_run_id_and_run_context_travel_on_every_call_of_a_run(
    harness: DaemonHarness, app: ReferenceClient
) -> None:
    session = session_of(harness, "laptop-1")
    context = {"runRecord": "rr-7", "source": {"kind": "manual", "by": "ana"}}
    run_store = session.store(run_id="run-42", run_context=context)
    row = await run_store.insert("notes", {"title": "From a run"}, idempotency_key="k1")
    await run_store.select("notes", {"projectId": None})
    await run_store.get("notes", row["id"])
    await run_store.update("notes", row["id"], {"content": "x"})
    assert len(app.tool_calls) == 4
    for call in app.tool_calls:
        assert call.run_id == "run-42"
        assert call.run_context == context
    assert run_store.calls == 4

    # a store without a run sends neither field
    app.tool_calls.clear()
    await session.store().get("notes", row["id"])
    (call,) = app.tool_calls
    assert call.run_id is None and call.run_context is None
    assert not {"run_id", "run_context"} & call.model_fields_set

    # a run without a context sends only its id
    app.tool_calls.clear()
    await session.store(run_id="run-43").get("notes", row["id"])
    (call,) = app.tool_calls
    assert call.run_id == "run-43" and "run_context" not in call.model_fields_set


# --- flow control, timeouts, disconnects ---------------------------------------------------


async def test_a_burst_of_calls_is_answered_in_order(store: ClientStore) -> None:
    """64 calls sent in one event-loop pass reach the app in one burst (batched
    writes; the app's reads share a snapshot); each read sees the writes sent
    before it, and every call gets its own answer."""
    task = await store.insert("tasks", {"title": "v0"})
    calls: list[Coroutine[Any, Any, Any]] = []
    for i in range(1, 33):
        calls.append(store.update("tasks", task["id"], {"title": f"v{i}"}))
        calls.append(store.get("tasks", task["id"]))
    results = await asyncio.gather(*calls)
    for i in range(1, 33):
        updated, read = results[2 * i - 2], results[2 * i - 1]
        assert updated["title"] == f"v{i}"
        assert read is not None and read["title"] == f"v{i}"
    gets = await asyncio.gather(*(store.get("tasks", task["id"]) for _ in range(64)))
    assert {row["title"] for row in gets if row is not None} == {"v32"}
    inserted = await asyncio.gather(*(store.insert("notes", {"title": f"n{i}"}) for i in range(40)))
    fetched = await asyncio.gather(*(store.get("notes", row["id"]) for row in inserted))
    assert fetched == inserted


async def test_reference_client_keeps_only_recent_calls(
    harness: DaemonHarness, tmp_path: Path
) -> None:
    app = await harness.device(tmp_path / "app.db", device_id="bounded", keep_calls=10)
    store = session_of(harness, "bounded").store()
    ids = [f"id-{i}" for i in range(35)]
    for row_id in ids:
        assert await store.get("tasks", row_id) is None
    kept = [c.data["id"] for c in app.tool_calls if c.data]
    assert 10 <= len(kept) < 20
    assert kept == ids[-len(kept) :]  # the most recent, in order
    with pytest.raises(ValueError, match="keep_calls"):
        ReferenceClient(harness.url, "t", db=str(tmp_path / "x.db"), keep_calls=0)


async def test_at_most_64_calls_in_flight_the_rest_queue(
    harness: DaemonHarness, tmp_path: Path
) -> None:
    gate = Gate()
    app = await harness.device(tmp_path / "app.db", before_tool_call=gate)
    session = session_of(harness)
    store = session.store()
    calls = [asyncio.create_task(store.get("tasks", f"id-{i}")) for i in range(100)]
    try:
        await wait_for(lambda: len(app.tool_calls) >= 64)
        await app.ping()  # a round trip: the other 36 must still be queued in the daemon
        assert len(app.tool_calls) == 64
        assert gate.waiting == 64
        assert session.in_flight == 64
        assert not any(t.done() for t in calls)
        gate.open.set()
        results = await asyncio.wait_for(asyncio.gather(*calls), 10)
    finally:
        gate.open.set()
    assert results == [None] * 100
    assert len(app.tool_calls) == 100
    assert len({c.id for c in app.tool_calls}) == 100  # ids unique per session
    # FIFO: the queued calls went out in the order they were made
    assert [c.data for c in app.tool_calls[64:]] == [{"id": f"id-{i}"} for i in range(64, 100)]
    assert session.in_flight == 0


async def test_unanswered_call_times_out(make_daemon: DaemonFactory, tmp_path: Path) -> None:
    harness = await make_daemon(tool_call_timeout_s=0.3)
    gate = Gate()
    app = await harness.device(tmp_path / "app.db", before_tool_call=gate)
    session = session_of(harness)
    started = time.monotonic()
    try:
        with pytest.raises(ToolCallTimeout) as info:
            await session.store().insert("tasks", {"title": "never answered"})
        elapsed = time.monotonic() - started
        assert 0.25 <= elapsed < 2.0
        assert "insert" in str(info.value) and "tasks" in str(info.value)
        assert isinstance(info.value, StoreError)
        assert session.in_flight == 0
    finally:
        gate.open.set()  # the late answer arrives now and must be dropped
    await wait_for(lambda: gate.waiting == 0)
    await app.ping()  # sent after the late answer: the daemon has read (and dropped) it
    # the session is still usable after a timeout and a late answer
    row = await session.store().get("tasks", "nope")
    assert row is None
    assert not session.closed and app.connected


@pytest.mark.parametrize("in_flight", [50, 100])
async def test_kill_fails_every_pending_call_at_once(
    harness: DaemonHarness, tmp_path: Path, in_flight: int
) -> None:
    gate = Gate()
    app = await harness.device(tmp_path / "app.db", before_tool_call=gate, device_id="laptop-1")
    session = session_of(harness, "laptop-1")
    store = session.store()
    calls = [asyncio.create_task(store.get("tasks", f"id-{i}")) for i in range(in_flight)]
    try:
        await wait_for(lambda: len(app.tool_calls) == min(in_flight, 64))
        started = time.monotonic()
        app.kill()
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 5)
        elapsed = time.monotonic() - started
    finally:
        gate.open.set()
    # with 100, 36 of them were still queued for a slot: they fail too
    assert all(isinstance(r, DeviceOffline) for r in results), results
    assert elapsed < 1.0, f"pending calls took {elapsed:.2f}s to fail"
    assert session.closed
    await wait_for(lambda: harness.daemon.server.device("laptop-1") is None)
    with pytest.raises(DeviceOffline):
        await store.get("tasks", "after-the-kill")

    # the app comes back: a new session serves calls again
    back = await harness.device(tmp_path / "app.db", device_id="laptop-1")
    new_store = session_of(harness, "laptop-1").store()
    row = await new_store.insert("tasks", {"title": "after reconnect"})
    assert await new_store.get("tasks", row["id"]) == row
    assert back.store.count("tasks") == 1


# --- what a client may answer ----------------------------------------------------------------


async def raw_device(harness: DaemonHarness, device_id: str = "raw-app") -> ClientConnection:
    ws = await connect(harness.url, compression=None, ping_interval=None, close_timeout=1)
    await ws.send(encode(DeviceHello(protocol=1, token=harness.token, device_id=device_id)))
    assert isinstance(decode(await asyncio.wait_for(ws.recv(), 5)), HelloAck)
    return ws


async def answer_next_call(
    ws: ClientConnection, reply: Callable[[ToolCall], dict[str, Any]]
) -> ToolCall:
    frame = decode(await asyncio.wait_for(ws.recv(), 5))
    assert isinstance(frame, ToolCall), frame
    await ws.send(json.dumps({"type": "tool_result", "id": frame.id, **reply(frame)}))
    return frame


async def with_answer(
    harness: DaemonHarness,
    ws: ClientConnection,
    make_call: Callable[[ClientStore], Coroutine[Any, Any, Any]],
    reply: dict[str, Any],
) -> Any:
    task = asyncio.create_task(make_call(session_of(harness, "raw-app").store()))
    await answer_next_call(ws, lambda _call: reply)
    return await asyncio.wait_for(task, 5)


async def test_ok_false_with_a_string_error_is_a_tool_call_error(harness: DaemonHarness) -> None:
    ws = await raw_device(harness)
    try:
        with pytest.raises(ToolCallError) as info:
            await with_answer(
                harness, ws, lambda s: s.get("tasks", "t1"), {"ok": False, "error": "disk full"}
            )
        assert info.value.message == "disk full"
        assert info.value.code == "internal"

        with pytest.raises(ToolCallError) as info:
            await with_answer(
                harness,
                ws,
                lambda s: s.delete("tasks", "t7"),
                {"error": {"code": "not_found", "message": "no task t7"}},  # no "ok"
            )
        assert (info.value.code, info.value.message) == ("not_found", "no task t7")

        with pytest.raises(ToolCallError) as info:
            await with_answer(harness, ws, lambda s: s.get("tasks", "t1"), {"ok": False})
        assert info.value.code == "internal" and info.value.message

        # without "ok" and without "error" it is a success
        row = {"id": "t1", "title": "x"}
        assert await with_answer(harness, ws, lambda s: s.get("tasks", "t1"), {"row": row}) == row
        assert (
            await with_answer(
                harness, ws, lambda s: s.get("tasks", "t1"), {"ok": True, "row": None}
            )
            is None
        )
        # an insert answered without a row is an error, not a silent None
        with pytest.raises(ToolCallError) as info:
            await with_answer(
                harness, ws, lambda s: s.insert("tasks", {"title": "x"}), {"ok": True}
            )
        assert info.value.code == "internal"
    finally:
        await ws.close()


async def test_tool_result_for_an_unknown_id_is_ignored(harness: DaemonHarness) -> None:
    ws = await raw_device(harness)
    try:
        await ws.send(
            json.dumps({"type": "tool_result", "id": "never-asked", "ok": True, "rows": []})
        )
        await ws.send(json.dumps({"type": "ping", "id": "after"}))
        # no error frame comes before the pong: the stray result was silently dropped
        pong = decode(await asyncio.wait_for(ws.recv(), 5))
        assert isinstance(pong, Pong) and pong.id == "after"
        session = session_of(harness, "raw-app")
        assert not session.closed and session.in_flight == 0

        # a duplicate answer to a real call is dropped too; the first one counts
        task = asyncio.create_task(session.store().get("tasks", "t1"))
        call = await answer_next_call(ws, lambda c: {"ok": True, "row": {"id": "t1", "n": 1}})
        await ws.send(
            json.dumps(
                {"type": "tool_result", "id": call.id, "ok": True, "row": {"id": "t1", "n": 2}}
            )
        )
        assert await asyncio.wait_for(task, 5) == {"id": "t1", "n": 1}
        await ws.send(json.dumps({"type": "ping", "id": "still"}))
        pong = decode(await asyncio.wait_for(ws.recv(), 5))
        assert isinstance(pong, Pong) and pong.id == "still"
    finally:
        await ws.close()


async def test_calls_go_to_the_right_device(harness: DaemonHarness, tmp_path: Path) -> None:
    a = await harness.device(tmp_path / "a.db", device_id="laptop")
    b = await harness.device(tmp_path / "b.db", device_id="desktop")
    await session_of(harness, "laptop").store().insert("clients", {"name": "A"})
    await session_of(harness, "desktop").store().insert("clients", {"name": "B"})
    assert [r["name"] for r in a.store.rows("clients")] == ["A"]
    assert [r["name"] for r in b.store.rows("clients")] == ["B"]
    assert session_of(harness).device_id == "desktop"  # None means the most recent device

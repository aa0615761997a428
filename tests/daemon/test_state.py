"""The state store against real SQLite files in tmp_path."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from agents.books import FileRecord
from daemon import state
from daemon.errors import StateError
from daemon.state import SCHEMA_VERSION, StateStore

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "tether.db"


@pytest.fixture
def store(db_path: Path, clock: Clock) -> Iterator[StateStore]:
    with StateStore.open(db_path, clock=clock) as s:
        yield s


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def finish(store: StateStore, run_id: str, status: str, at: datetime) -> None:
    store.finish_run(
        run_id, status, at, items_processed=0, items_created=0, items_updated=0, errors=[], usage={}
    )


# ---------------------------------------------------------------- opening and schema


def test_fresh_db_has_latest_schema_and_wal(store: StateStore, db_path: Path) -> None:
    assert db_path.exists()
    conn = raw(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 1
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"meta", "agents", "runs", "events", "file_index", "message_ledger", "cursors"} <= tables
    conn.close()
    assert store.last_seq() == 0
    assert store.agents() == []


def test_reopen_keeps_data(db_path: Path, clock: Clock) -> None:
    with StateStore.open(db_path, clock=clock) as s:
        s.put_agents([{"id": "a1", "name": "Docs"}], source="client", replace=True)
        s.start_run("r1", "a1", "manual", T0, run_context={"k": 1})
        s.set_cursor("a1", "history_id", "42")
        s.set_meta("installed", "yes")
        s.record_file("a1", FileRecord("/x/a.txt", 3, 99, "ab" * 32))
        s.mark_processed("gmail", "me@x", "a1", "m1")
        s.append_event("run_started", {"run_id": "r1"}, run_id="r1")
    with StateStore.open(db_path, clock=clock) as s:
        assert s.agent("a1") == {"id": "a1", "name": "Docs"}
        run = s.run("r1")
        assert run is not None and run.status == "running" and run.run_context == {"k": 1}
        assert s.get_cursor("a1", "history_id") == "42"
        assert s.get_meta("installed") == "yes"
        assert s.file_index("a1") == {"/x/a.txt": FileRecord("/x/a.txt", 3, 99, "ab" * 32)}
        assert s.is_processed("gmail", "me@x", "a1", "m1")
        assert [e.seq for e in s.events_after(0)] == [1]


def test_newer_schema_is_refused_untouched(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    conn = raw(db_path)
    conn.execute("CREATE TABLE future (x)")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    expected = rf"newer tether \(schema {SCHEMA_VERSION + 1} > {SCHEMA_VERSION}\)"
    with pytest.raises(StateError, match=expected) as info:
        StateStore.open(db_path)
    assert str(db_path) in str(info.value)
    conn = raw(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # not switched to WAL
    conn.close()


def test_corrupt_file_is_refused_naming_the_path(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    junk = os.urandom(8192)
    db_path.write_bytes(junk)
    with pytest.raises(StateError) as info:
        StateStore.open(db_path)
    assert str(db_path) in str(info.value)
    assert "move it aside" in str(info.value)
    assert db_path.read_bytes() == junk


def test_failed_migration_rolls_back_and_a_good_one_applies(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with StateStore.open(db_path) as s:
        s.set_cursor("a1", "k", "v")
    broken = "CREATE TABLE half (x); INSERT INTO no_such_table VALUES (1);"
    monkeypatch.setattr(state, "_MIGRATIONS", (*state._MIGRATIONS, broken))
    monkeypatch.setattr(state, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(StateError, match="no_such_table"):
        StateStore.open(db_path)
    conn = raw(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'half'").fetchone() is None
    conn.close()

    good = "CREATE TABLE extra (x TEXT DEFAULT 'a;b'); INSERT INTO extra DEFAULT VALUES;"
    monkeypatch.setattr(state, "_MIGRATIONS", (*state._MIGRATIONS[:-1], good))
    with StateStore.open(db_path) as s:
        assert s.get_cursor("a1", "k") == "v"
    conn = raw(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    assert conn.execute("SELECT x FROM extra").fetchall() == [("a;b",)]
    conn.close()


def test_close_is_idempotent_and_later_calls_fail(db_path: Path) -> None:
    s = StateStore.open(db_path)
    s.close()
    s.close()
    assert s.closed
    with pytest.raises(StateError, match="closed"):
        s.agents()
    with pytest.raises(StateError, match="closed"):
        s.set_meta("k", "v")


# ---------------------------------------------------------------- agents


def test_agents_put_and_replace_per_source(store: StateStore) -> None:
    store.put_agents(
        [{"id": "c2", "name": "B", "device_id": "laptop"}, {"id": "c1", "name": "A"}],
        source="client",
        replace=True,
    )
    store.put_agents([{"id": "f1", "name": "F"}], source="file", replace=True)
    assert [a["id"] for a in store.agents()] == ["c1", "c2", "f1"]
    assert store.agent("c2") == {"id": "c2", "name": "B", "device_id": "laptop"}

    # replace=False upserts and keeps the rest
    store.put_agents([{"id": "c1", "name": "A2"}], source="client", replace=False)
    assert [a["id"] for a in store.agents()] == ["c1", "c2", "f1"]
    assert store.agent("c1") == {"id": "c1", "name": "A2"}

    # replace=True drops only that source's missing agents
    store.put_agents([{"id": "c3", "name": "C"}], source="client", replace=True)
    assert [a["id"] for a in store.agents()] == ["c3", "f1"]
    store.put_agents([], source="file", replace=True)
    assert [a["id"] for a in store.agents()] == ["c3"]

    assert store.delete_agent("c3") is True
    assert store.delete_agent("c3") is False
    assert store.agent("c3") is None and store.agents() == []


def test_put_agents_rejects_bad_input_and_writes_nothing(store: StateStore) -> None:
    with pytest.raises(ValueError, match="source"):
        store.put_agents([{"id": "a"}], source="cloud", replace=True)
    with pytest.raises(ValueError, match="'id'"):
        store.put_agents([{"id": "a"}, {"name": "no id"}], source="client", replace=True)
    with pytest.raises(ValueError, match="twice"):
        store.put_agents([{"id": "a"}, {"id": "a"}], source="client", replace=True)
    assert store.agents() == []


# ---------------------------------------------------------------- run journal


def test_run_lifecycle(store: StateStore) -> None:
    started = store.start_run("r1", "a1", "schedule", T0, run_context={"origin": "x"})
    assert started.status == "running" and started.finished_at is None
    assert store.run("r1") == started
    assert [r.run_id for r in store.running_runs()] == ["r1"]

    done = store.finish_run(
        "r1",
        "partial",
        T0 + timedelta(seconds=30),
        items_processed=4,
        items_created=2,
        items_updated=1,
        errors=["b.pdf: unreadable"],
        usage={"llm_calls": 3, "prompt_tokens": 100, "completion_tokens": 20, "cost_usd": 0.01},
        detail={"files_scanned": 10, "files_changed": 5},
    )
    assert store.run("r1") == done
    assert done.status == "partial"
    assert done.started_at == T0 and done.started_at.tzinfo is not None
    assert done.finished_at == T0 + timedelta(seconds=30)
    assert (done.items_processed, done.items_created, done.items_updated) == (4, 2, 1)
    assert done.errors == ("b.pdf: unreadable",)
    assert done.usage["cost_usd"] == 0.01
    assert done.run_context == {"origin": "x"}
    assert done.detail == {"files_scanned": 10, "files_changed": 5}
    assert store.running_runs() == []
    assert store.run("nope") is None


def test_run_journal_refuses_misuse(store: StateStore) -> None:
    store.start_run("r1", "a1", "manual", T0)
    with pytest.raises(StateError, match="already exists"):
        store.start_run("r1", "a1", "manual", T0)
    with pytest.raises(ValueError, match="cannot finish"):
        finish(store, "r1", "running", T0)
    with pytest.raises(ValueError, match="naive"):
        store.start_run("r2", "a1", "manual", datetime(2025, 1, 1))
    with pytest.raises(StateError, match="no run"):
        finish(store, "ghost", "success", T0)
    finish(store, "r1", "success", T0)
    with pytest.raises(StateError, match=r"already finished \(success\)"):
        finish(store, "r1", "error", T0)
    assert store.run("r1").status == "success"  # type: ignore[union-attr]
    assert store.run("r2") is None


def test_runs_newest_first_with_filter_and_limit(store: StateStore) -> None:
    for i in range(5):
        store.start_run(f"r{i}", "a" if i % 2 == 0 else "b", "schedule", T0 + timedelta(minutes=i))
    assert [r.run_id for r in store.runs()] == ["r4", "r3", "r2", "r1", "r0"]
    assert [r.run_id for r in store.runs(limit=2)] == ["r4", "r3"]
    assert [r.run_id for r in store.runs("a")] == ["r4", "r2", "r0"]
    assert store.runs("zzz") == []


def test_other_time_zones_are_stored_as_utc(store: StateStore) -> None:
    paris = timezone(timedelta(hours=1))
    store.start_run("r1", "a1", "manual", datetime(2025, 3, 1, 13, 0, tzinfo=paris))
    run = store.run("r1")
    assert run is not None
    assert run.started_at == datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    assert run.started_at.utcoffset() == timedelta(0)


def test_skipped_runs(store: StateStore) -> None:
    skipped = store.record_skipped("s1", "a1", "schedule", T0, "device offline")
    assert skipped.status == "skipped"
    assert skipped.started_at == skipped.finished_at == T0
    assert skipped.errors == ("device offline",)
    assert store.running_runs() == []
    assert store.last_run_at("a1") is None
    assert store.last_finished("a1") is None
    assert store.last_finished("a1", include_skipped=True) == skipped
    with pytest.raises(StateError, match="already exists"):
        store.record_skipped("s1", "a1", "schedule", T0, "again")


def test_skipped_runs_in_a_row_coalesce(store: StateStore) -> None:
    store.record_skipped("s1", "a1", "schedule", T0, "offline at 1")
    again = store.record_skipped("s2", "a1", "schedule", T0 + timedelta(minutes=1), "offline at 2")
    assert again.run_id == "s1" and store.run("s2") is None
    assert (again.started_at, again.finished_at) == (T0, T0 + timedelta(minutes=1))
    assert again.errors == ("offline at 1",)
    assert again.detail == {"skipped_fires": 2, "last_reason": "offline at 2"}
    # another agent, or another trigger, is a new entry
    assert store.record_skipped("s3", "a2", "schedule", T0, "x").run_id == "s3"
    assert (
        store.record_skipped("s4", "a1", "reconnect", T0 + timedelta(minutes=2), "y").run_id == "s4"
    )
    assert store.last_finished("a1", include_skipped=True).run_id == "s4"  # type: ignore[union-attr]
    assert store.last_run_at("a1") is None


def test_close_orphaned_runs(store: StateStore) -> None:
    store.start_run("r1", "a1", "schedule", T0)
    store.start_run("r2", "a2", "manual", T0 + timedelta(seconds=1))
    store.start_run("r3", "a3", "manual", T0)
    finish(store, "r3", "success", T0 + timedelta(seconds=5))
    at = T0 + timedelta(hours=1)
    closed = store.close_orphaned_runs("daemon stopped before the run finished", at)
    assert [r.run_id for r in closed] == ["r1", "r2"]
    for r in closed:
        assert r.status == "error" and r.finished_at == at
        assert r.errors == ("daemon stopped before the run finished",)
        assert store.run(r.run_id) == r
    assert store.run("r3").status == "success"  # type: ignore[union-attr]
    assert store.running_runs() == []
    assert store.close_orphaned_runs("again", at) == []
    assert store.last_run_at("a1") == at  # an orphaned run used its slot too


def test_last_run_at_counts_every_run_that_ran(store: StateStore) -> None:
    assert store.last_run_at("a1") is None
    store.start_run("r1", "a1", "schedule", T0)
    finish(store, "r1", "success", T0 + timedelta(minutes=1))
    store.start_run("r2", "a1", "schedule", T0 + timedelta(hours=1))
    finish(store, "r2", "error", T0 + timedelta(hours=1, minutes=1))
    assert store.last_run_at("a1") == T0 + timedelta(hours=1, minutes=1)  # error counts

    store.start_run("r3", "a1", "manual", T0 + timedelta(hours=2))
    finish(store, "r3", "cancelled", T0 + timedelta(hours=2, minutes=1))
    store.record_skipped("s1", "a1", "schedule", T0 + timedelta(hours=3), "device offline")
    store.start_run("r4", "a1", "manual", T0 + timedelta(hours=4))  # still running
    assert store.last_run_at("a1") == T0 + timedelta(hours=2, minutes=1)

    last = store.last_finished("a1")
    assert last is not None and last.run_id == "r3"
    last_any = store.last_finished("a1", include_skipped=True)
    assert last_any is not None and last_any.run_id == "s1"
    assert store.last_run_at("other") is None


# ---------------------------------------------------------------- events


def test_event_seqs_and_filtering(store: StateStore, clock: Clock) -> None:
    seqs = [
        store.append_event("run_started", {"run_id": "r1", "agent_id": "a1"}, run_id="r1"),
        store.append_event("run_progress", {"run_id": "r1", "done": 1, "total": 2}, run_id="r1"),
        store.append_event("run_complete", {"run_id": "r1", "status": "success"}, run_id="r1"),
        store.append_event("note", {}),
    ]
    assert seqs == [1, 2, 3, 4]
    assert store.last_seq() == 4

    everything = store.events_after(0)
    assert [e.seq for e in everything] == [1, 2, 3, 4]
    assert everything[0].payload == {"run_id": "r1", "agent_id": "a1"}
    assert everything[0].run_id == "r1" and everything[3].run_id is None
    assert everything[0].created_at == clock.now

    replay = store.events_after(1, types={"run_started", "run_complete"})
    assert [(e.seq, e.type) for e in replay] == [(3, "run_complete")]
    assert store.events_after(0, types=[]) == []
    assert store.events_after(4) == []
    with pytest.raises(TypeError):
        store.events_after(0, types="run_complete")


def test_trim_drops_skipped_run_completes_before_real_events(db_path: Path) -> None:
    with StateStore.open(db_path) as s:
        s.append_event("run_started", {"run_id": "r1"}, run_id="r1")  # seq 1
        s.append_event("run_complete", {"run_id": "r1", "status": "success"}, run_id="r1")
        for i in range(6):  # seqs 3..8: an agent skipped while the app was away
            s.append_event("run_complete", {"run_id": f"s{i}", "status": "skipped"})
        s.append_event("run_complete", {"run_id": "r2", "status": "error"})  # seq 9
        assert s.trim_events(5) == 4  # four skips go, the real runs stay
        assert [e.seq for e in s.events_after(0)] == [1, 2, 7, 8, 9]
        assert s.trim_events(2) == 3  # the two skips left, then the oldest real event
        assert [e.seq for e in s.events_after(0)] == [2, 9]
        assert s.trim_events(2) == 0


def test_trim_then_reopen_never_reuses_a_seq(db_path: Path) -> None:
    with StateStore.open(db_path) as s:
        for i in range(10):
            s.append_event("run_complete", {"i": i})
        assert s.trim_events(3) == 7
        assert [e.seq for e in s.events_after(0)] == [8, 9, 10]
        assert s.trim_events(3) == 0
        assert s.trim_events(0) == 3
        assert s.events_after(0) == []
        assert s.last_seq() == 10
        with pytest.raises(ValueError):
            s.trim_events(-1)
    with StateStore.open(db_path) as s:
        assert s.last_seq() == 10
        assert s.append_event("run_started", {}) == 11
        assert [e.seq for e in s.events_after(0)] == [11]


def test_event_seq_is_reserved_meta(store: StateStore) -> None:
    with pytest.raises(ValueError, match="event_seq"):
        store.set_meta("event_seq", "0")
    store.append_event("x", {})
    assert store.get_meta("event_seq") == "1"


def test_concurrent_appends_from_threads_get_unique_contiguous_seqs(store: StateStore) -> None:
    seqs: list[int] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(50):
            seq = store.append_event("run_progress", {"done": 1})
            with lock:
                seqs.append(seq)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seqs) == list(range(1, 401))
    assert store.last_seq() == 400


# ---------------------------------------------------------------- file index


def test_file_index_bulk_100k(store: StateStore) -> None:
    recs = [
        FileRecord(f"/root/d{i % 100}/f{i}.txt", i, 1_700_000_000_000_000_000 + i, f"{i:064x}")
        for i in range(100_000)
    ]
    store.record_files("a1", recs)
    index = store.file_index("a1")
    assert len(index) == 100_000
    assert index == {r.path: r for r in recs}
    assert store.file_index("a2") == {}


def test_file_index_update_forget_clear(store: StateStore) -> None:
    a = FileRecord("/r/a.md", 1, 10, "a" * 64)
    b = FileRecord("/r/b.md", 2, 20, "b" * 64)
    store.record_files("a1", [a, b])
    store.record_file("a2", a)
    a2 = FileRecord("/r/a.md", 5, 50, "c" * 64)
    store.record_file("a1", a2)
    assert store.file_index("a1") == {a.path: a2, b.path: b}
    store.forget_files("a1", [b.path, "/r/never.md"])
    assert store.file_index("a1") == {a.path: a2}
    with pytest.raises(TypeError):
        store.forget_files("a1", a.path)
    store.clear_agent_files("a1")
    assert store.file_index("a1") == {}
    assert store.file_index("a2") == {a.path: a}  # other agents untouched


def test_bulk_record_is_all_or_nothing(store: StateStore) -> None:
    good = FileRecord("/r/ok.txt", 1, 1, "0" * 64)
    bad = FileRecord("/r/bad.txt", 1, 1, None)  # type: ignore[arg-type]  # violates NOT NULL
    with pytest.raises(StateError, match="NOT NULL"):
        store.record_files("a1", [good, bad])
    assert store.file_index("a1") == {}


# ---------------------------------------------------------------- ledger, cursors, meta


def test_message_ledger(store: StateStore) -> None:
    assert not store.is_processed("gmail", "me@x", "a1", "m1")
    store.mark_processed("gmail", "me@x", "a1", "m1")
    store.mark_processed("gmail", "me@x", "a1", "m1")  # idempotent
    assert store.is_processed("gmail", "me@x", "a1", "m1")
    assert not store.is_processed("gmail", "me@x", "a2", "m1")  # per agent
    assert not store.is_processed("gmail", "other@x", "a1", "m1")  # per account
    assert not store.is_processed("outlook", "me@x", "a1", "m1")  # per provider

    for i in range(0, 1200, 3):
        store.mark_processed("gmail", "me@x", "a1", f"id{i}")
    ids = [f"id{i}" for i in range(1200)]
    assert store.processed_ids("gmail", "me@x", "a1", ids) == {f"id{i}" for i in range(0, 1200, 3)}
    assert store.processed_ids("gmail", "me@x", "a2", ids) == set()
    assert store.processed_ids("gmail", "me@x", "a1", []) == set()
    with pytest.raises(TypeError):
        store.processed_ids("gmail", "me@x", "a1", "id0")


def test_cursors_and_meta(store: StateStore) -> None:
    assert store.get_cursor("a1", "delta_link") is None
    store.set_cursor("a1", "delta_link", "https://graph/x?token=1")
    store.set_cursor("a1", "delta_link", "https://graph/x?token=2")
    store.set_cursor("a2", "delta_link", "other")
    assert store.get_cursor("a1", "delta_link") == "https://graph/x?token=2"
    store.delete_cursor("a1", "delta_link")
    assert store.get_cursor("a1", "delta_link") is None
    assert store.get_cursor("a2", "delta_link") == "other"

    assert store.get_meta("k") is None
    store.set_meta("k", "1")
    store.set_meta("k", "2")
    assert store.get_meta("k") == "2"

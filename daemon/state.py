"""The daemon's state store: one SQLite file of configuration and bookkeeping.

Rules this module keeps:

- **No user content, ever.** The store holds agent configurations, the run
  journal, run events, file fingerprints (path, size, mtime, sha256), processed
  message ids, provider cursors and a few meta values. It never holds task titles,
  note bodies, file text or e-mail bodies; callers must not put them into run
  errors, run details or event payloads either (paths and error messages are fine).
- **Small and synchronous.** Stdlib ``sqlite3``, one connection guarded by a
  ``threading.Lock`` (opened with ``check_same_thread=False``), so a call may come
  from the event loop directly (each is a short local transaction) or from
  ``asyncio.to_thread``. No asyncio here.
- **Every write is one transaction** (``BEGIN IMMEDIATE`` … ``COMMIT``): a bulk
  call either lands whole or not at all. The file runs in WAL mode with
  ``synchronous=NORMAL`` (a crash of the process loses nothing committed),
  ``foreign_keys=ON`` and a busy timeout, so a second process can read meanwhile.
- **Versioned schema.** ``PRAGMA user_version`` is the number of migrations
  applied; migrations are an ordered tuple of SQL scripts, each applied in its own
  transaction together with the version bump. A file written by a newer tether is
  refused untouched; a file that is not a SQLite database is refused with its path.
- **Time** is an aware datetime in the API (returned in UTC; a naive datetime is a
  ``ValueError``) and INTEGER microseconds since the Unix epoch in the file, so
  values round-trip exactly and sort as numbers.
- **Event seqs** start at 1 and grow by exactly one per appended event for the
  life of the file. The high-water mark lives in ``meta`` (key ``event_seq``), so
  trimming every event and reopening never hands out a seq twice.
- **Runs**: ``running`` until finished as ``success``, ``partial``, ``error`` or
  ``cancelled``; a run that never started is journaled as ``skipped``. A run counts
  as having *run* (``last_run_at``) whatever its outcome except ``skipped``: an
  ``error`` or ``cancelled`` run used its schedule slot, so the scheduler does not
  treat it as missed and retry it at once.
- **Deleting an agent** removes its configuration only. Its journal, fingerprints,
  ledger entries and cursors stay, so an agent re-added under the same id resumes
  without processing anything twice (``clear_agent_files`` forgets files on purpose).
- **Errors**: ``sqlite3`` errors are translated at this boundary into
  ``daemon.errors.StateError`` naming the file; a full disk (``SQLITE_FULL``,
  ``ENOSPC``/``EDQUOT``) is its subclass ``DiskFull``, whose message starts
  ``disk full (``. Wrong arguments (bad status, naive datetime, missing agent id)
  are ``ValueError``/``TypeError``: the caller's bug.
- **Bounded WAL**: ``wal_autocheckpoint`` every 256 pages and ``journal_size_limit``
  1 MiB, plus :meth:`StateStore.checkpoint` (``TRUNCATE``) after each run, so the
  WAL cannot fill a small disk by itself.
- **Private files**: ``state.db`` is created 0600 before SQLite opens it (SQLite
  gives ``-wal`` and ``-shm`` the mode of the database file); an existing file and
  its ``-wal``/``-shm`` are narrowed to 0600 on open.
- The low-disk warning of ``daemon status`` is ``daemon.disk`` (no SQLite needed).

Why one module past 500 lines: it is the daemon's only SQLite file (schema,
migrations and every query), so a schema change and its queries are one diff; its
tables are small parts of one store.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from agents.books import FileRecord
from daemon.errors import DiskFull, StateError

__all__ = [
    "AGENT_SOURCES",
    "FINISHED_STATUSES",
    "RUN_STATUSES",
    "SCHEMA_VERSION",
    "Event",
    "RunRecord",
    "StateStore",
]

AGENT_SOURCES: Final = frozenset({"client", "file"})
FINISHED_STATUSES: Final = frozenset({"success", "partial", "error", "cancelled"})
RUN_STATUSES: Final = FINISHED_STATUSES | {"running", "skipped"}

_EVENT_SEQ_KEY: Final = "event_seq"
_RESERVED_META: Final = frozenset({_EVENT_SEQ_KEY})
_BUSY_TIMEOUT_MS: Final = 5000
# Result codes meaning "this file is not (or no longer) a database" rather than "busy" etc.
_DAMAGED: Final = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
# Host parameters per statement, well under SQLite's limit (999 before 3.32).
_CHUNK: Final = 500
_WAL_AUTOCHECKPOINT_PAGES: Final = 256
_JOURNAL_SIZE_LIMIT: Final = 1024 * 1024
_DISK_FULL_ERRNOS: Final = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})
_PRIVATE_MODE: Final = 0o600

_V1: Final = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
INSERT INTO meta (key, value) VALUES ('event_seq', '0');

CREATE TABLE agents (
    id          TEXT PRIMARY KEY,
    source      TEXT NOT NULL CHECK (source IN ('client', 'file')),
    device_id   TEXT,
    config_json TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE runs (
    run_id           TEXT PRIMARY KEY,
    agent_id         TEXT NOT NULL,
    trigger          TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN
                         ('running', 'success', 'partial', 'error', 'cancelled', 'skipped')),
    started_at       INTEGER NOT NULL,
    finished_at      INTEGER,
    items_processed  INTEGER NOT NULL DEFAULT 0,
    items_created    INTEGER NOT NULL DEFAULT 0,
    items_updated    INTEGER NOT NULL DEFAULT 0,
    errors_json      TEXT NOT NULL DEFAULT '[]',
    usage_json       TEXT NOT NULL DEFAULT '{}',
    run_context_json TEXT,
    detail_json      TEXT
);
CREATE INDEX runs_by_agent_started ON runs (agent_id, started_at);
CREATE INDEX runs_by_agent_finished ON runs (agent_id, finished_at);
CREATE INDEX runs_running ON runs (status) WHERE status = 'running';

CREATE TABLE events (
    seq          INTEGER PRIMARY KEY,
    type         TEXT NOT NULL,
    run_id       TEXT,
    payload_json TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);

CREATE TABLE file_index (
    agent_id     TEXT NOT NULL,
    path         TEXT NOT NULL,
    size         INTEGER NOT NULL,
    mtime_ns     INTEGER NOT NULL,
    sha256       TEXT NOT NULL,
    processed_at INTEGER NOT NULL,
    PRIMARY KEY (agent_id, path)
) WITHOUT ROWID;

CREATE TABLE message_ledger (
    provider     TEXT NOT NULL,
    account      TEXT NOT NULL,
    message_id   TEXT NOT NULL,
    agent_id     TEXT NOT NULL,
    processed_at INTEGER NOT NULL,
    PRIMARY KEY (provider, account, agent_id, message_id)
) WITHOUT ROWID;

CREATE TABLE cursors (
    agent_id   TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (agent_id, key)
) WITHOUT ROWID;
"""

# Append only: never edit a released script; add the next one.
_MIGRATIONS: tuple[str, ...] = (_V1,)
SCHEMA_VERSION: Final = len(_MIGRATIONS)

_RUN_COLUMNS: Final = (
    "run_id, agent_id, trigger, status, started_at, finished_at, items_processed,"
    " items_created, items_updated, errors_json, usage_json, run_context_json, detail_json"
)

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One row of the run journal, parsed."""

    run_id: str
    agent_id: str
    trigger: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    items_processed: int
    items_created: int
    items_updated: int
    errors: tuple[str, ...]
    usage: dict[str, Any]
    run_context: dict[str, Any] | None
    detail: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Event:
    """One persisted run event; ``payload`` is what the caller appended (without seq)."""

    seq: int
    type: str
    run_id: str | None
    payload: dict[str, Any]
    created_at: datetime


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _to_us(at: datetime) -> int:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"naive datetime {at!r}: the state store takes aware datetimes")
    return (at - _EPOCH) // _MICROSECOND


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _not_a_str(values: Iterable[str], what: str) -> None:
    # A bare str is an Iterable[str] of characters: always a caller's mistake here.
    if isinstance(values, str):
        raise TypeError(f"{what} must be a collection of strings, not a single str")


def _statements(script: str) -> Iterator[str]:
    """Split a SQL script into complete statements (semicolons in strings are safe)."""
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            statement = buffer.strip()
            if statement.rstrip(";").strip():
                yield statement
            buffer = ""
    if buffer.rstrip(";").strip():
        raise ValueError(f"incomplete SQL statement in migration: {buffer.strip()[:60]!r}")


def _run_from_row(row: Sequence[Any]) -> RunRecord:
    return RunRecord(
        run_id=row[0],
        agent_id=row[1],
        trigger=row[2],
        status=row[3],
        started_at=_from_us(row[4]),
        finished_at=None if row[5] is None else _from_us(row[5]),
        items_processed=row[6],
        items_created=row[7],
        items_updated=row[8],
        errors=tuple(json.loads(row[9])),
        usage=json.loads(row[10]),
        run_context=None if row[11] is None else json.loads(row[11]),
        detail=None if row[12] is None else json.loads(row[12]),
    )


def _newer_error(path: Path, found: int) -> StateError:
    return StateError(
        f"state store {path} was written by a newer tether "
        f"(schema {found} > {SCHEMA_VERSION}); upgrade tether to use it"
    )


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code is not None and code & 0xFF == sqlite3.SQLITE_FULL
    return isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS


def _disk_full(path: Path, exc: BaseException) -> DiskFull:
    return DiskFull(
        f"disk full (state store {path}: {exc}); free space on the disk of {path.parent}"
    )


def _private(path: Path) -> None:
    """Create ``path`` 0600 if missing; narrow it (and its -wal/-shm) to 0600 if not."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), _PRIVATE_MODE)
    try:
        if os.name == "posix":
            os.fchmod(fd, _PRIVATE_MODE)
    finally:
        os.close(fd)
    if os.name == "posix":
        for suffix in ("-wal", "-shm", "-journal"):
            try:
                os.chmod(f"{path}{suffix}", _PRIVATE_MODE)
            except FileNotFoundError:
                pass


def _user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _event_seq(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (_EVENT_SEQ_KEY,)).fetchone()
    return int(row[0])


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Apply the missing migrations, one transaction each (safe against a racing opener)."""
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = _user_version(conn)
            if version >= SCHEMA_VERSION:
                conn.execute("ROLLBACK")
                if version > SCHEMA_VERSION:
                    raise _newer_error(path, version)
                return
            for statement in _statements(_MIGRATIONS[version]):
                conn.execute(statement)
            # PRAGMA takes no parameters; the value is our own integer.
            conn.execute(f"PRAGMA user_version = {version + 1:d}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


class StateStore:
    """The daemon's SQLite state: agents, run journal, events, fingerprints, ledger, cursors.

    Open with :meth:`open`; every method is a short synchronous transaction.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path, clock: Callable[[], datetime]) -> None:
        self._conn: sqlite3.Connection | None = conn
        self._path = path
        self._clock = clock
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def open(cls, path: Path, *, clock: Callable[[], datetime] = _utc_now) -> StateStore:
        """Open (creating if needed) the store at ``path`` and bring its schema up to date.

        ``clock`` stamps bookkeeping times (``updated_at``, ``processed_at``, event
        ``created_at``); tests inject one.
        """
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"state store {path}: cannot create its directory: {exc}") from exc
        try:
            _private(path)
        except OSError as exc:
            if _is_disk_full(exc):
                raise _disk_full(path, exc) from exc
            raise StateError(f"state store {path} cannot be opened: {exc}") from exc
        try:
            conn = sqlite3.connect(
                path,
                timeout=_BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise StateError(f"state store {path} cannot be opened: {exc}") from exc
        try:
            # Read the version before changing anything: a newer or foreign file stays untouched.
            version = _user_version(conn)
            if version > SCHEMA_VERSION:
                raise _newer_error(path, version)
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS:d}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(f"PRAGMA wal_autocheckpoint = {_WAL_AUTOCHECKPOINT_PAGES:d}")
            conn.execute(f"PRAGMA journal_size_limit = {_JOURNAL_SIZE_LIMIT:d}")
            conn.execute("PRAGMA foreign_keys = ON")
            _migrate(conn, path)
        except sqlite3.Error as exc:
            conn.close()
            if getattr(exc, "sqlite_errorcode", None) in _DAMAGED:
                raise StateError(
                    f"state store {path} is damaged or not a SQLite file ({exc}); "
                    "move it aside and tether will start a fresh one"
                ) from exc
            if _is_disk_full(exc):
                raise _disk_full(path, exc) from exc
            raise StateError(f"state store {path} cannot be opened: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return cls(conn, path, clock)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def closed(self) -> bool:
        return self._conn is None

    def close(self) -> None:
        """Close the connection (checkpointing the WAL). Idempotent."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is None:
                return
            try:
                conn.execute("PRAGMA optimize")
            except sqlite3.Error:
                pass  # an optimisation hint; closing matters more
            finally:
                conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else "open"
        return f"<StateStore {self._path} {state}>"

    # ------------------------------------------------------------------ plumbing

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StateError(f"state store {self._path} is closed")
        return self._conn

    def _translate(self, exc: sqlite3.Error | OSError) -> StateError:
        if _is_disk_full(exc):
            return _disk_full(self._path, exc)
        return StateError(f"state store {self._path}: {exc}")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._connection()
            try:
                yield conn
            except sqlite3.Error as exc:
                raise self._translate(exc) from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                with conn:  # COMMIT on success, ROLLBACK on any exception
                    yield conn
            except (sqlite3.Error, OSError) as exc:
                if conn.in_transaction:
                    try:
                        conn.rollback()
                    except sqlite3.Error:
                        pass  # the write's own error says more
                raise self._translate(exc) from exc

    def checkpoint(self) -> None:
        """Copy the WAL into the database and truncate it (after each run); a busy
        reader or a full disk only postpones it."""
        with self._lock:
            conn = self._conn
            if conn is None:
                return
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.Error:
                pass

    def _now_us(self) -> int:
        return _to_us(self._clock())

    # ------------------------------------------------------------------ agents

    def put_agents(
        self, configs: Sequence[Mapping[str, Any]], *, source: str, replace: bool
    ) -> None:
        """Upsert agent configurations from ``source`` ('client' or 'file').

        ``replace=True`` also deletes that source's agents missing from ``configs``
        (other sources are untouched). An id belongs to one source at a time: the
        latest put wins.
        """
        if source not in AGENT_SOURCES:
            raise ValueError(
                f"unknown agent source {source!r}; expected one of {sorted(AGENT_SOURCES)}"
            )
        rows: list[tuple[str, str, str | None, str]] = []
        seen: set[str] = set()
        for config in configs:
            agent_id = config.get("id")
            if not isinstance(agent_id, str) or not agent_id:
                raise ValueError(f"agent config without a string 'id': keys {sorted(config)}")
            if agent_id in seen:
                raise ValueError(f"agent id {agent_id!r} appears twice")
            seen.add(agent_id)
            device_id = config.get("device_id")
            if device_id is not None and not isinstance(device_id, str):
                raise ValueError(f"agent {agent_id!r}: device_id must be a string")
            rows.append((agent_id, source, device_id, _dump(dict(config))))
        now = self._now_us()
        with self._write() as conn:
            if replace:
                existing = {
                    row[0]
                    for row in conn.execute("SELECT id FROM agents WHERE source = ?", (source,))
                }
                conn.executemany(
                    "DELETE FROM agents WHERE id = ?", [(i,) for i in sorted(existing - seen)]
                )
            conn.executemany(
                "INSERT INTO agents (id, source, device_id, config_json, updated_at)"
                " VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET source = excluded.source,"
                " device_id = excluded.device_id, config_json = excluded.config_json,"
                " updated_at = excluded.updated_at",
                [(*row, now) for row in rows],
            )

    def agents(self) -> list[dict[str, Any]]:
        """Every known agent's configuration, ordered by id."""
        with self._read() as conn:
            rows = conn.execute("SELECT config_json FROM agents ORDER BY id").fetchall()
        return [json.loads(row[0]) for row in rows]

    def agent(self, agent_id: str) -> dict[str, Any] | None:
        with self._read() as conn:
            row = conn.execute(
                "SELECT config_json FROM agents WHERE id = ?", (agent_id,)
            ).fetchone()
        return None if row is None else json.loads(row[0])

    def delete_agent(self, agent_id: str) -> bool:
        """Forget an agent's configuration (its bookkeeping stays). True if it existed."""
        with self._write() as conn:
            return conn.execute("DELETE FROM agents WHERE id = ?", (agent_id,)).rowcount > 0

    # ------------------------------------------------------------------ run journal

    def start_run(
        self,
        run_id: str,
        agent_id: str,
        trigger: str,
        started_at: datetime,
        run_context: Mapping[str, Any] | None = None,
    ) -> RunRecord:
        """Journal a run as ``running``. A run id used before is a StateError."""
        context = None if run_context is None else dict(run_context)
        context_json = None if context is None else _dump(context)
        started_us = _to_us(started_at)
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone():
                raise StateError(f"state store {self._path}: run {run_id!r} already exists")
            conn.execute(
                "INSERT INTO runs (run_id, agent_id, trigger, status, started_at,"
                " run_context_json) VALUES (?, ?, ?, 'running', ?, ?)",
                (run_id, agent_id, trigger, started_us, context_json),
            )
        return RunRecord(
            run_id=run_id,
            agent_id=agent_id,
            trigger=trigger,
            status="running",
            started_at=_from_us(started_us),
            finished_at=None,
            items_processed=0,
            items_created=0,
            items_updated=0,
            errors=(),
            usage={},
            run_context=context,
            detail=None,
        )

    def finish_run(
        self,
        run_id: str,
        status: str,
        finished_at: datetime,
        *,
        items_processed: int,
        items_created: int,
        items_updated: int,
        errors: list[str],
        usage: dict[str, Any],
        detail: dict[str, Any] | None = None,
    ) -> RunRecord:
        """Close a ``running`` run with its result; returns the journaled record.

        Finishing an unknown run or one that is no longer running is a StateError.
        """
        if status not in FINISHED_STATUSES:
            raise ValueError(
                f"run status {status!r} cannot finish a run; expected one of "
                f"{sorted(FINISHED_STATUSES)}"
            )
        values = (
            status,
            _to_us(finished_at),
            items_processed,
            items_created,
            items_updated,
            _dump(list(errors)),
            _dump(usage),
            None if detail is None else _dump(detail),
        )
        with self._write() as conn:
            row = conn.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise StateError(f"state store {self._path}: no run {run_id!r} to finish")
            if row[0] != "running":
                raise StateError(
                    f"state store {self._path}: run {run_id!r} already finished ({row[0]})"
                )
            conn.execute(
                "UPDATE runs SET status = ?, finished_at = ?, items_processed = ?,"
                " items_created = ?, items_updated = ?, errors_json = ?, usage_json = ?,"
                " detail_json = ? WHERE run_id = ?",
                (*values, run_id),
            )
            record = conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
        return _run_from_row(record)

    def update_run_counts(
        self, run_id: str, *, items_processed: int, items_created: int, items_updated: int
    ) -> bool:
        """Journal a ``running`` run's counts so far (a killed daemon leaves what was
        confirmed). False when the run is unknown or no longer running."""
        with self._write() as conn:
            changed = conn.execute(
                "UPDATE runs SET items_processed = ?, items_created = ?, items_updated = ?"
                " WHERE run_id = ? AND status = 'running'",
                (items_processed, items_created, items_updated, run_id),
            ).rowcount
        return changed > 0

    def record_skipped(
        self, run_id: str, agent_id: str, trigger: str, at: datetime, reason: str
    ) -> RunRecord:
        """Journal a run that never started (status ``skipped``; ``reason`` is its one error).

        Consecutive skips coalesce: when the agent's latest run is a ``skipped`` one with
        the same trigger, that row is extended instead (``finished_at`` = ``at``;
        ``detail`` = ``{"skipped_fires": n, "last_reason": ...}``) and returned, with its
        own run id. A per-minute agent whose app stays closed for a day is one row, not
        1,440. Compare the returned ``run_id`` with ``run_id`` to tell which happened.
        """
        at_us = _to_us(at)
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone():
                raise StateError(f"state store {self._path}: run {run_id!r} already exists")
            latest = conn.execute(
                "SELECT run_id, status, trigger, detail_json FROM runs WHERE agent_id = ?"
                " ORDER BY started_at DESC, rowid DESC LIMIT 1",
                (agent_id,),
            ).fetchone()
            if latest is not None and latest[1] == "skipped" and latest[2] == trigger:
                run_id = latest[0]
                detail = json.loads(latest[3]) if latest[3] else {}
                fires = int(detail.get("skipped_fires", 1)) + 1
                conn.execute(
                    "UPDATE runs SET finished_at = ?, detail_json = ? WHERE run_id = ?",
                    (at_us, _dump({"skipped_fires": fires, "last_reason": reason}), run_id),
                )
            else:
                conn.execute(
                    "INSERT INTO runs (run_id, agent_id, trigger, status, started_at, finished_at,"
                    " errors_json) VALUES (?, ?, ?, 'skipped', ?, ?, ?)",
                    (run_id, agent_id, trigger, at_us, at_us, _dump([reason])),
                )
            record = conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
        return _run_from_row(record)

    def run(self, run_id: str) -> RunRecord | None:
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
        return None if row is None else _run_from_row(row)

    def runs(self, agent_id: str | None = None, limit: int = 50) -> list[RunRecord]:
        """The most recent runs (of one agent, or all), newest first by start time."""
        if agent_id is None:
            sql = f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY started_at DESC, rowid DESC LIMIT ?"
            params: tuple[Any, ...] = (limit,)
        else:
            sql = (
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE agent_id = ?"
                " ORDER BY started_at DESC, rowid DESC LIMIT ?"
            )
            params = (agent_id, limit)
        with self._read() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [_run_from_row(row) for row in rows]

    def running_runs(self) -> list[RunRecord]:
        """Runs journaled as ``running``, oldest first."""
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE status = 'running'"
                " ORDER BY started_at, rowid"
            ).fetchall()
        return [_run_from_row(row) for row in rows]

    def close_orphaned_runs(self, message: str, at: datetime) -> list[RunRecord]:
        """Turn every ``running`` run into ``error`` (``message`` appended to its errors).

        Called at start-up: a run still ``running`` then belonged to a process that died.
        """
        at_us = _to_us(at)
        with self._write() as conn:
            orphans = conn.execute(
                "SELECT run_id, errors_json FROM runs WHERE status = 'running'"
                " ORDER BY started_at, rowid"
            ).fetchall()
            conn.executemany(
                "UPDATE runs SET status = 'error', finished_at = ?, errors_json = ?"
                " WHERE run_id = ?",
                [(at_us, _dump([*json.loads(errs), message]), rid) for rid, errs in orphans],
            )
            records = [
                conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (rid,)).fetchone()
                for rid, _ in orphans
            ]
        return [_run_from_row(row) for row in records]

    def last_finished(self, agent_id: str, *, include_skipped: bool = False) -> RunRecord | None:
        """The agent's run that finished last (``skipped`` ones only if asked)."""
        excluded = ("running",) if include_skipped else ("running", "skipped")
        marks = ", ".join("?" * len(excluded))
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE agent_id = ? AND status NOT IN ({marks})"
                " ORDER BY finished_at DESC, rowid DESC LIMIT 1",
                (agent_id, *excluded),
            ).fetchone()
        return None if row is None else _run_from_row(row)

    def last_run_at(self, agent_id: str) -> datetime | None:
        """When the agent's latest run that actually ran finished, whatever its outcome.

        ``success``, ``partial``, ``error`` and ``cancelled`` count (the schedule slot
        was used); ``skipped`` and still-``running`` runs do not.
        """
        with self._read() as conn:
            row = conn.execute(
                "SELECT MAX(finished_at) FROM runs WHERE agent_id = ?"
                " AND status IN ('success', 'partial', 'error', 'cancelled')",
                (agent_id,),
            ).fetchone()
        return None if row[0] is None else _from_us(row[0])

    # ------------------------------------------------------------------ events

    def append_event(self, type: str, payload: Mapping[str, Any], run_id: str | None = None) -> int:
        """Persist a run event; returns its seq (previous high-water mark + 1)."""
        payload_json = _dump(dict(payload))
        now = self._now_us()
        with self._write() as conn:
            seq = _event_seq(conn) + 1
            conn.execute(
                "INSERT INTO events (seq, type, run_id, payload_json, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (seq, type, run_id, payload_json, now),
            )
            conn.execute("UPDATE meta SET value = ? WHERE key = ?", (str(seq), _EVENT_SEQ_KEY))
        return seq

    def events_after(self, seq: int, types: Collection[str] | None = None) -> list[Event]:
        """Kept events with a seq above ``seq``, in seq order, optionally of some types only."""
        if types is None:
            sql = "SELECT seq, type, run_id, payload_json, created_at FROM events WHERE seq > ?"
            params: tuple[Any, ...] = (seq,)
        else:
            _not_a_str(types, "types")
            wanted = sorted(set(types))
            if not wanted:
                return []
            marks = ", ".join("?" * len(wanted))
            sql = (
                "SELECT seq, type, run_id, payload_json, created_at FROM events"
                f" WHERE seq > ? AND type IN ({marks})"
            )
            params = (seq, *wanted)
        with self._read() as conn:
            rows = conn.execute(sql + " ORDER BY seq", params).fetchall()
        return [
            Event(seq=s, type=t, run_id=r, payload=json.loads(p), created_at=_from_us(c))
            for s, t, r, p, c in rows
        ]

    def last_seq(self) -> int:
        """The highest seq ever handed out (0 before the first event), trimmed or not."""
        with self._read() as conn:
            return _event_seq(conn)

    def trim_events(self, keep: int) -> int:
        """Keep ``keep`` events; returns how many were deleted. The oldest ``skipped``
        run_completes go first, then the oldest of the rest: an agent that fires
        every minute while the app is away must not push real runs out of replay."""
        if keep < 0:
            raise ValueError(f"keep must be >= 0, not {keep}")
        with self._write() as conn:
            (total,) = conn.execute("SELECT count(*) FROM events").fetchone()
            if total <= keep:
                return 0
            skips = conn.execute(
                "DELETE FROM events WHERE seq IN (SELECT seq FROM events"
                " WHERE type = 'run_complete'"
                " AND json_extract(payload_json, '$.status') = 'skipped'"
                " ORDER BY seq LIMIT ?)",
                (total - keep,),
            ).rowcount
            rest: int = conn.execute(
                "DELETE FROM events WHERE seq <="
                " (SELECT seq FROM events ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                (keep,),
            ).rowcount
            return skips + rest

    # ------------------------------------------------------------------ file index

    def file_index(self, agent_id: str) -> dict[str, FileRecord]:
        """Every fingerprint recorded for the agent, by path (one query)."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT path, size, mtime_ns, sha256 FROM file_index WHERE agent_id = ?",
                (agent_id,),
            ).fetchall()
        return {row[0]: FileRecord(*row) for row in rows}

    def record_file(self, agent_id: str, rec: FileRecord) -> None:
        """Record (or replace) one processed file's fingerprint."""
        self.record_files(agent_id, (rec,))

    def record_files(self, agent_id: str, recs: Iterable[FileRecord]) -> None:
        """Record (or replace) many fingerprints in one transaction."""
        now = self._now_us()
        rows = [(agent_id, r.path, r.size, r.mtime_ns, r.sha256, now) for r in recs]
        with self._write() as conn:
            conn.executemany(
                "INSERT INTO file_index (agent_id, path, size, mtime_ns, sha256, processed_at)"
                " VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (agent_id, path) DO UPDATE SET size = excluded.size,"
                " mtime_ns = excluded.mtime_ns, sha256 = excluded.sha256,"
                " processed_at = excluded.processed_at",
                rows,
            )

    def forget_files(self, agent_id: str, paths: Iterable[str]) -> None:
        """Drop the fingerprints of these paths (e.g. files that disappeared)."""
        _not_a_str(paths, "paths")
        rows = [(agent_id, path) for path in paths]
        with self._write() as conn:
            conn.executemany("DELETE FROM file_index WHERE agent_id = ? AND path = ?", rows)

    def clear_agent_files(self, agent_id: str) -> None:
        """Forget every fingerprint of the agent: its next run re-processes everything."""
        with self._write() as conn:
            conn.execute("DELETE FROM file_index WHERE agent_id = ?", (agent_id,))

    # ------------------------------------------------------------------ message ledger

    def is_processed(self, provider: str, account: str, agent_id: str, message_id: str) -> bool:
        with self._read() as conn:
            row = conn.execute(
                "SELECT 1 FROM message_ledger WHERE provider = ? AND account = ?"
                " AND agent_id = ? AND message_id = ?",
                (provider, account, agent_id, message_id),
            ).fetchone()
        return row is not None

    def mark_processed(self, provider: str, account: str, agent_id: str, message_id: str) -> None:
        """Remember that the agent processed this message (idempotent; first time kept)."""
        now = self._now_us()
        with self._write() as conn:
            conn.execute(
                "INSERT INTO message_ledger (provider, account, message_id, agent_id,"
                " processed_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (provider, account, message_id, agent_id, now),
            )

    def processed_ids(
        self, provider: str, account: str, agent_id: str, ids: Iterable[str]
    ) -> set[str]:
        """Which of ``ids`` the agent already processed."""
        _not_a_str(ids, "ids")
        wanted = list(dict.fromkeys(ids))
        found: set[str] = set()
        with self._read() as conn:
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start : start + _CHUNK]
                marks = ", ".join("?" * len(chunk))
                found.update(
                    row[0]
                    for row in conn.execute(
                        "SELECT message_id FROM message_ledger WHERE provider = ?"
                        f" AND account = ? AND agent_id = ? AND message_id IN ({marks})",
                        (provider, account, agent_id, *chunk),
                    )
                )
        return found

    # ------------------------------------------------------------------ cursors

    def get_cursor(self, agent_id: str, key: str) -> str | None:
        with self._read() as conn:
            row = conn.execute(
                "SELECT value FROM cursors WHERE agent_id = ? AND key = ?", (agent_id, key)
            ).fetchone()
        return None if row is None else str(row[0])

    def set_cursor(self, agent_id: str, key: str, value: str) -> None:
        now = self._now_us()
        with self._write() as conn:
            conn.execute(
                "INSERT INTO cursors (agent_id, key, value, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (agent_id, key) DO UPDATE SET value = excluded.value,"
                " updated_at = excluded.updated_at",
                (agent_id, key, value, now),
            )

    def delete_cursor(self, agent_id: str, key: str) -> None:
        """Forget a cursor (an expired history id or delta link: start over)."""
        with self._write() as conn:
            conn.execute("DELETE FROM cursors WHERE agent_id = ? AND key = ?", (agent_id, key))

    # ------------------------------------------------------------------ meta

    def get_meta(self, key: str) -> str | None:
        with self._read() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        if key in _RESERVED_META:
            raise ValueError(f"meta key {key!r} is kept by the state store itself")
        with self._write() as conn:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

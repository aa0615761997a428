"""The reference client's storage: storage.md's contract over a real SQLite file.

``SqliteStore.handle(action, table, ...)`` answers one ``tool_call`` with exactly
storage.md's result shape, or raises ``StorageError`` (``bad_request`` for anything
the caller got wrong, ``not_found`` for an update/delete of a missing id, ``conflict``
for an idempotency key whose row has since been deleted, ``internal`` for SQLite
failures). Rules:

- The schema is created when missing (columns of ``protocol.storage.TABLES``; columns
  a table lacks are added). WAL journal; foreign keys are not enforced, so tests can
  insert a task whose project does not exist.
- The store generates ``id`` (uuid4 hex), ``createdAt`` and, for notes, ``updatedAt``
  (now in ms from the injectable ``clock``; bumped on every update). Defaults: tasks
  ``status=todo``, ``priority=medium``; projects ``status=active``;
  ``isAiSuggested=0``, ``isApproved=1``.
- Rows are plain dicts with every column of the table (``None`` when unset).
- ``select``: filters per storage.md (validated by ``check_filters``); ``limit`` is
  ``None`` (no limit) or an int >= 0. Order: ``createdAt`` then insertion, unless
  tasks ``orderBy`` says ``dueDate`` (nulls last) or ``priority`` (high, medium, low).
  ``search`` is a substring match of title or description; LIKE wildcards in it are
  literal; case folding is SQLite's LIKE (ASCII letters only).
- ``idempotency_key`` on insert: the first insert records the key next to its row in
  the same transaction; a later insert with that key inserts nothing and returns the
  row as it is now. A key already used for another table is ``bad_request``.
- Vectors live in ``_vectors``; ``vector_search`` ranks by cosine similarity computed
  in Python (fine for a reference client) and accepts an optional ``projectId`` filter.

It sits in the rpc benchmark path: one connection, SQL built once per table (sqlite3
caches the prepared statements by text), no schema reads per call. ``handle`` holds a
lock, so the store may be shared by threads.

Snapshots: between ``hold_snapshot()`` and ``release_snapshot()`` the reads share one
read transaction (SQLite otherwise takes and drops its locks around every read; the
reference client holds a snapshot for one event-loop pass, so a burst of gets pays
that once). A write first ends the snapshot, so it commits at once and later reads
see it; ``rows``/``count`` end it too, so tests always read the latest data.

One module although it is over 500 lines: it is one concept, storage.md over one
SQLite connection, each action's SQL next to the checks of its arguments.
"""

from __future__ import annotations

import math
import operator
import os
import sqlite3
import threading
import time
import uuid
from array import array
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from protocol.errors import ErrorCode, StorageError
from protocol.storage import (
    TABLES,
    Action,
    OrderBy,
    Priority,
    ProjectStatus,
    Table,
    TableSpec,
    TaskStatus,
    check_filters,
    check_insert,
    check_table,
    check_updates,
)

__all__ = ["SqliteStore"]

Row = dict[str, Any]

_INTEGER_COLUMNS = frozenset({"isAiSuggested", "isApproved"})
_INDEXES: tuple[tuple[Table, str], ...] = (
    (Table.TASKS, "projectId"),
    (Table.TASKS, "status"),
    (Table.PROJECTS, "clientId"),
    (Table.PROJECTS, "status"),
    (Table.TIMELINES, "projectId"),
    (Table.NOTES, "projectId"),
    (Table.TASK_COMMENTS, "taskId"),
    (Table.CLIENTS, "parentId"),
)
_PRIORITY_RANK = " ".join(f"WHEN '{p}' THEN {i}" for i, p in enumerate(Priority))
_ORDER_SQL = {
    None: ' ORDER BY "createdAt", rowid',
    OrderBy.CREATED_AT: ' ORDER BY "createdAt", rowid',
    OrderBy.DUE_DATE: ' ORDER BY "dueDate" IS NULL, "dueDate", "createdAt", rowid',
    OrderBy.PRIORITY: f' ORDER BY CASE "priority" {_PRIORITY_RANK} ELSE {len(Priority)} END,'
    ' "createdAt", rowid',
}
_VECTOR_FILTERS = ("projectId",)


def _q(name: str) -> str:
    return f'"{name}"'


def _bad(message: str) -> StorageError:
    return StorageError(message, code=ErrorCode.BAD_REQUEST)


def _db_error(e: sqlite3.Error) -> StorageError:
    """A SQLite failure as the store reports it."""
    if isinstance(e, sqlite3.IntegrityError):
        return _bad(f"rejected by the database: {e}")
    return StorageError(f"database error: {e}", code=ErrorCode.INTERNAL)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _TableSql:
    """The SQL of one table, built once."""

    def __init__(self, table: Table, spec: TableSpec) -> None:
        self.table = table
        self.spec = spec
        self.columns = spec.columns
        cols = ", ".join(_q(c) for c in spec.columns)
        self.cols = cols
        name = _q(table)
        self.name = name
        self.select = f"SELECT {cols} FROM {name}"
        self.get = f"{self.select} WHERE id = ?"
        marks = ", ".join("?" for _ in spec.columns)
        self.insert = f"INSERT INTO {name} ({cols}) VALUES ({marks})"
        self.delete = f"DELETE FROM {name} WHERE id = ?"
        self.count = f"SELECT count(*) FROM {name}"
        self.bumps_updated_at = "updatedAt" in spec.columns
        defaults: dict[str, Any] = {}
        if spec.ai_flags:
            defaults.update(isAiSuggested=0, isApproved=1)
        if table is Table.TASKS:
            defaults.update(status=str(TaskStatus.TODO), priority=str(Priority.MEDIUM))
        elif table is Table.PROJECTS:
            defaults.update(status=str(ProjectStatus.ACTIVE))
        self.defaults = defaults

    def create(self) -> str:
        defs = []
        for c in self.columns:
            if c == "id":
                defs.append('"id" TEXT PRIMARY KEY NOT NULL')
            elif c in self.spec.timestamps or c in _INTEGER_COLUMNS:
                defs.append(f"{_q(c)} INTEGER")
            else:
                defs.append(f"{_q(c)} TEXT")
        return f"CREATE TABLE IF NOT EXISTS {self.name} ({', '.join(defs)})"

    def update(self, columns: Iterable[str]) -> str:
        sets = ", ".join(f"{_q(c)} = ?" for c in columns)
        return f"UPDATE {self.name} SET {sets} WHERE id = ? RETURNING {self.cols}"


_SQL: dict[Table, _TableSql] = {t: _TableSql(t, spec) for t, spec in TABLES.items()}
# By plain name, for the hot path (a StrEnum member hashes and compares as its value).
_SQL_BY_NAME: dict[str, _TableSql] = {t.value: sql for t, sql in _SQL.items()}
_ACTIONS: dict[str, Action] = {a.value: a for a in Action}


def _action_of(action: Any) -> Action:
    """``action`` as an ``Action``, or ``bad_request`` naming the allowed ones.

    Hot path: a dict lookup by the plain string, much cheaper than ``Action(action)``,
    which is left for what the lookup does not know (and for its error)."""
    try:
        return _ACTIONS[action]
    except (KeyError, TypeError):
        pass
    try:
        return Action(action)
    except ValueError:
        allowed = ", ".join(Action)
        raise _bad(f"unknown action {action!r}; allowed: {allowed}") from None


def _table_sql(table: Any) -> _TableSql:
    """The SQL of ``table``, or ``bad_request`` from ``check_table``.

    Hot path: a dict lookup by the plain string before ``check_table``'s enum."""
    try:
        return _SQL_BY_NAME[table]
    except (KeyError, TypeError):
        return _SQL[check_table(table)]


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _check_limit(limit: Any) -> int:
    """``limit`` as SQLite wants it: -1 means no limit."""
    if limit is None:
        return -1
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise _bad(f"limit must be an integer >= 0 or null, got {limit!r}")
    if limit < 0:
        raise _bad(f"limit must be >= 0, got {limit}")
    return limit


def _check_id(table: str, data: Any) -> str:
    if not isinstance(data, dict):
        raise _bad(f"data for {table} must be an object with an id, got {data!r}")
    row_id = data.get("id")
    if not isinstance(row_id, str) or not row_id:
        raise _bad(f"data.id for {table} must be a non-empty string, got {row_id!r}")
    return row_id


def _check_vector(vector: Any) -> list[float]:
    if not isinstance(vector, list) or not vector:
        raise _bad("vector must be a non-empty list of numbers")
    for x in vector:
        if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
            raise _bad(f"vector must hold finite numbers, got {x!r}")
    return [float(x) for x in vector]


def _norm(v: Iterable[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


class SqliteStore:
    """storage.md over one SQLite file; see the module docstring for the rules."""

    def __init__(self, path: str | os.PathLike[str], *, clock: Callable[[], int] = _now_ms) -> None:
        """Open (creating if missing) the database at ``path``; ``clock`` gives now in ms."""
        self.path = os.fspath(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._hold = False  # hold_snapshot() was called
        self._snapshot = False  # a read transaction of ours is open
        # isolation_level=None: autocommit; multi-statement writes use explicit BEGIN.
        db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, cached_statements=256
        )
        try:
            self._create_schema(db)
        except sqlite3.Error:
            db.close()
            raise
        self._db = db

    # --- lifecycle ---------------------------------------------------------------------

    @staticmethod
    def _create_schema(db: sqlite3.Connection) -> None:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=OFF")
        db.execute("BEGIN IMMEDIATE")
        try:
            for sql in _SQL.values():
                db.execute(sql.create())
                # A database made by an older schema gets the columns it lacks.
                have = {r[1] for r in db.execute(f"PRAGMA table_info({sql.name})")}
                for c in sql.columns:
                    if c not in have:
                        kind = (
                            "INTEGER"
                            if c in sql.spec.timestamps or c in _INTEGER_COLUMNS
                            else "TEXT"
                        )
                        db.execute(f"ALTER TABLE {sql.name} ADD COLUMN {_q(c)} {kind}")
            for table, column in _INDEXES:
                index = _q(f"ix_{table}_{column}")
                db.execute(f"CREATE INDEX IF NOT EXISTS {index} ON {_q(table)} ({_q(column)})")
            db.execute(
                "CREATE TABLE IF NOT EXISTS _idempotency ("
                "key TEXT PRIMARY KEY NOT NULL, tbl TEXT NOT NULL, rowId TEXT NOT NULL)"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS _vectors (id TEXT PRIMARY KEY NOT NULL,"
                ' "projectId" TEXT, content TEXT NOT NULL, dim INTEGER NOT NULL,'
                " norm REAL NOT NULL, vector BLOB NOT NULL)"
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Close the database; idempotent."""
        with self._lock:
            self._hold = self._snapshot = False
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- snapshot reads (hot path) -----------------------------------------------------
    # Outside a transaction SQLite takes and drops its locks around every read. The
    # reference client answers a burst of tool calls (one event-loop pass) between
    # hold_snapshot() and release_snapshot(), so the burst's reads share one read
    # transaction and pay that once. _conn() and _get() open it at the first read;
    # a write (or rows/count) ends it first, so it commits at once.

    def hold_snapshot(self) -> None:
        """Let the reads that follow share one read transaction (see the module doc)."""
        self._hold = True

    def release_snapshot(self) -> None:
        """End ``hold_snapshot``; idempotent."""
        with self._lock:
            self._hold = False
            if self._db is not None:
                self._end_snapshot(self._db)

    def _begin_snapshot(self, db: sqlite3.Connection) -> None:
        db.execute("BEGIN")  # deferred: the next read starts the read transaction
        self._snapshot = True

    def _end_snapshot(self, db: sqlite3.Connection) -> None:
        if self._snapshot:
            self._snapshot = False
            try:
                db.execute("COMMIT")  # a read transaction: nothing to write
            except sqlite3.Error:
                if db.in_transaction:
                    db.execute("ROLLBACK")

    @contextmanager
    def _conn(self, *, latest: bool = False) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock. ``latest``: for writes and reads that must
        not come from a held snapshot (ends it first)."""
        with self._lock:
            db = self._db
            if db is None:
                raise StorageError("the store is closed", code=ErrorCode.INTERNAL)
            try:
                if latest:
                    self._end_snapshot(db)
                elif self._hold and not self._snapshot:
                    self._begin_snapshot(db)
                yield db
            except sqlite3.Error as e:
                raise _db_error(e) from e

    @contextmanager
    def _transaction(self, db: sqlite3.Connection) -> Iterator[None]:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # --- the one entry point ------------------------------------------------------------

    def handle(
        self,
        action: str,
        table: str,
        *,
        data: dict[str, Any] | None = None,
        filters: dict[str, Any] | None = None,
        limit: int | None = None,
        idempotency_key: str | None = None,
        vector: list[float] | None = None,
    ) -> dict[str, Any]:
        """Answer one storage action with storage.md's result shape."""
        act = _action_of(action)
        # storage.md's vector actions name no table; any table argument is ignored.
        if act is Action.VECTOR_UPSERT:
            return self._vector_upsert(data, vector)
        if act is Action.VECTOR_SEARCH:
            return self._vector_search(vector, filters, limit)
        sql = _table_sql(table)
        if act is Action.SELECT:
            return {"rows": self._select(sql, filters, limit)}
        if act is Action.GET:
            return {"row": self._get(sql, _check_id(sql.table, data))}
        if act is Action.INSERT:
            return {"row": self._insert(sql, data, idempotency_key)}
        if act is Action.UPDATE:
            return {"row": self._update(sql, data)}
        self._delete(sql, _check_id(sql.table, data))
        return {"deleted": True}

    # --- actions -----------------------------------------------------------------------

    def _select(self, sql: _TableSql, filters: Any, limit: Any) -> list[Row]:
        f = check_filters(sql.table, filters)
        n = _check_limit(limit)
        where: list[str] = []
        args: list[Any] = []
        for key, value in f.items():
            if key == "search":
                where.append("(\"title\" LIKE ? ESCAPE '\\' OR \"description\" LIKE ? ESCAPE '\\')")
                pattern = f"%{_escape_like(value)}%"
                args += (pattern, pattern)
            elif key == "dueDateFrom":
                where.append('"dueDate" >= ?')
                args.append(value)
            elif key == "dueDateTo":
                where.append('"dueDate" <= ?')
                args.append(value)
            elif key == "includeArchived":
                if not value:
                    where.append(f"\"status\" IS NOT '{ProjectStatus.ARCHIVED}'")
            elif key != "orderBy":
                where.append(f"{_q(key)} = ?")
                args.append(value)
        if sql.table is Table.PROJECTS and "includeArchived" not in f:
            where.append(f"\"status\" IS NOT '{ProjectStatus.ARCHIVED}'")
        text = sql.select
        if where:
            text += " WHERE " + " AND ".join(where)
        text += _ORDER_SQL[f.get("orderBy")] + " LIMIT ?"
        args.append(n)
        cols = sql.columns
        with self._conn() as db:
            return [dict(zip(cols, r, strict=True)) for r in db.execute(text, args)]

    def _get_row(self, db: sqlite3.Connection, sql: _TableSql, row_id: str) -> Row | None:
        r = db.execute(sql.get, (row_id,)).fetchone()
        return None if r is None else dict(zip(sql.columns, r, strict=True))

    def _get(self, sql: _TableSql, row_id: str) -> Row | None:
        # Hot path (every get of the rpc benchmark): what _conn() does, inlined, because
        # a generator-based context manager costs more than the query itself.
        with self._lock:
            db = self._db
            if db is None:
                raise StorageError("the store is closed", code=ErrorCode.INTERNAL)
            try:
                if self._hold and not self._snapshot:
                    self._begin_snapshot(db)
                r = db.execute(sql.get, (row_id,)).fetchone()
            except sqlite3.Error as e:
                raise _db_error(e) from e
        return None if r is None else dict(zip(sql.columns, r, strict=True))

    def _insert(self, sql: _TableSql, data: Any, key: Any) -> Row:
        values = check_insert(sql.table, data)
        if key is not None and (not isinstance(key, str) or not key):
            raise _bad(f"idempotency_key must be a non-empty string, got {key!r}")
        now = self._clock()
        row: Row = dict.fromkeys(sql.columns)
        row.update(sql.defaults)
        row.update((k, v) for k, v in values.items() if v is not None)
        row["id"] = uuid.uuid4().hex
        row["createdAt"] = now
        if sql.bumps_updated_at:
            row["updatedAt"] = now
        params = tuple(row.values())  # dict.fromkeys keeps the columns' order
        with self._conn(latest=True) as db:
            if key is None:
                db.execute(sql.insert, params)
                return row
            with self._transaction(db):
                seen = db.execute(
                    "SELECT tbl, rowId FROM _idempotency WHERE key = ?", (key,)
                ).fetchone()
                if seen is None:
                    db.execute(sql.insert, params)
                    db.execute(
                        "INSERT INTO _idempotency (key, tbl, rowId) VALUES (?, ?, ?)",
                        (key, sql.table.value, row["id"]),
                    )
                    return row
                tbl, row_id = seen
                if tbl != sql.table:
                    raise _bad(
                        f"idempotency_key {key!r} was already used for an insert into {tbl}, "
                        f"not {sql.table}"
                    )
                existing = self._get_row(db, sql, row_id)
            if existing is None:
                raise StorageError(
                    f"idempotency_key {key!r} was already used for {sql.spec.noun} {row_id}, "
                    "which has since been deleted",
                    code=ErrorCode.CONFLICT,
                )
            return existing

    def _update(self, sql: _TableSql, data: Any) -> Row:
        row_id = _check_id(sql.table, data)
        assert isinstance(data, dict)
        if "updates" not in data:
            raise _bad(f"update of {sql.table} needs data.updates")
        values = check_updates(sql.table, data["updates"])
        if sql.bumps_updated_at:
            values["updatedAt"] = self._clock()
        with self._conn(latest=True) as db:
            r = db.execute(sql.update(values), (*values.values(), row_id)).fetchone()
        if r is None:
            raise StorageError(f"no {sql.spec.noun} {row_id}", code=ErrorCode.NOT_FOUND)
        return dict(zip(sql.columns, r, strict=True))

    def _delete(self, sql: _TableSql, row_id: str) -> None:
        with self._conn(latest=True) as db:
            deleted = db.execute(sql.delete, (row_id,)).rowcount
        if not deleted:
            raise StorageError(f"no {sql.spec.noun} {row_id}", code=ErrorCode.NOT_FOUND)

    def _vector_upsert(self, data: Any, vector: Any) -> dict[str, Any]:
        row_id = _check_id("vector_upsert", data)
        assert isinstance(data, dict)
        content = data.get("content")
        if not isinstance(content, str):
            raise _bad(f"data.content for vector_upsert must be a string, got {content!r}")
        project_id = data.get("projectId")
        if project_id is not None and not isinstance(project_id, str):
            raise _bad(f"data.projectId for vector_upsert must be a string, got {project_id!r}")
        v = _check_vector(vector)
        with self._conn(latest=True) as db:
            db.execute(
                "INSERT OR REPLACE INTO _vectors (id, projectId, content, dim, norm, vector)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (row_id, project_id, content, len(v), _norm(v), array("d", v).tobytes()),
            )
        return {"ok": True}

    def _vector_search(self, vector: Any, filters: Any, limit: Any) -> dict[str, Any]:
        q = _check_vector(vector)
        n = _check_limit(limit)
        if filters is not None and not isinstance(filters, dict):
            raise _bad("filters for vector_search must be an object")
        project_id = None
        for key, value in (filters or {}).items():
            if key not in _VECTOR_FILTERS:
                allowed = ", ".join(_VECTOR_FILTERS)
                raise _bad(f"unknown filter {key!r} for vector_search; allowed: {allowed}")
            if value is not None and not isinstance(value, str):
                raise _bad(f"filter projectId for vector_search must be a string, got {value!r}")
            project_id = value
        text = "SELECT id, content, dim, norm, vector FROM _vectors"
        args: tuple[Any, ...] = ()
        if project_id is not None:
            text += ' WHERE "projectId" = ?'
            args = (project_id,)
        with self._conn() as db:
            stored = db.execute(text, args).fetchall()
        q_norm = _norm(q)
        scored: list[tuple[float, str, str]] = []
        for row_id, content, dim, norm, blob in stored:
            if dim != len(q):
                raise _bad(
                    f"vector has {len(q)} dimensions but the stored vector {row_id} has {dim}"
                )
            v = array("d")
            v.frombytes(blob)
            dot = sum(map(operator.mul, q, v))
            score = dot / (q_norm * norm) if q_norm and norm else 0.0
            scored.append((score, row_id, content))
        scored.sort(key=lambda s: (-s[0], s[1]))
        if n >= 0:
            scored = scored[:n]
        return {"results": [{"id": i, "content": c, "score": s} for s, i, c in scored]}

    # --- conveniences for tests ----------------------------------------------------------

    def rows(self, table: str) -> list[Row]:
        """Every row of ``table`` in the default order (archived projects included)."""
        sql = _SQL[check_table(table)]
        with self._conn(latest=True) as db:
            cur = db.execute(sql.select + _ORDER_SQL[None])
            return [dict(zip(sql.columns, r, strict=True)) for r in cur]

    def count(self, table: str) -> int:
        """How many rows ``table`` holds."""
        sql = _SQL[check_table(table)]
        with self._conn(latest=True) as db:
            n: int = db.execute(sql.count).fetchone()[0]
            return n

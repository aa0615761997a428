"""Parts of the reference client that need no daemon: the burst reads of one
event-loop pass (``_BurstReads``) over a real SQLite file.

The client over a real connection is tested with the daemon in
tests/daemon/test_client_store.py, tests/daemon/test_server.py and tests/e2e/.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from protocol.reference.client import _BurstReads
from protocol.reference.sqlite_store import SqliteStore


def _title(store: SqliteStore, row_id: str) -> str:
    row = store.handle("get", "tasks", data={"id": row_id})["row"]
    assert row is not None
    title: str = row["title"]
    return title


async def test_a_burst_reads_one_snapshot_until_its_pass_ends(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "app.db")
    row_id = store.handle("insert", "tasks", data={"title": "v1"})["row"]["id"]
    other = sqlite3.connect(tmp_path / "app.db", isolation_level=None)
    burst = _BurstReads(store)
    try:
        burst.add_call()  # a call alone in its pass: no snapshot, reads the latest
        assert _title(store, row_id) == "v1"
        other.execute("UPDATE tasks SET title = 'v2' WHERE id = ?", (row_id,))
        assert _title(store, row_id) == "v2"

        burst.add_call()  # a second call in the same pass: the burst shares a snapshot
        assert _title(store, row_id) == "v2"
        other.execute("UPDATE tasks SET title = 'v3' WHERE id = ?", (row_id,))
        assert _title(store, row_id) == "v2"

        await asyncio.sleep(0)  # the pass ends: its snapshot with it
        assert _title(store, row_id) == "v3"

        burst.add_call()  # the next pass starts afresh: alone, no snapshot
        other.execute("UPDATE tasks SET title = 'v4' WHERE id = ?", (row_id,))
        assert _title(store, row_id) == "v4"
    finally:
        burst.end()
        other.close()
        store.close()


async def test_end_releases_the_snapshot_and_is_idempotent(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "app.db")
    row_id = store.handle("insert", "tasks", data={"title": "v1"})["row"]["id"]
    other = sqlite3.connect(tmp_path / "app.db", isolation_level=None)
    burst = _BurstReads(store)
    try:
        burst.add_call()
        burst.add_call()
        assert _title(store, row_id) == "v1"
        other.execute("UPDATE tasks SET title = 'v2' WHERE id = ?", (row_id,))
        burst.end()  # what close()/kill() do when the loop may not run the scheduled end
        assert _title(store, row_id) == "v2"
        burst.end()
        await asyncio.sleep(0)  # the scheduled end finds nothing left to release
        assert _title(store, row_id) == "v2"
    finally:
        other.close()
        store.close()

"""The event log (``daemon/events.py``): numbered, persisted, broadcast, replayed, trimmed.

Real parts: a ``StateStore`` file in tmp_path, the daemon's server on loopback, and
protocol clients that receive what the log broadcasts or replays over a WebSocket.
The log under test is built beside the daemon's own (same state store and server),
so each test chooses its retention.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest

from daemon.events import EventLog
from daemon.state import StateStore
from protocol.frames import RunComplete, RunProgress, RunStarted
from protocol.reference import ProtocolClient
from tests.conftest import DaemonFactory, DaemonHarness

AT = "2026-12-03T10:00:00.000Z"
_ids = itertools.count(1)


def event_log(h: DaemonHarness, retention: int = 1000) -> EventLog:
    return EventLog(h.daemon.state, h.daemon.server, retention=retention)


def started(run_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "agent_id": "notes",
        "agent_name": "Notes",
        "trigger": "manual",
        "started_at": AT,
        **extra,
    }


def completed(run_id: str, status: str = "success", **extra: Any) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "agent_id": "notes",
        "agent_name": "Notes",
        "trigger": "schedule" if status == "skipped" else "manual",
        "status": status,
        "started_at": AT,
        "finished_at": AT,
        **extra,
    }


async def one_run(log: EventLog, status: str = "success") -> tuple[int, int]:
    """A run_started and its run_complete; their seqs."""
    run_id = f"run-{next(_ids)}"
    first = await log.run_started(**started(run_id))
    last = await log.run_complete(**completed(run_id, status))
    return first.seq, last.seq


async def drain(client: ProtocolClient, count: int) -> list[Any]:
    """The next ``count`` run events the client receives (a timeout fails the test)."""
    return [await asyncio.wait_for(client.events.get(), 10) for _ in range(count)]


@pytest.fixture
async def h(make_daemon: DaemonFactory) -> DaemonHarness:
    return await make_daemon()


# --- numbering ---------------------------------------------------------------------


async def test_persisted_events_are_numbered_one_higher_than_any_before(h: DaemonHarness) -> None:
    log = event_log(h)
    assert await one_run(log) == (1, 2)
    assert await one_run(log) == (3, 4)
    stored = h.daemon.state.events_after(0)
    assert [(e.seq, e.type) for e in stored] == [
        (1, "run_started"),
        (2, "run_complete"),
        (3, "run_started"),
        (4, "run_complete"),
    ]
    assert stored[0].run_id == stored[1].run_id != stored[2].run_id
    assert stored[1].payload["status"] == "success"


async def test_progress_carries_the_latest_seq_and_does_not_advance_it(
    h: DaemonHarness,
) -> None:
    watcher = await h.control()
    log = event_log(h)
    first = await log.run_started(**started("r1"))
    await log.run_progress(run_id="r1", phase="scan", done=1, total=1)
    await log.run_progress(run_id="r1", phase="process", done=0, total=3, detail="a.md")
    last = await log.run_complete(**completed("r1"))

    seen = await drain(watcher, 4)
    assert [type(e) for e in seen] == [RunStarted, RunProgress, RunProgress, RunComplete]
    assert [e.seq for e in seen] == [1, 1, 1, 2] and (first.seq, last.seq) == (1, 2)
    assert seen[2].detail == "a.md" and seen[1].detail is None
    assert h.daemon.state.last_seq() == 2
    assert [e.type for e in h.daemon.state.events_after(0)] == ["run_started", "run_complete"]
    # progress never moves a client's high-water mark
    assert watcher.last_event_seq == 2


async def test_progress_before_any_event_carries_seq_zero(h: DaemonHarness) -> None:
    watcher = await h.control()
    await event_log(h).run_progress(run_id="r1", phase="scan", done=0, total=1)
    (progress,) = await drain(watcher, 1)
    assert isinstance(progress, RunProgress) and progress.seq == 0


async def test_broadcast_reaches_devices_and_subscribed_controls_only(
    h: DaemonHarness, tmp_path: Path
) -> None:
    app = await h.device(tmp_path / "app.db")
    cli = await h.control()
    quiet = await h.control(subscribe=False)
    frame = await event_log(h).run_started(**started("r1"))
    assert (await drain(app, 1))[0] == frame
    assert (await drain(cli, 1))[0] == frame
    # The unsubscribed control session still answers requests, and got no event.
    await quiet.ping()
    assert quiet.events.empty()


async def test_seq_survives_a_restart_of_the_state_store(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with StateStore.open(path) as state:
        seq = state.append_event("run_started", started("r1"), run_id="r1")
        seq = state.append_event("run_complete", completed("r1"), run_id="r1")
        assert seq == 2
        assert state.trim_events(0) == 2  # trimming forgets events, not the count
    with StateStore.open(path) as state:
        assert state.last_seq() == 2
        assert state.events_after(0) == []
        assert state.append_event("run_started", started("r2"), run_id="r2") == 3


async def test_the_log_numbers_on_after_a_daemon_restart(make_daemon: DaemonFactory) -> None:
    first = await make_daemon()
    assert await one_run(event_log(first)) == (1, 2)
    await first.daemon.stop()
    second = await make_daemon()
    assert await one_run(event_log(second)) == (3, 4)


# --- replay ------------------------------------------------------------------------


async def history(log: EventLog) -> dict[str, int]:
    """done: started 1, complete 2; open: started 3 (still running);
    skip: complete 4 (skipped, no run_started); late: started 5, complete 6."""
    await log.run_started(**started("done"))
    await log.run_complete(**completed("done"))
    await log.run_started(**started("open"))
    await log.run_complete(**completed("skip", "skipped"))
    await log.run_started(**started("late", run_context={"source": "app"}))
    await log.run_complete(**completed("late", "partial", errors=["one file unreadable"]))
    return {"done": 2, "open": 3, "skip": 4, "late": 6}


async def test_replay_sends_completes_and_runs_still_open_in_seq_order(
    h: DaemonHarness, tmp_path: Path
) -> None:
    await history(event_log(h))
    app = await h.device(tmp_path / "app.db", last_event_seq=0)
    seen = await drain(app, 4)
    assert [(type(e).__name__, e.run_id, e.seq) for e in seen] == [
        ("RunComplete", "done", 2),  # its run_started is not sent: the run is over
        ("RunStarted", "open", 3),  # no run_complete yet: the client learns it runs
        ("RunComplete", "skip", 4),
        ("RunComplete", "late", 6),
    ]
    late = seen[3]
    assert late.status == "partial" and late.errors == ["one file unreadable"]
    assert app.last_event_seq == 6
    await app.ping()  # nothing else was queued behind the replay
    assert app.events.empty()


async def test_replay_starts_after_the_clients_seq(h: DaemonHarness) -> None:
    await history(event_log(h))
    cli = await h.control(last_event_seq=3)
    seen = await drain(cli, 2)
    assert [(e.run_id, e.seq) for e in seen] == [("skip", 4), ("late", 6)]
    # A run_started before the client's seq is not replayed, even if still open.
    caught_up = await h.control(last_event_seq=6)
    await caught_up.ping()
    assert caught_up.events.empty()


async def test_replay_counts_what_it_sent_and_stops_at_a_closed_session(
    h: DaemonHarness, tmp_path: Path
) -> None:
    log = event_log(h)
    await history(log)
    app = await h.device(tmp_path / "app.db")
    session = h.daemon.server.device(app.device_id)
    assert session is not None
    assert await log.replay(session, 0) == 4
    assert await log.replay(session, 4) == 1
    assert await log.replay(session, 6) == 0
    session.close("gone")
    assert await log.replay(session, 0) == 0


async def test_a_client_without_last_event_seq_gets_no_replay(
    h: DaemonHarness, tmp_path: Path
) -> None:
    await history(event_log(h))
    app = await h.device(tmp_path / "app.db")
    await app.ping()
    assert app.events.empty()


# --- trimming ----------------------------------------------------------------------


async def test_trimming_runs_every_hundred_events_and_keeps_the_retention(
    h: DaemonHarness,
) -> None:
    log = event_log(h, retention=10)
    for _ in range(49):
        await one_run(log)
    assert len(h.daemon.state.events_after(0)) == 98  # not trimmed yet
    await one_run(log)  # the 100th event trims
    kept = h.daemon.state.events_after(0)
    assert [e.seq for e in kept] == list(range(91, 101))
    for _ in range(49):
        await one_run(log)  # 98 more: 108 kept until the next hundredth
    assert len(h.daemon.state.events_after(0)) == 108
    await one_run(log)
    assert [e.seq for e in h.daemon.state.events_after(0)] == list(range(191, 201))


async def test_trimming_drops_skipped_run_completes_before_real_runs(
    h: DaemonHarness, tmp_path: Path
) -> None:
    # An agent whose app stays away skips every minute; the real runs in between
    # must outlive its skips in the replay window.
    log = event_log(h, retention=8)
    real: list[int] = []
    for i in range(100):
        if i % 10 == 0:
            real.extend(await one_run(log))
        elif i % 10 != 1:
            await log.run_complete(**completed(f"skip-{i}", "skipped"))
    assert h.daemon.state.last_seq() == 100 and len(real) == 20
    kept = h.daemon.state.events_after(0)
    assert all(e.payload.get("status") != "skipped" for e in kept)
    assert [e.seq for e in kept] == real[-8:]
    # and replay sends the four runs that survived, completes only
    app = await h.device(tmp_path / "app.db", last_event_seq=0)
    seen = await drain(app, 4)
    assert all(isinstance(e, RunComplete) and e.status == "success" for e in seen)
    assert [e.seq for e in seen] == real[-7::2]


async def test_retention_zero_keeps_nothing_but_the_count(h: DaemonHarness) -> None:
    log = event_log(h, retention=0)
    for _ in range(50):
        await one_run(log)
    assert h.daemon.state.events_after(0) == []
    assert (await log.run_started(**started("next"))).seq == 101


async def test_a_device_reconnecting_with_a_trimmed_seq_gets_what_is_kept(
    h: DaemonHarness, tmp_path: Path
) -> None:
    log = event_log(h, retention=4)
    for _ in range(50):
        await one_run(log)
    app = await h.device(tmp_path / "app.db", last_event_seq=5)  # long gone
    seen = await drain(app, 2)
    assert [e.seq for e in seen] == [98, 100]
    assert isinstance(seen[0], RunComplete) and isinstance(seen[1], RunComplete)

"""End to end: scheduled runs through the real daemon, the reference client with SQLite,
and real litellm against the local test model.

How time is driven, without sleeping: the daemon gets an injected clock (``Clock``) set
years after the real date, in Europe/Berlin, and an injected ``next_fire`` that computes
the real cron slots after that clock. So APScheduler's own
timer is armed at slots years away and never goes off by itself; ``fire`` makes it go
off now (``modify_job(next_run_time=...)``) and waits until APScheduler has run the job,
which is what happens when a slot comes. Everything else is the product: the daemon's
own composition, the run manager, the journal, the event log, the WebSocket sessions.
Agents read an empty folder (a quick ``success`` run without LLM calls) except in the
test of simultaneous triggers, which reads one small file per run through litellm.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobEvent

from daemon.app import Daemon
from daemon.config import load_config
from daemon.paths import Paths
from daemon.state import StateStore
from protocol.frames import AgentStatus, RunComplete, RunProgress, RunStarted, ToolCall
from protocol.reference import ProtocolClient, ReferenceClient, RequestFailed, SqliteStore
from scheduler import cron
from tests.conftest import DaemonHarness
from tests.support.agent_model import OfficeModel
from tests.support.llm_server import FakeLLMServer

BERLIN = ZoneInfo("Europe/Berlin")
TOKEN = "test-token"
LAPTOP = "laptop"


def at(hour: int, minute: int = 0, *, day: int = 5) -> datetime:
    """A wall-clock time in Berlin in March 2031 (the 5th is a Wednesday, CET)."""
    return datetime(2031, 3, day, hour, minute, tzinfo=BERLIN)


T0 = at(10, 20)


class Clock:
    """The daemon's injected clock: a fixed instant the test moves forward."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def set(self, moment: datetime) -> None:
        assert moment >= self.now, "the test clock only moves forward"
        self.now = moment


@dataclass
class World:
    """The daemons of one test, sharing one home (state dir), clock and model server."""

    paths: Paths
    clock: Clock
    next_fire: Callable[[str, datetime, tzinfo], datetime]
    llm_server: FakeLLMServer
    folder: Path  # an empty folder: a quick run
    app_db: Path
    started: list[DaemonHarness] = field(default_factory=list)

    async def start(self) -> DaemonHarness:
        """A daemon built as the product builds it, with our clock and zone."""
        config = load_config(
            self.paths,
            {},
            overrides={
                "port": 0,
                "llm.model": "openai/office",
                "llm.api_base": self.llm_server.base_url,
            },
        )
        state = StateStore.open(self.paths.state_db)
        daemon = Daemon(
            config=config,
            paths=self.paths,
            token=TOKEN,
            state=state,
            pid=os.getpid(),
            tz=BERLIN,
            clock=self.clock,
            next_fire=self.next_fire,
        )
        port = await daemon.start()
        harness = DaemonHarness(daemon, self.paths, TOKEN, port)
        self.started.append(harness)
        return harness

    async def stop(self, harness: DaemonHarness) -> None:
        for client in harness.clients:
            await client.close()
        await harness.daemon.stop()


@pytest.fixture
async def world(
    tether_home: Paths,
    llm_server: FakeLLMServer,
    tmp_path: Path,
) -> AsyncIterator[World]:
    clock = Clock(T0)

    def next_fire(expr: str, after: datetime, tz: tzinfo) -> datetime:
        # The real cron maths, from the daemon's clock: APScheduler asks with the real
        # time, which is years before the clock, so its timer never fires by itself.
        return cron.next_fire(expr, max(after, clock.now), tz)

    llm_server.responder = OfficeModel()
    folder = tmp_path / "empty"
    folder.mkdir()
    app_db = tmp_path / "app.db"
    with SqliteStore(app_db) as db:
        db.handle("insert", "projects", data={"name": "Website"})
        db.handle("insert", "projects", data={"name": "Branding"})
    w = World(tether_home, clock, next_fire, llm_server, folder, app_db)
    yield w
    for harness in w.started:
        await w.stop(harness)


# --- helpers -----------------------------------------------------------------------------


def agent(agent_id: str, schedule: str, folder: Path, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "id": agent_id,
        "name": agent_id.title(),
        "kind": "local_directory",
        "schedule_cron": schedule,
        "directory_paths": [str(folder)],
        "data_types": ["tasks", "notes", "timelines"],
        "enabled": True,
    }
    config.update(extra)
    return config


class Seen:
    """Every run event a client received, in order (set before it connects)."""

    def __init__(self, client: ProtocolClient) -> None:
        self.events: list[RunStarted | RunProgress | RunComplete] = []
        client.on_event = self.events.append

    def of(self, kind: type[RunStarted | RunComplete], **fields: Any) -> list[Any]:
        return [
            e
            for e in self.events
            if isinstance(e, kind) and all(getattr(e, k) == v for k, v in fields.items())
        ]

    async def wait(
        self, kind: type[RunStarted | RunComplete], count: int = 1, **fields: Any
    ) -> list[Any]:
        await wait_until(
            lambda: len(self.of(kind, **fields)) >= count, f"{count} {kind.__name__} {fields}"
        )
        return self.of(kind, **fields)


async def wait_until(predicate: Callable[[], object], what: str, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def device(
    h: DaemonHarness,
    db: Path,
    *,
    device_id: str = LAPTOP,
    agents: list[dict[str, Any]] | None = None,
    **kwargs: Any,
) -> tuple[ReferenceClient, Seen]:
    """Connect the desktop app and wait until the daemon's catch-up for it has decided."""
    client = ReferenceClient(h.url, TOKEN, db=str(db), device_id=device_id, agents=agents, **kwargs)
    seen = Seen(client)
    h.clients.append(client)
    before = online_decisions(h, device_id)
    await client.connect()
    await wait_until(lambda: online_decisions(h, device_id) > before, f"catch-up for {device_id}")
    return client, seen


async def control(h: DaemonHarness) -> tuple[ProtocolClient, Seen]:
    client = ProtocolClient(h.url, TOKEN, client_name="test-cli")
    seen = Seen(client)
    h.clients.append(client)
    await client.connect()
    return client, seen


async def disconnect(h: DaemonHarness, client: ReferenceClient) -> None:
    await client.close()
    await wait_until(lambda: client.device_id not in h.daemon.server.devices, "the device to leave")


def online_decisions(h: DaemonHarness, device_id: str) -> int:
    return sum(d.startswith(f"device {device_id} online:") for d in h.daemon.scheduler.decisions)


def last_online(h: DaemonHarness, device_id: str) -> str:
    """The catch-up decision of the device's latest hello."""
    return [d for d in h.daemon.scheduler.decisions if d.startswith(f"device {device_id} online:")][
        -1
    ]


def decisions(h: DaemonHarness, text: str) -> list[str]:
    return [d for d in h.daemon.scheduler.decisions if text in d]


async def idle(h: DaemonHarness) -> None:
    await wait_until(lambda: not h.daemon.runs.active(), "no active run")


def journal(h: DaemonHarness, agent_id: str) -> list[tuple[str, str]]:
    """(trigger, status) of the agent's journaled runs, oldest first."""
    return [(r.trigger, r.status) for r in reversed(h.daemon.state.runs(agent_id))]


async def fire(
    h: DaemonHarness, agent_id: str, *, due: datetime | None = None, timeout: float = 15.0
) -> None:
    """The agent's job timer goes off: APScheduler runs the job, we wait until it ran.

    ``due`` is the (real) time the timer was due, default now; an old one is a timer
    that was due while the laptop slept.
    """
    scheduler = h.daemon.scheduler.scheduler
    assert scheduler is not None
    assert scheduler.get_job(agent_id) is not None, f"{agent_id} has no job"
    done = asyncio.Event()

    def listener(event: JobEvent) -> None:
        if event.job_id == agent_id:
            done.set()

    scheduler.add_listener(listener, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
    try:
        scheduler.modify_job(agent_id, next_run_time=due or datetime.now(UTC))
        await asyncio.wait_for(done.wait(), timeout)
    finally:
        scheduler.remove_listener(listener)


def job_next(h: DaemonHarness, agent_id: str) -> datetime | None:
    scheduler = h.daemon.scheduler.scheduler
    assert scheduler is not None
    job = scheduler.get_job(agent_id)
    return None if job is None else job.next_run_time


async def status_of(client: ProtocolClient, agent_id: str) -> AgentStatus:
    status = await client.status()
    return next(a for a in status.agents if a.id == agent_id)


def when(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


# --- 1. the slot comes -------------------------------------------------------------------


async def test_a_connected_device_gets_its_run_when_the_slot_comes(world: World) -> None:
    h = await world.start()
    cli, cli_seen = await control(h)
    _, seen = await device(h, world.app_db, agents=[agent("hourly", "0 * * * *", world.folder)])
    # Never ran: overdue, so it ran once as soon as the app said hello.
    (first,) = await seen.wait(RunComplete, trigger="reconnect")
    assert first.status == "success", first.errors
    await idle(h)
    st = await status_of(cli, "hourly")
    assert (when(st.next_run_at), when(st.last_run_at), st.last_status) == (at(11), T0, "success")
    assert job_next(h, "hourly") == at(11)

    world.clock.set(at(11))
    await fire(h, "hourly")
    (started,) = await seen.wait(RunStarted, trigger="schedule")
    (done,) = await seen.wait(RunComplete, trigger="schedule")
    assert started.run_id == done.run_id and started.agent_id == "hourly"
    assert done.status == "success" and done.usage.llm_calls == 0
    assert when(done.started_at) == at(11)
    # the CLI watching the daemon sees the same events
    await cli_seen.wait(RunComplete, run_id=done.run_id)
    assert [e.run_id for e in cli_seen.of(RunStarted, trigger="schedule")] == [done.run_id]
    await idle(h)
    assert journal(h, "hourly") == [("reconnect", "success"), ("schedule", "success")]
    st = await status_of(cli, "hourly")
    assert (when(st.next_run_at), when(st.last_run_at), st.last_status) == (
        at(12),
        at(11),
        "success",
    )
    assert job_next(h, "hourly") == at(12)  # APScheduler re-armed the job itself


# --- 2. offline across three slots -------------------------------------------------------


async def test_app_closed_across_three_slots_gets_one_reconnect_run_and_the_skip_replayed(
    world: World,
) -> None:
    h = await world.start()
    cli, cli_seen = await control(h)
    hourly = agent("hourly", "0 * * * *", world.folder)
    laptop, seen = await device(h, world.app_db, agents=[hourly])
    await seen.wait(RunComplete, trigger="reconnect")
    await idle(h)
    seq_before = laptop.last_event_seq
    assert seq_before is not None
    await disconnect(h, laptop)

    for hour in (11, 12, 13):
        world.clock.set(at(hour))
        await fire(h, "hourly")
    # the three skips in a row are one journal entry (first reason, count, last reason)
    assert journal(h, "hourly") == [("reconnect", "success"), ("schedule", "skipped")]
    (skipped,) = [r for r in h.daemon.state.runs("hourly") if r.status == "skipped"]
    assert skipped.errors == (f"the desktop app was offline at {iso(at(11))}",)
    assert skipped.detail == {
        "skipped_fires": 3,
        "last_reason": f"the desktop app was offline at {iso(at(13))}",
    }
    assert (skipped.started_at, skipped.finished_at) == (at(11), at(13))
    # the CLI heard the first live; status tells the skip but keeps the last real run
    await cli_seen.wait(RunComplete, 1, status="skipped")
    await idle(h)
    assert len(cli_seen.of(RunComplete, status="skipped")) == 1
    st = await status_of(cli, "hourly")
    assert (when(st.last_run_at), st.last_status, when(st.next_run_at)) == (T0, "skipped", at(14))

    world.clock.set(at(13, 20))
    again, seen2 = await device(h, world.app_db, agents=[hourly], last_event_seq=seq_before)
    assert last_online(h, LAPTOP) == "device laptop online: catch-up queued for hourly"
    (done,) = await seen2.wait(RunComplete, trigger="reconnect")
    assert done.status == "success" and when(done.started_at) == at(13, 20)
    await idle(h)
    # replayed first (the skip, with its first reason), then the one catch-up
    events = [e for e in seen2.events if not isinstance(e, RunProgress)]
    assert [(type(e).__name__, e.trigger, getattr(e, "status", None)) for e in events] == [
        ("RunComplete", "schedule", "skipped"),
        ("RunStarted", "reconnect", None),
        ("RunComplete", "reconnect", "success"),
    ]
    replayed = events[0]
    assert isinstance(replayed, RunComplete) and replayed.seq is not None
    assert replayed.seq > seq_before and replayed.run_id == skipped.run_id
    assert replayed.errors == [f"the desktop app was offline at {iso(at(11))}"]
    assert journal(h, "hourly") == [
        ("reconnect", "success"),
        ("schedule", "skipped"),
        ("reconnect", "success"),
    ]
    # the app flapping (connect again) does not run it again: the slot is covered
    await disconnect(h, again)
    world.clock.set(at(13, 25))
    _, seen3 = await device(h, world.app_db, agents=[hourly])
    assert last_online(h, LAPTOP) == "device laptop online: nothing overdue"
    assert len(journal(h, "hourly")) == 3 and not seen3.of(RunStarted)
    st = await status_of(cli, "hourly")
    assert (when(st.last_run_at), st.last_status, when(st.next_run_at)) == (
        at(13, 20),
        "success",
        at(14),
    )


# --- 3. an agent bound to another device -------------------------------------------------


async def test_an_agent_bound_to_another_device_never_runs_for_this_one(
    world: World, tmp_path: Path
) -> None:
    h = await world.start()
    cli, _ = await control(h)
    agents = [
        agent("mine", "0 * * * *", world.folder, device_id=LAPTOP),
        agent("theirs", "0 * * * *", world.folder, device_id="other"),
    ]
    laptop, seen = await device(h, world.app_db, agents=agents)
    assert last_online(h, LAPTOP) == "device laptop online: catch-up queued for mine"
    await seen.wait(RunComplete, agent_id="mine", trigger="reconnect")
    await idle(h)

    world.clock.set(at(11))
    await fire(h, "mine")
    await fire(h, "theirs")
    await seen.wait(RunComplete, agent_id="mine", trigger="schedule")
    (skip,) = await seen.wait(RunComplete, agent_id="theirs")
    assert skip.status == "skipped" and skip.errors == [
        f"device other was offline at {iso(at(11))}"
    ]
    with pytest.raises(RequestFailed) as offline:
        await laptop.trigger("theirs")
    assert offline.value.code == "device_offline"

    await disconnect(h, laptop)
    world.clock.set(at(12))
    await fire(h, "mine")
    await fire(h, "theirs")
    world.clock.set(at(12, 20))
    _, seen2 = await device(h, world.app_db, agents=agents)
    assert last_online(h, LAPTOP) == "device laptop online: catch-up queued for mine"
    await seen2.wait(RunComplete, agent_id="mine", trigger="reconnect")
    await idle(h)
    assert not seen.of(RunStarted, agent_id="theirs") and not seen2.of(
        RunStarted, agent_id="theirs"
    )
    assert journal(h, "theirs") == [("schedule", "skipped")]  # two skips in a row: one entry
    assert journal(h, "mine") == [
        ("reconnect", "success"),
        ("schedule", "success"),
        ("schedule", "skipped"),
        ("reconnect", "success"),
    ]
    st = await status_of(cli, "theirs")
    assert (st.device_id, st.last_run_at, st.last_status) == ("other", None, "skipped")
    assert when(st.next_run_at) == at(13)

    # its own device connecting runs it there, once; "mine" is not that device's
    other_db = tmp_path / "other.db"
    SqliteStore(other_db).close()
    _, seen_other = await device(h, other_db, device_id="other")
    assert last_online(h, "other") == "device other online: catch-up queued for theirs"
    (done,) = await seen_other.wait(RunComplete, agent_id="theirs", trigger="reconnect")
    assert done.status == "success"
    await idle(h)
    assert journal(h, "theirs") == [("schedule", "skipped"), ("reconnect", "success")]
    assert len(journal(h, "mine")) == 4


# --- 4. a changed schedule ---------------------------------------------------------------


async def test_a_changed_schedule_fires_on_the_new_slot_only(world: World) -> None:
    h = await world.start()
    laptop, seen = await device(
        h, world.app_db, agents=[agent("hourly", "0 * * * *", world.folder)]
    )
    await seen.wait(RunComplete, trigger="reconnect")
    await idle(h)
    assert when((await status_of(laptop, "hourly")).next_run_at) == at(11)

    ack = await laptop.agents_sync([agent("hourly", "30 * * * *", world.folder)])
    assert ack.accepted == ["hourly"] and not ack.rejected
    assert decisions(h, "job of hourly replaced: 30 * * * *")
    st = await status_of(laptop, "hourly")
    assert st.schedule_cron == "30 * * * *"
    assert when(st.next_run_at) == at(10, 30)
    assert when(st.next_run_at).astimezone(BERLIN).minute == 30  # type: ignore[union-attr]

    world.clock.set(at(10, 30))
    await fire(h, "hourly")
    (run,) = await seen.wait(RunComplete, trigger="schedule")
    assert when(run.started_at) == at(10, 30)
    await idle(h)
    assert job_next(h, "hourly") == at(11, 30)  # never 11:00 any more

    # the old slot: even a timer going off at 11:00 runs nothing (10:30 is covered)
    world.clock.set(at(11))
    await fire(h, "hourly")
    assert decisions(h, "fire of hourly not run: a run already finished since the slot")
    assert journal(h, "hourly") == [("reconnect", "success"), ("schedule", "success")]
    assert when((await status_of(laptop, "hourly")).next_run_at) == at(11, 30)

    world.clock.set(at(11, 30))
    await fire(h, "hourly")
    await seen.wait(RunComplete, 2, trigger="schedule")
    await idle(h)
    assert journal(h, "hourly") == [
        ("reconnect", "success"),
        ("schedule", "success"),
        ("schedule", "success"),
    ]
    st = await status_of(laptop, "hourly")
    assert (when(st.last_run_at), when(st.next_run_at)) == (at(11, 30), at(12, 30))


# --- 5. a disabled agent -----------------------------------------------------------------


async def test_a_disabled_agent_never_fires_but_runs_by_hand(world: World) -> None:
    h = await world.start()
    cli, _ = await control(h)
    off = agent("off", "0 * * * *", world.folder, enabled=False)
    laptop, seen = await device(h, world.app_db, agents=[off])
    assert last_online(h, LAPTOP) == "device laptop online: nothing overdue"
    assert job_next(h, "off") is None and h.daemon.scheduler.scheduler.get_job("off") is None  # type: ignore[union-attr]
    st = await status_of(cli, "off")
    assert (st.enabled, st.next_run_at, st.last_run_at, st.last_status) == (False, None, None, None)

    await disconnect(h, laptop)
    world.clock.set(at(13, 20))  # three slots later
    laptop, seen = await device(h, world.app_db, agents=[off])
    assert last_online(h, LAPTOP) == "device laptop online: nothing overdue"
    assert journal(h, "off") == [] and not seen.of(RunStarted)

    ack = await cli.trigger("off")
    done = await cli.wait_run(ack.run_id or "", timeout=15)
    assert (done.trigger, done.status) == ("manual", "success")
    await idle(h)
    st = await status_of(cli, "off")
    assert (st.next_run_at, when(st.last_run_at), st.last_status) == (None, at(13, 20), "success")

    # enabling adds the job (no run: 13:00 is covered by the manual run), disabling removes it
    await laptop.agents_sync([agent("off", "0 * * * *", world.folder, enabled=True)])
    assert when((await status_of(cli, "off")).next_run_at) == at(14)
    await laptop.agents_sync([off])
    assert decisions(h, "job of off removed")
    assert h.daemon.scheduler.scheduler.get_job("off") is None  # type: ignore[union-attr]
    assert (await status_of(cli, "off")).next_run_at is None
    assert journal(h, "off") == [("manual", "success")]


# --- 6. two triggers at once -------------------------------------------------------------


async def test_a_scheduled_fire_and_a_manual_trigger_at_once_make_one_run(
    world: World, tmp_path: Path
) -> None:
    h = await world.start()
    corpus = tmp_path / "work"
    (corpus / "Branding").mkdir(parents=True)
    (corpus / "Branding" / "todo.md").write_text("TASK: Pick fonts\n", encoding="utf-8")
    gate = asyncio.Event()
    gate.set()

    async def hold(call: ToolCall) -> None:  # the app is slow to answer while the gate is shut
        await gate.wait()

    laptop, seen = await device(
        h, world.app_db, agents=[agent("work", "0 * * * *", corpus)], before_tool_call=hold
    )
    first = (await seen.wait(RunComplete, trigger="reconnect"))[0]
    assert first.status == "success" and first.usage.llm_calls > 0, first.errors
    await idle(h)

    # Round 1: the slot's fire and a click on "run now", at the same moment.
    (corpus / "Branding" / "logo.md").write_text("TASK: Sketch logo\n", encoding="utf-8")
    gate.clear()
    world.clock.set(at(11))
    fired, clicked = await asyncio.gather(
        fire(h, "work"), laptop.trigger("work"), return_exceptions=True
    )
    assert fired is None
    await seen.wait(RunStarted, 2)
    assert len(h.daemon.runs.active()) == 1
    run_id = h.daemon.runs.active()[0].run_id
    if isinstance(clicked, RequestFailed):  # the fire came first
        assert clicked.code == "already_running"
        assert h.daemon.runs.active()[0].trigger == "schedule"
    else:  # the click came first: the fire folded into it
        assert not isinstance(clicked, BaseException) and clicked.run_id == run_id
        assert decisions(h, "schedule of work coalesced into the running run")
    gate.set()
    done = await laptop.wait_run(run_id, timeout=30)
    assert done.status == "success", done.errors
    await idle(h)
    assert len(seen.of(RunStarted)) == 2  # the first run and this one only
    assert len(journal(h, "work")) == 2

    # Round 2: a manual run is going when the slot comes: the fire folds into it.
    (corpus / "Branding" / "brief.md").write_text("TASK: Write brief\n", encoding="utf-8")
    gate.clear()
    ack = await laptop.trigger("work")
    await seen.wait(RunStarted, 3)
    world.clock.set(at(12))
    await fire(h, "work")
    assert decisions(h, "schedule of work coalesced into the running run (already running)")
    assert [r.run_id for r in h.daemon.runs.active()] == [ack.run_id]
    gate.set()
    done = await laptop.wait_run(ack.run_id or "", timeout=30)
    assert (done.trigger, done.status) == ("manual", "success")
    await idle(h)
    # the manual run covered the 12:00 slot: the timer going off again runs nothing
    await fire(h, "work")
    assert decisions(h, "fire of work not run: a run already finished since the slot")
    assert len(journal(h, "work")) == 3 and len(seen.of(RunStarted)) == 3
    titles = sorted(t["title"] for t in laptop.store.rows("tasks"))
    assert titles == ["Pick fonts", "Sketch logo", "Write brief"]


# --- 7. survives -------------------------------------------------------------------------


async def test_a_fire_that_raises_is_logged_and_the_schedule_keeps_going(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    h = await world.start()
    hourly = agent("hourly", "0 * * * *", world.folder)
    laptop, seen = await device(h, world.app_db, agents=[hourly])
    await seen.wait(RunComplete, trigger="reconnect")
    await idle(h)
    await disconnect(h, laptop)

    # Another process holds the state database's write lock at 11:00: journaling the
    # skipped fire fails after SQLite's busy timeout, so the job function raises.
    locker = sqlite3.connect(world.paths.state_db, isolation_level=None, timeout=0)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        world.clock.set(at(11))
        with caplog.at_level(logging.ERROR, logger="tether.scheduler"):
            await fire(h, "hourly", timeout=30)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert "scheduled fire of hourly failed" in caplog.text
    assert "database is locked" in caplog.text
    assert decisions(h, "fire of hourly failed (see log)")
    assert journal(h, "hourly") == [("reconnect", "success")]
    assert h.daemon.scheduler.running and job_next(h, "hourly") == at(12)  # the job stays

    # the next slot works again, and the app coming back gets its one catch-up run
    world.clock.set(at(12))
    await fire(h, "hourly")
    assert journal(h, "hourly") == [("reconnect", "success"), ("schedule", "skipped")]
    world.clock.set(at(12, 10))
    laptop, seen = await device(h, world.app_db, agents=[hourly])
    (done,) = await seen.wait(RunComplete, trigger="reconnect")
    assert done.status == "success"
    await idle(h)
    assert journal(h, "hourly")[-1] == ("reconnect", "success")
    assert len(journal(h, "hourly")) == 3


async def test_a_clock_jump_of_days_gives_one_run_not_a_burst(world: World) -> None:
    h = await world.start()
    hourly = agent("hourly", "0 * * * *", world.folder)
    laptop, seen = await device(h, world.app_db, agents=[hourly])
    await seen.wait(RunComplete, trigger="reconnect")
    await idle(h)

    # The laptop slept three days with the app open: the clock jumps, and the job's
    # timer is 3 days (72 slots) late when the loop wakes up.
    world.clock.set(at(13, 5, day=8))
    await fire(h, "hourly", due=datetime.now(UTC) - timedelta(days=3))
    (done,) = await seen.wait(RunComplete, trigger="schedule")
    assert done.status == "success" and when(done.started_at) == at(13, 5, day=8)
    await idle(h)
    assert job_next(h, "hourly") == at(14, day=8)  # the next slot after now, not 3 days ago
    assert journal(h, "hourly") == [("reconnect", "success"), ("schedule", "success")]
    # the timer going off again for the same wake-up runs nothing
    await fire(h, "hourly")
    assert decisions(h, "fire of hourly not run: a run already finished since the slot")
    # and reconnecting finds nothing overdue
    await disconnect(h, laptop)
    laptop, seen = await device(h, world.app_db, agents=[hourly])
    assert last_online(h, LAPTOP) == "device laptop online: nothing overdue"
    assert len(journal(h, "hourly")) == 2 and not seen.of(RunStarted)
    st = await status_of(laptop, "hourly")
    assert (when(st.last_run_at), st.last_status, when(st.next_run_at)) == (
        at(13, 5, day=8),
        "success",
        at(14, day=8),
    )


async def test_after_a_restart_overdue_comes_from_the_journal(world: World) -> None:
    h1 = await world.start()
    agents = [
        agent("hourly", "0 * * * *", world.folder),  # slot 10:00: covered by the 10:20 run
        agent("quarter", "45 * * * *", world.folder),  # slot 10:45 passes while stopped
    ]
    _, seen = await device(h1, world.app_db, agents=agents)
    await seen.wait(RunComplete, 2, trigger="reconnect")
    await idle(h1)
    await world.stop(h1)

    world.clock.set(at(10, 50))
    h2 = await world.start()
    cli, _ = await control(h2)
    # the cached agents have their jobs before any app connects
    assert (job_next(h2, "hourly"), job_next(h2, "quarter")) == (at(11), at(11, 45))
    status = {a.id: a for a in (await cli.status()).agents}
    assert {
        k: (when(a.last_run_at), a.last_status, when(a.next_run_at)) for k, a in status.items()
    } == {
        "hourly": (T0, "success", at(11)),
        "quarter": (T0, "success", at(11, 45)),
    }
    _, seen = await device(h2, world.app_db, agents=agents)
    assert last_online(h2, LAPTOP) == "device laptop online: catch-up queued for quarter"
    (done,) = await seen.wait(RunComplete, trigger="reconnect")
    assert done.agent_id == "quarter" and done.status == "success"
    await idle(h2)
    assert [e.agent_id for e in seen.of(RunStarted)] == ["quarter"]
    assert journal(h2, "hourly") == [("reconnect", "success")]
    assert journal(h2, "quarter") == [("reconnect", "success"), ("reconnect", "success")]
    st = await status_of(cli, "quarter")
    assert (when(st.last_run_at), st.last_status, when(st.next_run_at)) == (
        at(10, 50),
        "success",
        at(11, 45),
    )

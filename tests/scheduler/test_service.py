"""The scheduler service (scheduler.service): jobs, fires, catch-up, APScheduler wiring.

The service's edge (agents, journal, online check, run manager) is a fake recording
its calls, and the clock is injected. Fires are driven by calling the APScheduler
job's function; two tests let APScheduler's own timer fire, within a second.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger

from protocol.agent_config import AgentConfig, LocalDirectoryAgent
from scheduler.cron import next_fire
from scheduler.errors import InvalidCron
from scheduler.service import CronScheduleTrigger, SchedulerService

BERLIN = ZoneInfo("Europe/Berlin")
# Wednesday 2026-03-04, 11:20 in Berlin.
NOW = datetime(2026, 3, 4, 10, 20, tzinfo=UTC)


def agent(
    agent_id: str, cron: str = "0 * * * *", *, device: str | None = None, enabled: bool = True
) -> AgentConfig:
    return LocalDirectoryAgent(
        id=agent_id,
        name=agent_id,
        schedule_cron=cron,
        enabled=enabled,
        device_id=device,
        directory_paths=["/tmp/notes"],
    )


class Edge:
    """The injected callables: a fake agent list, journal, device table and run manager."""

    def __init__(self, *agents: AgentConfig) -> None:
        self.configs = list(agents)
        self.now = NOW
        self.last: dict[str, datetime] = {}
        self.online: set[str] = set()
        self.active: set[str] = set()  # agents with a run in progress
        self.calls: list[tuple[str, str]] = []  # every start_run(agent, trigger)
        self.started: list[tuple[str, str]] = []
        self.skipped: list[tuple[str, str, str]] = []
        self.answer: str | None = None  # force start_run's answer
        self.errors: list[Exception] = []  # raised by the next start_run calls
        self.called = asyncio.Event()

    def agents(self) -> list[AgentConfig]:
        return list(self.configs)

    def last_run_at(self, agent_id: str) -> datetime | None:
        return self.last.get(agent_id)

    def is_online(self, config: AgentConfig) -> bool:
        return config.device_id in self.online if config.device_id else bool(self.online)

    async def start_run(self, config: AgentConfig, trigger: str) -> str:
        self.calls.append((config.id, trigger))
        self.called.set()
        if self.errors:
            raise self.errors.pop(0)
        if self.answer is not None:
            return self.answer
        if config.id in self.active:
            return "already_running"
        self.active.add(config.id)
        self.started.append((config.id, trigger))
        return "started"

    async def record_skipped(self, config: AgentConfig, trigger: str, reason: str) -> None:
        self.skipped.append((config.id, trigger, reason))

    def finish(self, agent_id: str, at: datetime) -> None:
        self.active.discard(agent_id)
        self.last[agent_id] = at

    def service(self, **extra: Any) -> SchedulerService:
        options: dict[str, Any] = {"clock": lambda: self.now, "heartbeat_s": 0.0}
        options.update(extra)
        return SchedulerService(
            agents=self.agents,
            last_run_at=self.last_run_at,
            is_online=self.is_online,
            start_run=self.start_run,
            record_skipped=self.record_skipped,
            tz=BERLIN,
            **options,
        )


@pytest.fixture
def edge() -> Edge:
    return Edge()


@pytest.fixture
async def running(edge: Edge) -> AsyncIterator[SchedulerService]:
    service = edge.service()
    yield service
    service.shutdown()
    await asyncio.sleep(0)  # let APScheduler run its deferred shutdown


async def fire(service: SchedulerService, agent_id: str) -> None:
    """What APScheduler does when the job is due: call the job function."""
    assert service.scheduler is not None
    job = service.scheduler.get_job(agent_id)
    assert job is not None, f"no job for {agent_id}"
    await job.func()


def real_now(tz: tzinfo = BERLIN) -> datetime:
    return datetime.now(tz)


# --- the trigger --------------------------------------------------------------------


def test_trigger_reads_weekday_0_as_sunday_unlike_from_crontab() -> None:
    wednesday = datetime(2026, 3, 4, 12, 0, tzinfo=BERLIN)
    ours = CronScheduleTrigger("0 9 * * 0", BERLIN).get_next_fire_time(None, wednesday)
    assert ours == datetime(2026, 3, 8, 9, 0, tzinfo=BERLIN)
    assert ours.strftime("%A") == "Sunday"
    # The APScheduler bug this trigger exists for: 0 is read as Monday.
    theirs = CronTrigger.from_crontab("0 9 * * 0", timezone=BERLIN)
    assert theirs.get_next_fire_time(None, wednesday).strftime("%A") == "Monday"
    assert CronScheduleTrigger("0 9 * * 7", BERLIN).get_next_fire_time(None, wednesday) == ours


def test_trigger_computes_in_its_zone_across_dst() -> None:
    trigger = CronScheduleTrigger("0 9 * * *", BERLIN)
    before = trigger.get_next_fire_time(None, datetime(2026, 3, 28, 12, 0, tzinfo=UTC))
    assert before is not None
    after = trigger.get_next_fire_time(before, before)
    assert after is not None
    assert before.astimezone(UTC) == datetime(2026, 3, 29, 7, 0, tzinfo=UTC)  # CEST
    assert after.astimezone(UTC) == datetime(2026, 3, 30, 7, 0, tzinfo=UTC)
    assert before.utcoffset() == timedelta(hours=2)
    new_york = CronScheduleTrigger("0 9 * * *", ZoneInfo("America/New_York"))
    assert new_york.get_next_fire_time(None, NOW) == datetime(2026, 3, 4, 14, 0, tzinfo=UTC)


def test_trigger_next_fire_is_after_now_so_a_wake_up_fires_once() -> None:
    trigger = CronScheduleTrigger("* * * * *", BERLIN)
    three_days_ago = NOW - timedelta(days=3)
    # APScheduler enumerates due run times with get_next_fire_time(previous, now):
    # a long sleep yields one due fire, not 4320.
    assert trigger.get_next_fire_time(three_days_ago, NOW) == NOW + timedelta(minutes=1)
    exact = datetime(2026, 3, 4, 10, 20, tzinfo=UTC)
    assert trigger.get_next_fire_time(exact, exact) == exact + timedelta(minutes=1)


def test_trigger_validates_and_normalizes_the_expression() -> None:
    with pytest.raises(InvalidCron, match="expected 5 fields"):
        CronScheduleTrigger("0 9 * * * *", BERLIN)
    assert CronScheduleTrigger("@hourly", BERLIN).expr == "0 * * * *"
    assert str(CronScheduleTrigger("0  9 * * MON", BERLIN)) == "cron[0 9 * * mon]"


# --- jobs -----------------------------------------------------------------------------


async def test_one_job_per_enabled_agent(edge: Edge, running: SchedulerService) -> None:
    edge.configs = [
        agent("hourly"),
        agent("off", enabled=False),
        agent("sunday", "0 9 * * 0"),
        agent("broken", "0 9 * * * *"),  # validated upstream; never crashes the service
    ]
    running.start()
    assert running.scheduler is not None
    jobs = {job.id: job for job in running.scheduler.get_jobs()}
    assert set(jobs) == {"hourly", "sunday"}
    for job in jobs.values():
        assert (job.coalesce, job.max_instances, job.misfire_grace_time) == (True, 1, None)
        assert isinstance(job.trigger, CronScheduleTrigger)

    now = real_now()
    hourly = running.next_run_at("hourly")
    assert hourly is not None and hourly.minute == 0 and hourly.second == 0
    assert timedelta(0) < hourly - now <= timedelta(hours=1)
    sunday = running.next_run_at("sunday")
    assert sunday is not None and sunday.strftime("%A %H:%M") == "Sunday 09:00"
    assert sunday.tzinfo == BERLIN
    assert running.next_run_at("off") is None
    assert running.next_run_at("broken") is None
    assert running.next_run_at("nobody") is None
    assert any("no job for broken: invalid cron" in d for d in running.decisions)


def test_next_run_at_before_start_uses_the_clock(edge: Edge) -> None:
    edge.configs = [agent("hourly"), agent("off", enabled=False)]
    service = edge.service()
    assert service.next_run_at("hourly") == datetime(2026, 3, 4, 11, 0, tzinfo=UTC)
    assert service.next_run_at("off") is None


async def test_agents_changed_replaces_removes_and_adds(
    edge: Edge, running: SchedulerService
) -> None:
    edge.configs = [agent("a"), agent("b"), agent("c"), agent("same")]
    running.start()
    assert running.scheduler is not None
    same_job = running.scheduler.get_job("same")

    edge.configs = [
        agent("a", "30 * * * *"),  # new cron
        agent("b", enabled=False),  # disabled
        # c deleted
        agent("d", "15 * * * *"),  # new
        agent("same"),  # touched, cron unchanged
    ]
    running.agents_changed({"a", "b", "c", "d", "same"})

    assert {job.id for job in running.scheduler.get_jobs()} == {"a", "d", "same"}
    job = running.scheduler.get_job("a")
    assert job.trigger.expr == "30 * * * *"
    moved = running.next_run_at("a")
    assert moved is not None and moved.minute == 30
    assert timedelta(0) < moved - real_now() <= timedelta(hours=1)  # the new slot only
    assert running.next_run_at("b") is None
    assert running.next_run_at("c") is None
    added = running.next_run_at("d")
    assert added is not None and added.minute == 15
    assert running.scheduler.get_job("same") is same_job  # not churned
    text = "\n".join(running.decisions)
    assert "job of a replaced: 30 * * * *" in text
    assert "job of b removed" in text and "job of c removed" in text
    assert "job of d added" in text

    edge.configs.append(agent("b"))  # re-enabled
    running.agents_changed({"b"})
    assert running.next_run_at("b") is not None


# --- fires ------------------------------------------------------------------------------


async def test_a_minutely_fire_starts_a_scheduled_run(
    edge: Edge, running: SchedulerService
) -> None:
    edge.configs = [agent("minutely", "* * * * *")]
    edge.online = {"laptop-1"}
    running.start()
    nxt = running.next_run_at("minutely")
    assert nxt is not None and nxt.second == 0
    assert timedelta(0) < nxt - real_now() <= timedelta(minutes=1)

    await fire(running, "minutely")

    assert edge.started == [("minutely", "schedule")]
    assert edge.skipped == []
    assert "fired minutely (schedule)" in running.decisions
    assert "started minutely (schedule)" in running.decisions


async def test_offline_at_fire_time_is_skipped_and_caught_up_on_reconnect(
    edge: Edge, running: SchedulerService
) -> None:
    edge.configs = [agent("bound", device="laptop-1"), agent("free")]
    edge.online = {"laptop-2"}  # another device: fine for "free", not for "bound"
    running.start()

    await fire(running, "bound")
    edge.online = set()
    await fire(running, "free")

    assert edge.calls == []
    assert edge.skipped == [
        ("bound", "schedule", "device laptop-1 was offline at 2026-03-04T11:20:00+01:00"),
        ("free", "schedule", "the desktop app was offline at 2026-03-04T11:20:00+01:00"),
    ]
    assert any(d.startswith("skipped bound (schedule)") for d in running.decisions)

    # A skipped fire is not a run: the agent stays overdue and runs on reconnect.
    edge.online = {"laptop-1"}
    task = running.device_online("laptop-1")
    assert task is not None
    await task
    assert edge.started == [("bound", "reconnect"), ("free", "reconnect")]


async def test_a_fire_meeting_a_running_run_is_coalesced(
    edge: Edge, running: SchedulerService
) -> None:
    edge.configs = [agent("busy")]
    edge.online = {"laptop-1"}
    edge.active = {"busy"}
    running.start()

    await fire(running, "busy")

    assert edge.calls == [("busy", "schedule")]
    assert edge.started == []
    assert edge.skipped == []
    assert "schedule of busy coalesced into the running run (already running)" in (
        running.decisions
    )


async def test_device_offline_race_is_skipped(edge: Edge, running: SchedulerService) -> None:
    edge.configs = [agent("racy", device="laptop-1")]
    edge.online = {"laptop-1"}
    edge.answer = "device_offline"  # went away between the check and the start
    running.start()

    await fire(running, "racy")

    assert edge.calls == [("racy", "schedule")]
    assert edge.skipped == [
        ("racy", "schedule", "device laptop-1 was offline at 2026-03-04T11:20:00+01:00")
    ]


async def test_an_unknown_answer_is_logged(edge: Edge, running: SchedulerService) -> None:
    edge.configs = [agent("odd")]
    edge.online = {"laptop-1"}
    edge.answer = "not_found"
    running.start()
    await fire(running, "odd")
    assert "schedule of odd refused by the run manager: not_found" in running.decisions
    assert edge.skipped == []


async def test_a_slot_already_covered_by_a_run_is_not_run_again(
    edge: Edge, running: SchedulerService
) -> None:
    edge.configs = [agent("hourly")]
    edge.online = {"laptop-1"}
    edge.last["hourly"] = datetime(2026, 3, 4, 10, 5, tzinfo=UTC)  # after the 11:00 slot
    running.start()

    await fire(running, "hourly")

    assert edge.calls == []
    assert "fire of hourly not run: a run already finished since the slot" in running.decisions


async def test_a_fire_for_an_agent_gone_meanwhile_does_nothing(
    edge: Edge, running: SchedulerService
) -> None:
    edge.configs = [agent("gone")]
    edge.online = {"laptop-1"}
    running.start()
    edge.configs = []  # deleted, listener not called yet
    await fire(running, "gone")
    assert edge.calls == []


async def test_a_failing_fire_is_logged_and_the_job_stays(
    edge: Edge, running: SchedulerService, caplog: pytest.LogCaptureFixture
) -> None:
    edge.configs = [agent("flaky")]
    edge.online = {"laptop-1"}
    edge.errors = [RuntimeError("run manager exploded")]
    running.start()
    assert running.scheduler is not None

    with caplog.at_level(logging.ERROR, logger="tether.scheduler"):
        await fire(running, "flaky")  # does not raise

    [record] = [r for r in caplog.records if r.name == "tether.scheduler"]
    assert "scheduled fire of flaky failed" in record.getMessage()
    assert record.exc_info is not None and "exploded" in str(record.exc_info[1])
    assert running.scheduler.running
    assert running.next_run_at("flaky") is not None
    await fire(running, "flaky")  # and the next fire works
    assert edge.started == [("flaky", "schedule")]


# --- catch-up on reconnect -----------------------------------------------------------


async def test_reconnect_catches_up_overdue_agents_oldest_due_first_once(
    edge: Edge, running: SchedulerService
) -> None:
    edge.configs = [
        agent("alpha-hourly", device="laptop-1"),  # due 11:00 (ran 10:30)
        agent("fresh", device="laptop-1"),  # ran 11:05: not overdue
        agent("mike-daily", "0 8 * * *"),  # no device; due 08:00
        agent("other", device="laptop-2"),  # never ran, but another device's
        agent("zulu-daily", "0 8 * * *", device="laptop-1"),  # due 08:00, tie -> id
        agent("off", device="laptop-1", enabled=False),
    ]
    edge.last = {
        "alpha-hourly": datetime(2026, 3, 4, 9, 30, tzinfo=UTC),
        "fresh": datetime(2026, 3, 4, 10, 5, tzinfo=UTC),
        "mike-daily": datetime(2026, 3, 3, 7, 10, tzinfo=UTC),
        "zulu-daily": datetime(2026, 3, 2, 7, 10, tzinfo=UTC),  # two missed slots
    }
    edge.online = {"laptop-1"}
    running.start()

    first = running.device_online("laptop-1")
    second = running.device_online("laptop-1")  # a quick reconnect
    assert first is not None and second is not None
    await asyncio.gather(first, second)

    expected = [
        ("mike-daily", "reconnect"),
        ("zulu-daily", "reconnect"),
        ("alpha-hourly", "reconnect"),
    ]
    assert edge.started == expected  # once each, oldest due first
    assert edge.calls == expected + expected  # the second pass met the running runs
    coalesced = [d for d in running.decisions if "coalesced into the running run" in d]
    assert len(coalesced) == 3
    assert "device laptop-1 online: catch-up queued for mike-daily, zulu-daily, alpha-hourly" in (
        running.decisions
    )

    # Once those runs finished, nothing is overdue any more.
    for agent_id, _ in expected:
        edge.finish(agent_id, NOW + timedelta(minutes=5))
    edge.now = NOW + timedelta(minutes=6)
    third = running.device_online("laptop-1")
    assert third is not None
    await third
    assert len(edge.calls) == 6
    assert running.decisions[-1] == "device laptop-1 online: nothing overdue"


# --- lifecycle ---------------------------------------------------------------------------


async def test_shutdown_is_idempotent_and_final(edge: Edge) -> None:
    edge.configs = [agent("a")]
    service = edge.service()
    service.start()
    service.start()  # no second scheduler
    scheduler = service.scheduler
    assert scheduler is not None
    service.shutdown()
    service.shutdown()
    await asyncio.sleep(0)
    assert not scheduler.running
    assert service.device_online("laptop-1") is None
    service.agents_changed({"a"})  # ignored
    with pytest.raises(Exception, match="cannot be restarted"):
        service.start()


def test_start_needs_a_running_loop(edge: Edge) -> None:
    with pytest.raises(RuntimeError):
        edge.service().start()


# --- real APScheduler timers (sub-second) ----------------------------------------------


@pytest.fixture
def realtime_edge() -> Iterator[Edge]:
    edge = Edge(agent("soon", "* * * * *"))
    edge.online = {"laptop-1"}
    yield edge


async def test_apscheduler_fires_the_job_and_keeps_it_after_a_failure(
    realtime_edge: Edge,
) -> None:
    edge = realtime_edge
    edge.errors = [RuntimeError("first fire fails")]

    def soon(expr: str, after: datetime, tz: tzinfo) -> datetime:
        return after + timedelta(seconds=0.3)

    service = edge.service(clock=lambda: datetime.now(UTC), next_fire=soon)
    service.start()
    try:
        async with asyncio.timeout(2):
            while len(edge.calls) < 2:  # the failing fire, then the next one
                edge.called.clear()
                await edge.called.wait()
    finally:
        service.shutdown()
        await asyncio.sleep(0)
    assert edge.calls[:2] == [("soon", "schedule"), ("soon", "schedule")]
    assert edge.started[0] == ("soon", "schedule")
    assert any("fire of soon failed" in d for d in service.decisions)


async def test_a_late_job_fires_once_not_a_burst(realtime_edge: Edge) -> None:
    edge = realtime_edge
    service = edge.service()
    service.start()
    try:
        assert service.scheduler is not None
        job = service.scheduler.get_job("soon")
        # As after three hours of suspend: 180 minutely slots were missed.
        job.modify(next_run_time=real_now() - timedelta(hours=3))
        async with asyncio.timeout(2):
            await edge.called.wait()
        await asyncio.sleep(0.05)
        assert edge.calls == [("soon", "schedule")]
        nxt = service.next_run_at("soon")
        assert nxt is not None and nxt > real_now()
    finally:
        service.shutdown()
        await asyncio.sleep(0)


async def test_heartbeat_wakes_the_scheduler(edge: Edge, monkeypatch: pytest.MonkeyPatch) -> None:
    service = edge.service(heartbeat_s=0.01)
    service.start()
    assert service.scheduler is not None
    woken = asyncio.Event()
    monkeypatch.setattr(service.scheduler, "wakeup", woken.set)
    try:
        async with asyncio.timeout(1):
            await woken.wait()
    finally:
        service.shutdown()
        await asyncio.sleep(0)


def test_next_fire_default_is_the_cron_maths() -> None:
    trigger = CronScheduleTrigger("*/15 * * * *", BERLIN)
    assert trigger.get_next_fire_time(None, NOW) == next_fire("*/15 * * * *", NOW, BERLIN)

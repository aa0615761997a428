"""The scheduler service: fires each enabled agent on its cron and catches up on reconnect.

Everything it touches is injected (the agent list, the run journal's ``last_run_at``,
the online check, the run manager's ``start_run`` and ``record_skipped``, the zone, the
clock and the next-fire maths, with defaults ``datetime.now(UTC)`` and
:func:`cron_next_fire`), so the daemon composes it and tests drive it without a
network, sleeps or patching.

Rules:

- **One job per enabled agent**, on an APScheduler 3 ``AsyncIOScheduler`` in ``tz``.
  Disabled agents and agents with an invalid cron have no job (a manual trigger still
  works through the daemon). ``agents_changed`` reconciles: a changed cron replaces the
  job (it fires on the new slots only), deleted or disabled agents lose theirs, new
  enabled ones get one.
- **Triggers are pure functions of (previous, now)** computed by ``scheduler.cron``
  (``CronScheduleTrigger``); APScheduler only arms the timer. ``CronTrigger.from_crontab``
  is not used: APScheduler 3 reads crontab weekday numbers with 0 = Monday, so
  ``0 9 * * 0`` would fire on Mondays.
- **A fire only asks the run manager** ``start_run(agent, "schedule")``; its rules (one
  run per agent, device online, FIFO per device) still hold. Before asking:

  - a slot already covered by a run that finished after it (``is_overdue`` is false at
    ``clock()``, e.g. the reconnect catch-up ran it) is not run again;
  - if the agent's device (or, for an unbound agent, any device) is offline, the fire
    is journaled with ``record_skipped`` and nothing starts (skips in a row are one
    journal entry and one event). Skipped runs do not count in ``last_run_at``, so the
    agent stays overdue and runs on reconnect.

  Answers: ``started``; ``already_running``: the fire is *coalesced into the running
  run*, it is folded into it, no second run starts and nothing is queued; a
  ``device_offline`` race is journaled as skipped; any other code is logged.
- **Catch-up on reconnect.** ``device_online(device_id)`` starts, once each and with
  trigger ``reconnect``, every enabled agent bound to that device or to no device that
  is overdue at ``clock()``; agents bound to another device are never started. Order is
  fair: oldest due slot first (``prev_fire`` ascending, then id); the run manager queues
  them FIFO per device. All missed slots of an agent coalesce into that one run; an
  agent whose run is already active is coalesced as above.
- **No bursts.** The trigger's next fire is always after ``now``, so after a suspended
  laptop or a forward clock jump a job has at most one due fire per wake-up (jobs also
  have ``coalesce=True`` and ``max_instances=1``). That one late fire still runs
  (``misfire_grace_time=None``): the missed slots coalesce into it, as on reconnect.
  asyncio timers run on the monotonic clock, which stops during suspend and ignores
  wall-clock changes, so a heartbeat re-checks the wall clock every ``heartbeat_s``.
- **Failures stay inside.** A fire that raises is logged on ``tether.scheduler`` and the
  job keeps its next fire; the scheduler keeps running.
- **Every decision is logged** (fired, skipped offline, already ran, coalesced, refused,
  catch-up queued/started, job added/replaced/removed) on ``tether.scheduler`` and kept
  in ``decisions``, a bounded deque of the most recent ones.
- **Time**: fire times are aware datetimes in ``tz``; every overdue decision uses the
  injected ``clock()``, never ``datetime.now``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, tzinfo
from functools import partial
from typing import Any

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobEvent,
)
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger

from protocol.agent_config import AgentConfig

from . import cron
from .errors import InvalidCron, SchedulerError

__all__ = [
    "DECISIONS_KEPT",
    "CronScheduleTrigger",
    "NextFire",
    "SchedulerService",
    "cron_next_fire",
]

log = logging.getLogger("tether.scheduler")

NextFire = Callable[[str, datetime, tzinfo], datetime]
"""``(expr, after, tz) -> the first fire time strictly after ``after```` (aware)."""

DECISIONS_KEPT = 200
HEARTBEAT_S = 60.0

STARTED = "started"
ALREADY_RUNNING = "already_running"
DEVICE_OFFLINE = "device_offline"


def _utc_now() -> datetime:
    return datetime.now(UTC)


def cron_next_fire(expr: str, after: datetime, tz: tzinfo) -> datetime:
    """The default :data:`NextFire`: ``scheduler.cron.next_fire``."""
    return cron.next_fire(expr, after, tz)


class CronScheduleTrigger(BaseTrigger):  # type: ignore[misc]  # APScheduler is untyped
    """An APScheduler 3 trigger for a 5-field cron, computed by ``scheduler.cron``.

    ``get_next_fire_time(previous, now)`` is the first slot strictly after ``now`` (and
    after ``previous``): missed slots are never enumerated, so a wake-up yields at most
    one due fire. ``next_fire`` replaces the cron maths (tests use it for sub-minute
    fires); the expression is validated either way.
    """

    __slots__ = ("_next_fire", "expr", "tz")

    def __init__(self, expr: str, tz: tzinfo, *, next_fire: NextFire = cron_next_fire) -> None:
        self.expr = cron.validate_cron(expr)
        self.tz = tz
        self._next_fire = next_fire

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        after = now
        if previous_fire_time is not None and previous_fire_time.astimezone(UTC) > now.astimezone(
            UTC
        ):
            after = previous_fire_time
        return self._next_fire(self.expr, after, self.tz)

    def __str__(self) -> str:
        return f"cron[{self.expr}]"

    def __repr__(self) -> str:
        return f"<CronScheduleTrigger {self.expr!r} tz={self.tz}>"


class SchedulerService:
    """Cron jobs for enabled agents plus the reconnect catch-up (see the module rules)."""

    def __init__(
        self,
        *,
        agents: Callable[[], list[AgentConfig]],
        last_run_at: Callable[[str], datetime | None],
        is_online: Callable[[AgentConfig], bool],
        start_run: Callable[[AgentConfig, str], Awaitable[str]],
        record_skipped: Callable[[AgentConfig, str, str], Awaitable[None]],
        tz: tzinfo,
        clock: Callable[[], datetime] = _utc_now,
        next_fire: NextFire = cron_next_fire,
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        self._agents = agents
        self._last_run_at = last_run_at
        self._is_online = is_online
        self._start_run = start_run
        self._record_skipped = record_skipped
        self.tz = tz
        self._clock = clock
        self._next_fire = next_fire
        self._heartbeat_s = heartbeat_s
        self.decisions: deque[str] = deque(maxlen=DECISIONS_KEPT)
        self.scheduler: AsyncIOScheduler | None = None
        self._stopped = False
        self._tasks: set[asyncio.Task[None]] = set()

    # --- lifecycle -------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.scheduler is not None and not self._stopped

    def start(self) -> None:
        """Start the APScheduler on the running loop and add one job per enabled agent."""
        if self._stopped:
            raise SchedulerError("the scheduler was shut down and cannot be restarted")
        if self.scheduler is not None:
            return
        asyncio.get_running_loop()  # fail here, not inside APScheduler, without a loop
        scheduler = AsyncIOScheduler(timezone=self.tz)
        scheduler.add_listener(
            self._on_job_event, EVENT_JOB_ERROR | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES
        )
        scheduler.start()
        self.scheduler = scheduler
        for agent in self._agents():
            if agent.enabled:
                self._add_job(agent, replaced=False)
        if self._heartbeat_s > 0:
            self._spawn(self._heartbeat(), "scheduler-heartbeat")
        log.info("scheduler started in %s with %d job(s)", self.tz, len(scheduler.get_jobs()))

    def shutdown(self) -> None:
        """Stop firing; idempotent, does not wait for anything."""
        if self._stopped:
            return
        self._stopped = True
        for task in list(self._tasks):
            task.cancel()
        scheduler = self.scheduler
        if scheduler is not None and scheduler.running:
            # APScheduler defers the real shutdown to the loop; a closed loop has no timers.
            with contextlib.suppress(RuntimeError):
                scheduler.shutdown(wait=False)
        log.info("scheduler stopped")

    # --- configuration changes ---------------------------------------------------------

    def agents_changed(self, ids: set[str]) -> None:
        """Reconcile jobs with ``agents()`` after the agents in ``ids`` changed."""
        if not self.running:
            return
        scheduler = self._require_scheduler()
        wanted = {agent.id: agent for agent in self._agents() if agent.enabled}
        for job in scheduler.get_jobs():
            if job.id not in wanted:
                scheduler.remove_job(job.id)
                self._decide("job of %s removed (agent deleted or disabled)", job.id)
        for agent_id, agent in wanted.items():
            job = scheduler.get_job(agent_id)
            if job is None:
                self._add_job(agent, replaced=False)
            elif agent_id in ids and job.trigger.expr != _normalized(agent.schedule_cron):
                self._add_job(agent, replaced=True)

    def _add_job(self, agent: AgentConfig, *, replaced: bool) -> None:
        scheduler = self._require_scheduler()
        try:
            trigger = CronScheduleTrigger(agent.schedule_cron, self.tz, next_fire=self._next_fire)
        except InvalidCron as exc:
            if scheduler.get_job(agent.id) is not None:
                scheduler.remove_job(agent.id)
            self._decide("no job for %s: invalid cron %r: %s", agent.id, agent.schedule_cron, exc)
            return
        job = scheduler.add_job(
            partial(self._fire, agent.id),
            trigger=trigger,
            id=agent.id,
            name=f"agent {agent.id}",
            replace_existing=True,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,
        )
        self._decide(
            "job of %s %s: %s, next %s",
            agent.id,
            "replaced" if replaced else "added",
            trigger.expr,
            _iso(job.next_run_time),
        )

    # --- queries -----------------------------------------------------------------------

    def next_run_at(self, agent_id: str) -> datetime | None:
        """The agent's next scheduled fire; None for a disabled or unknown agent."""
        if self.scheduler is not None:
            job = self.scheduler.get_job(agent_id)
            if job is None or job.next_run_time is None:
                return None
            next_run: datetime = job.next_run_time
            return next_run
        # Not started yet: what start() would schedule.
        agent = self._agent(agent_id)
        if agent is None or not agent.enabled or cron.cron_error(agent.schedule_cron):
            return None
        return self._next_fire(agent.schedule_cron, self._clock(), self.tz)

    # --- firing ------------------------------------------------------------------------

    async def _fire(self, agent_id: str) -> None:
        """The job function: one cron fire of one agent. Never raises."""
        try:
            await self._fire_once(agent_id)
        except Exception:
            log.exception("scheduled fire of %s failed; its next fire stays scheduled", agent_id)
            self.decisions.append(f"fire of {agent_id} failed (see log)")

    async def _fire_once(self, agent_id: str) -> None:
        if self._stopped:
            return
        agent = self._agent(agent_id)
        if agent is None or not agent.enabled:
            self._decide("fire of %s ignored: agent deleted or disabled", agent_id)
            return
        now = self._clock()
        if not cron.is_overdue(agent.schedule_cron, self._last_run_at(agent.id), now, self.tz):
            self._decide("fire of %s not run: a run already finished since the slot", agent.id)
            return
        if not self._is_online(agent):
            await self._skip(agent, "schedule", now)
            return
        self._decide("fired %s (schedule)", agent.id)
        answer = await self._start_run(agent, "schedule")
        await self._handle_answer(agent, "schedule", answer)

    async def _handle_answer(self, agent: AgentConfig, trigger: str, answer: str) -> None:
        if answer == STARTED:
            self._decide("started %s (%s)", agent.id, trigger)
        elif answer == ALREADY_RUNNING:
            self._decide(
                "%s of %s coalesced into the running run (already running)", trigger, agent.id
            )
        elif answer == DEVICE_OFFLINE:
            await self._skip(agent, trigger, self._clock())
        else:
            self._decide("%s of %s refused by the run manager: %s", trigger, agent.id, answer)

    async def _skip(self, agent: AgentConfig, trigger: str, now: datetime) -> None:
        where = f"device {agent.device_id}" if agent.device_id else "the desktop app"
        reason = f"{where} was offline at {_iso(now.astimezone(self.tz))}"
        self._decide("skipped %s (%s): %s", agent.id, trigger, reason)
        await self._record_skipped(agent, trigger, reason)

    # --- catch-up ----------------------------------------------------------------------

    def device_online(self, device_id: str) -> asyncio.Task[None] | None:
        """A device connected: start its overdue agents once each, in a task on the loop.

        Returns that task (callers may ignore it); None after ``shutdown``.
        """
        if self._stopped:
            return None
        return self._spawn(self._catch_up(device_id), f"scheduler-catch-up-{device_id}")

    async def _catch_up(self, device_id: str) -> None:
        try:
            now = self._clock()
            due: list[tuple[datetime, str, AgentConfig]] = []
            for agent in self._agents():
                if not agent.enabled or agent.device_id not in (None, device_id):
                    continue
                if cron.cron_error(agent.schedule_cron) is not None:
                    continue
                last = self._last_run_at(agent.id)
                if cron.is_overdue(agent.schedule_cron, last, now, self.tz):
                    slot = cron.prev_fire(agent.schedule_cron, now, self.tz).astimezone(UTC)
                    due.append((slot, agent.id, agent))
            due.sort(key=lambda item: (item[0], item[1]))
            if not due:
                self._decide("device %s online: nothing overdue", device_id)
                return
            self._decide(
                "device %s online: catch-up queued for %s",
                device_id,
                ", ".join(agent_id for _, agent_id, _ in due),
            )
            for _, _, agent in due:
                if self._stopped:
                    return
                answer = await self._start_run(agent, "reconnect")
                await self._handle_answer(agent, "reconnect", answer)
        except Exception:
            log.exception("catch-up for device %s failed", device_id)
            self.decisions.append(f"catch-up for device {device_id} failed (see log)")

    # --- helpers -----------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        while not self._stopped:
            await asyncio.sleep(self._heartbeat_s)
            if self.scheduler is not None and not self._stopped:
                self.scheduler.wakeup()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _on_job_event(self, event: JobEvent) -> None:
        if event.code == EVENT_JOB_MAX_INSTANCES:
            self._decide("fire of %s dropped: the previous fire is still running", event.job_id)
        elif event.code == EVENT_JOB_MISSED:
            self._decide("fire of %s missed its run time", event.job_id)
        else:
            exception = getattr(event, "exception", None)
            if not isinstance(exception, asyncio.CancelledError):  # shutdown cancels fires
                log.error("job of %s failed: %r", event.job_id, exception)

    def _agent(self, agent_id: str) -> AgentConfig | None:
        return next((agent for agent in self._agents() if agent.id == agent_id), None)

    def _require_scheduler(self) -> AsyncIOScheduler:
        if self.scheduler is None:
            raise SchedulerError("the scheduler is not started")
        return self.scheduler

    def _decide(self, message: str, *args: Any) -> None:
        log.info(message, *args)
        self.decisions.append(message % args if args else message)


def _normalized(expr: str) -> str | None:
    try:
        return cron.validate_cron(expr)
    except InvalidCron:
        return None


def _iso(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment is not None else "none"

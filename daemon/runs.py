"""The run manager: owns every agent run from request to ``run_complete``.

Rules (agents.md, protocol.md "Run events", architecture.md "The path of one run"):

- At most one run per agent at a time, counting runs that wait for a device slot:
  a second request gets ``already_running`` (the scheduler's fires fold into the
  run already there, see ``scheduler.service``).
- A run needs its device online: the agent's ``device_id`` session, or, for an agent
  bound to no device, the most recently connected device. Otherwise
  ``device_offline``.
- At most ``max_concurrent_per_device`` runs execute at once per device; the rest
  wait in FIFO order (the scheduler enqueues overdue agents oldest-due first).
- Journal entry on start and on finish; ``run_started`` and ``run_complete``
  through the event log; ``run_progress`` at most once per ``progress_interval_s``
  per run and phase, plus each phase's last step.
- ``cancel`` sets the run's cancel event (the loop stops between steps) and the
  run ends ``cancelled``. Shutdown cancels every run the same way.
- Whatever happens inside a run (an exception, the app vanishing), the journal
  and ``run_complete`` get a final status: a run never stays "running".
- A state-store write failure (a full disk) stops the run and ends it ``error``
  with "disk full (...)"; its ``run_complete`` is sent from memory even when it
  cannot be journaled. The WAL is checkpointed after each run.
- The journal follows a run's counts as they grow (items recorded as done in the
  ``triage`` and ``process`` phases, inserts and updates the app confirmed), so after a SIGKILL the
  interrupted run shows what was confirmed.

One module, past 500 lines, on purpose: the run manager's life cycle of a run
(accept, wait for a slot, journal, report, cancel, shut down) is one state machine;
the bookkeeping adapter beside it is the part a run writes through.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

from agents.books import FileRecord
from agents.errors import DeviceOffline, LLMError, RunCancelled
from agents.llm import LLM
from agents.run import AgentRunner, Budget, RunContext, RunLimits, RunReport
from protocol.agent_config import AgentConfig
from protocol.errors import ErrorCode
from protocol.frames import RunSummary

from .agent_configs import AgentRegistry
from .config import Config, RunsConfig
from .errors import RunRefused, StateError
from .events import EventLog
from .logs import log_context
from .server import Server
from .session import ClientStore, DeviceSession
from .state import StateStore
from .vectors import NoteVectors

__all__ = ["ActiveRun", "RunManager", "StateBookkeeping", "run_limits"]

log = logging.getLogger("tether.runs")

LLMFactory = Callable[[AgentConfig], LLM]
Runners = Mapping[str, AgentRunner]  # agent kind -> its runner (the composition root's map)


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class StateBookkeeping:
    """``agents.run.Bookkeeping`` over the daemon's state store, for one agent."""

    def __init__(
        self,
        state: StateStore,
        agent: AgentConfig,
        *,
        on_error: Callable[[StateError], None] | None = None,
        on_item_done: Callable[[], None] | None = None,
    ) -> None:
        self.state = state
        self.agent_id = agent.id
        self.on_error = on_error
        self.on_item_done = on_item_done

    def _failed(self, exc: StateError) -> StateError:
        if self.on_error is not None:
            self.on_error(exc)
        return exc

    def file_index(self) -> dict[str, FileRecord]:
        return self.state.file_index(self.agent_id)

    def record_file(self, rec: FileRecord) -> None:
        try:
            self.state.record_file(self.agent_id, rec)
        except StateError as exc:
            raise self._failed(exc) from None
        if self.on_item_done is not None:
            self.on_item_done()

    def forget_files(self, paths: Iterable[str]) -> None:
        try:
            self.state.forget_files(self.agent_id, list(paths))
        except StateError as exc:
            raise self._failed(exc) from None

    def processed_ids(self, provider: str, account: str, ids: Collection[str]) -> set[str]:
        return self.state.processed_ids(provider, account, self.agent_id, ids)

    def mark_processed(self, provider: str, account: str, message_id: str) -> None:
        try:
            self.state.mark_processed(provider, account, self.agent_id, message_id)
        except StateError as exc:
            raise self._failed(exc) from None
        if self.on_item_done is not None:
            self.on_item_done()

    def get_cursor(self, key: str) -> str | None:
        return self.state.get_cursor(self.agent_id, key)

    def set_cursor(self, key: str, value: str) -> None:
        try:
            self.state.set_cursor(self.agent_id, key, value)
        except StateError as exc:
            raise self._failed(exc) from None


def run_limits(agent: AgentConfig, runs: RunsConfig) -> RunLimits:
    """The limits of one run of ``agent``: config.toml's, and the agent's own budget,
    each limit it leaves out taken from ``[runs.budget]``."""
    own, defaults = agent.budget, runs.budget
    return RunLimits(
        step_budget=runs.step_budget,
        tool_call_budget=runs.tool_call_budget,
        max_file_bytes=runs.max_file_bytes,
        chunk_chars=runs.chunk_chars,
        batch_chars=runs.chunk_chars,
        budget=Budget(
            max_llm_calls=own.max_llm_calls or defaults.max_llm_calls,
            max_prompt_tokens=own.max_prompt_tokens or defaults.max_prompt_tokens,
            max_cost_usd=own.max_cost_usd or defaults.max_cost_usd,
        ),
    )


@dataclass
class ActiveRun:
    run_id: str
    agent: AgentConfig
    trigger: str
    run_context: dict[str, Any] | None
    device_id: str
    requested_at: datetime
    started_at: datetime | None = None
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    phase: str | None = None
    done: int = 0
    total: int = 0
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    # The first state-store write failure ("disk full (...)"): the run ends error.
    state_failure: str | None = None
    # Running counts: items recorded as done in the process phase, and what the app confirmed.
    items_done: int = 0
    created: int = 0
    updated: int = 0
    _journaled_counts: tuple[int, int, int] = (0, 0, 0)
    _last_progress: dict[str, float] = field(default_factory=dict)

    def summary(self) -> RunSummary:
        return RunSummary(
            run_id=self.run_id,
            agent_id=self.agent.id,
            trigger=self.trigger,
            started_at=_iso(self.started_at or self.requested_at),
            phase=self.phase,
            done=self.done,
            total=self.total,
        )


class RunManager:
    def __init__(
        self,
        *,
        state: StateStore,
        registry: AgentRegistry,
        server: Server,
        events: EventLog,
        config: Config,
        llm_factory: LLMFactory,
        runners: Runners,
        tz: tzinfo,
        protected: Sequence[str] = (),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        vectors: NoteVectors | None = None,
    ) -> None:
        self.vectors = vectors
        self.state = state
        self.registry = registry
        self.server = server
        self.events = events
        self.config = config
        self.llm_factory = llm_factory
        self.runners = runners
        self.protected = tuple(protected)
        self.tz = tz
        self.clock = clock
        self._by_agent: dict[str, ActiveRun] = {}
        self._by_run: dict[str, ActiveRun] = {}
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._closing = False

    # --- queries ---------------------------------------------------------------------

    def active(self) -> list[ActiveRun]:
        return list(self._by_run.values())

    def active_for(self, agent_id: str) -> ActiveRun | None:
        return self._by_agent.get(agent_id)

    def device_for(self, agent: AgentConfig) -> DeviceSession | None:
        return self.server.device(agent.device_id)

    # --- starting --------------------------------------------------------------------

    def start(
        self,
        agent_id: str,
        trigger: str,
        *,
        run_context: dict[str, Any] | None = None,
    ) -> ActiveRun:
        """Accept a run (it may wait for a device slot); raises :class:`RunRefused`."""
        if self._closing:
            raise RunRefused(ErrorCode.BUSY, "the daemon is shutting down")
        agent = self.registry.get(agent_id)
        if agent is None:
            raise RunRefused(ErrorCode.UNKNOWN_AGENT, f"no agent {agent_id!r}")
        current = self._by_agent.get(agent_id)
        if current is not None:
            raise RunRefused(
                ErrorCode.ALREADY_RUNNING,
                f"agent {agent_id} is already running (run {current.run_id})",
                run_id=current.run_id,
            )
        device = self.device_for(agent)
        if device is None:
            where = f"device {agent.device_id}" if agent.device_id else "no desktop app"
            raise RunRefused(
                ErrorCode.DEVICE_OFFLINE,
                f"agent {agent_id} needs the desktop app, and {where} is connected"
                if not agent.device_id
                else f"agent {agent_id} runs only while {where} is connected; it is offline",
            )
        run = ActiveRun(
            run_id=uuid.uuid4().hex,
            agent=agent,
            trigger=trigger,
            run_context=run_context if run_context is not None else agent.run_context,
            device_id=device.device_id,
            requested_at=self.clock(),
        )
        self._by_agent[agent_id] = run
        self._by_run[run.run_id] = run
        run.task = asyncio.create_task(self._execute(run), name=f"run-{agent_id}")
        # However the task ends, also when it is cancelled before its coroutine began
        # (shutdown in the same pass); it runs before any awaiter of the task resumes.
        run.task.add_done_callback(lambda _: self._forget(run))
        log.info(
            "run %s of %s accepted (%s)",
            run.run_id,
            agent_id,
            trigger,
            extra={"run_id": run.run_id, "agent_id": agent_id},
        )
        return run

    async def record_skipped(self, agent: AgentConfig, trigger: str, reason: str) -> None:
        """A fire that could not run (device offline): journal and event, status skipped.

        Skips in a row are one journal entry and one event (``StateStore.record_skipped``)."""
        run_id = uuid.uuid4().hex
        now = self.clock()
        record = self.state.record_skipped(run_id, agent.id, trigger, now, reason)
        if record.run_id != run_id:
            # Another skip in a row: the journal's skipped run was extended. No new
            # event, so a day of skipped fires cannot push real runs out of the replay.
            fires = (record.detail or {}).get("skipped_fires")
            log.debug(
                "run of %s skipped again (%s fires in a row): %s",
                agent.id,
                fires,
                reason,
                extra={"run_id": record.run_id, "agent_id": agent.id},
            )
            return
        await self.events.run_complete(
            run_id=run_id,
            agent_id=agent.id,
            agent_name=agent.name,
            trigger=trigger,
            status="skipped",
            started_at=_iso(now),
            finished_at=_iso(now),
            errors=[reason],
            **({"run_context": agent.run_context} if agent.run_context else {}),
        )
        log.info(
            "run of %s skipped: %s",
            agent.id,
            reason,
            extra={"run_id": run_id, "agent_id": agent.id},
        )

    # --- cancelling ------------------------------------------------------------------

    def cancel(self, target: str) -> bool:
        """Cancel the run ``target`` names (a run id, or an agent id with a run)."""
        run = self._by_run.get(target) or self._by_agent.get(target)
        if run is None:
            return False
        log.info(
            "run %s: cancel requested",
            run.run_id,
            extra={"run_id": run.run_id, "agent_id": run.agent.id},
        )
        run.cancel.set()
        return True

    async def shutdown(self, timeout: float = 10.0) -> None:
        """Cancel every run and wait for their journal entries (idempotent)."""
        self._closing = True
        runs = list(self._by_run.values())
        for run in runs:
            run.cancel.set()
            if run.task is not None and run.started_at is None:
                run.task.cancel()
        tasks = [r.task for r in runs if r.task is not None]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=2.0)

    # --- executing -------------------------------------------------------------------

    def _slot(self, device_id: str) -> asyncio.Semaphore:
        slot = self._slots.get(device_id)
        if slot is None:
            slot = asyncio.Semaphore(self.config.runs.max_concurrent_per_device)
            self._slots[device_id] = slot
        return slot

    async def _execute(self, run: ActiveRun) -> None:
        try:
            with log_context(run_id=run.run_id, agent_id=run.agent.id):
                async with self._slot(run.device_id):
                    await self._run(run)
        except asyncio.CancelledError:
            if run.started_at is None:
                log.info("run %s cancelled before it started", run.run_id)
        except Exception:
            # The bookkeeping itself failed (e.g. the state store is locked): say so in
            # the log; the journal closes the run at the next start if it stayed open.
            log.exception("run %s of %s could not be journaled", run.run_id, run.agent.id)

    def _forget(self, run: ActiveRun) -> None:
        """The run is over: no longer active, ``finished`` set (idempotent)."""
        if self._by_agent.get(run.agent.id) is run:
            del self._by_agent[run.agent.id]
        self._by_run.pop(run.run_id, None)
        run.finished.set()

    async def _run(self, run: ActiveRun) -> None:
        agent = run.agent
        started = self.clock()
        run.started_at = started
        extra = {"run_context": run.run_context} if run.run_context is not None else {}
        journaled = True
        try:
            self.state.start_run(
                run.run_id, agent.id, run.trigger, started, run_context=run.run_context
            )
        except StateError as exc:
            journaled = False
            self._state_failed(run, exc)
            report = RunReport(status="error")
        else:
            await self.events.run_started(
                run_id=run.run_id,
                agent_id=agent.id,
                agent_name=agent.name,
                trigger=run.trigger,
                started_at=_iso(started),
                **extra,
            )
            report = await self._report(run)
        if run.state_failure is not None:
            report.status = "error"
            report.errors = [run.state_failure, *report.errors]
        finished = self.clock()
        usage = report.usage
        usage_dict: dict[str, float] = {
            "llm_calls": usage.llm_calls,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
        }
        if usage.cost_usd is not None:
            usage_dict["cost_usd"] = usage.cost_usd
        if journaled:
            try:
                self.state.finish_run(
                    run.run_id,
                    report.status,
                    finished,
                    items_processed=report.items_processed,
                    items_created=report.items_created,
                    items_updated=report.items_updated,
                    errors=report.errors,
                    usage=usage_dict,
                    detail=report.detail,
                )
            except StateError as exc:
                # The run_complete below still goes out, from memory.
                log.error("run %s: its result could not be journaled: %s", run.run_id, exc)
                if run.state_failure is None:
                    report.status = "error"
                    report.errors = [*report.errors, f"the result was not journaled: {exc}"]
        await self.events.run_complete(
            run_id=run.run_id,
            agent_id=agent.id,
            agent_name=agent.name,
            trigger=run.trigger,
            status=report.status,
            started_at=_iso(started),
            finished_at=_iso(finished),
            items_processed=report.items_processed,
            items_created=report.items_created,
            items_updated=report.items_updated,
            errors=report.errors,
            usage=usage_dict,
            **({"changes": report.changes} if report.changes else {}),
            **extra,
        )
        self.state.checkpoint()
        log.info(
            "run %s of %s finished %s: %d processed, %d created, %d updated, %d errors",
            run.run_id,
            agent.id,
            report.status,
            report.items_processed,
            report.items_created,
            report.items_updated,
            len(report.errors),
        )

    def _state_failed(self, run: ActiveRun, exc: StateError) -> None:
        """A state-store write failed: the run stops and ends error (once)."""
        if run.state_failure is None:
            text = str(exc)
            run.state_failure = text if text.startswith("disk full") else f"state store: {text}"
            log.error("run %s stops: %s", run.run_id, text)
        run.cancel.set()

    def _journal_counts(self, run: ActiveRun) -> None:
        """Journal the run's counts so far, when they changed."""
        counts = (run.items_done, run.created, run.updated)
        if counts == run._journaled_counts or run.state_failure is not None:
            return
        try:
            self.state.update_run_counts(
                run.run_id,
                items_processed=counts[0],
                items_created=counts[1],
                items_updated=counts[2],
            )
        except StateError as exc:
            self._state_failed(run, exc)
            return
        run._journaled_counts = counts

    def _item_done(self, run: ActiveRun) -> None:
        # Items recorded as done after the source's own phase (whose records are
        # stat refreshes and moved files): skipped at triage, or processed.
        if run.phase in ("triage", "process"):
            run.items_done += 1
            self._journal_counts(run)

    def _confirmed(self, run: ActiveRun, store: ClientStore) -> None:
        run.created, run.updated = store.created, store.updated
        self._journal_counts(run)

    async def _report(self, run: ActiveRun) -> RunReport:
        """Run the agent; turn every way a run can end into a report."""
        device = self.server.device(run.device_id)
        if device is None or device.closed:
            return RunReport(
                status="error", errors=["the desktop app disconnected before the run started"]
            )
        runner = self.runners.get(run.agent.kind)
        if runner is None:
            return RunReport(
                status="error",
                errors=[
                    f"{run.agent.kind} agents are not available in this version of tether; "
                    f"these kinds run: {', '.join(sorted(self.runners))}"
                ],
            )
        try:
            report = await runner(await self._context(run, device))
        except LLMError as exc:  # the model could not be set up (no model, no key)
            report = RunReport(status="error", errors=[str(exc)])
        except (RunCancelled, asyncio.CancelledError):
            report = RunReport(status="cancelled", errors=["cancelled"])
        except DeviceOffline as exc:
            report = RunReport(
                status="error", errors=[f"the desktop app went away during the run: {exc}"]
            )
        except StateError as exc:  # a bookkeeping write failed: _run says how
            self._state_failed(run, exc)
            report = RunReport(status="error")
        except Exception as exc:  # a bug (here or in the LLM's set-up) must not leave it "running"
            log.exception("run %s crashed", run.run_id)
            report = RunReport(
                status="error", errors=[f"internal error: {type(exc).__name__}: {exc}"]
            )
        if run.cancel.is_set() and report.status != "cancelled" and run.state_failure is None:
            report.status = "cancelled"
        return report

    async def _context(self, run: ActiveRun, device: DeviceSession) -> RunContext:
        """What the runner gets: the model, the app's store, the bookkeeping, the limits."""
        llm = await asyncio.to_thread(self.llm_factory, run.agent)  # keyring may block
        store = device.store(
            run_id=run.run_id,
            run_context=run.run_context,
            on_confirmed=lambda store: self._confirmed(run, store),
        )
        ctx = RunContext(
            run_id=run.run_id,
            agent=run.agent,
            store=store,
            llm=llm,
            books=StateBookkeeping(
                self.state,
                run.agent,
                on_error=lambda exc: self._state_failed(run, exc),
                on_item_done=lambda: self._item_done(run),
            ),
            progress=lambda phase, done, total, detail: self._progress(
                run, phase, done, total, detail
            ),
            cancel=run.cancel,
            tz=self.tz,
            protected=self.protected,
            limits=run_limits(run.agent, self.config.runs),
        )
        if self.vectors is not None:
            ctx.notes = await self.vectors.index_for(device, store)
        return ctx

    async def _progress(
        self, run: ActiveRun, phase: str, done: int, total: int, detail: str | None
    ) -> None:
        run.phase, run.done, run.total = phase, done, total
        self._journal_counts(run)
        now = time.monotonic()
        last = run._last_progress.get(phase, 0.0)
        if done < total and now - last < self.config.runs.progress_interval_s:
            return
        run._last_progress[phase] = now
        fields: dict[str, Any] = {
            "run_id": run.run_id,
            "phase": phase,
            "done": done,
            "total": total,
        }
        if detail:
            fields["detail"] = detail
        with contextlib.suppress(Exception):
            await self.events.run_progress(**fields)

"""The run manager (``daemon/runs.py``): one run per agent, device slots, refusals,
cancel, progress, and a final status in the journal whatever happens.

Real parts: a ``StateStore`` file in tmp_path, the daemon's server on loopback, the
reference client (the desktop app) with its SQLite store, the local-directory agent,
and real litellm against the local test model. The manager under test is built
beside the daemon's own, on the same state store, registry, server and event log,
so each test chooses its limits and its LLM. A run is held at its first tool call by
a ``Gate`` in the app (the reference client's ``before_tool_call`` hook).

The helpers ``make_manager``, ``refusal`` and ``finish`` are the only places that
know the manager's constructor and its refusal error.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from agents.llm import LLM
from agents.run import AgentRunner, RunContext, RunReport
from daemon.errors import RunRefused
from daemon.runs import ActiveRun, RunManager
from daemon.state import RunRecord
from protocol.agent_config import AgentConfig
from protocol.errors import ErrorCode
from protocol.frames import RunComplete, RunProgress, RunStarted, ToolCall
from protocol.reference import ProtocolClient, ReferenceClient
from tests.conftest import DaemonFactory, DaemonHarness
from tests.support.agent_model import OfficeModel
from tests.support.llm_server import FakeLLMServer

RUN_TIMEOUT_S = 60.0

# What RunManager.start raises when it refuses a run; the tests look only at `.code`.
Refusal = RunRefused


# --- helpers -----------------------------------------------------------------------

MakeManager = Callable[..., Awaitable[tuple[DaemonHarness, RunManager]]]


@pytest.fixture
async def make_manager(
    make_daemon: DaemonFactory, llm_server: FakeLLMServer
) -> AsyncIterator[MakeManager]:
    """``await make_manager(h=None, llm=None, runners=None, **runs_limits)``: a
    RunManager over a running daemon's parts (a new daemon with the local test model
    unless ``h``), with the composition root's LLM factory and runner map unless given."""
    llm_server.responder = OfficeModel()
    managers: list[RunManager] = []

    async def make(
        h: DaemonHarness | None = None,
        *,
        llm: Callable[[AgentConfig], LLM] | None = None,
        runners: dict[str, AgentRunner] | None = None,
        **runs: Any,
    ) -> tuple[DaemonHarness, RunManager]:
        if h is None:
            h = await make_daemon(llm__model="openai/office", llm__api_base=llm_server.base_url)
        d = h.daemon
        config = d.config.model_copy(update={"runs": d.config.runs.model_copy(update=runs)})
        manager = RunManager(
            state=d.state,
            registry=d.registry,
            server=d.server,
            events=d.events,
            config=config,
            llm_factory=llm or d.llm.for_agent,
            runners=d.runs.runners if runners is None else runners,
            tz=UTC,
        )
        managers.append(manager)
        return h, manager

    yield make
    for manager in managers:
        await manager.shutdown(timeout=5)


def refusal(manager: RunManager, agent_id: str, trigger: str = "manual") -> str:
    """The error code with which ``start`` refuses the run."""
    with pytest.raises(Refusal) as info:
        manager.start(agent_id, trigger)
    return str(info.value.code)


async def finish(h: DaemonHarness, run: ActiveRun) -> RunRecord:
    """Wait for the run to end; its journal entry."""
    await asyncio.wait_for(run.finished.wait(), RUN_TIMEOUT_S)
    record = h.daemon.state.run(run.run_id)
    assert record is not None, "the run never reached the journal"
    return record


class Gate:
    """Holds every tool call of the app until opened, noting which runs reached it."""

    def __init__(self) -> None:
        self.runs: set[str | None] = set()
        self.opened = asyncio.Event()
        self._arrived = asyncio.Event()

    async def __call__(self, call: ToolCall) -> None:
        self.runs.add(call.run_id)
        self._arrived.set()
        await self.opened.wait()

    async def wait_reached(self, *runs: ActiveRun) -> None:
        """Until each of ``runs`` (or any run, with none) has a tool call held here."""

        async def wait() -> None:
            while not (self.runs >= {r.run_id for r in runs} and self.runs):
                self._arrived.clear()
                await self._arrived.wait()

        await asyncio.wait_for(wait(), RUN_TIMEOUT_S)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "work"
    # Each file large enough to be its own unit of work (small ones are batched).
    filler = "Notes from the weekly call. " * 800
    for i in range(6):
        write(root / f"note-{i}.md", f"TASK: Follow up {i}\n{filler}\n")
    return root


def agent(root: Path, agent_id: str = "notes", **extra: Any) -> dict[str, Any]:
    return {
        "id": agent_id,
        "name": f"Agent {agent_id}",
        "kind": "local_directory",
        "schedule_cron": "0 3 * * *",
        "directory_paths": [str(root)],
        "enabled": False,  # never fires by itself: only the manager under test runs it
        **extra,
    }


async def app(
    h: DaemonHarness,
    tmp_path: Path,
    agents: list[dict[str, Any]],
    *,
    device_id: str = "laptop",
    gate: Gate | None = None,
) -> ReferenceClient:
    return await h.device(
        tmp_path / f"{device_id}.db", device_id=device_id, agents=agents, before_tool_call=gate
    )


async def events_until_complete(client: ProtocolClient, run_id: str) -> list[Any]:
    """The run events of ``run_id`` the client receives, up to its run_complete."""
    seen: list[Any] = []

    async def collect() -> None:
        while True:
            event = await client.events.get()
            if event.run_id == run_id:
                seen.append(event)
                if isinstance(event, RunComplete):
                    return

    await asyncio.wait_for(collect(), RUN_TIMEOUT_S)
    return seen


# --- a run from start to finish -----------------------------------------------------


async def test_a_run_is_journaled_and_announced_from_start_to_finish(
    make_manager: MakeManager, corpus: Path, tmp_path: Path
) -> None:
    h, manager = await make_manager()
    client = await app(h, tmp_path, [agent(corpus)])
    run = manager.start("notes", "manual", run_context={"asked_by": "test"})
    assert manager.active_for("notes") is run and manager.active() == [run]
    assert run.device_id == "laptop" and run.trigger == "manual"

    record = await finish(h, run)
    assert (record.status, record.trigger, record.agent_id) == ("success", "manual", "notes")
    assert record.items_processed == 6 and record.items_created == 6
    assert record.finished_at is not None and record.run_context == {"asked_by": "test"}
    assert record.usage["llm_calls"] >= 7  # one triage call, one per file at least
    assert manager.active() == [] and manager.active_for("notes") is None

    events = await events_until_complete(client, run.run_id)
    first, last = events[0], events[-1]
    assert isinstance(first, RunStarted) and isinstance(last, RunComplete)
    assert first.run_context == last.run_context == {"asked_by": "test"}
    assert (last.status, last.items_created, last.agent_name) == ("success", 6, "Agent notes")
    assert last.seq == first.seq + 1  # progress does not advance the seq
    assert len(client.store.rows("tasks")) == 6


async def test_the_agents_own_run_context_is_used_when_the_request_has_none(
    make_manager: MakeManager, corpus: Path, tmp_path: Path
) -> None:
    h, manager = await make_manager()
    await app(h, tmp_path, [agent(corpus, run_context={"workspace": "w1"})])
    run = manager.start("notes", "schedule")
    assert (await finish(h, run)).run_context == {"workspace": "w1"}


# --- refusals ----------------------------------------------------------------------


async def test_one_run_per_agent(make_manager: MakeManager, corpus: Path, tmp_path: Path) -> None:
    h, manager = await make_manager()
    gate = Gate()
    await app(h, tmp_path, [agent(corpus), agent(corpus, "other")], gate=gate)
    run = manager.start("notes", "manual")
    assert refusal(manager, "notes") == ErrorCode.ALREADY_RUNNING
    assert refusal(manager, "notes", "schedule") == ErrorCode.ALREADY_RUNNING
    await gate.wait_reached()
    assert refusal(manager, "notes") == ErrorCode.ALREADY_RUNNING
    gate.opened.set()
    assert (await finish(h, run)).status == "success"
    again = manager.start("notes", "manual")  # over: the agent may run again
    assert again.run_id != run.run_id
    assert (await finish(h, again)).status == "success"
    assert [r.run_id for r in h.daemon.state.runs("notes")] == [again.run_id, run.run_id]


async def test_a_run_waiting_for_a_slot_counts_as_running(
    make_manager: MakeManager, corpus: Path, tmp_path: Path
) -> None:
    h, manager = await make_manager(max_concurrent_per_device=1)
    gate = Gate()
    await app(h, tmp_path, [agent(corpus, "a"), agent(corpus, "b"), agent(corpus, "c")], gate=gate)
    a = manager.start("a", "manual")
    await gate.wait_reached()
    b = manager.start("b", "manual")
    c = manager.start("c", "manual")
    assert refusal(manager, "b") == ErrorCode.ALREADY_RUNNING
    assert {r.agent.id for r in manager.active()} == {"a", "b", "c"}
    # b and c wait for the device's slot: not started, not journaled yet
    assert a.started_at is not None and b.started_at is None and c.started_at is None
    assert [r.agent_id for r in h.daemon.state.runs()] == ["a"]
    gate.opened.set()
    records = [await finish(h, run) for run in (a, b, c)]
    assert [r.status for r in records] == ["success"] * 3
    # FIFO: each started after the one before it finished
    assert records[0].finished_at is not None and records[1].finished_at is not None
    assert records[0].finished_at <= records[1].started_at
    assert records[1].finished_at <= records[2].started_at


async def test_runs_share_a_device_up_to_its_limit(
    make_manager: MakeManager, corpus: Path, tmp_path: Path
) -> None:
    h, manager = await make_manager(max_concurrent_per_device=2)
    gate = Gate()
    await app(h, tmp_path, [agent(corpus, "a"), agent(corpus, "b"), agent(corpus, "c")], gate=gate)
    a, b, c = (manager.start(x, "manual") for x in "abc")
    await gate.wait_reached(a, b)  # two runs at once on the device
    assert a.started_at is not None and b.started_at is not None
    assert c.started_at is None and c.run_id not in gate.runs
    gate.opened.set()
    assert [(await finish(h, r)).status for r in (a, b, c)] == ["success"] * 3


async def test_unknown_agent_and_shutting_down_are_refused(
    make_manager: MakeManager, corpus: Path, tmp_path: Path
) -> None:
    h, manager = await make_manager()
    await app(h, tmp_path, [agent(corpus)])
    assert refusal(manager, "nobody") == ErrorCode.UNKNOWN_AGENT
    await manager.shutdown()
    assert refusal(manager, "notes") == ErrorCode.BUSY
    assert h.daemon.state.runs() == []  # a refusal journals nothing


async def test_device_offline(make_manager: MakeManager, corpus: Path, tmp_path: Path) -> None:
    h, manager = await make_manager()
    h.daemon.registry.sync(
        [agent(corpus), agent(corpus, "desk-only", device_id="desk")], replace=True
    )
    # no app at all
    assert refusal(manager, "notes") == ErrorCode.DEVICE_OFFLINE
    # an app, but not the device the agent is bound to
    await app(h, tmp_path, agents=[agent(corpus), agent(corpus, "desk-only", device_id="desk")])
    assert refusal(manager, "desk-only") == ErrorCode.DEVICE_OFFLINE
    assert h.daemon.state.runs() == []
    # the bound device comes online: it runs there
    await app(
        h, tmp_path, [agent(corpus), agent(corpus, "desk-only", device_id="desk")], device_id="desk"
    )
    run = manager.start("desk-only", "manual")
    assert run.device_id == "desk"
    assert (await finish(h, run)).status == "success"


async def test_an_unbound_agent_runs_on_the_most_recently_connected_device(
    make_manager: MakeManager, corpus: Path, tmp_path: Path
) -> None:
    h, manager = await make_manager()
    agents = [agent(corpus)]
    await app(h, tmp_path, agents, device_id="laptop")
    await app(h, tmp_path, agents, device_id="desk")
    run = manager.start("notes", "manual")
    assert run.device_id == "desk"
    await finish(h, run)


# --- cancel and shutdown --------------------------------------------------------------


async def test_cancel_ends_the_run_cancelled(
    make_manager: MakeManager, corpus: Path, tmp_path: Path
) -> None:
    h, manager = await make_manager()
    gate = Gate()
    client = await app(h, tmp_path, [agent(corpus)], gate=gate)
    run = manager.start("notes", "manual")
    await gate.wait_reached()
    assert manager.cancel("no-such-run") is False
    assert manager.cancel(run.run_id) is True
    gate.opened.set()
    record = await finish(h, run)
    assert record.status == "cancelled" and record.finished_at is not None
    last = (await events_until_complete(client, run.run_id))[-1]
    assert last.status == "cancelled"
    assert manager.cancel(run.run_id) is False  # over: nothing left to cancel


async def test_cancel_of_a_waiting_run_journals_it_cancelled(
    make_manager: MakeManager, corpus: Path, tmp_path: Path
) -> None:
    h, manager = await make_manager(max_concurrent_per_device=1)
    gate = Gate()
    await app(h, tmp_path, [agent(corpus, "a"), agent(corpus, "b")], gate=gate)
    a = manager.start("a", "manual")
    await gate.wait_reached()
    b = manager.start("b", "manual")
    assert manager.cancel(b.run_id) is True
    gate.opened.set()
    assert (await finish(h, a)).status == "success"
    record = await finish(h, b)
    assert record.status == "cancelled" and record.items_processed == 0


async def test_shutdown_cancels_running_runs_and_drops_waiting_ones(
    make_manager: MakeManager, corpus: Path, tmp_path: Path
) -> None:
    h, manager = await make_manager(max_concurrent_per_device=1)
    gate = Gate()
    await app(h, tmp_path, [agent(corpus, "a"), agent(corpus, "b")], gate=gate)
    a = manager.start("a", "manual")
    b = manager.start("b", "manual")
    await gate.wait_reached(a)  # b's task has begun meanwhile: it waits for the slot
    assert b.started_at is None
    stopping = asyncio.create_task(manager.shutdown(timeout=RUN_TIMEOUT_S))
    await asyncio.wait_for(a.cancel.wait(), RUN_TIMEOUT_S)
    gate.opened.set()  # the app answers; a stops at its next step
    await stopping
    assert manager.active() == []
    assert (await finish(h, a)).status == "cancelled"
    # b never started: no journal entry, nothing left running
    assert b.finished.is_set() and h.daemon.state.run(b.run_id) is None
    assert h.daemon.state.running_runs() == []
    await manager.shutdown()  # idempotent


async def test_shutdown_does_not_wait_past_its_timeout_for_a_stuck_run(
    make_manager: MakeManager, corpus: Path, tmp_path: Path
) -> None:
    h, manager = await make_manager()
    gate = Gate()  # never opened: the app never answers
    await app(h, tmp_path, [agent(corpus)], gate=gate)
    run = manager.start("notes", "manual")
    await gate.wait_reached(run)
    await manager.shutdown(timeout=0.2)
    record = await finish(h, run)
    assert record.status == "cancelled"
    assert h.daemon.state.running_runs() == []


async def test_a_run_accepted_in_the_same_pass_as_shutdown_is_not_left_behind(
    make_manager: MakeManager, corpus: Path, tmp_path: Path
) -> None:
    h, manager = await make_manager()
    await app(h, tmp_path, [agent(corpus)])
    run = manager.start("notes", "manual")
    await manager.shutdown(timeout=5)
    assert manager.active() == [] and run.finished.is_set()


# --- progress ----------------------------------------------------------------------


async def test_progress_is_sent_at_most_once_per_interval_plus_each_phases_last_step(
    make_manager: MakeManager, corpus: Path, tmp_path: Path
) -> None:
    h, unlimited = await make_manager(progress_interval_s=1e-9)
    _, hourly = await make_manager(h, progress_interval_s=3600)
    # Two agents over the same files (each has its own fingerprints: both process all).
    client = await app(h, tmp_path, [agent(corpus, "every"), agent(corpus, "limited")])

    async def progress(manager: RunManager, agent_id: str) -> list[RunProgress]:
        run = manager.start(agent_id, "manual")
        events = await events_until_complete(client, run.run_id)
        assert events[-1].status == "success"
        return [e for e in events if isinstance(e, RunProgress)]

    every = await progress(unlimited, "every")
    limited = await progress(hourly, "limited")

    # Unlimited: every step of every phase, the six files one by one.
    process = [(p.done, p.total) for p in every if p.phase == "process"]
    assert process == [(n, 6) for n in range(7)]
    assert [p.detail for p in every if p.phase == "process"][:6] == [
        f"note-{n}.md" for n in range(6)
    ]
    # An hour between frames: each phase's last step, and at most one before it.
    phases = list(dict.fromkeys(p.phase for p in every))
    assert phases == ["scan", "triage", "process"]
    assert list(dict.fromkeys(p.phase for p in limited)) == phases
    for phase in phases:
        steps = [(p.done, p.total) for p in limited if p.phase == phase]
        assert steps[-1][0] == steps[-1][1]
        assert len(steps) <= 2 and all(done < total for done, total in steps[:-1])
    assert len(limited) < len(every)


async def test_progress_updates_the_runs_summary(
    make_manager: MakeManager, corpus: Path, tmp_path: Path
) -> None:
    h, manager = await make_manager()
    gate = Gate()
    client = await app(h, tmp_path, [agent(corpus)], gate=gate)
    run = manager.start("notes", "manual")
    await gate.wait_reached(run)  # the scan is over; triage asks the app for its projects
    summary = run.summary()
    assert (summary.run_id, summary.agent_id, summary.trigger) == (run.run_id, "notes", "manual")
    assert (summary.phase, summary.done, summary.total) == ("scan", 1, 1)
    gate.opened.set()
    await finish(h, run)
    assert run.summary().phase == "process" and run.summary().done == 6
    await events_until_complete(client, run.run_id)


# --- a final status whatever happens ----------------------------------------------------


async def test_no_model_configured_ends_the_run_in_error(
    make_daemon: DaemonFactory, make_manager: MakeManager, corpus: Path, tmp_path: Path
) -> None:
    h, manager = await make_manager(await make_daemon())  # no llm.model
    client = await app(h, tmp_path, [agent(corpus)])
    run = manager.start("notes", "manual")
    record = await finish(h, run)
    assert record.status == "error" and "no model configured" in record.errors[0]
    events = await events_until_complete(client, run.run_id)
    assert isinstance(events[0], RunStarted)
    assert events[-1].status == "error" and events[-1].errors == list(record.errors)


async def test_the_app_leaving_mid_run_ends_it_in_error(
    make_manager: MakeManager, corpus: Path, tmp_path: Path
) -> None:
    h, manager = await make_manager()
    gate = Gate()
    client = await app(h, tmp_path, [agent(corpus)], gate=gate)
    watcher = await h.control()
    run = manager.start("notes", "manual")
    await gate.wait_reached()
    client.kill()
    record = await finish(h, run)
    assert record.status == "error"
    assert any("went away" in e for e in record.errors), record.errors
    last = (await events_until_complete(watcher, run.run_id))[-1]
    assert last.status == "error"
    assert h.daemon.state.running_runs() == []


async def test_the_app_leaving_before_a_waiting_run_starts_ends_it_in_error(
    make_manager: MakeManager, corpus: Path, tmp_path: Path
) -> None:
    h, manager = await make_manager(max_concurrent_per_device=1)
    gate = Gate()
    client = await app(h, tmp_path, [agent(corpus, "a"), agent(corpus, "b")], gate=gate)
    a = manager.start("a", "manual")
    await gate.wait_reached()
    b = manager.start("b", "manual")
    client.kill()
    assert (await finish(h, a)).status == "error"
    record = await finish(h, b)
    assert record.status == "error"
    assert record.errors == ("the desktop app disconnected before the run started",)
    assert h.daemon.state.running_runs() == []


async def test_an_app_that_stops_answering_ends_the_run_in_error(
    make_daemon: DaemonFactory,
    make_manager: MakeManager,
    llm_server: FakeLLMServer,
    corpus: Path,
    tmp_path: Path,
) -> None:
    h = await make_daemon(
        tool_call_timeout_s=0.2, llm__model="openai/office", llm__api_base=llm_server.base_url
    )
    h, manager = await make_manager(h)
    gate = Gate()  # never opened: every tool call times out
    await app(h, tmp_path, [agent(corpus)], gate=gate)
    record = await finish(h, manager.start("notes", "manual"))
    assert record.status == "error"
    assert any("did not answer" in e for e in record.errors), record.errors
    assert h.daemon.state.running_runs() == []


async def test_a_runner_that_crashes_ends_the_run_in_error(
    make_manager: MakeManager, corpus: Path, tmp_path: Path
) -> None:
    async def crashing(ctx: RunContext) -> RunReport:
        await ctx.progress("scan", 0, 1, None)
        raise RuntimeError("a bug in the runner")

    h, manager = await make_manager(runners={"local_directory": crashing})
    client = await app(h, tmp_path, [agent(corpus)])
    run = manager.start("notes", "manual")
    record = await finish(h, run)
    assert record.status == "error"
    assert record.errors == ("internal error: RuntimeError: a bug in the runner",)
    assert (await events_until_complete(client, run.run_id))[-1].status == "error"
    assert manager.active() == [] and h.daemon.state.running_runs() == []


async def test_a_kind_without_a_runner_ends_the_run_in_error(
    make_manager: MakeManager, corpus: Path, tmp_path: Path
) -> None:
    h, manager = await make_manager(runners={})
    await app(h, tmp_path, [agent(corpus)])
    record = await finish(h, manager.start("notes", "manual"))
    assert record.status == "error"
    assert "local_directory agents are not available" in record.errors[0]


async def test_a_failing_llm_factory_still_ends_the_run(
    make_manager: MakeManager, corpus: Path, tmp_path: Path
) -> None:
    def broken(agent: AgentConfig) -> LLM:
        raise RuntimeError("keyring backend crashed")

    h, manager = await make_manager(llm=broken)
    await app(h, tmp_path, [agent(corpus)])
    record = await finish(h, manager.start("notes", "manual"))
    assert record.status == "error"
    assert record.errors == ("internal error: RuntimeError: keyring backend crashed",)
    assert manager.active() == []


async def test_a_skipped_fire_is_journaled_and_announced(
    make_manager: MakeManager, corpus: Path, tmp_path: Path
) -> None:
    h, manager = await make_manager()
    watcher = await h.control()
    h.daemon.registry.sync([agent(corpus, run_context={"w": 1})], replace=True)
    notes = h.daemon.registry.get("notes")
    assert notes is not None
    await manager.record_skipped(notes, "schedule", "the desktop app is offline")
    (record,) = h.daemon.state.runs("notes")
    assert (record.status, record.trigger) == ("skipped", "schedule")
    assert record.errors == ("the desktop app is offline",)
    event = await asyncio.wait_for(watcher.next_event(RunComplete), 10)
    assert isinstance(event, RunComplete)
    assert (event.run_id, event.status, event.errors) == (
        record.run_id,
        "skipped",
        ["the desktop app is offline"],
    )
    assert event.run_context == {"w": 1} and event.started_at == event.finished_at
    assert manager.active() == []


async def test_skipped_fires_in_a_row_are_one_journal_entry_and_one_event(
    make_manager: MakeManager, corpus: Path, tmp_path: Path
) -> None:
    """A per-minute agent whose app stays closed: 1,440 skips a day must not each be a
    run in the journal and an event in the replay window (it keeps 1,000)."""
    h, manager = await make_manager()
    h.daemon.registry.sync([agent(corpus)], replace=True)
    notes = h.daemon.registry.get("notes")
    assert notes is not None
    for minute in range(5):
        await manager.record_skipped(notes, "schedule", f"offline at minute {minute}")
    (record,) = h.daemon.state.runs("notes")
    assert record.status == "skipped" and record.errors == ("offline at minute 0",)
    assert record.detail == {"skipped_fires": 5, "last_reason": "offline at minute 4"}
    assert record.finished_at is not None and record.finished_at >= record.started_at
    skips = [e for e in h.daemon.state.events_after(0) if e.type == "run_complete"]
    assert [e.run_id for e in skips] == [record.run_id]

    # A run in between ends the streak; a skip of another trigger is its own entry too.
    await app(h, tmp_path, [agent(corpus)])
    assert (await finish(h, manager.start("notes", "manual"))).status == "success"
    await manager.record_skipped(notes, "schedule", "offline again")
    await manager.record_skipped(notes, "reconnect", "offline during the catch-up")
    await manager.record_skipped(notes, "reconnect", "offline during the catch-up")
    runs = h.daemon.state.runs("notes")
    assert [(r.status, r.trigger) for r in runs] == [
        ("skipped", "reconnect"),
        ("skipped", "schedule"),
        ("success", "manual"),
        ("skipped", "schedule"),
    ]
    assert runs[0].detail == {"skipped_fires": 2, "last_reason": "offline during the catch-up"}
    assert runs[1].detail is None

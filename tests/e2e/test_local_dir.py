"""End to end: a local-directory agent run through the real daemon, the reference
client with SQLite, and real litellm against the local test model."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from protocol.frames import RunComplete, RunStarted, ToolCall
from protocol.reference import ReferenceClient, RequestFailed, SqliteStore
from tests.conftest import DaemonFactory, DaemonHarness
from tests.support.agent_model import OfficeModel
from tests.support.llm_server import FakeLLMServer, Text

WRITES = {"insert", "update", "delete"}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "work"
    write(
        root / "Website" / "brief.md",
        "# Brief\nTASK: Draft homepage copy | due 2026-12-01 | priority high\n"
        "MILESTONE: Launch | 2026-12-15\n",
    )
    write(root / "Website" / "call.txt", "NOTE: Client prefers blue | Said so on the call.\n")
    write(root / "Branding" / "todo.md", "TASK: Pick fonts\n")
    write(root / "loose.txt", "TASK: Renew domain | priority low\n")
    write(root / ".hidden" / "secret.md", "TASK: never seen\n")
    write(root / "Website" / "image.png", "not text")
    return root


@pytest.fixture
def app_db(tmp_path: Path) -> Path:
    path = tmp_path / "app.db"
    with SqliteStore(path) as db:
        db.handle("insert", "projects", data={"name": "Website"})
        db.handle("insert", "projects", data={"name": "Branding"})
    return path


def agent(root: Path, **extra: Any) -> dict[str, Any]:
    config = {
        "id": "work-folder",
        "name": "Work folder",
        "kind": "local_directory",
        "schedule_cron": "0 */6 * * *",
        "directory_paths": [str(root)],
        "data_types": ["tasks", "notes", "timelines"],
        # Disabled: never fires by itself (an enabled agent that never ran is overdue and
        # runs as soon as the app connects); a manual trigger still works.
        "enabled": False,
    }
    config.update(extra)
    return config


@pytest.fixture
def model(llm_server: FakeLLMServer) -> OfficeModel:
    office = OfficeModel()
    llm_server.responder = office
    return office


@pytest.fixture
async def daemon(
    make_daemon: DaemonFactory, llm_server: FakeLLMServer, model: OfficeModel
) -> DaemonHarness:
    return await make_daemon(llm__model="openai/office", llm__api_base=llm_server.base_url)


async def run_agent(client: ReferenceClient, agent_id: str = "work-folder") -> RunComplete:
    ack = await client.trigger(agent_id)
    assert ack.run_id
    return await client.wait_run(ack.run_id, timeout=60)


def project_ids(db: SqliteStore) -> dict[str, str]:
    return {p["name"]: p["id"] for p in db.rows("projects")}


async def test_first_run_fills_the_app_and_reports_what_it_did(
    daemon: DaemonHarness, corpus: Path, app_db: Path, llm_server: FakeLLMServer
) -> None:
    # Enabled and never run: overdue, so it runs as soon as the app says hello.
    client = await daemon.device(app_db, agents=[agent(corpus, enabled=True)])
    done = await client.next_event(RunComplete, timeout=60)
    assert done.trigger == "reconnect"
    db = client.store
    ids = project_ids(db)
    tasks = {t["title"]: t for t in db.rows("tasks")}
    assert set(tasks) == {"Draft homepage copy", "Pick fonts", "Renew domain"}
    assert tasks["Draft homepage copy"]["projectId"] == ids["Website"]
    assert tasks["Draft homepage copy"]["priority"] == "high"
    assert tasks["Draft homepage copy"]["dueDate"] is not None
    assert tasks["Pick fonts"]["projectId"] == ids["Branding"]
    assert tasks["Renew domain"]["projectId"] is None
    (timeline,) = db.rows("timelines")
    assert (timeline["title"], timeline["projectId"]) == ("Launch", ids["Website"])
    (note,) = db.rows("notes")
    assert (note["title"], note["projectId"]) == ("Client prefers blue", ids["Website"])
    for row in [*tasks.values(), timeline, note]:
        assert (row["isAiSuggested"], row["isApproved"]) == (1, 0)
    # run_complete tells the same story as the database
    assert done.status == "success", done.errors
    assert done.items_processed == 4
    assert done.items_created == 5 == len(tasks) + 2
    assert done.items_updated == 0
    assert done.usage.llm_calls == llm_server.calls > 0
    assert done.usage.prompt_tokens > 0
    # every write was attributed to the run and carried an idempotency key
    inserts = [c for c in client.tool_calls if c.action == "insert"]
    assert len(inserts) == 5
    assert all(c.run_id == done.run_id and c.idempotency_key for c in inserts)
    # the journal has it, and last_run_at is set
    status = await client.status()
    (entry,) = status.agents
    assert entry.last_status == "success" and entry.last_run_at is not None


async def test_unchanged_rerun_costs_no_llm_call_and_writes_nothing(
    daemon: DaemonHarness, corpus: Path, app_db: Path, llm_server: FakeLLMServer
) -> None:
    client = await daemon.device(app_db, agents=[agent(corpus)])
    await run_agent(client)
    calls_before, tool_calls_before = llm_server.calls, len(client.tool_calls)
    again = await run_agent(client)
    assert again.status == "success"
    assert llm_server.calls == calls_before
    assert again.usage.llm_calls == 0
    new_calls = client.tool_calls[tool_calls_before:]
    assert not [c for c in new_calls if c.action in WRITES]
    assert again.items_processed == again.items_created == again.items_updated == 0


async def test_changed_and_new_files_only_are_read_and_nothing_is_duplicated(
    daemon: DaemonHarness, corpus: Path, app_db: Path, model: OfficeModel
) -> None:
    client = await daemon.device(app_db, agents=[agent(corpus)])
    await run_agent(client)
    brief = corpus / "Website" / "brief.md"
    write(brief, brief.read_text() + "TASK: Review analytics\n")
    write(corpus / "Branding" / "logo.md", "TASK: Sketch logo\nTASK: Pick fonts\n")
    model.seen_files.clear()
    model.triage_calls = 0
    done = await run_agent(client)
    assert sorted(model.seen_files) == sorted([str(brief), str(corpus / "Branding" / "logo.md")])
    assert model.triage_calls == 1
    titles = [t["title"] for t in client.store.rows("tasks")]
    assert sorted(titles) == sorted(
        ["Draft homepage copy", "Pick fonts", "Renew domain", "Review analytics", "Sketch logo"]
    )
    assert len(client.store.rows("timelines")) == 1
    assert done.status == "success"
    assert done.items_processed == 2
    assert done.items_created == 2


async def test_client_killed_mid_run_leaves_unfinished_files_for_the_next_run(
    daemon: DaemonHarness, corpus: Path, app_db: Path, model: OfficeModel
) -> None:
    inserts = 0
    killed = asyncio.Event()

    async def kill_on_third_insert(call: ToolCall) -> None:
        nonlocal inserts
        if call.action == "insert":
            inserts += 1
            if inserts == 3:
                first.kill()
                killed.set()
                await asyncio.sleep(3600)

    first = await daemon.device(
        app_db, agents=[agent(corpus)], before_tool_call=kill_on_third_insert
    )
    ack = await first.trigger("work-folder")
    await asyncio.wait_for(killed.wait(), 30)
    # the run ends at once, as error (or partial), and its event is kept for replay
    runs = daemon.daemon.runs
    for _ in range(100):
        if not runs.active():
            break
        await asyncio.sleep(0.05)
    assert not runs.active()
    record = daemon.daemon.state.run(ack.run_id)
    assert record is not None and record.status in ("error", "partial")
    recorded = set(daemon.daemon.state.file_index("work-folder"))
    assert len(recorded) < 4

    # a new app session processes exactly the files not recorded, without duplicates
    model.seen_files.clear()
    second = await daemon.device(app_db, agents=[agent(corpus)], last_event_seq=0)
    replayed = await second.next_event(RunComplete, timeout=10)
    assert replayed.run_id == ack.run_id and replayed.status in ("error", "partial")
    done = await run_agent(second)
    assert done.status == "success", done.errors
    all_files = {
        str(p)
        for p in [
            corpus / "Website" / "brief.md",
            corpus / "Website" / "call.txt",
            corpus / "Branding" / "todo.md",
            corpus / "loose.txt",
        ]
    }
    assert set(model.seen_files) == all_files - recorded
    titles = [t["title"] for t in second.store.rows("tasks")]
    assert sorted(titles) == ["Draft homepage copy", "Pick fonts", "Renew domain"]
    assert len(second.store.rows("timelines")) == 1 and len(second.store.rows("notes")) == 1


async def test_bad_inputs_become_errors_and_fallbacks_never_crashes(
    make_daemon: DaemonFactory,
    llm_server: FakeLLMServer,
    tmp_path: Path,
    corpus: Path,
    app_db: Path,
    model: OfficeModel,
) -> None:
    daemon = await make_daemon(
        llm__model="openai/office",
        llm__api_base=llm_server.base_url,
        runs__max_file_bytes=1024 * 1024,
    )
    outside = write(tmp_path / "outside" / "secret.txt", "TASK: outside the roots\n")
    os.symlink(outside, corpus / "link.txt")
    (corpus / "big.txt").touch()
    os.truncate(corpus / "big.txt", 200 * 1024 * 1024)
    write(corpus / "Website" / "fake.pdf", "this is not a pdf")
    a_file = write(tmp_path / "file-root.txt", "x")
    config = agent(corpus)
    config["directory_paths"] = [str(corpus), str(tmp_path / "missing"), str(a_file)]
    model.triage_mode = "unknown_id"
    client = await daemon.device(app_db, agents=[config])
    done = await run_agent(client)
    errors = "\n".join(done.errors)
    assert "root not found" in errors and str(tmp_path / "missing") in errors
    assert "not a directory" in errors
    assert "link.txt" in errors  # the symlink leaving the roots
    assert "big.txt" in errors
    assert "fake.pdf" in errors and "PDF" in errors
    assert "p-does-not-exist" in errors  # the unknown project id, sent to standalone
    assert done.status == "partial"  # fake.pdf failed, the rest was processed
    titles = {t["title"] for t in client.store.rows("tasks")}
    assert "outside the roots" not in titles and "never seen" not in titles
    assert {"Draft homepage copy", "Pick fonts", "Renew domain"} <= titles
    # the unreadable PDF is not recorded: it is tried again next time
    assert str(corpus / "Website" / "fake.pdf") not in daemon.daemon.state.file_index("work-folder")


async def test_triage_prose_gets_one_repair_then_folder_fallback(
    daemon: DaemonHarness, corpus: Path, app_db: Path, model: OfficeModel, llm_server: FakeLLMServer
) -> None:
    model.triage_mode = "prose"
    client = await daemon.device(app_db, agents=[agent(corpus)])
    done = await run_agent(client)
    assert model.triage_calls == 2  # the answer, and one repair attempt
    repair = [r for r in llm_server.requests if "That was not valid" in json.dumps(r["messages"])]
    assert len(repair) == 1
    assert any("matched to projects by folder name" in e for e in done.errors)
    ids = project_ids(client.store)
    tasks = {t["title"]: t["projectId"] for t in client.store.rows("tasks")}
    assert tasks["Pick fonts"] == ids["Branding"] and tasks["Renew domain"] is None
    assert done.status == "success"


async def test_run_rules_already_running_offline_unknown_and_cancel(
    daemon: DaemonHarness, corpus: Path, app_db: Path, llm_server: FakeLLMServer
) -> None:
    llm_server.responder = lambda body: Text("slow", delay_s=0.5)
    client = await daemon.device(
        app_db, agents=[agent(corpus), agent(corpus, id="bound", device_id="other")]
    )
    ack = await client.trigger("work-folder")
    with pytest.raises(RequestFailed) as busy:
        await client.trigger("work-folder")
    assert busy.value.code == "already_running"
    with pytest.raises(RequestFailed) as offline:
        await client.trigger("bound")
    assert offline.value.code == "device_offline"
    with pytest.raises(RequestFailed) as unknown:
        await client.trigger("nope")
    assert unknown.value.code == "unknown_agent"
    started = await client.next_event(RunStarted)
    assert started.run_id == ack.run_id and started.trigger == "manual"
    await client.cancel(ack.run_id)
    done = await client.wait_run(ack.run_id, timeout=20)
    assert done.status == "cancelled"
    record = daemon.daemon.state.run(ack.run_id)
    assert record is not None and record.status == "cancelled"


async def test_no_model_configured_ends_the_run_with_a_clear_error(
    harness: DaemonHarness, corpus: Path, app_db: Path
) -> None:
    client = await harness.device(app_db, agents=[agent(corpus)])
    done = await run_agent(client)
    assert done.status == "error"
    assert any("no model configured" in e and "TETHER_MODEL" in e for e in done.errors)

"""End to end: semantic note search through the real daemon, the reference client
(which announces ``vector: true`` and keeps vectors in its SQLite file) and real
litellm against the local test server, whose ``/v1/embeddings`` gives hashed
bag-of-words vectors (texts sharing words are close).

What issue 11 asks: a note created by a run is upserted once; ``search_notes``
finds it for a related query; with the embedding service down the run still
succeeds; existing notes are embedded once in the background, in batches,
resumably and idempotently; nothing is embedded without an embedding model or
without a client vector store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from protocol.frames import Capabilities, RunComplete, ToolCall
from protocol.reference import ReferenceClient, SqliteStore
from tests.conftest import DaemonFactory, DaemonHarness, wait_until
from tests.support.agent_model import OfficeModel
from tests.support.llm_server import Call, FakeLLMServer, Text, ToolCalls

EMBED = "openai/fake-embed"
VECTORS = Capabilities(idempotency=True, vector=True)


@pytest.fixture
def model(llm_server: FakeLLMServer) -> OfficeModel:
    office = OfficeModel()
    llm_server.responder = office
    return office


def settings(llm_server: FakeLLMServer, **extra: Any) -> dict[str, Any]:
    return {
        "llm__model": "openai/office",
        "llm__api_base": llm_server.base_url,
        "llm__max_attempts": 2,
        **extra,
    }


@pytest.fixture
async def daemon(
    make_daemon: DaemonFactory, llm_server: FakeLLMServer, model: OfficeModel
) -> DaemonHarness:
    return await make_daemon(**settings(llm_server, llm__embedding_model=EMBED))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "work"
    root.mkdir()
    (root / "kickoff.md").write_text(
        "NOTE: Kickoff call | The client wants a blue logo and a spring launch\n"
        "NOTE: Invoice details | VAT number and billing address for accounting\n",
        encoding="utf-8",
    )
    return root


def agent(root: Path) -> dict[str, Any]:
    return {
        "id": "work",
        "name": "Work",
        "kind": "local_directory",
        "schedule_cron": "0 */6 * * *",
        "directory_paths": [str(root)],
        "data_types": ["notes"],
        "enabled": False,
    }


def upserts(client: ReferenceClient) -> list[ToolCall]:
    return [c for c in client.tool_calls if c.action == "vector_upsert"]


async def run(client: ReferenceClient) -> RunComplete:
    ack = await client.trigger("work")
    assert ack.run_id
    return await client.wait_run(ack.run_id, timeout=60)


async def connect(daemon: DaemonHarness, db: Path, **kwargs: Any) -> ReferenceClient:
    kwargs.setdefault("capabilities", VECTORS)
    client = await daemon.device(db, **kwargs)
    task = daemon.daemon.vectors.backfill_of(client.device_id)
    if task is not None:
        await task
    return client


async def test_a_note_created_by_a_run_is_upserted_once_and_found_by_meaning(
    daemon: DaemonHarness, llm_server: FakeLLMServer, folder: Path, tmp_path: Path
) -> None:
    app = await connect(daemon, tmp_path / "app.db", agents=[agent(folder)])
    assert upserts(app) == []  # no notes yet: the backfill had nothing to do

    done = await run(app)

    assert done.status == "success", done.errors
    notes = {n["title"]: n for n in app.store.rows("notes")}
    assert set(notes) == {"Kickoff call", "Invoice details"}
    sent = upserts(app)
    assert sorted(c.data["id"] for c in sent if c.data) == sorted(n["id"] for n in notes.values())
    kickoff = next(c for c in sent if c.data and c.data["id"] == notes["Kickoff call"]["id"])
    assert kickoff.data is not None and kickoff.vector
    assert kickoff.data["content"].startswith("Kickoff call\n\n")
    assert kickoff.run_id == done.run_id  # attributed to the run that wrote the note

    llm_server.script(ToolCalls([Call("search_notes", {"query": "logo colours"})]), Text("Found."))
    answer = await app.home("what did the client say about the logo?")

    assert answer.error is None and answer.text == "Found."
    tools = [t["function"]["name"] for t in llm_server.requests[-2]["tools"]]
    assert "search_notes" in tools
    (result,) = [m["content"] for m in llm_server.requests[-1]["messages"] if m["role"] == "tool"]
    lines = result.splitlines()
    assert 'title="Kickoff call"' in lines[0] and 'title="Invoice details"' in lines[1]
    assert [c.action for c in app.tool_calls].count("vector_search") == 1
    assert len(upserts(app)) == 2  # a chat that only reads embeds nothing


async def test_with_the_embedding_service_down_the_run_still_succeeds(
    daemon: DaemonHarness, llm_server: FakeLLMServer, folder: Path, tmp_path: Path
) -> None:
    app = await connect(daemon, tmp_path / "app.db", agents=[agent(folder)])
    llm_server.embeddings_status = 503

    done = await run(app)

    assert done.status == "success" and done.errors == []
    assert done.items_created == 2 and len(app.store.rows("notes")) == 2
    assert upserts(app) == []
    assert len(llm_server.embedding_requests) == 2  # one batch, two attempts
    # Chat goes on too: the search fails for the model, not for the user.
    llm_server.script(ToolCalls([Call("search_notes", {"query": "logo"})]), Text("No search."))
    answer = await app.home("find the logo note")
    assert answer.error is None and answer.text == "No search."
    (result,) = [m["content"] for m in llm_server.requests[-1]["messages"] if m["role"] == "tool"]
    assert result.startswith("error: the search failed") and "list_notes" in result


async def test_existing_notes_are_embedded_once_in_batches_and_resumably(
    make_daemon: DaemonFactory, llm_server: FakeLLMServer, model: OfficeModel, tmp_path: Path
) -> None:
    db = tmp_path / "app.db"
    with SqliteStore(db) as store:
        ids = [
            store.handle("insert", "notes", data={"title": f"Note {n}", "content": f"text {n}"})[
                "row"
            ]["id"]
            for n in range(5)
        ]
    first = await make_daemon(**settings(llm_server, llm__embedding_model=EMBED))
    first.daemon.vectors.batch = 2

    # The embedding service is down at the first hello: nothing is marked done.
    llm_server.embeddings_status = 503
    app = await connect(first, db)
    assert upserts(app) == []
    await app.close()

    # The next hello carries on: every note once, in batches of two.
    llm_server.embeddings_status = None
    llm_server.reset()
    app = await connect(first, db)
    assert sorted(c.data["id"] for c in upserts(app) if c.data) == sorted(ids)
    assert [len(r["input"]) for r in llm_server.embedding_requests] == [2, 2, 1]
    await app.close()

    # A restarted daemon remembers which notes have vectors (no content kept): it
    # embeds only the note that is new or changed since.
    await first.daemon.stop()
    with SqliteStore(db) as store:
        store.handle("update", "notes", data={"id": ids[0], "updates": {"content": "changed"}})
        added = store.handle("insert", "notes", data={"title": "New", "content": "x"})["row"]
    second = await make_daemon(**settings(llm_server, llm__embedding_model=EMBED))
    llm_server.reset()
    app = await connect(second, db)
    assert sorted(c.data["id"] for c in upserts(app) if c.data) == sorted([ids[0], added["id"]])


@pytest.mark.parametrize("embedding_model", [None, EMBED])
async def test_nothing_is_embedded_without_a_model_or_a_client_vector_store(
    make_daemon: DaemonFactory,
    llm_server: FakeLLMServer,
    model: OfficeModel,
    folder: Path,
    tmp_path: Path,
    embedding_model: str | None,
) -> None:
    extra = {"llm__embedding_model": embedding_model} if embedding_model else {}
    harness = await make_daemon(**settings(llm_server, **extra))
    # Without a model the app may announce vectors; with one, it does not.
    capabilities = VECTORS if embedding_model is None else Capabilities(idempotency=True)
    app = await connect(
        harness, tmp_path / "app.db", agents=[agent(folder)], capabilities=capabilities
    )

    done = await run(app)
    assert done.status == "success" and done.items_created == 2
    answer = await app.home("hello")
    assert answer.error is None
    assert upserts(app) == [] and llm_server.embedding_requests == []
    tools = [t["function"]["name"] for t in llm_server.requests[-1]["tools"]]
    assert "search_notes" not in tools and "create_note" in tools


async def test_the_state_store_keeps_no_note_content(
    daemon: DaemonHarness, folder: Path, tmp_path: Path
) -> None:
    app = await connect(daemon, tmp_path / "app.db", agents=[agent(folder)])
    await run(app)
    await wait_until(lambda: len(upserts(app)) == 2, "the notes' vectors")
    raw = daemon.paths.state_db.read_bytes()
    for suffix in ("-wal",):
        wal = daemon.paths.state_db.with_name(daemon.paths.state_db.name + suffix)
        if wal.exists():
            raw += wal.read_bytes()
    assert b"blue logo" not in raw and b"VAT number" not in raw
    note = app.store.rows("notes")[0]
    version = daemon.daemon.state.get_cursor(f"vectors:{app.device_id}", note["id"])
    assert version == f"{EMBED}|{note['updatedAt']}"


async def test_a_note_written_in_chat_is_upserted_after_the_answer(
    daemon: DaemonHarness, llm_server: FakeLLMServer, tmp_path: Path
) -> None:
    app = await connect(daemon, tmp_path / "app.db")
    llm_server.script(
        ToolCalls([Call("create_note", {"title": "Ideas", "content": "a podcast"})]),
        Text("Saved."),
    )
    answer = await app.home("note: start a podcast")
    assert answer.error is None
    (note,) = app.store.rows("notes")
    await wait_until(lambda: len(upserts(app)) == 1, "the chat note's vector")
    (sent,) = upserts(app)
    assert sent.data == {"id": note["id"], "content": "Ideas\n\na podcast"}
    assert sent.run_id is None

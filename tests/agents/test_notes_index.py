"""``agents.notes_index.NotesIndex`` over a real SQLite store and real litellm against
the local test server's embeddings: which mutations are embedded, that failures are
counted and never raised, and that search skips deleted notes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.llm import LiteLLM, LLMSettings
from agents.notes_index import MAX_CHARS, NotesIndex, note_text
from agents.tools import MutationRecord
from tests.support.llm_server import FakeLLMServer
from tests.support.stores import DictMarks, SqliteBackedStore

module_loop = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def module_server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


@pytest.fixture
def server(module_server: FakeLLMServer) -> FakeLLMServer:
    module_server.reset()
    return module_server


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteBackedStore]:
    s = SqliteBackedStore(tmp_path / "app.db")
    yield s
    s.close()


def index(
    server: FakeLLMServer, store: SqliteBackedStore, marks: DictMarks | None = None
) -> NotesIndex:
    llm = LiteLLM(
        LLMSettings(
            model="openai/fake",
            api_base=server.base_url,
            embedding_model="openai/embed",
            max_attempts=1,
        )
    )
    return NotesIndex(embedder=llm, vectors=store, store=store, model="openai/embed", marks=marks)


def upserted(store: SqliteBackedStore) -> list[dict[str, Any]]:
    return [p["data"] for a, _, p in store.calls if a == "vector_upsert"]


@module_loop
async def test_each_written_note_is_embedded_once_whatever_the_mutation_shape(
    server: FakeLLMServer, store: SqliteBackedStore
) -> None:
    a = await store.insert("notes", {"title": "Logo", "content": "blue", "projectId": "p1"})
    b = await store.insert("notes", {"title": "Budget", "content": "2k"})
    c = await store.insert("notes", {"title": "Fonts", "content": "serif"})
    b2 = await store.update("notes", b["id"], {"content": "3k"})
    marks = DictMarks({})
    notes = index(server, store, marks)

    done = await notes.index_mutations(
        [
            MutationRecord("insert", "notes", a),
            MutationRecord("insert", "notes", b),
            MutationRecord("update", "notes", {"id": b["id"], "updates": {}, "row": b2}),
            MutationRecord("update", "notes", {"id": c["id"], "updates": {"content": "serif"}}),
            MutationRecord("insert", "tasks", {"id": "t1", "title": "x"}),
            MutationRecord("delete", "notes", {"id": a["id"]}),
        ]
    )

    assert done == 3 and notes.upserted == 3 and notes.failures == 0
    sent = {d["id"]: d for d in upserted(store)}
    assert sent[a["id"]] == {"id": a["id"], "content": "Logo\n\nblue", "projectId": "p1"}
    assert sent[b["id"]]["content"] == "Budget\n\n3k"  # the last row written
    assert sent[c["id"]]["content"] == "Fonts\n\nserif"  # read back: no row in the mutation
    assert len(server.embedding_requests) == 1  # one call for the batch
    assert marks.versions[b["id"]] == f"openai/embed|{b2['updatedAt']}"
    assert notes.is_current(b2) and not notes.is_current({**b2, "updatedAt": 1})


@module_loop
async def test_failures_are_counted_never_raised(
    server: FakeLLMServer, store: SqliteBackedStore
) -> None:
    note = await store.insert("notes", {"title": "Logo"})
    server.embeddings_status = 500
    notes = index(server, store)
    assert await notes.index_mutations([MutationRecord("insert", "notes", note)]) == 0
    assert notes.failures == 1 and upserted(store) == []


@module_loop
async def test_search_ranks_by_meaning_and_skips_deleted_notes(
    server: FakeLLMServer, store: SqliteBackedStore
) -> None:
    rows = [
        await store.insert("notes", {"title": t, "content": c})
        for t, c in [("Logo", "the client wants a blue logo"), ("Tax", "VAT number")]
    ]
    notes = index(server, store)
    await notes.index_rows(rows)
    found = await notes.search("blue logo please")
    assert [n["title"] for n in found] == ["Logo", "Tax"]
    assert found[0]["score"] > found[1]["score"]
    await store.delete("notes", rows[0]["id"])
    assert [n["title"] for n in await notes.search("blue logo")] == ["Tax"]


def test_note_text_is_title_then_content_clipped() -> None:
    assert note_text({"title": " T ", "content": None}) == "T"
    assert len(note_text({"title": "T", "content": "x" * 10 * MAX_CHARS})) == MAX_CHARS

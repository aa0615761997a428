"""agents.triage: the pure prompt/answer/fallback functions, and ``triage`` with the real
litellm against the local fake OpenAI server."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from agents.errors import LLMUnavailable
from agents.llm import LiteLLM, LLMSettings
from agents.triage import (
    SKIP,
    STANDALONE,
    TriageItem,
    build_prompt,
    fallback,
    parse_answer,
    triage,
)
from tests.support.llm_server import Error, FakeLLMServer, Text

PROJECTS = [{"id": "p1", "name": "Website Redesign"}, {"id": "p2", "name": "Tax 2025"}]


def item(key: str, *hints: str, snippet: str = "text") -> TriageItem:
    return TriageItem(key, {"path": key, "folder": "/".join(hints), "snippet": snippet}, hints)


ITEMS = [
    item("/r/website-redesign/brief.md", "website-redesign"),
    item("/r/misc/tax_2025/receipts.txt", "tax_2025", "misc"),
    item("/r/notes.txt"),
]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as s:
        yield s


@pytest.fixture
def llm(server: FakeLLMServer) -> Iterator[LiteLLM]:
    server.reset()
    yield LiteLLM(
        LLMSettings(model="openai/fake", api_base=server.base_url, timeout_s=10, max_attempts=1)
    )
    server.reset()


# --- pure parts ---------------------------------------------------------------------------


def test_fallback_matches_the_nearest_hint_to_a_project_name_ignoring_case_and_punctuation() -> (
    None
):
    got = fallback(ITEMS, PROJECTS)
    assert got == {
        "/r/website-redesign/brief.md": "p1",
        "/r/misc/tax_2025/receipts.txt": "p2",
        "/r/notes.txt": STANDALONE,
    }


def test_fallback_prefers_the_nearest_hint() -> None:
    nested = item("/r/tax 2025/website redesign/a.md", "website redesign", "tax 2025")
    assert fallback([nested], PROJECTS) == {nested.key: "p1"}


def test_the_prompt_lists_projects_and_one_json_line_per_item_inside_untrusted_content() -> None:
    messages = build_prompt(ITEMS, PROJECTS)
    assert "You sort files into the user's projects" in messages[0]["content"]
    user = messages[1]["content"]
    assert "- p1: Website Redesign" in user and "- p2: Tax 2025" in user
    inside = user.split("<untrusted_content>\n", 1)[1].split("\n</untrusted_content>", 1)[0]
    assert [json.loads(line)["path"] for line in inside.splitlines()] == [i.key for i in ITEMS]


def test_the_prompt_names_a_source_s_items() -> None:
    messages = build_prompt(ITEMS[:1], PROJECTS, noun="message", key="id")
    assert "You sort messages into the user's projects" in messages[0]["content"]
    assert "message ids exactly as given" in messages[0]["content"]
    assert '["<id>"]' in messages[1]["content"]


def test_parse_answer_keeps_known_projects_and_sends_unknown_ones_to_standalone() -> None:
    text = json.dumps(
        {
            "p1": [ITEMS[0].key, "/not/in/the/batch.md"],
            "p9": [ITEMS[1].key],
        }
    )
    got, notes = parse_answer(text, ITEMS, {"p1", "p2"})
    assert got == {ITEMS[0].key: "p1", ITEMS[1].key: STANDALONE}
    assert notes and "'p9'" in notes[0]


def test_parse_answer_reads_fenced_or_wrapped_json() -> None:
    fenced = 'Sure:\n```json\n{"p2": ["/r/notes.txt"]}\n```'
    assert parse_answer(fenced, ITEMS, {"p2"})[0] == {"/r/notes.txt": "p2"}
    wrapped = 'Here it is {"standalone": ["/r/notes.txt"]} hope that helps'
    assert parse_answer(wrapped, ITEMS, {"p2"})[0] == {"/r/notes.txt": STANDALONE}


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '{"p1": "one path"}', '{"p1": [1, 2]}', ""])
def test_parse_answer_refuses_what_is_not_an_object_of_string_arrays(text: str) -> None:
    with pytest.raises(ValueError):
        parse_answer(text, ITEMS, {"p1"})


def test_an_item_under_two_keys_keeps_the_first() -> None:
    text = '{"p1": ["/r/notes.txt"], "p2": ["/r/notes.txt"]}'
    assert parse_answer(text, ITEMS, {"p1", "p2"})[0] == {"/r/notes.txt": "p1"}


# --- with the model -----------------------------------------------------------------------


async def test_without_projects_triage_still_asks_which_items_to_skip(
    llm: LiteLLM, server: FakeLLMServer
) -> None:
    server.script(Text(json.dumps({"skip": ["/r/notes.txt"], "p1": [ITEMS[0].key]})))
    result = await triage(llm, ITEMS, [])
    assert server.calls == 1
    assert result.groups == {STANDALONE: [ITEMS[0].key, ITEMS[1].key], SKIP: ["/r/notes.txt"]}
    assert any("'p1'" in n for n in result.notes)  # no such project: standalone


async def test_no_items_means_no_llm_call(llm: LiteLLM, server: FakeLLMServer) -> None:
    result = await triage(llm, [], PROJECTS)
    assert server.calls == 0 and result.groups == {}


async def test_the_answer_wins_and_items_it_left_out_get_the_fallback(
    llm: LiteLLM, server: FakeLLMServer
) -> None:
    server.script(Text(json.dumps({"p2": ["/r/notes.txt"]})))
    result = await triage(llm, ITEMS, PROJECTS)
    assert server.calls == 1 and not result.used_fallback
    assert sorted(result.groups["p2"]) == sorted(["/r/notes.txt", ITEMS[1].key])
    assert result.groups["p1"] == [ITEMS[0].key]
    assert result.usage.llm_calls == 1


async def test_invalid_json_gets_one_repair_attempt(llm: LiteLLM, server: FakeLLMServer) -> None:
    server.script(Text("The first file is about the website."), Text('{"p1": ["/r/notes.txt"]}'))
    result = await triage(llm, ITEMS, PROJECTS)
    assert server.calls == 2 and not result.used_fallback
    assert "/r/notes.txt" in result.groups["p1"]
    repair = server.requests[1]["messages"]
    assert repair[-2] == {"role": "assistant", "content": "The first file is about the website."}
    assert "not valid" in repair[-1]["content"]
    assert result.usage.llm_calls == 2


async def test_twice_invalid_falls_back_to_folder_names_and_says_so(
    llm: LiteLLM, server: FakeLLMServer
) -> None:
    server.script(Text("no"), Text("still no"))
    result = await triage(llm, ITEMS, PROJECTS)
    assert result.used_fallback
    assert result.groups == {"p1": [ITEMS[0].key], "p2": [ITEMS[1].key], STANDALONE: [ITEMS[2].key]}
    assert any("matched to projects by folder name" in n for n in result.notes)


async def test_a_model_that_fails_raises_for_the_caller(
    llm: LiteLLM, server: FakeLLMServer
) -> None:
    server.script(Error(503, "overloaded"))
    with pytest.raises(LLMUnavailable):
        await triage(llm, ITEMS, PROJECTS)

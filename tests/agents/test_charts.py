"""``agents.charts.ChartFilter``: chart blocks arrive whole and valid, or not at all."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.charts import CHART_TYPES, ChartFilter, chart_problem

CHART = json.dumps(
    {
        "chartType": "bar",
        "title": "Hours per project",
        "data": [{"project": "Website", "hours": 12}, {"project": "App", "hours": 7}],
        "config": {"hours": {"label": "Hours", "color": "#2563eb"}},
    }
)
ANSWER = f"Here is the split:\n<chart>{CHART}</chart>\nMostly the website."


def run(text: str, size: int) -> tuple[list[str], ChartFilter]:
    f = ChartFilter()
    out: list[str] = []
    for i in range(0, len(text), size):
        out += f.feed(text[i : i + size])
    out += f.finish()
    return out, f


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64, 10_000])
def test_a_valid_block_is_forwarded_whole_whatever_the_chunking(size: int) -> None:
    out, f = run(ANSWER, size)
    assert "".join(out) == ANSWER
    blocks = [p for p in out if "<chart>" in p or "</chart>" in p]
    assert blocks == [f"<chart>{CHART}</chart>"]
    assert (f.forwarded, f.dropped) == (1, 0)


@pytest.mark.parametrize(
    "body",
    [
        '{"chartType": "bar", "data": [{"a": 1}]',  # not well-formed
        '{"chartType": "donut", "data": [{"a": 1}]}',
        '{"chartType": "line", "data": [1, 2]}',
        '{"chartType": "line", "data": []}',
        '{"chartType": "pie", "data": [{"a": 1}], "config": []}',
        '{"chartType": "pie", "data": [{"a": 1}], "title": 3}',
        "[1, 2]",
    ],
)
@pytest.mark.parametrize("size", [1, 4, 10_000])
def test_an_invalid_block_is_dropped_and_the_rest_arrives(body: str, size: int) -> None:
    out, f = run(f"Before <chart>{body}</chart> after.", size)
    assert "".join(out) == "Before  after."
    assert (f.forwarded, f.dropped) == (0, 1)
    assert chart_problem(body) is not None


def test_an_unclosed_block_is_dropped_at_the_end_and_a_partial_tag_is_text() -> None:
    out, f = run('Text <chart>{"chartType": "bar"', 3)
    assert "".join(out) == "Text " and f.dropped == 1
    out, f = run("a < b and <char", 2)
    assert "".join(out) == "a < b and <char" and f.dropped == 0


def test_text_outside_blocks_is_not_held_back() -> None:
    f = ChartFilter()
    assert f.feed("Hello wor") == ["Hello wor"]
    assert f.feed("ld <ch") == ["ld "]
    assert f.feed("eese>") == ["<cheese>"]
    assert f.feed("<chart>{") == []
    assert f.feed("}</chart>") == []  # invalid: dropped
    assert f.feed(f"<chart>{CHART}</chart>two") == [f"<chart>{CHART}</chart>", "two"]


def test_every_chart_type_is_known() -> None:
    for kind in CHART_TYPES:
        assert chart_problem(json.dumps({"chartType": kind, "data": [{"x": 1}]})) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(ANSWER)), max_size=40))
def test_any_split_gives_the_same_answer_and_one_whole_block(cuts: list[int]) -> None:
    points = [0, *sorted(set(cuts)), len(ANSWER)]
    f = ChartFilter()
    out: list[str] = []
    for a, b in itertools.pairwise(points):
        out += f.feed(ANSWER[a:b])
    out += f.finish()
    assert "".join(out) == ANSWER
    assert [p for p in out if "chart>" in p] == [f"<chart>{CHART}</chart>"]

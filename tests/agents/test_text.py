"""agents.text: chunks that cover the text in order, snippets for triage."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from agents.text import chunk_text, snippet

# --- chunks ------------------------------------------------------------------------------


def test_short_text_is_one_chunk_and_blank_is_none() -> None:
    assert chunk_text("short", 100) == ["short"]
    assert chunk_text("", 100) == []
    assert chunk_text(" \n\n ", 100) == []


def test_chunks_break_at_paragraphs_first() -> None:
    paras = [f"Paragraph {i} " + "word " * 30 for i in range(6)]
    text = "\n\n".join(p.strip() for p in paras)
    chunks = chunk_text(text, 400, overlap=0)
    assert len(chunks) > 1
    for chunk in chunks[:-1]:
        assert len(chunk) <= 400
        assert chunk.endswith("\n\n")
    assert "".join(chunks) == text


def test_chunks_fall_back_to_lines_then_words_then_hard_cuts() -> None:
    lines = "\n".join(f"line {i:03d} " + "x" * 20 for i in range(50))
    assert all(c.endswith("\n") for c in chunk_text(lines, 200, overlap=0)[:-1])
    words = " ".join(f"w{i:03d}" for i in range(200))
    assert all(c.endswith(" ") for c in chunk_text(words, 100, overlap=0)[:-1])
    solid = "y" * 1000
    assert chunk_text(solid, 300, overlap=0) == ["y" * 300] * 3 + ["y" * 100]


def test_chunks_overlap() -> None:
    text = " ".join(f"w{i:04d}" for i in range(1000))
    chunks = chunk_text(text, 500, overlap=100)
    for prev, nxt in itertools.pairwise(chunks):
        shared = nxt[: nxt.index(" ")]
        assert shared in prev[-110:]


def test_chunk_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        chunk_text("text", 0)
    with pytest.raises(ValueError):
        chunk_text("text", 10, overlap=-1)
    # the default overlap is capped for small chunks rather than refused
    assert all(len(c) <= 50 for c in chunk_text("abc " * 100, 50))


@settings(max_examples=150, deadline=None)
@example(text="aaaa", max_chars=2, overlap=1)  # each chunk fits in several places
@given(
    text=st.text(alphabet=st.sampled_from("ab .\n"), min_size=1, max_size=2000),
    max_chars=st.integers(min_value=1, max_value=300),
    overlap=st.integers(min_value=0, max_value=400),
)
def test_chunks_cover_the_text_in_order(text: str, max_chars: int, overlap: int) -> None:
    chunks = chunk_text(text, max_chars, overlap)
    if not text.strip():
        assert chunks == []
        return
    assert all(0 < len(c) <= max_chars for c in chunks)
    # Some placement of the chunks in the text starts at 0, moves forward, leaves no gap
    # and ends at the end. Repetitive text ("aaaa") places a chunk in several spots, so
    # keep every feasible start (a greedy choice can be wrong either way).
    starts = {0} if text.startswith(chunks[0]) else set()
    previous = len(chunks[0])
    for chunk in chunks[1:]:
        found = set()
        at = text.find(chunk)
        while at != -1:
            if any(s < at <= s + previous for s in starts):
                found.add(at)
            at = text.find(chunk, at + 1)
        starts, previous = found, len(chunk)
        assert starts, chunks
    assert any(s + previous == len(text) for s in starts), chunks


# --- snippets ----------------------------------------------------------------------------


def test_snippet_collapses_whitespace() -> None:
    assert snippet("  Hello\n\n  world\t again  ") == "Hello world again"


def test_snippet_cuts_at_a_word_with_an_ellipsis() -> None:
    text = "alpha beta gamma delta epsilon"
    assert snippet(text, 16) == "alpha beta…"
    assert len(snippet(text, 16)) <= 16
    assert snippet("x" * 50, 10) == "x" * 9 + "…"
    assert snippet(text, 100) == text

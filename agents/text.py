"""Cutting text for the model: chunks that fit the context budget, snippets for triage.

Rules:

- :func:`chunk_text` cuts at paragraph, then line, then sentence, then word
  boundaries when one exists in the second half of the window; consecutive chunks
  share about ``overlap`` characters, so a line cut in two is whole in one of them.
- :func:`snippet` is the start of a text with whitespace collapsed, cut at a word.
- Pure functions; they work for any source (files, messages).
"""

from __future__ import annotations

import re

__all__ = ["chunk_text", "snippet"]

_BREAKS = ("\n\n", "\n", ". ", "! ", "? ", " ")
_SPACE = re.compile(r"\s+")


def chunk_text(text: str, max_chars: int, overlap: int = 200) -> list[str]:
    """Cut ``text`` into pieces of at most ``max_chars``, consecutive pieces sharing
    about ``overlap`` characters (capped at half a piece).

    Cuts fall after a paragraph break, else a line break, else a sentence end, else
    a space, when one lies in the second half of the window; else mid-word.
    Empty or blank text gives ``[]``.
    """
    if max_chars < 1:
        raise ValueError("max_chars must be at least 1")
    if overlap < 0:
        raise ValueError("overlap must not be negative")
    if not text.strip():
        return []
    n = len(text)
    if n <= max_chars:
        return [text]
    overlap = min(overlap, max_chars // 2)
    min_len = max(max_chars // 2, overlap + 1)
    chunks: list[str] = []
    start = 0
    while True:
        end = start + max_chars
        if end >= n:
            chunks.append(text[start:])
            return chunks
        cut = end
        for sep in _BREAKS:
            pos = text.rfind(sep, start + min_len, end)
            if pos != -1 and pos + len(sep) <= end:
                cut = pos + len(sep)
                break
        chunks.append(text[start:cut])
        next_start = cut - overlap
        if overlap:
            # start the overlap at a word boundary when one is near
            space = _SPACE.search(text, next_start, cut)
            if space is not None and space.end() < cut:
                next_start = space.end()
        start = max(next_start, start + 1)


_WORD = re.compile(r"\S+")


def snippet(text: str, max_chars: int = 400) -> str:
    """The start of ``text`` with whitespace collapsed, at most ``max_chars`` long.

    A cut text ends at a word boundary with ``…``. Reads only as much of ``text`` as
    it needs.
    """
    if max_chars < 1:
        return ""
    words: list[str] = []
    length = -1
    for match in _WORD.finditer(text):
        word = match.group()
        if length + 1 + len(word) > max_chars:
            budget = max_chars - 1  # room for the ellipsis
            while words and length > budget:
                length -= len(words.pop()) + 1
            if not words:
                return word[:budget] + "…"
            return " ".join(words) + "…"
        words.append(word)
        length += 1 + len(word)
    return " ".join(words)

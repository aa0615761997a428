"""Message bodies to plain text: HTML with inscriptis, quoted history cut, size capped.

Rules:

- :func:`html_to_text` uses inscriptis (inline text keeps flowing, tables and lists
  keep their layout); scripts and styles are dropped.
- :func:`strip_quoted` removes quoted reply history (``On ... wrote:`` and ``>``
  blocks, Outlook's header blocks) with mail-parser-reply, but keeps forwarded
  content: the text from the first forward marker on is kept whole.
- Nothing here does I/O; all functions are total (bad input gives text, never raises).
"""

from __future__ import annotations

import re

__all__ = ["clip", "html_to_text", "strip_quoted"]

_FORWARD = re.compile(
    r"^[ \t>]*(?:-{2,}\s*Forwarded message\s*-{2,}|-{2,}\s*Forwarded Message\s*-{2,}"
    r"|Begin forwarded message:|-{2,}\s*Weitergeleitete Nachricht\s*-{2,})",
    re.IGNORECASE | re.MULTILINE,
)
_BLANKS = re.compile(r"\n{3,}")
_TAG = re.compile(r"<[^>]*>")


def html_to_text(html: str) -> str:
    """Visible text of an HTML body."""
    if not html.strip():
        return ""
    from inscriptis import get_text  # lazy: lxml is a large import

    try:
        text = get_text(html)
    except Exception:  # lxml refuses some inputs (e.g. only a processing instruction)
        text = _TAG.sub(" ", html)
    lines = [line.rstrip() for line in text.splitlines()]
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip()


def strip_quoted(text: str, languages: tuple[str, ...] = ("en", "de", "fr", "es")) -> str:
    """``text`` without quoted reply history; forwarded content is kept."""
    if not text.strip():
        return ""
    forward = _FORWARD.search(text)
    head, tail = (text[: forward.start()], text[forward.start() :]) if forward else (text, "")
    own = _latest_reply(head, languages) if head.strip() else ""
    parts = [p.strip() for p in (own, tail) if p.strip()]
    return "\n\n".join(parts)


def _latest_reply(text: str, languages: tuple[str, ...]) -> str:
    from mailparser_reply import EmailReplyParser

    try:
        reply = EmailReplyParser(languages=list(languages)).parse_reply(text=text)
    except Exception:  # a parser bug must not lose the message
        return text
    return reply if isinstance(reply, str) and reply.strip() else text


def clip(text: str, max_chars: int) -> tuple[str, bool]:
    """``text`` cut to ``max_chars`` at a line or word boundary, and whether it was cut."""
    if len(text) <= max_chars:
        return text, False
    cut = text.rfind("\n", max_chars // 2, max_chars)
    if cut == -1:
        cut = text.rfind(" ", max_chars // 2, max_chars)
    if cut == -1:
        cut = max_chars
    return text[:cut].rstrip(), True

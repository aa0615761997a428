"""Text out of the local-directory agent's files, and cutting it to size.

Rules:

- :func:`extract_text` dispatches on the lower-cased extension, one of
  :data:`~agents.local_dir.scan.SUPPORTED_EXTENSIONS`. Anything it cannot turn
  into text raises :class:`~agents.errors.ExtractError` whose message names the
  file and the reason: unsupported extension, not a regular file, unreadable
  (``OSError``), over ``max_bytes``, binary, corrupt or encrypted.
- The whole file is read once (at most ``max_bytes``) and parsed from memory.
- Plain text (``.txt .md .csv .json``): UTF-8 with ``errors="replace"`` (a UTF-8
  BOM is dropped; a UTF-16 BOM selects UTF-16). A NUL byte in the first 8 KiB
  without a UTF-16 BOM means binary.
- HTML: stdlib ``html.parser``; visible text only (no ``script``, ``style``,
  ``template``, ``noscript``), block elements become line breaks; the charset
  comes from a ``<meta>`` declaration when there is one, else UTF-8.
- E-mail (``.eml``): stdlib ``email`` with ``policy.default``. Subject, From, To,
  Cc and Date headers, then every ``text/plain`` part that is not an attachment;
  when there is none, the ``text/html`` parts as visible text.
- PDF: pypdf, page texts separated by blank lines. A file pypdf cannot open, or
  one encrypted with a non-empty password, is "not a valid PDF". pypdf's own
  warnings logger is silenced (corrupt files are reported by our error). A PDF
  without a text layer (scanned images) gives ``""``.
- ``.docx``: ``word/document.xml`` from the zip, one line per ``w:p`` paragraph
  (tables included, in document order); ``w:tab`` and ``w:br`` kept. A bad zip, a
  missing part, an oversized part or a DTD in the XML raise ``ExtractError``.
- Chunks and snippets are cut by ``agents.text`` (they serve every source).
"""

from __future__ import annotations

import codecs
import email
import email.policy
import io
import logging
import os
import re
import stat
import zipfile
from collections.abc import Callable, Sequence
from email.message import EmailMessage, Message
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree

from agents.errors import ExtractError
from agents.local_dir.safe_open import read_under_roots
from agents.local_dir.scan import DEFAULT_MAX_FILE_BYTES, SUPPORTED_EXTENSIONS, format_size

__all__ = ["extract_bytes", "extract_text", "html_to_text"]

_BINARY_SNIFF = 8192
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_BINARY", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
)
# document.xml may legitimately be several times the zipped size; bound it anyway.
_DOCX_XML_FACTOR = 10
_DOCX_XML_FLOOR = 64 * 1024 * 1024

logging.getLogger("pypdf").setLevel(logging.ERROR)


def extract_text(
    path: str | Path,
    *,
    max_bytes: int = DEFAULT_MAX_FILE_BYTES,
    roots: Sequence[str] | None = None,
    expect_sha256: str | None = None,
) -> str:
    """The text of ``path``; raises :class:`ExtractError` with the reason.

    With ``roots`` (what the product always passes) the file is opened under them with
    no link followed after the check (``safe_open``), and with ``expect_sha256`` its
    content must be what the scan hashed. The extension is the opened file's own
    name's: a link's name never chooses the extractor."""
    name = os.fspath(path)
    ext = os.path.splitext(name if roots is None else os.path.realpath(name))[1].lower()
    extractor = _EXTRACTORS.get(ext)
    if extractor is None or ext not in SUPPORTED_EXTENSIONS:
        kind = f"{ext!r} files" if ext else "files without an extension"
        raise ExtractError(f"cannot extract {name}: {kind} are not supported")
    if roots is None:
        data = _read_bounded(name, max_bytes)
    else:
        data = read_under_roots(name, roots, max_bytes, expect_sha256=expect_sha256)
    return extractor(name, data)


def extract_bytes(name: str, data: bytes, *, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> str:
    """The text of a file's ``data`` (an e-mail attachment) named ``name``; as :func:`extract_text`."""
    ext = os.path.splitext(name)[1].lower()
    extractor = _EXTRACTORS.get(ext)
    if extractor is None or ext not in SUPPORTED_EXTENSIONS:
        kind = f"{ext!r} files" if ext else "files without an extension"
        raise ExtractError(f"cannot extract {name}: {kind} are not supported")
    if len(data) > max_bytes:
        raise ExtractError(_too_big(name, len(data), max_bytes))
    return extractor(name, data)


# --- reading -------------------------------------------------------------------------


def _read_bounded(name: str, max_bytes: int) -> bytes:
    try:
        # O_NONBLOCK: a FIFO named like a document must not hang the run; it is
        # refused by the fstat check (the flag changes nothing for regular files).
        fd = os.open(name, _OPEN_FLAGS)
        with open(fd, "rb", closefd=True) as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise ExtractError(f"cannot extract {name}: not a regular file")
            if st.st_size > max_bytes:
                raise ExtractError(_too_big(name, st.st_size, max_bytes))
            data = fh.read(max_bytes + 1)
    except ExtractError:
        raise
    except OSError as exc:
        reason = "permission denied" if isinstance(exc, PermissionError) else exc.strerror
        raise ExtractError(f"cannot read {name}: {reason or exc.__class__.__name__}") from exc
    if len(data) > max_bytes:  # grew while we read it
        raise ExtractError(_too_big(name, len(data), max_bytes))
    return data


def _too_big(name: str, size: int, limit: int) -> str:
    return f"cannot extract {name}: {format_size(size)} is over the {format_size(limit)} limit"


# --- plain text ----------------------------------------------------------------------


def _plain_text(name: str, data: bytes) -> str:
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace")
    if b"\0" in data[:_BINARY_SNIFF]:
        raise ExtractError(f"cannot extract {name}: binary file, not text")
    return data.decode("utf-8-sig", errors="replace")


# --- HTML ------------------------------------------------------------------------------

_HIDDEN_TAGS = frozenset({"script", "style", "template", "noscript"})
_CELL_TAGS = frozenset({"td", "th"})
_BLOCK_TAGS = frozenset(
    {
        "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt",
        "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4",
        "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section",
        "table", "title", "tr", "ul",
    }
)  # fmt: skip
_VOID_TAGS = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
)
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)


class _TextParser(HTMLParser):
    """Collects the visible text; ``hidden`` is the stack of open hidden elements."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden: list[str] = []

    def _separate(self, tag: str) -> None:
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")
        elif tag in _CELL_TAGS:
            self.parts.append(" ")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN_TAGS:
            self.hidden.append(tag)
        else:
            self._separate(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._separate(tag)  # <script/> hides nothing

    def handle_endtag(self, tag: str) -> None:
        if tag in self.hidden:
            # close up to the matching element (tolerates unclosed children)
            while self.hidden and self.hidden.pop() != tag:
                pass
        elif tag not in _VOID_TAGS:
            self._separate(tag)

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """Visible text of an HTML document, one line per block, whitespace collapsed."""
    parser = _TextParser()
    parser.feed(html)
    parser.close()
    lines = ("".join(parser.parts)).split("\n")
    out: list[str] = []
    for line in lines:
        collapsed = " ".join(line.split())
        if collapsed:
            out.append(collapsed)
    return "\n".join(out)


def _decode_html(data: bytes) -> str:
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace")
    match = _META_CHARSET.search(data[:4096])
    encoding = "utf-8-sig"
    if match:
        try:
            encoding = codecs.lookup(match.group(1).decode("ascii")).name
        except (LookupError, UnicodeDecodeError):
            pass
        if encoding == "utf-8":
            encoding = "utf-8-sig"
    return data.decode(encoding, errors="replace")


def _html(name: str, data: bytes) -> str:
    if b"\0" in data[:_BINARY_SNIFF] and not data.startswith(
        (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
    ):
        raise ExtractError(f"cannot extract {name}: binary file, not HTML")
    return html_to_text(_decode_html(data))


# --- e-mail ----------------------------------------------------------------------------

_EMAIL_HEADERS = ("Subject", "From", "To", "Cc", "Date")


def _part_text(part: Message) -> str:
    try:
        if isinstance(part, EmailMessage):
            content = part.get_content()
            if isinstance(content, str):
                return content
    except Exception:  # broken transfer encoding and the like: decode by hand
        pass
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("utf-8", errors="replace")


def _eml(name: str, data: bytes) -> str:
    try:
        msg = email.message_from_bytes(data, policy=email.policy.default)
    except Exception as exc:  # the parser is lenient; this is a last resort
        raise ExtractError(f"cannot extract {name}: not a valid e-mail ({exc})") from exc
    lines: list[str] = []
    for header in _EMAIL_HEADERS:
        try:
            value = msg.get(header)
        except Exception:  # a malformed header must not lose the whole message
            value = None
        if value:
            lines.append(f"{header}: {' '.join(str(value).split())}")
    plain: list[str] = []
    html: list[str] = []
    for part in msg.walk():
        if part.is_multipart() or part.get_content_disposition() == "attachment":
            continue
        ctype = part.get_content_type()
        if ctype == "text/plain":
            plain.append(_part_text(part).strip())
        elif ctype == "text/html":
            html.append(html_to_text(_part_text(part)))
    bodies = [b for b in (plain or html) if b]
    if bodies:
        if lines:
            lines.append("")
        lines.append("\n\n".join(bodies))
    return "\n".join(lines)


# --- PDF -------------------------------------------------------------------------------


def _pdf(name: str, data: bytes) -> str:
    from pypdf import PdfReader  # lazy: pypdf is only needed for PDFs

    if b"%PDF-" not in data[:1024]:
        raise ExtractError(f"not a valid PDF: {name} (no PDF header)")
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ExtractError(f"not a valid PDF: {name} (encrypted)")
        pages = list(reader.pages)
    except ExtractError:
        raise
    except Exception as exc:  # pypdf raises many types on corrupt input
        reason = "encrypted" if "encrypt" in str(exc).lower() else f"{exc}"
        raise ExtractError(f"not a valid PDF: {name} ({reason})") from exc
    texts: list[str] = []
    failed = 0
    for page in pages:
        try:
            text = page.extract_text()
        except Exception:  # one broken page must not hide the others
            failed += 1
            continue
        if text and text.strip():
            texts.append(text.strip())
    if failed and not texts:
        raise ExtractError(f"not a valid PDF: {name} (no page could be read)")
    return "\n\n".join(texts)


# --- DOCX ------------------------------------------------------------------------------

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_P, _T, _TAB = f"{_W}p", f"{_W}t", f"{_W}tab"
_BREAK = frozenset({f"{_W}br", f"{_W}cr"})
_MC_FALLBACK = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"


def _docx(name: str, data: bytes) -> str:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            try:
                info = zf.getinfo("word/document.xml")
            except KeyError:
                raise ExtractError(
                    f"cannot extract {name}: not a valid .docx (no word/document.xml)"
                ) from None
            limit = max(_DOCX_XML_FLOOR, _DOCX_XML_FACTOR * len(data))
            if info.file_size > limit:
                raise ExtractError(
                    f"cannot extract {name}: document.xml is {format_size(info.file_size)}, "
                    f"over the {format_size(limit)} limit"
                )
            xml = zf.read(info)
    except ExtractError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, OSError) as exc:
        raise ExtractError(f"cannot extract {name}: not a valid .docx ({exc})") from exc
    except Exception as exc:  # zlib errors and friends from a corrupt archive
        raise ExtractError(f"cannot extract {name}: not a valid .docx ({exc})") from exc
    if b"<!DOCTYPE" in xml[:4096] or b"<!ENTITY" in xml:
        raise ExtractError(f"cannot extract {name}: not a valid .docx (DTD in document.xml)")
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as exc:
        raise ExtractError(f"cannot extract {name}: not a valid .docx ({exc})") from exc
    paragraphs: list[str] = []
    try:
        _docx_walk(root, [], paragraphs)
    except RecursionError:
        raise ExtractError(f"cannot extract {name}: not a valid .docx (nested too deep)") from None
    return "\n".join(paragraphs).strip("\n")


def _docx_walk(elem: ElementTree.Element, parts: list[str], paragraphs: list[str]) -> None:
    """Text of ``elem``'s children into ``parts``; each ``w:p`` becomes one paragraph.

    A paragraph inside a text box is its own paragraph (listed before the one that
    holds the box); ``mc:Fallback`` repeats ``mc:Choice`` content and is skipped.
    """
    for child in elem:
        tag = child.tag
        if tag == _P:
            own: list[str] = []
            _docx_walk(child, own, paragraphs)
            paragraphs.append("".join(own))
        elif tag == _T:
            if child.text:
                parts.append(child.text)
        elif tag == _TAB:
            parts.append("\t")
        elif tag in _BREAK:
            parts.append("\n")
        elif tag != _MC_FALLBACK:
            _docx_walk(child, parts, paragraphs)


_EXTRACTORS: dict[str, Callable[[str, bytes], str]] = {
    ".txt": _plain_text,
    ".md": _plain_text,
    ".csv": _plain_text,
    ".json": _plain_text,
    ".html": _html,
    ".htm": _html,
    ".eml": _eml,
    ".pdf": _pdf,
    ".docx": _docx,
}

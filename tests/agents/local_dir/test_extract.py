"""Text extraction from real files in tmp_path."""

from __future__ import annotations

import codecs
import io
import os
import zipfile
from pathlib import Path

import pytest
from pypdf import PdfReader, PdfWriter

from agents.errors import ExtractError
from agents.local_dir.extract import extract_text, html_to_text
from agents.local_dir.scan import SUPPORTED_EXTENSIONS
from tests.agents.local_dir.builders import (
    docx_document_xml,
    pdf_bytes,
    write_docx,
    write_eml,
    write_pdf,
)

# --- plain text -------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".txt", ".md", ".csv", ".json", ".TXT"])
def test_plain_text_formats_are_read_as_utf8(tmp_path: Path, ext: str) -> None:
    p = tmp_path / f"note{ext}"
    p.write_text("héllo, wörld\nline 2\n", encoding="utf-8")
    assert extract_text(p) == "héllo, wörld\nline 2\n"


def test_invalid_utf8_is_replaced_not_fatal(tmp_path: Path) -> None:
    p = tmp_path / "latin.txt"
    p.write_bytes(b"caf\xe9 au lait")
    assert extract_text(p) == "caf\ufffd au lait"


def test_utf8_bom_is_dropped_and_utf16_bom_is_decoded(tmp_path: Path) -> None:
    (tmp_path / "bom.md").write_bytes(codecs.BOM_UTF8 + b"# Title")
    (tmp_path / "wide.txt").write_bytes("wide text".encode("utf-16"))
    assert extract_text(tmp_path / "bom.md") == "# Title"
    assert extract_text(tmp_path / "wide.txt") == "wide text"


def test_nul_bytes_mean_binary(tmp_path: Path) -> None:
    p = tmp_path / "image.txt"
    p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(ExtractError, match=r"image\.txt: binary file"):
        extract_text(p)


def test_nul_after_the_first_8_kib_is_still_text(tmp_path: Path) -> None:
    p = tmp_path / "log.txt"
    p.write_bytes(b"a" * 8192 + b"\x00tail")
    assert extract_text(p).endswith("\x00tail")


# --- HTML --------------------------------------------------------------------------------


def test_html_keeps_visible_text_only(tmp_path: Path) -> None:
    p = tmp_path / "page.html"
    p.write_text(
        "<!doctype html><html><head><title>Launch plan</title>"
        "<style>body { color: red }</style><script>var secret = 1;</script></head>"
        "<body><h1>Plan &amp; budget</h1><p>First <b>bold</b> step.</p>"
        "<ul><li>one</li><li>two</li></ul>"
        "<table><tr><td>Q1</td><td>10</td></tr></table>"
        "<noscript>enable js</noscript><template><p>hidden</p></template>"
        "<script type='module'>import x from 'y'</script>Tail<br>End</body></html>",
        encoding="utf-8",
    )
    text = extract_text(p)
    assert text.splitlines() == [
        "Launch plan",
        "Plan & budget",
        "First bold step.",
        "one",
        "two",
        "Q1 10",
        "Tail",
        "End",
    ]
    for hidden in ("color", "secret", "enable js", "hidden", "import"):
        assert hidden not in text


def test_htm_uses_declared_charset(tmp_path: Path) -> None:
    p = tmp_path / "old.htm"
    p.write_bytes(b'<meta charset="iso-8859-1"><p>caf\xe9</p>')
    assert extract_text(p) == "café"


def test_html_without_closing_tags_and_unclosed_script() -> None:
    assert html_to_text("<p>one<p>two<script>never shown") == "one\ntwo"


# --- e-mail ------------------------------------------------------------------------------


def test_eml_headers_and_plain_part(tmp_path: Path) -> None:
    p = write_eml(
        tmp_path / "mail.eml",
        plain="Please review the budget.\nThanks",
        html="<p>HTML twin of the body</p>",
        attachment="attached notes are not the body",
    )
    text = extract_text(p)
    assert text == (
        "Subject: Quarterly report\n"
        "From: Alice Example <alice@example.com>\n"
        "To: bob@example.com\n"
        "Date: Mon, 06 May 2024 09:30:00 +0000\n"
        "\n"
        "Please review the budget.\nThanks"
    )


def test_eml_html_only_is_stripped(tmp_path: Path) -> None:
    p = write_eml(
        tmp_path / "mail.eml",
        subject="Invite",
        html="<html><style>p{}</style><body><p>Meet at <b>10</b></p></body></html>",
    )
    text = extract_text(p)
    assert text.startswith("Subject: Invite\n")
    assert text.endswith("\n\nMeet at 10")
    assert "p{}" not in text


def test_eml_with_unknown_charset_still_gives_text(tmp_path: Path) -> None:
    p = tmp_path / "odd.eml"
    p.write_bytes(
        b"Subject: odd\r\nContent-Type: text/plain; charset=x-no-such-charset\r\n\r\nplain body\r\n"
    )
    assert extract_text(p) == "Subject: odd\n\nplain body"


# --- PDF ---------------------------------------------------------------------------------


def test_pdf_text_from_every_page(tmp_path: Path) -> None:
    p = write_pdf(tmp_path / "report.pdf", ["Hello PDF world", "Second page (end)"])
    assert extract_text(p) == "Hello PDF world\n\nSecond page (end)"


def test_pdf_with_empty_user_password_is_read(tmp_path: Path) -> None:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf_bytes(["Owner locked only"]))))
    writer.encrypt(user_password="", owner_password="owner", algorithm="RC4-128")
    p = tmp_path / "locked.pdf"
    with p.open("wb") as fh:
        writer.write(fh)
    assert extract_text(p) == "Owner locked only"


def test_encrypted_pdf_is_not_valid(tmp_path: Path) -> None:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf_bytes(["Top secret"]))))
    writer.encrypt(user_password="s3cret", algorithm="RC4-128")
    p = tmp_path / "secret.pdf"
    with p.open("wb") as fh:
        writer.write(fh)
    with pytest.raises(ExtractError, match=r"not a valid PDF: .*secret\.pdf \(encrypted\)"):
        extract_text(p)


def test_a_text_file_named_pdf_is_not_valid(tmp_path: Path) -> None:
    p = tmp_path / "fake.pdf"
    p.write_text("just some text, not a PDF")
    with pytest.raises(ExtractError, match=r"not a valid PDF: .*fake\.pdf"):
        extract_text(p)


def test_a_truncated_pdf_is_not_valid(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    p = tmp_path / "cut.pdf"
    p.write_bytes(pdf_bytes(["whole"])[:40])
    with pytest.raises(ExtractError, match=r"not a valid PDF: .*cut\.pdf"):
        extract_text(p)
    assert not [r for r in caplog.records if r.name.startswith("pypdf")]


# --- DOCX --------------------------------------------------------------------------------

_W = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'


def test_docx_paragraphs_tabs_breaks_and_tables(tmp_path: Path) -> None:
    body = (
        "<w:p><w:r><w:t>Project </w:t></w:r><w:r><w:t>kickoff</w:t></w:r></w:p>"
        "<w:p><w:r><w:t>Owner</w:t><w:tab/><w:t>Dana</w:t><w:br/><w:t>next line</w:t></w:r></w:p>"
        "<w:p><w:del><w:r><w:delText>deleted words</w:delText></w:r></w:del></w:p>"
        "<w:tbl><w:tr><w:tc><w:p><w:r><w:t>cell A</w:t></w:r></w:p></w:tc>"
        "<w:tc><w:p><w:r><w:t>cell B</w:t></w:r></w:p></w:tc></w:tr></w:tbl>"
    )
    p = write_docx(tmp_path / "minutes.docx", body)
    assert extract_text(p) == "Project kickoff\nOwner\tDana\nnext line\n\ncell A\ncell B"


def test_docx_text_box_fallback_is_not_duplicated(tmp_path: Path) -> None:
    mc = 'xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006"'
    body = (
        f"<w:p><w:r><w:t>Before</w:t><mc:AlternateContent {mc}>"
        "<mc:Choice><w:txbxContent><w:p><w:r><w:t>In the box</w:t></w:r></w:p></w:txbxContent>"
        "</mc:Choice><mc:Fallback><w:txbxContent><w:p><w:r><w:t>In the box</w:t></w:r></w:p>"
        "</w:txbxContent></mc:Fallback></mc:AlternateContent></w:r></w:p>"
    )
    p = write_docx(tmp_path / "box.docx", body)
    assert extract_text(p).splitlines() == ["In the box", "Before"]


def test_bad_zip_docx_raises(tmp_path: Path) -> None:
    p = tmp_path / "broken.docx"
    p.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(ExtractError, match=r"broken\.docx: not a valid \.docx"):
        extract_text(p)


def test_docx_without_document_part_raises(tmp_path: Path) -> None:
    p = tmp_path / "empty.docx"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
    with pytest.raises(ExtractError, match=r"no word/document\.xml"):
        extract_text(p)


def test_docx_with_a_dtd_is_refused(tmp_path: Path) -> None:
    xml = (
        '<?xml version="1.0"?><!DOCTYPE w:document [<!ENTITY a "aaaaaaaaaa">]>'
        f"<w:document {_W}><w:body><w:p><w:r><w:t>&a;&a;</w:t></w:r></w:p></w:body></w:document>"
    )
    p = write_docx(tmp_path / "bomb.docx", "", document_xml=xml)
    with pytest.raises(ExtractError, match="DTD"):
        extract_text(p)


def test_docx_with_broken_xml_raises(tmp_path: Path) -> None:
    p = write_docx(tmp_path / "bad.docx", "", document_xml=docx_document_xml("<w:p>")[:-10])
    with pytest.raises(ExtractError, match=r"bad\.docx: not a valid \.docx"):
        extract_text(p)


# --- refusals ----------------------------------------------------------------------------


def test_every_supported_extension_has_an_extractor(tmp_path: Path) -> None:
    for ext in SUPPORTED_EXTENSIONS:
        p = tmp_path / f"empty{ext}"
        p.write_bytes(b"")
        try:
            extract_text(p)
        except ExtractError as exc:
            assert "not supported" not in str(exc)


@pytest.mark.parametrize("name", ["slides.pptx", "archive.tar.gz", "Makefile"])
def test_unsupported_extension_raises(tmp_path: Path, name: str) -> None:
    p = tmp_path / name
    p.write_text("content")
    with pytest.raises(ExtractError, match="not supported"):
        extract_text(p)


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(ExtractError, match=r"cannot read .*gone\.txt"):
        extract_text(tmp_path / "gone.txt")


def test_a_folder_named_like_a_file_raises(tmp_path: Path) -> None:
    (tmp_path / "folder.md").mkdir()
    with pytest.raises(ExtractError, match=r"folder\.md"):
        extract_text(tmp_path / "folder.md")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
@pytest.mark.timeout(10)
def test_a_fifo_named_like_a_document_does_not_hang(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.txt")
    with pytest.raises(ExtractError, match=r"pipe\.txt: not a regular file"):
        extract_text(tmp_path / "pipe.txt")


def test_over_max_bytes_raises(tmp_path: Path) -> None:
    p = tmp_path / "big.txt"
    p.write_bytes(b"x" * 2048)
    with pytest.raises(ExtractError, match=r"big\.txt: 2\.0 KB is over the 1\.0 KB limit"):
        extract_text(p, max_bytes=1024)
    assert extract_text(p, max_bytes=2048) == "x" * 2048

"""The Gmail client against the fake Gmail API: paging, history, fallback, faults, MIME."""

from __future__ import annotations

import email.utils
import functools
import io
import json
import zipfile

import pytest

from agents.cloud.gmail import GmailClient, GmailCursor, decode_b64url, parse_message
from agents.cloud.http import CloudHttp, parse_retry_after
from agents.cloud.types import Message, MessageRef
from agents.errors import CloudRejected, CloudThrottled, NeedsReconnect
from agents.local_dir.extract import extract_bytes
from tests.agents.local_dir.builders import docx_document_xml, pdf_bytes
from tests.support.fake_google import RATE_LIMITED, USER_RATE_403, FakeGmail, b64url


def fill(server: FakeGmail, n: int, prefix: str = "Message") -> list[str]:
    return [server.add_message(subject=f"{prefix} {i}", text=f"Body {i}") for i in range(n)]


def client(http: CloudHttp, server: FakeGmail, **kwargs: object) -> GmailClient:
    return GmailClient(http, server.api_base, page_size=10, **kwargs)  # type: ignore[arg-type]


async def test_first_run_pages_through_the_lookback(
    gmail_server: FakeGmail, gmail_http: CloudHttp
) -> None:
    ids = fill(gmail_server, 30)
    gmail_server.add_message(subject="ancient", text="old", at=1_000_000_000)
    gmail = client(gmail_http, gmail_server)
    changes = await gmail.list_changes(None, lookback_days=7)
    assert [r.id for r in changes.refs] == ids  # oldest first, the ancient one outside the window
    assert not changes.resynced
    lists = gmail_server.api_requests("/gmail/v1/users/me/messages")
    assert len(lists) == 3
    assert lists[0].query["q"][0].startswith("after:")
    cursor = GmailCursor.loads(changes.cursor)
    assert cursor is not None and cursor.history_id == str(gmail_server.history_id)
    assert gmail.bodies_fetched == 0 and gmail_server.gets == []


async def test_headers_and_sender_filter(gmail_server: FakeGmail, gmail_http: CloudHttp) -> None:
    keep = gmail_server.add_message(subject="Q3 plan", sender="Dana <dana@example.com>", text="x")
    gmail_server.add_message(subject="spam", sender="Ads <ads@spam.test>", text="y")
    gmail = client(gmail_http, gmail_server, senders=["dana@example.com"])
    changes = await gmail.list_changes(None)
    assert [r.id for r in changes.refs] == [keep]
    assert (
        "from:dana@example.com"
        in gmail_server.api_requests("/gmail/v1/users/me/messages")[0].query["q"][0]
    )
    refs = await gmail.refs_with_headers(changes.refs)
    assert refs[0].subject == "Q3 plan" and refs[0].sender == "Dana <dana@example.com>"
    assert refs[0].received_at is not None and refs[0].has_headers


async def test_incremental_run_by_history(gmail_server: FakeGmail, gmail_http: CloudHttp) -> None:
    fill(gmail_server, 12)
    gmail = client(gmail_http, gmail_server)
    first = await gmail.list_changes(None)
    new = fill(gmail_server, 2, "New")
    second = await gmail.list_changes(first.cursor)
    assert [r.id for r in second.refs] == new
    assert not second.resynced
    history = gmail_server.api_requests("/gmail/v1/users/me/history")
    assert history[0].query["startHistoryId"] == [json.loads(first.cursor)["history_id"]]
    assert history[0].query["historyTypes"] == ["messageAdded"]
    for ref in second.refs:
        await gmail.get_message(ref.id)
    assert gmail_server.gets == new
    third = await gmail.list_changes(second.cursor)
    assert third.refs == []


async def test_history_paging(gmail_server: FakeGmail, gmail_http: CloudHttp) -> None:
    gmail = client(gmail_http, gmail_server)
    first = await gmail.list_changes(None)
    new = fill(gmail_server, 25)
    second = await gmail.list_changes(first.cursor)
    assert [r.id for r in second.refs] == new
    assert len(gmail_server.api_requests("/gmail/v1/users/me/history")) == 3


async def test_expired_history_falls_back_to_a_bounded_list(
    gmail_server: FakeGmail, gmail_http: CloudHttp
) -> None:
    old = fill(gmail_server, 5)
    gmail = client(gmail_http, gmail_server)
    first = await gmail.list_changes(None)
    gmail_server.add_message(
        subject="before the window", text="x", at=GmailCursor.loads(first.cursor).since - 86400
    )  # type: ignore[union-attr]
    gmail_server.expire_history()
    new = fill(gmail_server, 2, "New")
    second = await gmail.list_changes(first.cursor)
    assert second.resynced
    ids = [r.id for r in second.refs]
    assert set(new) <= set(ids) and len(ids) == len(set(ids))
    assert set(ids) <= set(old) | set(new)  # bounded: nothing older than the last success
    q = gmail_server.api_requests("/gmail/v1/users/me/messages")[-1].query["q"][0]
    assert int(q.split("after:")[1].split()[0]) >= int(json.loads(first.cursor)["since"]) - 3600
    third = await gmail.list_changes(second.cursor)  # the new cursor works again
    assert third.refs == [] and not third.resynced


@pytest.mark.parametrize(
    ("status", "body", "retry_after"),
    [(429, RATE_LIMITED, "0.2"), (403, USER_RATE_403, None), (503, {}, "0")],
)
async def test_throttling_is_waited_out(
    gmail_server: FakeGmail,
    gmail_http: CloudHttp,
    status: int,
    body: dict[str, object],
    retry_after: str | None,
) -> None:
    ids = fill(gmail_server, 30)
    gmail_server.fail("pageToken=10", status, body, retry_after=retry_after, times=2)
    changes = await client(gmail_http, gmail_server).list_changes(None)
    assert [r.id for r in changes.refs] == ids
    assert (
        len(
            [
                r
                for r in gmail_server.api_requests("/gmail/v1/users/me/messages")
                if r.query.get("pageToken") == ["10"]
            ]
        )
        == 3
    )
    assert gmail_http.retries == 2


async def test_long_retry_after_ends_as_throttled(
    gmail_server: FakeGmail, gmail_http: CloudHttp
) -> None:
    fill(gmail_server, 3)
    gmail_server.fail("/messages", 429, RATE_LIMITED, retry_after="3600")
    with pytest.raises(CloudThrottled) as caught:
        await client(gmail_http, gmail_server).list_changes(None)
    assert caught.value.retry_at > 0


async def test_reset_mid_page_neither_skips_nor_repeats(
    gmail_server: FakeGmail, gmail_http: CloudHttp
) -> None:
    ids = fill(gmail_server, 30)
    fault = gmail_server.fail("pageToken=10", reset=True)
    changes = await client(gmail_http, gmail_server).list_changes(None)
    assert [r.id for r in changes.refs] == ids
    assert fault.times == 0 and gmail_http.retries == 1


async def test_never_more_than_four_in_flight(
    gmail_server: FakeGmail, gmail_http: CloudHttp
) -> None:
    ids = fill(gmail_server, 30)
    gmail_server.latency_s = 0.05
    refs = await client(gmail_http, gmail_server).refs_with_headers(ids)
    assert [r.id for r in refs] == ids
    assert gmail_server.max_in_flight == 4


async def test_expired_access_token_is_refreshed_once(
    gmail_server: FakeGmail, gmail_http: CloudHttp
) -> None:
    ids = fill(gmail_server, 20)
    gmail = client(gmail_http, gmail_server)
    gmail_server.expire_access_tokens()
    changes = await gmail.list_changes(None)
    refs = await gmail.refs_with_headers(changes.refs)
    assert [r.id for r in refs] == ids
    assert gmail_server.refresh_count == 1


async def test_gone_messages_are_dropped(gmail_server: FakeGmail, gmail_http: CloudHttp) -> None:
    mid = gmail_server.add_message(subject="a", text="b")
    refs = await client(gmail_http, gmail_server).refs_with_headers([mid, "deadbeef"])
    assert [r.id for r in refs] == [mid]


# --- bodies ------------------------------------------------------------------------------


def test_base64url_with_and_without_padding() -> None:
    for text in ("a", "ab", "abc", "abcd", "héllo wörld ✓"):
        assert decode_b64url(b64url(text)).decode() == text
        assert decode_b64url(b64url(text, pad=True)).decode() == text


def _part(mime: str, data: bytes, charset: str = "UTF-8") -> dict[str, object]:
    return {
        "mimeType": mime,
        "filename": "",
        "headers": [{"name": "Content-Type", "value": f'{mime}; charset="{charset}"'}],
        "body": {"size": len(data), "data": b64url(data)},
    }


def test_alternative_prefers_plain_unless_empty() -> None:
    plain = {
        "id": "1",
        "payload": {
            "mimeType": "multipart/alternative",
            "parts": [_part("text/plain", b"Plain body"), _part("text/html", b"<p>HTML body</p>")],
        },
    }
    assert parse_message(plain)[0].body == "Plain body"
    empty = {
        "id": "2",
        "payload": {
            "mimeType": "multipart/alternative",
            "parts": [
                _part("text/plain", b"  \r\n"),
                _part("text/html", b"<p>HTML <b>body</b></p><style>p{}</style>"),
            ],
        },
    }
    assert parse_message(empty)[0].body == "HTML body"


def test_nested_parts_and_charsets() -> None:
    latin = "Grüße aus Köln".encode("iso-8859-1")
    data = {
        "id": "3",
        "payload": {
            "mimeType": "multipart/mixed",
            "parts": [
                {
                    "mimeType": "multipart/alternative",
                    "parts": [
                        _part("text/plain", latin, "iso-8859-1"),
                        _part("text/html", b"<p>x</p>"),
                    ],
                },
                _part("text/plain", b"Zweiter Teil"),
                _part("text/plain", b"unknown charset", "x-no-such-charset"),
            ],
        },
    }
    body = parse_message(data)[0].body
    assert body == "Grüße aus Köln\n\nZweiter Teil\n\nunknown charset"


def test_quoted_history_is_cut_and_forwards_are_kept() -> None:
    reply = "Thursday works.\n\nOn Mon, Nov 3, 2026 at 9:00 AM Dana <d@c.com> wrote:\n> Can we meet?\n> Also the secret plan\n"
    assert (
        parse_message({"id": "4", "payload": _part("text/plain", reply.encode())})[0].body
        == "Thursday works."
    )
    forward = "FYI\n\n---------- Forwarded message ---------\nFrom: Bob <b@x.com>\nSubject: Budget\n\nThe budget is due Friday.\n"
    body = parse_message({"id": "5", "payload": _part("text/plain", forward.encode())})[0].body
    assert body.startswith("FYI") and "The budget is due Friday." in body


def _docx(text: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(
            "word/document.xml", docx_document_xml(f"<w:p><w:r><w:t>{text}</w:t></w:r></w:p>")
        )
    return buf.getvalue()


async def test_attachments_through_the_local_extractors(
    gmail_server: FakeGmail, gmail_http: CloudHttp
) -> None:
    mid = gmail_server.add_message(
        subject="Docs",
        text="See attached.",
        attachments=(
            ("report.pdf", "application/pdf", pdf_bytes(["Revenue grew 12%"])),
            (
                "notes.docx",
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                _docx("Ship on Monday"),
            ),
            ("todo.txt", "text/plain", b"buy milk"),
            ("photo.png", "image/png", b"\x89PNG...."),
            ("big.txt", "text/plain", b"x" * 5000),
        ),
    )
    extract = functools.partial(extract_bytes, max_bytes=4096)
    gmail = client(gmail_http, gmail_server, max_attachment_bytes=4096, extract=extract)
    message = await gmail.get_message(mid)
    assert message.body == "See attached."
    by_name = {a.filename: a for a in message.attachments}
    assert "Revenue grew 12%" in (by_name["report.pdf"].text or "")
    assert by_name["notes.docx"].text == "Ship on Monday"
    assert by_name["todo.txt"].text == "buy milk"
    assert by_name["photo.png"].text is None and by_name["photo.png"].skipped
    assert by_name["big.txt"].skipped == "over the attachment size limit"
    assert message.headers["Subject"] == "Docs"
    fetched = [r.path for r in gmail_server.api_requests() if "/attachments/" in r.path]
    assert len(fetched) == 3  # never the skipped ones


async def test_inline_attachment_data_is_used(
    gmail_server: FakeGmail, gmail_http: CloudHttp
) -> None:
    mid = gmail_server.add_message(
        subject="inline",
        text="x",
        attachments=(("a.txt", "text/plain", b"inline text"),),
        inline_attachment_data=True,
    )
    message = await client(gmail_http, gmail_server, extract=extract_bytes).get_message(mid)
    assert message.attachments[0].text == "inline text"
    assert not [r for r in gmail_server.api_requests() if "/attachments/" in r.path]


async def test_a_second_401_needs_reconnect(gmail_server: FakeGmail, gmail_http: CloudHttp) -> None:
    body = {
        "error": {
            "code": 401,
            "message": "Request had invalid authentication credentials.",
            "status": "UNAUTHENTICATED",
        }
    }
    gmail_server.fail("/profile", 401, body, times=2)
    with pytest.raises(NeedsReconnect, match="freshly refreshed"):
        await gmail_http.get_json(f"{gmail_server.api_base}/users/me/profile")
    assert gmail_server.refresh_count == 1


async def test_other_client_errors_are_rejected_with_the_reason(
    gmail_server: FakeGmail, gmail_http: CloudHttp
) -> None:
    gmail_server.fail(
        "/profile",
        400,
        {
            "error": {
                "code": 400,
                "message": "Invalid label",
                "errors": [{"reason": "invalidArgument"}],
            }
        },
    )
    with pytest.raises(CloudRejected) as caught:
        await gmail_http.get_json(f"{gmail_server.api_base}/users/me/profile")
    assert (caught.value.status, caught.value.code) == (400, "invalidArgument")


def test_message_text_is_capped_for_the_model() -> None:
    message = Message(MessageRef("gmail", "1"), "word " * 5000, {"From": "Dana", "Subject": "Q3"})
    text, cut = message.as_text(8000)
    assert cut and len(text) <= 8000 and text.startswith("From: Dana\nSubject: Q3\n\nword")


async def test_without_an_extractor_attachments_are_listed_not_read(
    gmail_server: FakeGmail, gmail_http: CloudHttp
) -> None:
    mid = gmail_server.add_message(
        subject="a", text="b", attachments=(("a.txt", "text/plain", b"x"),)
    )
    message = await client(gmail_http, gmail_server).get_message(mid)
    assert message.attachments[0].text is None and message.attachments[0].skipped
    assert not [r for r in gmail_server.api_requests() if "/attachments/" in r.path]


async def test_label_filter_on_list_and_history(
    gmail_server: FakeGmail, gmail_http: CloudHttp
) -> None:
    work = gmail_server.add_message(subject="w", text="x", labels=("INBOX", "Label_7"))
    gmail_server.add_message(subject="other", text="y")
    gmail = client(gmail_http, gmail_server, label_ids=["Label_7"])
    first = await gmail.list_changes(None)
    assert [r.id for r in first.refs] == [work]
    assert gmail_server.api_requests("/gmail/v1/users/me/messages")[0].query["labelIds"] == [
        "Label_7"
    ]
    later = gmail_server.add_message(subject="w2", text="x", labels=("Label_7",))
    gmail_server.add_message(subject="other2", text="y")
    second = await gmail.list_changes(first.cursor)
    assert [r.id for r in second.refs] == [later]
    assert gmail_server.api_requests("/gmail/v1/users/me/history")[0].query["labelId"] == [
        "Label_7"
    ]


def test_retry_after_forms() -> None:
    now = 1_800_000_000.0
    assert parse_retry_after("2.5", now) == 2.5
    assert parse_retry_after("0", now) == 0.0
    assert parse_retry_after("-3", now) == 0.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now) == 30.0
    assert parse_retry_after("soon", now) is None and parse_retry_after(None, now) is None
    assert parse_retry_after("nan", now) is None

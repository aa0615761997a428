"""Gmail over its REST API: new message ids since a cursor, headers, and bodies as text.

Rules:

- The cursor is JSON ``{"v": 1, "history_id": "<str>", "since": <epoch s>}``: the
  mailbox's history id taken *before* listing, and when that listing started.
- No cursor: ``messages.list`` with ``q=after:<epoch s>`` (now minus the look-back)
  and the sender filter (``{from:a from:b}``), ``labelIds`` for the label filter,
  every page. A cursor: ``history.list?startHistoryId=…&historyTypes=messageAdded``,
  every page (``labelId`` when exactly one label is asked for, otherwise the labels
  are checked on each added message). A 404 (expired history id) falls back to a
  ``messages.list`` after ``since`` minus an hour, with ``resynced`` set: the
  caller's ledger drops what it already processed.
- Listing gives ids only (``has_headers=False``); :meth:`GmailClient.refs_with_headers`
  fetches ``format=metadata`` for the ids the caller still wants, drops messages that
  are gone (404) and applies the sender filter.
- :func:`parse_message` (sans-I/O) walks the MIME tree: ``multipart/alternative``
  prefers ``text/plain`` unless it is empty, other multiparts concatenate their
  parts, ``text/html`` goes through inscriptis; ``body.data`` is base64url with or
  without padding, decoded with the part's charset (UTF-8 if none or unknown).
  Quoted reply history is cut, forwarded content kept. Parts with a filename or an
  ``attachmentId`` are attachments: PDF, DOCX and TXT up to ``max_attachment_bytes``
  are fetched and turned into text by the injected ``extract(name, data)`` (the
  composition root passes the local-file extractors,
  ``agents.local_dir.extract.extract_bytes``; this package does not name the local
  directory). Without one, or for other types, they are listed as skipped with the
  reason.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import codecs
import email.utils
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from agents.cloud.http import CloudHttp
from agents.cloud.text import html_to_text, strip_quoted
from agents.cloud.types import Attachment, Changes, Message, MessageRef
from agents.errors import CloudRejected, ExtractError

__all__ = ["Extractor", "GmailClient", "GmailCursor", "decode_b64url", "parse_message"]

Extractor = Callable[[str, bytes], str]  # (file name, content) -> text; raises ExtractError

MiB = 1024 * 1024
PROVIDER = "gmail"
METADATA_HEADERS = ("From", "To", "Cc", "Subject", "Date", "Message-ID")
ATTACHMENT_TYPES = {
    ".pdf": "application/pdf",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".txt": "text/plain",
}
_CHARSET = re.compile(r"""charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.I)
RESYNC_SLACK_S = 3600


@dataclass(frozen=True)
class GmailCursor:
    history_id: str
    since: float

    def dumps(self) -> str:
        return json.dumps({"v": 1, "history_id": self.history_id, "since": self.since})

    @classmethod
    def loads(cls, text: str | None) -> GmailCursor | None:
        """The cursor in ``text``; None for no cursor or one this version cannot read."""
        if not text:
            return None
        try:
            data = json.loads(text)
            return cls(str(data["history_id"]), float(data["since"]))
        except (ValueError, KeyError, TypeError):
            return None


def decode_b64url(data: str) -> bytes:
    """base64url with or without padding (standard-alphabet input tolerated)."""
    cleaned = "".join(data.split())
    try:
        return base64.urlsafe_b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except (binascii.Error, ValueError):
        return b""


def _headers(part: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in part.get("headers") or []:
        if isinstance(item, dict):
            name, value = item.get("name"), item.get("value")
            if isinstance(name, str) and isinstance(value, str):
                out.setdefault(name.lower(), value)
    return out


def _charset(part: Mapping[str, Any]) -> str:
    match = _CHARSET.search(_headers(part).get("content-type", ""))
    if match:
        try:
            return codecs.lookup(match.group(1)).name
        except LookupError:
            pass
    return "utf-8"


def _decoded(part: Mapping[str, Any]) -> str:
    body = part.get("body") or {}
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, str) or not data:
        return ""
    return decode_b64url(data).decode(_charset(part), errors="replace")


def _is_attachment(part: Mapping[str, Any]) -> bool:
    body = part.get("body") or {}
    return bool(part.get("filename")) or (isinstance(body, dict) and bool(body.get("attachmentId")))


def _text_of(part: Mapping[str, Any]) -> str:
    """The body text of one MIME part (attachments contribute nothing)."""
    if _is_attachment(part):
        return ""
    mime = str(part.get("mimeType") or "").lower()
    children = [c for c in part.get("parts") or [] if isinstance(c, dict)]
    if mime == "multipart/alternative":
        for child in children:
            if str(child.get("mimeType", "")).lower() == "text/plain" and not _is_attachment(child):
                text = _decoded(child).strip()
                if text:
                    return text
        for child in reversed(children):  # the last alternative is the richest
            text = _text_of(child)
            if text.strip():
                return text
        return ""
    if children:  # multipart/mixed, related, message/rfc822 ...
        return "\n\n".join(t for t in (_text_of(c).strip() for c in children) if t)
    if mime == "text/plain":
        return _decoded(part)
    if mime == "text/html":
        return html_to_text(_decoded(part))
    return ""


def _attachment_parts(part: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    found: list[Mapping[str, Any]] = []
    if _is_attachment(part):
        found.append(part)
    for child in part.get("parts") or []:
        if isinstance(child, dict):
            found.extend(_attachment_parts(child))
    return found


def _received(headers: Mapping[str, str], data: Mapping[str, Any]) -> datetime | None:
    raw = headers.get("date")
    if raw:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            when = None
        if when is not None:
            return when if when.tzinfo else when.replace(tzinfo=UTC)
    internal = data.get("internalDate")
    try:
        return datetime.fromtimestamp(int(str(internal)) / 1000, UTC)
    except (TypeError, ValueError, OverflowError):
        return None


def _ref(data: Mapping[str, Any]) -> MessageRef:
    payload = data.get("payload") or {}
    headers = _headers(payload) if isinstance(payload, dict) else {}
    message_id = str(data.get("id", ""))
    return MessageRef(
        provider=PROVIDER,
        id=message_id,
        thread_id=data.get("threadId") if isinstance(data.get("threadId"), str) else None,
        sender=headers.get("from", ""),
        subject=headers.get("subject", ""),
        received_at=_received(headers, data),
        snippet=str(data.get("snippet") or ""),
        fingerprint=message_id,
    )


def parse_message(data: Mapping[str, Any]) -> tuple[Message, list[Mapping[str, Any]]]:
    """The message of a ``format=full`` answer, and its attachment parts (not fetched)."""
    payload = data.get("payload") or {}
    if not isinstance(payload, dict):
        payload = {}
    headers = _headers(payload)
    body = strip_quoted(_text_of(payload))
    keep = {
        k.title(): v
        for k, v in headers.items()
        if k in {"from", "to", "cc", "subject", "date", "message-id"}
    }
    return Message(ref=_ref(data), body=body, headers=keep), _attachment_parts(payload)


class GmailClient:
    """One Gmail account through its :class:`CloudHttp`."""

    def __init__(
        self,
        http: CloudHttp,
        base_url: str,
        *,
        label_ids: Sequence[str] = (),
        senders: Sequence[str] = (),
        max_attachment_bytes: int = 10 * MiB,
        extract: Extractor | None = None,
        page_size: int = 100,
        clock: Any = time.time,
    ) -> None:
        self._http = http
        self._base = base_url.rstrip("/") + "/users/me"
        self._labels = tuple(label_ids)
        self._senders = tuple(s.strip().lower() for s in senders if s.strip())
        self._max_attachment = max_attachment_bytes
        self._extract = extract
        self._page_size = page_size
        self._clock = clock
        self.bodies_fetched = 0

    async def profile(self) -> dict[str, Any]:
        """``users/me/profile``: ``emailAddress`` and the current ``historyId``."""
        return await self._http.get_json(f"{self._base}/profile")

    async def list_changes(self, cursor: str | None, *, lookback_days: float = 7) -> Changes:
        """Ids of messages new since ``cursor`` (None: the look-back window), oldest first."""
        started = self._clock()
        previous = GmailCursor.loads(cursor)
        if previous is not None:
            try:
                ids, history_id = await self._history(previous.history_id)
            except CloudRejected as exc:
                if exc.status != 404:
                    raise
            else:
                new = GmailCursor(history_id or previous.history_id, started)
                return Changes(self._refs(ids), new.dumps())
        profile = await self.profile()
        history_id = str(profile.get("historyId") or "")
        if previous is not None:
            after = previous.since - RESYNC_SLACK_S
        else:
            after = started - lookback_days * 86400
        ids = await self._list(int(after))
        ids.reverse()  # messages.list is newest first
        cursor_out = GmailCursor(history_id, started).dumps()
        return Changes(self._refs(ids), cursor_out, resynced=previous is not None)

    def _refs(self, ids: Iterable[str]) -> list[MessageRef]:
        return [MessageRef(PROVIDER, i, fingerprint=i, has_headers=False) for i in ids]

    async def _list(self, after: int) -> list[str]:
        terms = [f"after:{max(0, after)}"]
        if self._senders:
            terms.append("{" + " ".join(f"from:{s}" for s in self._senders) + "}")
        params: dict[str, Any] = {"q": " ".join(terms), "maxResults": self._page_size}
        if self._labels:
            params["labelIds"] = list(self._labels)
        ids: list[str] = []
        seen: set[str] = set()
        while True:
            page = await self._http.get_json(f"{self._base}/messages", params=params)
            for item in page.get("messages") or []:
                mid = item.get("id") if isinstance(item, dict) else None
                if isinstance(mid, str) and mid not in seen:
                    seen.add(mid)
                    ids.append(mid)
            token = page.get("nextPageToken")
            if not isinstance(token, str) or not token:
                return ids
            params = {**params, "pageToken": token}

    async def _history(self, start: str) -> tuple[list[str], str]:
        params: dict[str, Any] = {
            "startHistoryId": start,
            "historyTypes": "messageAdded",
            "maxResults": self._page_size,
        }
        if len(self._labels) == 1:
            params["labelId"] = self._labels[0]
        ids: list[str] = []
        seen: set[str] = set()
        latest = ""
        while True:
            page = await self._http.get_json(f"{self._base}/history", params=params)
            latest = str(page.get("historyId") or latest)
            for record in page.get("history") or []:
                for added in (record or {}).get("messagesAdded") or []:
                    msg = (added or {}).get("message") or {}
                    mid = msg.get("id")
                    labels = set(msg.get("labelIds") or [])
                    if not isinstance(mid, str) or mid in seen:
                        continue
                    if self._labels and not set(self._labels) <= labels:
                        continue
                    seen.add(mid)
                    ids.append(mid)
            token = page.get("nextPageToken")
            if not isinstance(token, str) or not token:
                return ids, latest
            params = {**params, "pageToken": token}

    async def refs_with_headers(self, refs: Iterable[MessageRef | str]) -> list[MessageRef]:
        """Headers and snippet of each message (gone ones dropped, sender filter applied)."""
        ids = [r if isinstance(r, str) else r.id for r in refs]

        async def one(mid: str) -> MessageRef | None:
            try:
                data = await self._http.get_json(
                    f"{self._base}/messages/{quote(mid, safe='')}",
                    params={"format": "metadata", "metadataHeaders": list(METADATA_HEADERS)},
                )
            except CloudRejected as exc:
                if exc.status == 404:
                    return None  # deleted since it was listed
                raise
            return _ref(data)

        found = await asyncio.gather(*(one(mid) for mid in ids))
        out = [r for r in found if r is not None and self._sender_ok(r.sender)]
        return out

    def _sender_ok(self, sender: str) -> bool:
        if not self._senders:
            return True
        _, address = email.utils.parseaddr(sender)
        address = address.lower()
        return any(
            s == address or (s.startswith("@") and address.endswith(s)) for s in self._senders
        )

    async def get_message(self, ref: MessageRef | str) -> Message:
        """The message with its body and attachment texts. CloudRejected(404) if gone."""
        message_id = ref if isinstance(ref, str) else ref.id
        data = await self._http.get_json(
            f"{self._base}/messages/{quote(message_id, safe='')}", params={"format": "full"}
        )
        self.bodies_fetched += 1
        message, parts = parse_message(data)
        attachments = [await self._attachment(message_id, part) for part in parts]
        return replace(message, attachments=tuple(attachments))

    async def _attachment(self, message_id: str, part: Mapping[str, Any]) -> Attachment:
        name = str(part.get("filename") or "attachment")
        mime = str(part.get("mimeType") or "application/octet-stream")
        body = part.get("body") or {}
        size = int(body.get("size") or 0) if isinstance(body, dict) else 0
        ext = os.path.splitext(name)[1].lower()
        if ext not in ATTACHMENT_TYPES or self._extract is None:
            return Attachment(name, mime, size, skipped=f"{ext or 'no extension'} not extracted")
        if size > self._max_attachment:
            return Attachment(name, mime, size, skipped="over the attachment size limit")
        data_b64 = body.get("data") if isinstance(body, dict) else None
        if not data_b64:
            attachment_id = body.get("attachmentId") if isinstance(body, dict) else None
            if not isinstance(attachment_id, str):
                return Attachment(name, mime, size, skipped="no content")
            fetched = await self._http.get_json(
                f"{self._base}/messages/{quote(message_id, safe='')}/attachments/"
                f"{quote(attachment_id, safe='')}"
            )
            data_b64 = fetched.get("data")
        raw = decode_b64url(data_b64) if isinstance(data_b64, str) else b""
        if len(raw) > self._max_attachment:
            return Attachment(name, mime, len(raw), skipped="over the attachment size limit")
        try:
            text = await asyncio.to_thread(self._extract, name, raw)
        except ExtractError as exc:
            return Attachment(name, mime, len(raw), skipped=str(exc))
        return Attachment(name, mime, len(raw), text=text)

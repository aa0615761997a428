"""A fake Microsoft Graph (mail delta, Teams chats) and identity platform.

Rules:

- API base ``<url>/v1.0``; OAuth at ``<url>/common/oauth2/v2.0/authorize`` and
  ``/token``. Refresh tokens rotate on every use (the old one then fails with
  ``invalid_grant``); errors carry AADSTS codes and ``error_codes``.
- Mail delta per folder: a round's pages are ``Prefer: odata.maxpagesize`` long
  (default 10); every page but the last has an absolute ``@odata.nextLink``
  (``$skiptoken``), the last an absolute ``@odata.deltaLink`` (``$deltatoken``).
  A delta token returns messages added and ``@removed`` rows for messages deleted
  since it was made. :meth:`FakeGraph.expire_delta` makes every token handed out so
  far stale: 410 ``SyncStateNotFound`` (or 400 ``resyncRequired`` with
  ``resync_style = "400"``), on delta and skip tokens alike.
- ``$select`` limits the fields; ``Prefer: outlook.body-content-type="text"`` makes
  bodies text, else HTML. Every request's Prefer header is recorded in ``prefers``.
- Teams: ``me/chats`` pages of ``chat_page_size`` with ``lastMessagePreview`` when
  ``$expand``-ed; ``me/chats/{id}/messages`` honours ``$top``, ``$orderby=
  lastModifiedDateTime desc`` and ``$filter=lastModifiedDateTime gt <iso>``.
"""

from __future__ import annotations

import itertools
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote, urlencode

from tests.support.fake_cloud import FakeCloudServer, Reply

__all__ = ["FakeGraph"]

THROTTLED = {"error": {"code": "TooManyRequests", "message": "Please retry again later."}}
SYNC_STATE_NOT_FOUND = {
    "error": {
        "code": "SyncStateNotFound",
        "message": "The sync state generation is not found; reset the sync.",
    }
}
RESYNC_REQUIRED = {"error": {"code": "resyncRequired", "message": "A resync is required."}}
NOT_FOUND = {
    "error": {
        "code": "ErrorItemNotFound",
        "message": "The specified object was not found in the store.",
    }
}


def graph_time(at: float, *, millis: bool = False) -> str:
    when = datetime.fromtimestamp(at, UTC)
    if millis:
        return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class _Mail:
    id: str
    folder: str
    seq: int
    received: str
    subject: str
    sender: tuple[str, str]
    text: str
    html: str
    conversation: str
    deleted_seq: int | None = None


@dataclass
class _Chat:
    id: str
    topic: str | None
    chat_type: str
    messages: list[dict[str, Any]] = field(default_factory=list)


class FakeGraph(FakeCloudServer):
    """Outlook mail folders with delta, Teams chats, and Microsoft's OAuth endpoints."""

    auth_path = "/common/oauth2/v2.0/authorize"
    token_path = "/common/oauth2/v2.0/token"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rotate_refresh = True
        self.revoked_error = {
            "error": "invalid_grant",
            "error_description": "AADSTS50173: The provided grant has expired due to it being revoked.",
            "error_codes": [50173],
            "trace_id": "t",
            "correlation_id": "c",
        }
        self.mail: list[_Mail] = []
        self.seq = 0
        self.generation = 1
        self.resync_style = "410"
        self.rounds: dict[str, tuple[list[dict[str, Any]], int]] = {}  # skiptoken -> rows, gen
        self.chats: dict[str, _Chat] = {}
        self.chat_page_size = 20
        self.page_cap = 1000  # mail and chat pages hold at most this many (a server may cap them)
        self.prefers: list[str] = []
        self.gets: list[str] = []
        self.signed_in_account = "me@contoso.com"
        self._ids = itertools.count(1)
        self._msg_clock = itertools.count(int(time.time() * 1000) - 3_600_000)

    @property
    def api_base(self) -> str:
        return f"{self.url}/v1.0"

    @property
    def token_url(self) -> str:
        return self.url + self.token_path

    @property
    def auth_url(self) -> str:
        return self.url + self.auth_path

    # -- controls ---------------------------------------------------------------------

    def invalid_client(self) -> Reply:
        return Reply(
            400,
            {
                "error": "invalid_client",
                "error_description": "AADSTS700016: Application with identifier 'x' was not found.",
                "error_codes": [700016],
            },
        )

    def unauthorized(self) -> Reply:
        return Reply(
            401,
            {
                "error": {
                    "code": "InvalidAuthenticationToken",
                    "message": "Access token has expired or is not yet valid.",
                }
            },
        )

    def expire_delta(self) -> None:
        with self.lock:
            self.generation += 1

    def add_mail(
        self,
        subject: str,
        *,
        text: str = "",
        html: str | None = None,
        sender: tuple[str, str] = ("Dana", "dana@contoso.com"),
        folder: str = "inbox",
        at: float | None = None,
    ) -> str:
        with self.lock:
            self.seq += 1
            mid = f"AAMkAD{next(self._ids):06d}" + "=" * 2
            received = graph_time(at if at is not None else datetime.now(UTC).timestamp())
            body_html = html if html is not None else f"<html><body><p>{text}</p></body></html>"
            self.mail.append(
                _Mail(
                    mid, folder, self.seq, received, subject, sender, text, body_html, f"AAQk{mid}"
                )
            )
            return mid

    def delete_mail(self, mid: str) -> None:
        with self.lock:
            self.seq += 1
            for m in self.mail:
                if m.id == mid:
                    m.deleted_seq = self.seq

    def add_chat(self, topic: str | None = None, chat_type: str = "group") -> str:
        with self.lock:
            cid = f"19:{secrets.token_hex(8)}@thread.v2"
            self.chats[cid] = _Chat(cid, topic, chat_type)
            return cid

    def add_chat_message(
        self,
        chat_id: str,
        html: str,
        *,
        sender: str = "Robin Kline",
        message_type: str = "message",
        deleted: bool = False,
    ) -> str:
        with self.lock:
            stamp = next(self._msg_clock)
            at = graph_time(stamp / 1000, millis=True)
            mid = str(stamp)
            system = message_type != "message"
            msg: dict[str, Any] = {
                "id": mid,
                "replyToId": None,
                "etag": mid,
                "messageType": message_type,
                "createdDateTime": at,
                "lastModifiedDateTime": at,
                "lastEditedDateTime": None,
                "deletedDateTime": at if deleted else None,
                "subject": None,
                "summary": None,
                "chatId": chat_id,
                "importance": "normal",
                "locale": "en-us",
                "webUrl": None,
                "channelIdentity": None,
                "attachments": [],
                "mentions": [],
                "reactions": [],
                "from": None
                if system
                else {
                    "application": None,
                    "device": None,
                    "user": {
                        "@odata.type": "#microsoft.graph.teamworkUserIdentity",
                        "id": "8ea0e38b",
                        "displayName": sender,
                        "userIdentityType": "aadUser",
                    },
                },
                "body": {
                    "contentType": "html",
                    "content": "<systemEventMessage/>" if system else html,
                },
            }
            if system:
                msg["eventDetail"] = {
                    "@odata.type": "#microsoft.graph.membersAddedEventMessageDetail"
                }
            self.chats[chat_id].messages.append(msg)
            return mid

    # -- API --------------------------------------------------------------------------

    def api(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        account: str,
    ) -> Reply:
        q = {k: v[0] for k, v in query.items()}
        prefer = headers.get("prefer", "")
        with self.lock:
            self.prefers.append(prefer)
            if method != "GET":
                return Reply(405, {"error": {"code": "BadRequest", "message": "GET only"}})
            if path == "/v1.0/me":
                return Reply(
                    200,
                    {
                        "id": "u1",
                        "mail": account,
                        "userPrincipalName": account,
                        "displayName": "Me",
                    },
                )
            parts = [unquote(p) for p in path.removeprefix("/v1.0/me/").split("/")]
            if len(parts) == 4 and parts[0] == "mailFolders" and parts[2:] == ["messages", "delta"]:
                return self._delta(parts[1], q, prefer)
            if len(parts) == 2 and parts[0] == "messages":
                return self._message(parts[1], q, prefer)
            if parts == ["chats"]:
                return self._chats(q)
            if len(parts) == 3 and parts[0] == "chats" and parts[2] == "messages":
                return self._chat_messages(parts[1], q)
            if len(parts) == 4 and parts[0] == "chats" and parts[2] == "messages":
                chat = self.chats.get(parts[1])
                for msg in chat.messages if chat else []:
                    if msg["id"] == parts[3]:
                        self.gets.append(f"{parts[1]}/{parts[3]}")
                        return Reply(200, msg)
            return Reply(404, NOT_FOUND)

    def _row(self, m: _Mail, select: set[str] | None, text_body: bool) -> dict[str, Any]:
        full: dict[str, Any] = {
            "@odata.etag": f'W/"{m.seq}"',
            "id": m.id,
            "subject": m.subject,
            "from": {"emailAddress": {"name": m.sender[0], "address": m.sender[1]}},
            "toRecipients": [{"emailAddress": {"name": "Me", "address": self.signed_in_account}}],
            "ccRecipients": [],
            "receivedDateTime": m.received,
            "bodyPreview": (m.text or m.subject)[:255],
            "body": {"contentType": "text", "content": m.text}
            if text_body
            else {"contentType": "html", "content": m.html},
            "internetMessageId": f"<{m.id}@contoso.com>",
            "conversationId": m.conversation,
            "hasAttachments": False,
        }
        if select is None:
            return full
        return {k: v for k, v in full.items() if k in select or k in ("id", "@odata.etag")}

    def _stale(self) -> Reply:
        if self.resync_style == "400":
            return Reply(400, RESYNC_REQUIRED)
        return Reply(410, SYNC_STATE_NOT_FOUND)

    def _delta(self, folder: str, q: dict[str, str], prefer: str) -> Reply:
        size = 10
        for item in prefer.split(","):
            key, _, value = item.strip().partition("=")
            if key == "odata.maxpagesize":
                size = int(value)
        size = min(size, self.page_cap)
        base = f"{self.url}/v1.0/me/mailFolders/{quote(folder, safe='')}/messages/delta"
        if "$skiptoken" in q:
            token = q["$skiptoken"]
            gen = int(token.split(".")[0])
            if gen != self.generation or token not in self.rounds:
                return self._stale()
            rows, offset = self.rounds[token]
            return self._page(base, rows, offset, size)
        text_body = 'outlook.body-content-type="text"' in prefer
        if "$deltatoken" in q:
            gen_text, _, seq_text = q["$deltatoken"].partition(".")
            if int(gen_text) != self.generation:
                return self._stale()
            since_seq = int(seq_text)
            select = set(q["$select"].split(",")) if q.get("$select") else None
            rows = []
            for m in self.mail:
                if m.folder != folder:
                    continue
                if m.deleted_seq is not None and m.deleted_seq > since_seq and m.seq <= since_seq:
                    rows.append({"id": m.id, "@removed": {"reason": "deleted"}})
                elif m.seq > since_seq and m.deleted_seq is None:
                    rows.append(self._row(m, select, text_body))
            return self._start(base, rows, size, select)
        select = set(q["$select"].split(",")) if q.get("$select") else None
        floor = None
        flt = q.get("$filter", "")
        if flt:
            field_name, op, value = flt.split(" ", 2)
            if field_name != "receivedDateTime" or op != "ge":
                return Reply(
                    400, {"error": {"code": "BadRequest", "message": "Unsupported filter"}}
                )
            floor = _parse(value)
        rows = [
            self._row(m, select, text_body)
            for m in self.mail
            if m.folder == folder
            and m.deleted_seq is None
            and (floor is None or _parse(m.received) >= floor)
        ]
        return self._start(base, rows, size, select)

    def _start(
        self, base: str, rows: list[dict[str, Any]], size: int, select: set[str] | None
    ) -> Reply:
        self._select = select
        return self._page(base, rows, 0, size)

    def _page(self, base: str, rows: list[dict[str, Any]], offset: int, size: int) -> Reply:
        page = rows[offset : offset + size]
        out: dict[str, Any] = {
            "@odata.context": f"{self.url}/v1.0/$metadata#Collection(message)",
            "value": page,
        }
        if offset + size < len(rows):
            token = f"{self.generation}.{secrets.token_hex(6)}"
            self.rounds[token] = (rows, offset + size)
            out["@odata.nextLink"] = f"{base}?$skiptoken={token}"
        else:
            token = f"{self.generation}.{self.seq}"
            out["@odata.deltaLink"] = f"{base}?$deltatoken={token}"
        return Reply(200, out)

    def _message(self, mid: str, q: dict[str, str], prefer: str) -> Reply:
        for m in self.mail:
            if m.id == mid and m.deleted_seq is None:
                self.gets.append(mid)
                select = set(q["$select"].split(",")) if q.get("$select") else None
                return Reply(
                    200, self._row(m, select, 'outlook.body-content-type="text"' in prefer)
                )
        return Reply(404, NOT_FOUND)

    def _chats(self, q: dict[str, str]) -> Reply:
        chats = sorted(self.chats.values(), key=lambda c: c.id)
        offset = int(q.get("$skiptoken") or 0)
        page = chats[offset : offset + self.chat_page_size]
        value = []
        for chat in page:
            item: dict[str, Any] = {
                "id": chat.id,
                "topic": chat.topic,
                "chatType": chat.chat_type,
                "createdDateTime": "2026-01-01T00:00:00Z",
                "lastUpdatedDateTime": "2026-01-01T00:00:00Z",
                "tenantId": "t",
            }
            if q.get("$expand") == "lastMessagePreview":
                last = max(chat.messages, key=lambda m: m["createdDateTime"], default=None)
                item["lastMessagePreview"] = (
                    None
                    if last is None
                    else {
                        "id": last["id"],
                        "createdDateTime": last["createdDateTime"],
                        "isDeleted": bool(last["deletedDateTime"]),
                        "messageType": last["messageType"],
                        "eventDetail": None,
                        "body": last["body"],
                        "from": last["from"],
                    }
                )
            value.append(item)
        out: dict[str, Any] = {"@odata.count": len(page), "value": value}
        if offset + self.chat_page_size < len(chats):
            params = {k: v for k, v in q.items() if k != "$skiptoken"}
            params["$skiptoken"] = str(offset + self.chat_page_size)
            out["@odata.nextLink"] = (
                f"{self.url}/v1.0/me/chats?{urlencode(params, safe='$', quote_via=quote)}"
            )
        return Reply(200, out)

    def _chat_messages(self, chat_id: str, q: dict[str, str]) -> Reply:
        chat = self.chats.get(chat_id)
        if chat is None:
            return Reply(404, NOT_FOUND)
        msgs = list(chat.messages)
        flt = q.get("$filter", "")
        if flt and q.get("$orderby") == "lastModifiedDateTime desc":
            field_name, op, value = flt.split(" ", 2)
            if field_name != "lastModifiedDateTime" or op != "gt":
                return Reply(
                    400, {"error": {"code": "BadRequest", "message": "Unsupported filter"}}
                )
            floor = _parse(value)
            msgs = [m for m in msgs if _parse(m["lastModifiedDateTime"]) > floor]
        msgs.sort(key=lambda m: m["lastModifiedDateTime"], reverse=True)
        top = min(int(q.get("$top") or 20), 50, self.page_cap)
        offset = int(q.get("$skiptoken") or 0)
        page = msgs[offset : offset + top]
        out: dict[str, Any] = {"@odata.count": len(page), "value": page}
        if offset + top < len(msgs):
            params = {k: v for k, v in q.items() if k != "$skiptoken"}
            params["$skiptoken"] = str(offset + top)
            out["@odata.nextLink"] = (
                f"{self.url}/v1.0/me/chats/{quote(chat_id, safe='')}/messages?{urlencode(params, safe='$', quote_via=quote)}"
            )
        return Reply(200, out)

"""A fake Gmail API and Google OAuth server (shapes: shared/spec/cloud-apis.md).

Rules:

- Base URL for the API is ``<url>/gmail/v1``; OAuth at ``<url>/auth`` and
  ``<url>/token`` (Google does not rotate refresh tokens: ``rotate_refresh`` False).
- ``historyId`` and ``internalDate`` are strings; empty results omit ``messages`` /
  ``history``; a ``startHistoryId`` below :attr:`FakeGmail.history_floor` is a 404
  with Google's error body (:meth:`FakeGmail.expire_history`).
- ``messages.list`` understands ``q`` terms ``after:<epoch s>``, ``from:x`` and
  ``{from:a from:b}``, repeated ``labelIds``, ``maxResults`` and ``pageToken``;
  newest first. History ids grow by 1 to 3 per added message (not contiguous).
- ``format=metadata`` gives the asked headers and the snippet, ``format=full`` the
  whole payload; attachments by id.
"""

from __future__ import annotations

import base64
import itertools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from tests.support.fake_cloud import FakeCloudServer, Reply

__all__ = ["FakeGmail", "b64url"]

NOT_FOUND = {
    "error": {
        "code": 404,
        "message": "Requested entity was not found.",
        "errors": [
            {"domain": "global", "reason": "notFound", "message": "Requested entity was not found."}
        ],
        "status": "NOT_FOUND",
    }
}
RATE_LIMITED = {
    "error": {
        "code": 429,
        "message": "Resource has been exhausted (e.g. check quota).",
        "errors": [{"domain": "global", "reason": "rateLimitExceeded"}],
        "status": "RESOURCE_EXHAUSTED",
    }
}
USER_RATE_403 = {
    "error": {
        "code": 403,
        "message": "User-rate limit exceeded.",
        "errors": [{"domain": "usageLimits", "reason": "userRateLimitExceeded"}],
        "status": "PERMISSION_DENIED",
    }
}


def b64url(data: bytes | str, *, pad: bool = False) -> str:
    raw = data.encode() if isinstance(data, str) else data
    text = base64.urlsafe_b64encode(raw).decode()
    return text if pad else text.rstrip("=")


@dataclass
class _Stored:
    id: str
    thread_id: str
    history_id: int
    internal_ms: int
    labels: list[str]
    payload: dict[str, Any]
    snippet: str
    sender: str
    attachments: dict[str, bytes] = field(default_factory=dict)


class FakeGmail(FakeCloudServer):
    """Gmail: a mailbox, its history, and Google's OAuth endpoints."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.messages: dict[str, _Stored] = {}
        self.history_id = 9000
        self.history_floor = 0
        self.signed_in_account = "me@example.com"
        self._ids = itertools.count(0x18F100)
        self._step = itertools.cycle((1, 3, 2))
        self.gets: list[str] = []  # ids fetched with format=full
        self.page_cap = 500  # a page holds at most this many (Gmail may return fewer than asked)

    @property
    def api_base(self) -> str:
        return f"{self.url}/gmail/v1"

    def expire_history(self) -> None:
        """Every history id handed out so far is now too old (a 404)."""
        with self.lock:
            self.history_floor = self.history_id + 1

    def add_message(
        self,
        *,
        subject: str,
        sender: str = "Dana <dana@example.com>",
        text: str | None = None,
        html: str | None = None,
        payload: dict[str, Any] | None = None,
        labels: tuple[str, ...] = ("INBOX",),
        at: float | None = None,
        attachments: tuple[tuple[str, str, bytes], ...] = (),
        inline_attachment_data: bool = False,
    ) -> str:
        """Store a message; the payload is built from text/html/attachments unless given."""
        with self.lock:
            mid = format(next(self._ids), "x")
            self.history_id += next(self._step)
            at = at if at is not None else datetime.now(UTC).timestamp()
            headers = [
                {"name": "From", "value": sender},
                {"name": "To", "value": self.signed_in_account},
                {"name": "Subject", "value": subject},
                {"name": "Date", "value": format_datetime(datetime.fromtimestamp(at, UTC))},
                {"name": "Message-ID", "value": f"<{mid}@example.com>"},
            ]
            stored_attachments: dict[str, bytes] = {}
            if payload is None:
                payload = self._build(
                    mid, text, html, attachments, stored_attachments, inline_attachment_data
                )
            payload = {**payload, "headers": headers + list(payload.get("headers") or [])}
            snippet = " ".join((text or subject).split())[:100]
            self.messages[mid] = _Stored(
                mid,
                mid,
                self.history_id,
                int(at * 1000),
                list(labels),
                payload,
                snippet,
                sender,
                stored_attachments,
            )
            return mid

    @staticmethod
    def _build(
        mid: str,
        text: str | None,
        html: str | None,
        attachments: tuple[tuple[str, str, bytes], ...],
        stored: dict[str, bytes],
        inline: bool,
    ) -> dict[str, Any]:
        def leaf(mime: str, content: str, part_id: str) -> dict[str, Any]:
            data = content.encode()
            return {
                "partId": part_id,
                "mimeType": mime,
                "filename": "",
                "headers": [{"name": "Content-Type", "value": f"{mime}; charset=UTF-8"}],
                "body": {"size": len(data), "data": b64url(data)},
            }

        if text is not None and html is not None:
            body: dict[str, Any] = {
                "partId": "0",
                "mimeType": "multipart/alternative",
                "filename": "",
                "headers": [],
                "body": {"size": 0},
                "parts": [leaf("text/plain", text, "0.0"), leaf("text/html", html, "0.1")],
            }
        elif html is not None:
            body = leaf("text/html", html, "0")
        else:
            body = leaf("text/plain", text or "", "0")
        if not attachments:
            return {**body, "partId": ""}
        parts = [body]
        for index, (name, mime, data) in enumerate(attachments, start=1):
            att_id = f"ANGj{mid}{index}"
            stored[att_id] = data
            part_body: dict[str, Any] = {"size": len(data)}
            if inline:
                part_body["data"] = b64url(data)
            else:
                part_body["attachmentId"] = att_id
            parts.append(
                {
                    "partId": str(index),
                    "mimeType": mime,
                    "filename": name,
                    "headers": [],
                    "body": part_body,
                }
            )
        return {
            "partId": "",
            "mimeType": "multipart/mixed",
            "filename": "",
            "headers": [],
            "body": {"size": 0},
            "parts": parts,
        }

    # -- API ---------------------------------------------------------------------------

    def unauthorized(self) -> Reply:
        return Reply(
            401,
            {
                "error": {
                    "code": 401,
                    "message": "Request had invalid authentication credentials.",
                    "status": "UNAUTHENTICATED",
                }
            },
            {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'},
        )

    def api(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        account: str,
    ) -> Reply:
        prefix = "/gmail/v1/users/me/"
        if method != "GET" or not path.startswith(prefix):
            return Reply(404, NOT_FOUND)
        rest = path[len(prefix) :].split("/")
        q = {k: v[0] for k, v in query.items()}
        with self.lock:
            if rest == ["profile"]:
                return Reply(
                    200,
                    {
                        "emailAddress": account,
                        "messagesTotal": len(self.messages),
                        "threadsTotal": len(self.messages),
                        "historyId": str(self.history_id),
                    },
                )
            if rest == ["messages"]:
                return self._list(q, query.get("labelIds", []))
            if rest == ["history"]:
                return self._history(q)
            if len(rest) == 2 and rest[0] == "messages":
                return self._get(rest[1], q.get("format", "full"), query.get("metadataHeaders", []))
            if len(rest) == 4 and rest[0] == "messages" and rest[2] == "attachments":
                stored = self.messages.get(rest[1])
                data = stored.attachments.get(rest[3]) if stored else None
                if data is None:
                    return Reply(404, NOT_FOUND)
                return Reply(200, {"size": len(data), "data": b64url(data)})
        return Reply(404, NOT_FOUND)

    def _matches(self, msg: _Stored, terms: str, labels: list[str]) -> bool:
        if not set(labels) <= set(msg.labels):
            return False
        groups: list[list[str]] = []
        for group in terms.replace("{", " { ").replace("}", " } ").split("{"):
            inside, _, outside = group.partition("}") if "}" in group else ("", "", group)
            if inside.strip():
                groups.append(inside.split())
            for term in outside.split():
                groups.append([term])
        for alternatives in groups:
            if not any(self._term(msg, t) for t in alternatives):
                return False
        return True

    @staticmethod
    def _term(msg: _Stored, term: str) -> bool:
        key, _, value = term.partition(":")
        if key == "after":
            return msg.internal_ms >= int(value) * 1000
        if key == "from":
            return value.lower() in msg.sender.lower()
        return True

    def _list(self, q: dict[str, str], labels: list[str]) -> Reply:
        found = [m for m in self.messages.values() if self._matches(m, q.get("q", ""), labels)]
        found.sort(key=lambda m: (m.internal_ms, m.id), reverse=True)
        size = min(int(q.get("maxResults", 100)), 500, self.page_cap)
        offset = int(q.get("pageToken") or 0)
        page = found[offset : offset + size]
        out: dict[str, Any] = {"resultSizeEstimate": len(found)}
        if page:
            out["messages"] = [{"id": m.id, "threadId": m.thread_id} for m in page]
        if offset + size < len(found):
            out["nextPageToken"] = str(offset + size)
        return Reply(200, out)

    def _history(self, q: dict[str, str]) -> Reply:
        try:
            start = int(q.get("startHistoryId", ""))
        except ValueError:
            return Reply(
                400,
                {
                    "error": {
                        "code": 400,
                        "message": "Invalid startHistoryId",
                        "status": "INVALID_ARGUMENT",
                    }
                },
            )
        if start < self.history_floor:
            return Reply(404, NOT_FOUND)
        label = q.get("labelId")
        added = sorted(
            (
                m
                for m in self.messages.values()
                if m.history_id > start and (not label or label in m.labels)
            ),
            key=lambda m: m.history_id,
        )
        size = min(int(q.get("maxResults", 100)), 500, self.page_cap)
        offset = int(q.get("pageToken") or 0)
        page = added[offset : offset + size]
        out: dict[str, Any] = {"historyId": str(self.history_id)}
        if page:
            out["history"] = [
                {
                    "id": str(m.history_id),
                    "messages": [{"id": m.id, "threadId": m.thread_id}],
                    "messagesAdded": [
                        {
                            "message": {
                                "id": m.id,
                                "threadId": m.thread_id,
                                "labelIds": list(m.labels),
                            }
                        }
                    ],
                }
                for m in page
            ]
        if offset + size < len(added):
            out["nextPageToken"] = str(offset + size)
        return Reply(200, out)

    def _get(self, mid: str, fmt: str, wanted: list[str]) -> Reply:
        msg = self.messages.get(mid)
        if msg is None:
            return Reply(404, NOT_FOUND)
        out: dict[str, Any] = {
            "id": msg.id,
            "threadId": msg.thread_id,
            "labelIds": list(msg.labels),
            "snippet": msg.snippet,
            "historyId": str(msg.history_id),
            "internalDate": str(msg.internal_ms),
            "sizeEstimate": len(json.dumps(msg.payload)),
        }
        if fmt == "metadata":
            names = {w.lower() for w in wanted}
            headers = [
                h for h in msg.payload.get("headers", []) if not names or h["name"].lower() in names
            ]
            out["payload"] = {
                "partId": "",
                "mimeType": msg.payload.get("mimeType"),
                "headers": headers,
                "body": {"size": 0},
            }
        else:
            self.gets.append(mid)
            out["payload"] = msg.payload
        return Reply(200, out)

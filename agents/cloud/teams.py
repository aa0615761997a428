"""Teams chat messages over Microsoft Graph: new messages per chat since its cursor.

Rules:

- The cursor is JSON ``{"v": 1, "chats": {"<chat id>": "<lastModifiedDateTime>"}}``:
  per chat the newest ``lastModifiedDateTime`` seen (system events and deleted
  messages included, so they are not fetched again).
- ``me/chats?$expand=lastMessagePreview`` (every page) lists the chats; a chat whose
  preview is missing or not newer than its cursor (or than the look-back start for
  a chat without one) is quiet and skipped. (So an edit of an older message in a
  chat without new messages is not looked for: Graph offers no cheaper signal.)
- Per active chat: ``me/chats/{id}/messages?$top=50&$orderby=lastModifiedDateTime desc
  &$filter=lastModifiedDateTime gt <cursor>``, every page (the chats concurrently;
  the account's HTTP client caps requests in flight).
- Only ``messageType == "message"`` without ``deletedDateTime`` is content. A ref's
  id is ``<chat id>/<message id>`` (message ids are unique per chat only); its
  fingerprint is ``lastModifiedDateTime`` (an edit is a new version).
- :meth:`TeamsClient.get_message` fetches one message; HTML bodies go through
  inscriptis, quoted replies are cut.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from agents.cloud.graph import iso, parse_iso
from agents.cloud.http import CloudHttp
from agents.cloud.text import html_to_text, strip_quoted
from agents.cloud.types import Changes, Message, MessageRef

__all__ = ["TeamsClient", "is_content"]

PROVIDER = "teams"
SNIPPET_CHARS = 200


def is_content(msg: Mapping[str, Any]) -> bool:
    """A user's message: not a system event, not deleted."""
    return msg.get("messageType") == "message" and not msg.get("deletedDateTime")


def _body_text(msg: Mapping[str, Any]) -> str:
    body = msg.get("body") or {}
    if not isinstance(body, dict):
        return ""
    content = str(body.get("content") or "")
    if str(body.get("contentType", "")).lower() == "html":
        content = html_to_text(content)
    return content


def _sender(msg: Mapping[str, Any]) -> str:
    who = msg.get("from") or {}
    user = who.get("user") if isinstance(who, dict) else None
    if isinstance(user, dict):
        return str(user.get("displayName") or user.get("id") or "")
    return ""


def _ref(chat: Mapping[str, Any], msg: Mapping[str, Any]) -> MessageRef:
    chat_id = str(chat.get("id") or msg.get("chatId") or "")
    text = " ".join(_body_text(msg).split())
    topic = chat.get("topic")
    return MessageRef(
        provider=PROVIDER,
        id=f"{chat_id}/{msg['id']}",
        thread_id=chat_id,
        sender=_sender(msg),
        subject=str(topic) if topic else f"Teams chat ({chat.get('chatType') or 'chat'})",
        received_at=parse_iso(msg.get("createdDateTime")),
        snippet=text[:SNIPPET_CHARS],
        container=chat_id,
        fingerprint=str(msg.get("lastModifiedDateTime") or msg.get("createdDateTime") or ""),
    )


class TeamsClient:
    """One account's Teams chats through its :class:`CloudHttp`."""

    def __init__(self, http: CloudHttp, base_url: str, *, clock: Any = time.time) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._clock = clock
        self.bodies_fetched = 0

    async def list_changes(self, cursor: str | None, *, lookback_days: float = 7) -> Changes:
        """Refs of chat messages new since ``cursor``, oldest first."""
        saved = _load(cursor)
        floor = datetime.fromtimestamp(self._clock(), UTC) - timedelta(days=lookback_days)
        chats = await self._chats()
        out: dict[str, str] = dict(saved)
        active: list[tuple[dict[str, Any], str]] = []
        for chat in chats:
            chat_id = chat.get("id")
            if not isinstance(chat_id, str):
                continue
            since_text = saved.get(chat_id) or iso(floor)
            since = parse_iso(since_text) or floor
            preview = chat.get("lastMessagePreview")
            last = parse_iso((preview or {}).get("createdDateTime")) if preview else None
            last_mod = parse_iso((preview or {}).get("lastModifiedDateTime")) if preview else None
            newest = max((t for t in (last, last_mod) if t is not None), default=None)
            if newest is None or newest <= since:
                continue  # a quiet chat
            active.append((chat, since_text))
        results = await asyncio.gather(*(self._messages(chat, since) for chat, since in active))
        refs: list[MessageRef] = []
        for (chat, since_text), messages in zip(active, results, strict=True):
            newest_text = since_text
            newest_at = parse_iso(since_text)
            for msg in messages:
                modified = parse_iso(msg.get("lastModifiedDateTime"))
                if modified is not None and (newest_at is None or modified > newest_at):
                    newest_at, newest_text = modified, str(msg["lastModifiedDateTime"])
                if is_content(msg):
                    refs.append(_ref(chat, msg))
            if newest_at is not None and newest_text != since_text:
                out[str(chat["id"])] = newest_text
        refs.sort(key=lambda r: r.received_at or floor)
        return Changes(refs, json.dumps({"v": 1, "chats": out}))

    async def _chats(self) -> list[dict[str, Any]]:
        url = f"{self._base}/me/chats"
        params: dict[str, str] | None = {"$expand": "lastMessagePreview"}
        chats: list[dict[str, Any]] = []
        while True:
            page = await self._http.get_json(url, params=params)
            params = None
            chats.extend(c for c in page.get("value") or [] if isinstance(c, dict))
            link = page.get("@odata.nextLink")
            if not isinstance(link, str) or not link:
                return chats
            url = link

    async def _messages(self, chat: Mapping[str, Any], since: str) -> list[dict[str, Any]]:
        url = f"{self._base}/me/chats/{quote(str(chat['id']), safe='')}/messages"
        params: dict[str, str] | None = {
            "$top": "50",
            "$orderby": "lastModifiedDateTime desc",
            "$filter": f"lastModifiedDateTime gt {since}",
        }
        messages: list[dict[str, Any]] = []
        seen: set[str] = set()
        while True:
            page = await self._http.get_json(url, params=params)
            params = None
            for msg in page.get("value") or []:
                if isinstance(msg, dict) and isinstance(msg.get("id"), str):
                    if msg["id"] not in seen:
                        seen.add(msg["id"])
                        messages.append(msg)
            link = page.get("@odata.nextLink")
            if not isinstance(link, str) or not link:
                return messages
            url = link

    async def refs_with_headers(self, refs: Iterable[MessageRef]) -> list[MessageRef]:
        """The refs as they are: the listing already carried the headers."""
        return list(refs)

    async def get_message(self, ref: MessageRef | str) -> Message:
        """One chat message with its text. CloudRejected(404) if it is gone."""
        ref_id = ref if isinstance(ref, str) else ref.id
        chat_id, _, msg_id = ref_id.rpartition("/")
        data = await self._http.get_json(
            f"{self._base}/me/chats/{quote(chat_id, safe='')}/messages/{quote(msg_id, safe='')}"
        )
        self.bodies_fetched += 1
        chat = {"id": chat_id, "topic": None if isinstance(ref, str) else ref.subject}
        message_ref = ref if isinstance(ref, MessageRef) else _ref(chat, data)
        headers = {"From": _sender(data), "Date": str(data.get("createdDateTime") or "")}
        return Message(ref=message_ref, body=strip_quoted(_body_text(data)), headers=headers)


def _load(cursor: str | None) -> dict[str, str]:
    if not cursor:
        return {}
    try:
        chats = json.loads(cursor)["chats"]
    except (ValueError, KeyError, TypeError):
        return {}
    if not isinstance(chats, dict):
        return {}
    return {str(k): str(v) for k, v in chats.items() if isinstance(v, str)}

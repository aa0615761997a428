"""Outlook mail over Microsoft Graph delta queries: new message refs per folder, bodies.

Rules:

- Every request sends ``Prefer: odata.maxpagesize=50, IdType="ImmutableId",
  outlook.body-content-type="text"`` (ids survive moves between folders).
- The cursor is JSON ``{"v": 1, "folders": {"<folder>": {"delta_link": "<url>",
  "since": "<iso>"}}}``. A folder without state starts a round at
  ``me/mailFolders/{folder}/messages/delta`` with ``$select`` (headers only) and
  ``$filter=receivedDateTime ge <now - look-back>``; a folder with state follows
  its saved ``@odata.deltaLink``. ``@odata.nextLink`` and ``@odata.deltaLink`` are
  followed exactly as returned.
- ``@removed`` rows are not mail. A message seen twice in a round counts once.
- 410, or an error code ``syncStateNotFound`` / ``resyncRequired`` (any case), on
  the delta link or on a nextLink mid-round starts a new round with
  ``$filter=receivedDateTime ge <since minus an hour>`` and sets ``resynced``; a
  second expiry in the same call is an error.
- :meth:`OutlookClient.get_message` fetches one body (text; HTML converted when the
  server ignored the preference), quoted history cut.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from agents.cloud.http import CloudHttp
from agents.cloud.text import html_to_text, strip_quoted
from agents.cloud.types import Changes, Message, MessageRef
from agents.errors import CloudRejected

__all__ = ["PREFER", "OutlookClient", "is_sync_reset", "iso", "parse_iso"]

PROVIDER = "outlook"
PREFER = 'odata.maxpagesize=50, IdType="ImmutableId", outlook.body-content-type="text"'
SELECT = "subject,from,receivedDateTime,bodyPreview,internetMessageId,conversationId"
BODY_SELECT = SELECT + ",toRecipients,ccRecipients,body"
RESYNC_CODES = frozenset({"syncstatenotfound", "resyncrequired", "syncstateinvalid"})
RESYNC_SLACK = timedelta(hours=1)


def iso(at: datetime) -> str:
    """``2026-11-01T09:00:00Z``: the form Graph filters take."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: object) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def is_sync_reset(exc: CloudRejected) -> bool:
    """True when a delta or next link has expired: start a new round."""
    return exc.status == 410 or exc.code.lower() in RESYNC_CODES


def _address(value: Any) -> str:
    box = (value or {}).get("emailAddress") if isinstance(value, dict) else None
    if not isinstance(box, dict):
        return ""
    name, address = box.get("name") or "", box.get("address") or ""
    if name and address and name != address:
        return f"{name} <{address}>"
    return str(address or name)


def _ref(row: Mapping[str, Any], folder: str) -> MessageRef:
    mid = str(row["id"])
    return MessageRef(
        provider=PROVIDER,
        id=mid,
        thread_id=row.get("conversationId") if isinstance(row.get("conversationId"), str) else None,
        sender=_address(row.get("from")),
        subject=str(row.get("subject") or ""),
        received_at=parse_iso(row.get("receivedDateTime")),
        snippet=str(row.get("bodyPreview") or ""),
        container=folder,
        fingerprint=mid,
    )


class OutlookClient:
    """One Outlook mailbox through its :class:`CloudHttp`."""

    def __init__(
        self,
        http: CloudHttp,
        base_url: str,
        *,
        folders: Sequence[str] = ("inbox",),
        clock: Any = time.time,
    ) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._folders = tuple(folders) or ("inbox",)
        self._clock = clock
        self.bodies_fetched = 0

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def list_changes(self, cursor: str | None, *, lookback_days: float = 7) -> Changes:
        """Refs (with headers) of messages new since ``cursor`` in every folder."""
        state = _load(cursor)
        started = self._now()
        refs: list[MessageRef] = []
        seen: set[str] = set()
        out: dict[str, dict[str, str]] = {}
        resynced = False
        for folder in self._folders:
            saved = state.get(folder)
            since = parse_iso(saved.get("since")) if saved else None
            link = saved.get("delta_link") if saved else None
            start = (since - RESYNC_SLACK) if since else started - timedelta(days=lookback_days)
            try:
                rows, delta_link = await self._round(folder, link, start)
            except CloudRejected as exc:
                if not is_sync_reset(exc):
                    raise
                resynced = True
                rows, delta_link = await self._round(folder, None, start)
            for row in rows:
                if row["id"] not in seen:
                    seen.add(row["id"])
                    refs.append(_ref(row, folder))
            out[folder] = {"delta_link": delta_link, "since": iso(started)}
        refs.sort(key=lambda r: r.received_at or started)
        return Changes(refs, json.dumps({"v": 1, "folders": out}), resynced=resynced)

    async def _round(
        self, folder: str, link: str | None, start: datetime
    ) -> tuple[list[dict[str, Any]], str]:
        """Every row of one delta round, and its deltaLink."""
        headers = {"Prefer": PREFER}
        params: dict[str, str] | None = None
        if link:
            url = link
        else:
            url = f"{self._base}/me/mailFolders/{quote(folder, safe='')}/messages/delta"
            params = {"$select": SELECT, "$filter": f"receivedDateTime ge {iso(start)}"}
        rows: list[dict[str, Any]] = []
        while True:
            page = await self._http.get_json(url, params=params, headers=headers)
            params = None  # the links carry every option
            for row in page.get("value") or []:
                if (
                    isinstance(row, dict)
                    and "@removed" not in row
                    and isinstance(row.get("id"), str)
                ):
                    rows.append(row)
            next_link = page.get("@odata.nextLink")
            delta_link = page.get("@odata.deltaLink")
            if isinstance(delta_link, str) and delta_link:
                return rows, delta_link
            if not isinstance(next_link, str) or not next_link:
                raise CloudRejected(200, "noDeltaLink", "a delta page had neither link")
            url = next_link

    async def refs_with_headers(self, refs: Iterable[MessageRef]) -> list[MessageRef]:
        """The refs as they are: the listing already carried the headers."""
        return list(refs)

    async def get_message(self, ref: MessageRef | str) -> Message:
        """One message with its body as text. CloudRejected(404) if it is gone."""
        mid = ref if isinstance(ref, str) else ref.id
        folder = None if isinstance(ref, str) else ref.container
        data = await self._http.get_json(
            f"{self._base}/me/messages/{quote(mid, safe='')}",
            params={"$select": BODY_SELECT},
            headers={"Prefer": PREFER},
        )
        self.bodies_fetched += 1
        body = data.get("body") or {}
        content = str(body.get("content") or "") if isinstance(body, dict) else ""
        if isinstance(body, dict) and str(body.get("contentType", "")).lower() == "html":
            content = html_to_text(content)
        headers = {"From": _address(data.get("from")), "Subject": str(data.get("subject") or "")}
        to = [_address(r) for r in data.get("toRecipients") or []]
        if to:
            headers["To"] = ", ".join(to)
        cc = [_address(r) for r in data.get("ccRecipients") or []]
        if cc:
            headers["Cc"] = ", ".join(cc)
        if data.get("receivedDateTime"):
            headers["Date"] = str(data["receivedDateTime"])
        data.setdefault("id", mid)
        return Message(ref=_ref(data, folder or ""), body=strip_quoted(content), headers=headers)


def _load(cursor: str | None) -> dict[str, dict[str, str]]:
    if not cursor:
        return {}
    try:
        data = json.loads(cursor)
        folders = data["folders"]
    except (ValueError, KeyError, TypeError):
        return {}
    if not isinstance(folders, dict):
        return {}
    return {
        str(k): {str(a): str(b) for a, b in v.items()}
        for k, v in folders.items()
        if isinstance(v, dict)
    }

"""Gmail, Outlook and Teams messages as a ``Source`` of the one run pipeline.

Rules (agents.md "Cloud connectors"):

- Changes: the client lists the refs new since the agent's cursor (``cursor:<account>``
  in the bookkeeping); refs already in the ledger (``processed_ids`` by provider,
  account and message id) are dropped before anything else is fetched, so a re-run,
  a resync or a restart after a crash fetches no body already processed. Headers
  then (Gmail), and the bodies of the rest only, at most 4 requests in flight.
- A run fetches at most as many bodies as its budget's LLM calls can process
  (``max_llm_calls`` x ``batch_items``: one call takes at most that many), oldest
  first: the rest
  waits for the next run (a notice says how many), so a first run the budget splits
  does not fetch bodies it cannot process. (An estimate's source,
  ``cap_to_budget=False``, lists them all: the estimate says how many runs.)
- A message deleted between the listing and the fetch (404) is left out: there is
  nothing to record. Another refusal of one body is that message's failure: it is
  reported, stays unrecorded and keeps the cursor where it is.
- An item's key is the message id, its fingerprint ``<provider>:<message id>``:
  idempotency keys (``agent id : fingerprint``) are the same for a message however
  it was listed (first run, history, resync).
- Text: ``Message.as_text`` (headers, body without quoted history, attachment
  texts), at most ``MAX_MESSAGE_CHARS``; the pipeline marks it untrusted.
- Done: the ledger entry is written (the pipeline calls ``done`` only once the
  message's items were confirmed, or when it gave up on it); the cursor advances
  once every message of the batch is done, so a run that ends early (budget,
  cancel, failures, a crash) lists the same batch again and the ledger drops what
  was finished.
- Account problems end the run: :func:`run_messages` turns ``NeedsReconnect``,
  ``CloudThrottled`` and other ``CloudError`` into the run's report, and tells the
  daemon through :class:`AccountEvents` (needs reconnect, throttled until, synced).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parseaddr
from typing import Any, Protocol

from agents.errors import (
    CloudError,
    CloudRejected,
    CloudThrottled,
    ExtractError,
    NeedsReconnect,
)
from agents.pipeline import run_pipeline
from agents.run import RunContext, RunReport
from agents.source import Changes, Item
from agents.tools import Tool
from protocol.agent_config import CloudAgent

from .clients import MessageClient, open_client
from .gmail import Extractor
from .oauth import TokenManager
from .settings import CloudSettings, provider_of
from .types import Message, MessageRef

__all__ = ["MAX_MESSAGE_CHARS", "AccountEvents", "CloudAccess", "MessageSource", "run_messages"]

MAX_MESSAGE_CHARS = 8000
BODY_CONCURRENCY = 4  # the HTTP client allows 4 in flight per account anyway
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9&.'-]{2,}")
_SUBJECT_NOISE = frozenset({"re", "fw", "fwd", "aw", "the", "and", "for", "with", "from"})


class AccountEvents(Protocol):
    """What the daemon wants to know about an account after a run (its bookkeeping)."""

    async def needs_reconnect(self, provider: str, account: str, reason: str) -> None: ...

    async def throttled(self, provider: str, account: str, until: float) -> None: ...

    async def synced(self, provider: str, account: str, messages: int) -> None: ...


@dataclass(frozen=True)
class CloudAccess:
    """The daemon's shared parts a message source needs (one per daemon)."""

    settings: CloudSettings
    tokens: TokenManager
    events: AccountEvents | None = None
    extract: Extractor | None = None
    max_attachment_bytes: int = 10 * 1024 * 1024


class MessageSource:
    """One cloud agent's messages; open it (``async with``) before the pipeline runs."""

    noun = "message"
    key_name = "id"
    phase = "fetch"

    def __init__(self, ctx: RunContext, access: CloudAccess, *, cap_to_budget: bool = True) -> None:
        agent = ctx.agent
        assert isinstance(agent, CloudAgent)
        self.ctx = ctx
        self.agent = agent
        self.access = access
        self.kind = agent.kind
        self.provider = provider_of(agent.kind)
        self.account = agent.account
        self.cursor_key = f"cursor:{agent.account}"
        self.cap_to_budget = cap_to_budget
        self.client: MessageClient | None = None
        self.new_cursor: str | None = None
        self.pending: set[str] = set()
        self.taken = 0  # messages recorded as done this run
        self.deferred = 0  # new messages left for the next run (the budget)
        self._bodies: dict[str, Message | CloudError] = {}
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> MessageSource:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self.client = None
        await self._stack.aclose()

    async def _client(self) -> MessageClient:
        if self.client is None:
            filters = self.agent.filter_config
            self.client = await self._stack.enter_async_context(
                open_client(
                    self.kind,
                    self.account,
                    self.access.settings,
                    self.access.tokens,
                    labels=filters.labels,
                    senders=filters.senders,
                    folders=filters.folders or ("inbox",),
                    max_attachment_bytes=self.access.max_attachment_bytes,
                    extract=self.access.extract,
                )
            )
        return self.client

    @property
    def bodies_fetched(self) -> int:
        return self.client.bodies_fetched if self.client is not None else 0

    async def changes(self) -> Changes:
        client = await self._client()
        books = self.ctx.books
        cursor = books.get_cursor(self.cursor_key)
        listed = await client.list_changes(cursor, lookback_days=self.agent.lookback_days)
        refs: dict[str, MessageRef] = {}
        for ref in listed.refs:
            refs.setdefault(ref.id, ref)
        done = books.processed_ids(self.kind, self.account, list(refs)) if refs else set()
        todo = [r for r in refs.values() if r.id not in done]
        limits = self.ctx.limits
        calls = limits.budget.max_llm_calls if self.cap_to_budget else None
        cap = calls * max(1, limits.batch_items) if calls is not None else None
        later = todo[cap:] if cap is not None else []
        todo = todo[: len(todo) - len(later)]
        self.deferred = len(later)
        with_headers = await client.refs_with_headers(todo) if todo else []
        self.new_cursor = listed.cursor
        await self._fetch_bodies(client, with_headers)
        deleted = [r.id for r in with_headers if _is_gone(self._bodies.get(r.id))]
        items = [
            Item(
                key=r.id,
                fingerprint=f"{self.kind}:{r.id}",
                size=len(r.snippet),
                modified_ns=int(r.received_at.timestamp() * 1e9) if r.received_at else 0,
                meta=r,
            )
            for r in with_headers
            if r.id not in deleted
        ]
        self.pending = {i.key for i in items}
        if not self.pending:
            self._advance()
        notices = (
            [
                f"{self.deferred} more new {self.noun}s wait for the next run "
                f"(this run's budget of {calls} LLM calls processes at most {cap})"
            ]
            if self.deferred
            else []
        )
        return Changes(
            items=items,
            notices=notices,
            detail={
                "messages_listed": len(refs),
                "messages_already_processed": len(done),
                "messages_filtered_out": len(todo) - len(with_headers),
                "messages_deleted": len(deleted),
                "messages_deferred": self.deferred,
                "bodies_fetched": self.bodies_fetched,
                "resynced": listed.resynced,
            },
            summary=f"{len(items)} new of {len(refs)} listed ({len(done)} already processed)",
            new=len(items),
            unchanged=len(done),
        )

    async def _fetch_bodies(self, client: MessageClient, refs: Sequence[MessageRef]) -> None:
        gate = asyncio.Semaphore(BODY_CONCURRENCY)

        async def one(ref: MessageRef) -> None:
            async with gate:
                try:
                    self._bodies[ref.id] = await client.get_message(ref)
                except CloudRejected as exc:
                    self._bodies[ref.id] = exc

        await asyncio.gather(*(one(r) for r in refs))

    def _advance(self) -> None:
        if self.new_cursor is not None and not self.deferred:
            self.ctx.books.set_cursor(self.cursor_key, self.new_cursor)

    async def text(self, item: Item) -> str:
        body = self._bodies.get(item.key)
        if isinstance(body, Message):
            return body.as_text(MAX_MESSAGE_CHARS)[0]
        problem = str(body) if body is not None else "its body was not fetched"
        raise ExtractError(f"message {item.key} ({self.label(item)}): {problem}")

    def _ref(self, item: Item) -> MessageRef:
        assert isinstance(item.meta, MessageRef)
        return item.meta

    def triage_line(self, item: Item, snippet: str) -> dict[str, Any]:
        ref = self._ref(item)
        return {
            "id": ref.id,
            "from": ref.sender,
            "subject": ref.subject,
            "date": _day(ref.received_at),
            "snippet": snippet,
        }

    def hints(self, item: Item) -> Sequence[str]:
        ref = self._ref(item)
        return message_hints(ref.sender, ref.subject)

    def header(self, item: Item) -> list[tuple[str, str]]:
        ref = self._ref(item)
        lines = [("Message", item.key), ("From", ref.sender), ("Subject", ref.subject)]
        if ref.received_at is not None:
            lines.append(
                ("Date", ref.received_at.astimezone(self.ctx.tz).isoformat("T", "minutes"))
            )
        return [(k, v) for k, v in lines if v]

    def label(self, item: Item) -> str:
        ref = self._ref(item)
        return ref.subject or ref.sender or item.key

    def tools(self) -> list[Tool]:
        return []

    async def done(self, item: Item) -> None:
        self.ctx.books.mark_processed(self.kind, self.account, item.key)
        self._bodies.pop(item.key, None)
        self.taken += 1
        self.pending.discard(item.key)
        if not self.pending:
            self._advance()


def _is_gone(body: Message | CloudError | None) -> bool:
    return isinstance(body, CloudRejected) and body.status in (404, 410)


def _day(at: datetime | None) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d") if at is not None else ""


def message_hints(sender: str, subject: str) -> list[str]:
    """Names the deterministic triage matches to project names: the sender's name, the
    sender's domain (``acme`` of ``dana@acme.com``), then the subject's words."""
    name, address = parseaddr(sender)
    hints: list[str] = []
    if name:
        hints.append(name)
    domain = address.rpartition("@")[2].lower()
    if domain:
        labels = domain.split(".")
        hints.append(labels[-2] if len(labels) >= 2 else labels[0])
    words = [w for w in _WORD.findall(subject) if w.lower() not in _SUBJECT_NOISE]
    hints.extend(words)
    hints.extend(f"{a} {b}" for a, b in itertools.pairwise(words))
    return [h for h in dict.fromkeys(hints) if h]


async def run_messages(
    ctx: RunContext, access: CloudAccess, make: Callable[[], MessageSource] | None = None
) -> RunReport:
    """The cloud agent's runner: the one pipeline over its messages, account problems
    turned into the report (and told to ``access.events``)."""
    source = make() if make is not None else MessageSource(ctx, access)
    events = access.events
    try:
        async with source:
            report = await run_pipeline(ctx, source)
    except NeedsReconnect as exc:
        if events is not None:
            await events.needs_reconnect(source.provider, source.account, exc.reason)
        return RunReport(status="error", errors=[str(exc)], detail=_detail(source))
    except CloudThrottled as exc:
        until = exc.retry_at
        if events is not None:
            await events.throttled(source.provider, source.account, until)
        return RunReport(
            status="partial" if source.taken else "error",
            items_processed=source.taken,
            errors=[
                f"{_service(source)} is throttling {source.account} until "
                f"{_when(until)}; the rest waits for the next run ({exc})"
            ],
            detail=_detail(source),
        )
    except CloudError as exc:
        return RunReport(
            status="partial" if source.taken else "error",
            items_processed=source.taken,
            errors=[f"{_service(source)}: {exc}"],
            detail=_detail(source),
        )
    report.detail.setdefault("bodies_fetched", source.bodies_fetched)
    if events is not None and report.status in ("success", "partial"):
        await events.synced(source.provider, source.account, source.taken)
    return report


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _service(source: MessageSource) -> str:
    return {"gmail": "Gmail", "outlook": "Outlook", "teams": "Teams"}.get(source.kind, source.kind)


def _detail(source: MessageSource) -> dict[str, Any]:
    return {"bodies_fetched": source.bodies_fetched}

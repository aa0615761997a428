"""One entry point for the pipeline: a message client for an agent kind and account.

Rules:

- :func:`open_client` maps ``gmail`` to :class:`~agents.cloud.gmail.GmailClient`,
  ``outlook`` to :class:`~agents.cloud.graph.OutlookClient` and ``teams`` to
  :class:`~agents.cloud.teams.TeamsClient`, each over its own
  :class:`~agents.cloud.http.CloudHttp` (so each account has its 4 requests in
  flight) with tokens from the shared :class:`~agents.cloud.oauth.TokenManager`;
  ``outlook`` and ``teams`` share the account's ``microsoft`` credential. Gmail
  attachments are extracted by ``extract`` (the composition root passes
  ``functools.partial(agents.local_dir.extract.extract_bytes, max_bytes=...)``).
- Every client follows :class:`MessageClient`: ``list_changes`` (refs since a cursor,
  and the next cursor, never persisted here), ``refs_with_headers`` (Gmail fetches
  them; Graph listings already carry them) and ``get_message`` (one body).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Protocol

from agents.cloud.gmail import Extractor, GmailClient
from agents.cloud.graph import OutlookClient
from agents.cloud.http import CloudHttp
from agents.cloud.oauth import TokenManager
from agents.cloud.settings import CloudSettings, provider_of
from agents.cloud.teams import TeamsClient
from agents.cloud.types import Changes, Message, MessageRef

__all__ = ["KINDS", "MessageClient", "open_client"]

KINDS = ("gmail", "outlook", "teams")
MiB = 1024 * 1024


class MessageClient(Protocol):
    """What the pipeline's message source calls."""

    bodies_fetched: int

    async def list_changes(self, cursor: str | None, *, lookback_days: float = 7) -> Changes: ...

    async def refs_with_headers(self, refs: Iterable[MessageRef]) -> list[MessageRef]: ...

    async def get_message(self, ref: MessageRef | str) -> Message: ...


@contextlib.asynccontextmanager
async def open_client(
    kind: str,
    account: str,
    settings: CloudSettings,
    tokens: TokenManager,
    *,
    labels: Sequence[str] = (),
    senders: Sequence[str] = (),
    folders: Sequence[str] = ("inbox",),
    max_attachment_bytes: int = 10 * MiB,
    extract: Extractor | None = None,
) -> AsyncIterator[MessageClient]:
    """A client for ``kind`` (gmail, outlook, teams) on ``account``; closes its HTTP client."""
    if kind not in KINDS:
        raise ValueError(f"unknown cloud agent kind {kind!r}: one of {', '.join(KINDS)}")
    provider = provider_of(kind)
    async with CloudHttp(provider, account, tokens.account(provider, account), settings) as http:
        client: MessageClient
        if kind == "gmail":
            client = GmailClient(
                http,
                settings.gmail_api_base,
                label_ids=labels,
                senders=senders,
                max_attachment_bytes=max_attachment_bytes,
                extract=extract,
            )
        elif kind == "outlook":
            client = OutlookClient(http, settings.graph_api_base, folders=folders)
        else:
            client = TeamsClient(http, settings.graph_api_base)
        yield client

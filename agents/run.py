"""What one agent run is given, and what it gives back.

Rules:

- The daemon builds a ``RunContext`` per run: the agent's config, a ``Store`` bound
  to the run (its tool calls carry ``run_id``), the LLM, the bookkeeping (file
  fingerprints, message ledger, cursors: the daemon's state store behind
  ``agents.books.Bookkeeping``, so ``agents`` never imports ``daemon``), limits, a
  progress callback, the user's time zone and a cancel event.
- A runner (``AgentRunner``) returns a ``RunReport``; it never raises for an item
  that failed (that is an entry in ``errors``), only for the run as a whole. The
  daemon maps each agent kind to its runner (the composition root's runner map).
- Status: ``success`` (nothing failed), ``partial`` (some items failed, some
  succeeded), ``error`` (nothing could be done, or the app went away),
  ``cancelled``.
- ``RunLimits``, ``Budget`` and their defaults live in ``agents.limits`` (a leaf
  module, so the daemon's configuration reads them without loading the tool loop);
  they are re-exported here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any, Literal, Protocol

from protocol.agent_config import AgentConfig

from .books import Bookkeeping
from .limits import DEFAULT_MAX_FILE_BYTES, Budget, RunLimits
from .llm import LLM, Usage
from .store import Store

__all__ = [
    "DEFAULT_MAX_FILE_BYTES",
    "AgentRunner",
    "Budget",
    "Progress",
    "RunContext",
    "RunLimits",
    "RunReport",
    "RunStatus",
]

RunStatus = Literal["success", "partial", "error", "cancelled"]
Progress = Callable[[str, int, int, str | None], Awaitable[None]]


@dataclass
class RunContext:
    run_id: str
    agent: AgentConfig
    store: Store
    llm: LLM
    books: Bookkeeping
    progress: Progress
    cancel: asyncio.Event
    tz: tzinfo
    limits: RunLimits = field(default_factory=RunLimits)
    protected: tuple[str, ...] = ()  # folders no source may read (Tether's own)


@dataclass
class RunReport:
    status: RunStatus
    items_processed: int = 0
    items_created: int = 0
    items_updated: int = 0
    errors: list[str] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    detail: dict[str, Any] = field(default_factory=dict)
    changes: list[dict[str, Any]] = field(default_factory=list)  # to records the user owns


class AgentRunner(Protocol):
    async def __call__(self, ctx: RunContext) -> RunReport: ...

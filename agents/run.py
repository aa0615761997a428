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
- The limits' defaults live here and in ``loop.LoopLimits`` only; the daemon's
  ``config.toml`` defaults are read from them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any, Literal, Protocol

from protocol.agent_config import AgentConfig

from .books import Bookkeeping
from .llm import LLM, Usage
from .loop import DEFAULT_LIMITS
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

DEFAULT_MAX_FILE_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class RunLimits:
    step_budget: int = DEFAULT_LIMITS.max_steps
    tool_call_budget: int = DEFAULT_LIMITS.max_tool_calls
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    triage_batch: int = 40
    context_chars: int = DEFAULT_LIMITS.context_chars
    chunk_chars: int = 12_000
    budget: Budget = field(default_factory=lambda: Budget())


@dataclass(frozen=True)
class Budget:
    """What one run may spend; ``None`` is no limit. Reaching any limit ends the run
    ``partial`` between items; the next run carries on with the rest."""

    max_llm_calls: int | None = None
    max_prompt_tokens: int | None = None
    max_cost_usd: float | None = None

    def reached(self, usage: Usage) -> str | None:
        """Which limit ``usage`` has reached, in words, or ``None``."""
        if self.max_llm_calls is not None and usage.llm_calls >= self.max_llm_calls:
            return f"{usage.llm_calls} of {self.max_llm_calls} LLM calls"
        if self.max_prompt_tokens is not None and usage.prompt_tokens >= self.max_prompt_tokens:
            return f"{usage.prompt_tokens} of {self.max_prompt_tokens} prompt tokens"
        cost = usage.cost_usd
        if self.max_cost_usd is not None and cost is not None and cost >= self.max_cost_usd:
            return f"${cost:.2f} of ${self.max_cost_usd:.2f}"
        return None


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


class AgentRunner(Protocol):
    async def __call__(self, ctx: RunContext) -> RunReport: ...

"""What one agent run is given, and what it gives back.

Rules:

- The daemon builds a ``RunContext`` per run: the agent's config, a ``Store`` bound
  to the run (its tool calls carry ``run_id``), the LLM, the bookkeeping (file
  fingerprints, message ledger, cursors: the daemon's state store behind a small
  interface, so ``agents`` never imports ``daemon``), limits, a progress callback
  and a cancel event.
- A runner returns a ``RunReport``; it never raises for a file or message that
  failed (that is an entry in ``errors``), only for the run as a whole.
- Status: ``success`` (nothing failed), ``partial`` (some items failed, some
  succeeded), ``error`` (nothing could be done, or the app went away),
  ``cancelled``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any, Literal, Protocol

from protocol.agent_config import AgentConfig

from .llm import LLM, Usage
from .local_dir.records import FileRecord
from .store import Store

__all__ = [
    "AgentRunner",
    "Bookkeeping",
    "RunContext",
    "RunLimits",
    "RunReport",
    "RunStatus",
    "runner_for",
]

RunStatus = Literal["success", "partial", "error", "cancelled"]
Progress = Callable[[str, int, int, str | None], Awaitable[None]]


class Bookkeeping(Protocol):
    """The daemon's state store, as much of it as one agent's run may touch."""

    def file_index(self) -> dict[str, FileRecord]: ...

    def record_file(self, rec: FileRecord) -> None: ...

    def forget_files(self, paths: Iterable[str]) -> None: ...

    def processed_ids(self, provider: str, account: str, ids: Collection[str]) -> set[str]: ...

    def mark_processed(self, provider: str, account: str, message_id: str) -> None: ...

    def get_cursor(self, key: str) -> str | None: ...

    def set_cursor(self, key: str, value: str) -> None: ...


@dataclass(frozen=True)
class RunLimits:
    step_budget: int = 12
    tool_call_budget: int = 200
    max_file_bytes: int = 20 * 1024 * 1024
    triage_batch: int = 40
    context_chars: int = 60_000
    chunk_chars: int = 12_000


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


async def _not_available(ctx: RunContext) -> RunReport:
    return RunReport(
        status="error",
        errors=[
            f"{ctx.agent.kind} agents are not available in this version of tether; "
            "only local_directory agents run"
        ],
    )


def runner_for(kind: str) -> AgentRunner:
    """The runner of an agent kind (imported on demand)."""
    if kind == "local_directory":
        from .local_dir.agent import run_local_directory

        return run_local_directory
    return _not_available

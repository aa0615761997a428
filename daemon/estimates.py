"""``estimate``: what a run of an agent would read and cost now, with no LLM call.

Rules:

- The agent's source is built as for a run (same limits, same protected folders)
  over read-only bookkeeping: nothing is recorded, so an estimate never changes
  what the next run does.
- No app is needed (nothing is read from or written to its data) and no model is
  called; the model only names the price.
- Unknown agent: ``RunRefused("unknown_agent")``; a kind without a source here:
  ``RunRefused("invalid_config")``. A cloud account that cannot be read (reconnect,
  throttled, down): ``RunRefused("invalid_config")`` saying why. A source that holds a
  connection (``aclose``) is closed after.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from datetime import tzinfo
from typing import Any

from agents.books import Bookkeeping, FileRecord
from agents.errors import CloudError, DeviceOffline, LLMNotConfigured
from agents.estimate import Estimate, estimate_run
from agents.llm import Message, Reply, ToolChoice
from agents.run import RunContext
from agents.store import Row

from .agent_configs import AgentRegistry
from .config import Config
from .errors import RunRefused
from .kinds import SourceFactory
from .runs import StateBookkeeping, run_limits
from .state import StateStore

__all__ = ["Estimator"]


class _ReadOnlyBooks:
    """The agent's bookkeeping with every write dropped."""

    def __init__(self, books: Bookkeeping) -> None:
        self.books = books

    def file_index(self) -> dict[str, FileRecord]:
        return self.books.file_index()

    def record_file(self, rec: FileRecord) -> None:
        pass

    def forget_files(self, paths: Iterable[str]) -> None:
        pass

    def processed_ids(self, provider: str, account: str, ids: Collection[str]) -> set[str]:
        return self.books.processed_ids(provider, account, ids)

    def mark_processed(self, provider: str, account: str, message_id: str) -> None:
        pass

    def get_cursor(self, key: str) -> str | None:
        return self.books.get_cursor(key)

    def set_cursor(self, key: str, value: str) -> None:
        pass


class _NoStore:
    """An estimate reads no app data."""

    async def select(
        self, table: str, filters: dict[str, Any] | None = None, limit: int | None = None
    ) -> list[Row]:
        raise DeviceOffline("an estimate does not read the app's data")

    async def get(self, table: str, id: str) -> Row | None:
        raise DeviceOffline("an estimate does not read the app's data")

    async def insert(
        self, table: str, data: dict[str, Any], *, idempotency_key: str | None = None
    ) -> Row:
        raise DeviceOffline("an estimate writes nothing")

    async def update(self, table: str, id: str, updates: dict[str, Any]) -> Row:
        raise DeviceOffline("an estimate writes nothing")

    async def delete(self, table: str, id: str) -> None:
        raise DeviceOffline("an estimate writes nothing")


class _NoModel:
    """An estimate calls no model."""

    async def complete(
        self,
        messages: Sequence[Message],
        tools: Sequence[dict[str, Any]] | None = None,
        *,
        stream: bool = False,
        on_text: Callable[[str], Awaitable[None]] | None = None,
        max_tokens: int | None = None,
        tool_choice: ToolChoice | None = None,
    ) -> Reply:
        raise LLMNotConfigured("an estimate calls no model")


async def _no_progress(phase: str, done: int, total: int, detail: str | None) -> None:
    return None


class Estimator:
    def __init__(
        self,
        *,
        state: StateStore,
        registry: AgentRegistry,
        config: Config,
        sources: Mapping[str, SourceFactory],
        tz: tzinfo,
        protected: Sequence[str] = (),
    ) -> None:
        self.state = state
        self.registry = registry
        self.config = config
        self.sources = sources
        self.tz = tz
        self.protected = tuple(protected)

    async def estimate(self, agent_id: str) -> tuple[Estimate, str | None]:
        """The estimate for ``agent_id`` and the model it priced."""
        agent = self.registry.get(agent_id)
        if agent is None:
            raise RunRefused("unknown_agent", f"no agent {agent_id!r}")
        factory = self.sources.get(agent.kind)
        if factory is None:
            raise RunRefused(
                "invalid_config", f"{agent.kind} agents cannot be estimated in this version"
            )
        ctx = RunContext(
            run_id="estimate",
            agent=agent,
            store=_NoStore(),
            llm=_NoModel(),
            books=_ReadOnlyBooks(StateBookkeeping(self.state, agent)),
            progress=_no_progress,
            cancel=asyncio.Event(),
            tz=self.tz,
            limits=run_limits(agent, self.config.runs),
            protected=self.protected,
        )
        model = agent.model or self.config.llm.model
        source = factory(ctx)
        try:
            return await estimate_run(ctx, source, model), model
        except CloudError as exc:
            raise RunRefused("invalid_config", str(exc)) from None
        finally:
            close = getattr(source, "aclose", None)
            if close is not None:
                await close()

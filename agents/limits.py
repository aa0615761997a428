"""The budgets of a loop and of a run, with their defaults.

Rules:

- The limits' defaults live here only; ``agents.loop`` and ``agents.run`` use them,
  and the daemon's ``config.toml`` defaults are read from them.
- A leaf module: it imports nothing of ours at run time, so the daemon's
  configuration (and with it every CLI verb) can read the defaults without
  loading the tool loop, the tools and the LLM adapter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .llm import Usage

__all__ = ["DEFAULT_LIMITS", "DEFAULT_MAX_FILE_BYTES", "Budget", "LoopLimits", "RunLimits"]

DEFAULT_MAX_FILE_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class LoopLimits:
    """Budgets of one loop (a phase of a run, or one chat request)."""

    max_steps: int = 12
    max_tool_calls: int = 200
    context_chars: int = 60_000
    max_continuations: int = 2
    max_tokens: int | None = None
    # Background runs: a reply whose tool calls all succeeded and needed no reading
    # (writes, notices) ends the loop without asking the model for a closing sentence.
    finish_after_writes: bool = False


DEFAULT_LIMITS = LoopLimits()


@dataclass(frozen=True)
class RunLimits:
    step_budget: int = DEFAULT_LIMITS.max_steps
    tool_call_budget: int = DEFAULT_LIMITS.max_tool_calls
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    triage_batch: int = 40
    context_chars: int = DEFAULT_LIMITS.context_chars
    chunk_chars: int = 40_000
    # Small items of one project go to the model together (one call instead of one
    # each): up to batch_items of them while their texts fit batch_chars.
    batch_chars: int = 40_000
    batch_items: int = 8
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

"""What a run would read and cost, before paying for it: the pipeline without the model.

Rules:

- The source reports its changes as for a run, over read-only bookkeeping (the
  caller's job: nothing is recorded), and every changed item's text is read (I/O,
  no LLM call). Unchanged items are not opened: an unchanged tree costs a scan.
- Prompt tokens are the size of the prompts the pipeline would send, at 4
  characters a token (the usual English average): triage lines per batch, then per
  unit of work (small items packed together, a large one per chunk, as the pipeline
  plans them) the processing prompt plus the tool schemas. It assumes every
  changed item is processed (items skipped at triage cost less) and one model call
  per chunk (a model that lists or reads first makes more).
- Cost: input price x prompt tokens, plus output price x a short answer per call,
  from litellm's price map (``prices.py``); ``None`` when the model's price is
  unknown. Runs: how many runs the budget splits it into (1 when it fits).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from .errors import ExtractError
from .pipeline import batch_messages, plan_units, process_messages
from .prices import price_of
from .run import RunContext
from .source import Item, Source
from .text import chunk_text, snippet
from .tools import background_toolset
from .triage import TriageItem, build_prompt

__all__ = ["CHARS_PER_TOKEN", "Estimate", "estimate_run"]

CHARS_PER_TOKEN = 4
_ANSWER_TOKENS = 150  # a tool call or two per processing step, as output


@dataclass
class Estimate:
    items_new: int = 0
    items_changed: int = 0
    items_unchanged: int = 0
    items_moved: int = 0
    items_unreadable: int = 0
    chars: int = 0
    prompt_tokens: int = 0
    llm_calls: int = 0
    cost_usd: float | None = None
    runs: int = 0
    notes: list[str] = field(default_factory=list)


async def estimate_run(ctx: RunContext, source: Source, model: str | None) -> Estimate:
    """What a run of ``ctx.agent`` over ``source`` would read and send now."""
    changes = await source.changes()
    est = Estimate(
        items_new=changes.new,
        items_changed=len(changes.items) - changes.new,
        items_unchanged=changes.unchanged,
        items_moved=changes.moved,
        notes=[*changes.failures, *changes.notices],
    )
    tools = json.dumps(background_toolset(ctx.agent.data_types).schemas())
    parted_tools = json.dumps(background_toolset(ctx.agent.data_types, source.tools()).schemas())
    prompt_chars = 0
    triage_items: list[TriageItem] = []
    readable: list[Item] = []
    texts: dict[str, str] = {}
    for item in changes.items:
        try:
            text = await source.text(item)
        except ExtractError as exc:
            est.items_unreadable += 1
            est.notes.append(str(exc))
            continue
        est.chars += len(text)
        texts[item.key] = text
        readable.append(item)
        preview = snippet(text)
        line = {**source.triage_line(item, preview), "complete": False}
        triage_items.append(TriageItem(item.key, line, tuple(source.hints(item))))
    limits = ctx.limits
    for unit in plan_units(readable, texts, {}, limits.batch_chars, limits.batch_items):
        if len(unit) > 1:
            pairs = [(i, texts[i.key]) for i in unit]
            prompt_chars += len(json.dumps(batch_messages(ctx, source, pairs, None))) + len(tools)
            est.llm_calls += 1
            continue
        parts = chunk_text(texts[unit[0].key], limits.chunk_chars)
        for i, part in enumerate(parts, 1):
            messages = process_messages(ctx, source, unit[0], part, None, (i, len(parts)))
            prompt_chars += len(json.dumps(messages)) + len(
                parted_tools if len(parts) > 1 else tools
            )
            est.llm_calls += 1
    batch = max(1, ctx.limits.triage_batch)
    for start in range(0, len(triage_items), batch):
        messages = build_prompt(
            triage_items[start : start + batch], [], noun=source.noun, key=source.key_name
        )
        prompt_chars += len(json.dumps(messages))
        est.llm_calls += 1
    est.prompt_tokens = prompt_chars // CHARS_PER_TOKEN
    price = price_of(model)
    if price is not None:
        est.cost_usd = (
            est.prompt_tokens * price.input_per_token
            + est.llm_calls * _ANSWER_TOKENS * price.output_per_token
        )
    budget = ctx.limits.budget
    shares = [1.0 if est.llm_calls else 0.0]
    if budget.max_llm_calls:
        shares.append(est.llm_calls / budget.max_llm_calls)
    if budget.max_prompt_tokens:
        shares.append(est.prompt_tokens / budget.max_prompt_tokens)
    if budget.max_cost_usd and est.cost_usd:
        shares.append(est.cost_usd / budget.max_cost_usd)
    est.runs = math.ceil(max(shares))
    return est

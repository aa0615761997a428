"""``daemon estimate <agent>``: what a run would read and cost now, without any LLM call."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from protocol.frames import EstimateRequest, EstimateResult

from .common import control_client, load


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("agent", help="agent id")
    p.add_argument("--json", action="store_true", help="print the estimate_result frame")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    paths, _ = load()
    result = asyncio.run(_estimate(paths, args.agent))
    if args.json:
        print(json.dumps(result.model_dump(mode="json"), indent=2))
    else:
        print(describe(result))
    return 0


async def _estimate(paths: Any, agent_id: str) -> EstimateResult:
    client = await control_client(paths)
    try:
        answer = await client.request(EstimateRequest(id="estimate-1", agent_id=agent_id))
        assert isinstance(answer, EstimateResult)
        return answer
    finally:
        await client.close()


def describe(r: EstimateResult) -> str:
    """The estimate in a few lines a person reads."""
    if r.cost_usd is None:
        cost = f"unknown (no price for {r.model or 'no model configured'}; a local model is free)"
    else:
        cost = f"${r.cost_usd:.2f} with {r.model}"
    lines = [
        f"agent {r.agent_id}: {r.items_new} new, {r.items_changed} changed, "
        f"{r.items_unchanged} unchanged, {r.items_moved} moved"
        + (f", {r.items_unreadable} unreadable" if r.items_unreadable else ""),
        f"text to read: {r.chars:,} characters; about {r.prompt_tokens:,} prompt tokens "
        f"in {r.llm_calls} LLM calls",
        f"estimated cost: {cost}",
    ]
    if r.llm_calls == 0:
        lines.append("a run now would make no LLM call")
    elif r.runs > 1:
        lines.append(f"the run budget splits this into {r.runs} runs")
    else:
        lines.append("it fits in one run's budget")
    lines += [f"note: {n}" for n in r.notes]
    return "\n".join(lines)

"""Model prices, read from the price map litellm ships, without importing litellm.

Rules:

- The map is litellm's bundled ``model_prices_and_context_window_backup.json``
  (what litellm itself reads with ``LITELLM_LOCAL_MODEL_COST_MAP=True``); reading it
  costs a JSON parse, not litellm's 2 s import. It is read once per process.
- A model is looked up as given, then without its provider prefix
  (``openai/gpt-4o-mini`` -> ``gpt-4o-mini``). Unknown: ``None``. A price of 0 (a
  local model such as ``ollama/llama3.1``) is a price: 0.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Price", "price_of"]

_MAP_FILE = "model_prices_and_context_window_backup.json"


@dataclass(frozen=True)
class Price:
    input_per_token: float
    output_per_token: float


@functools.cache
def _price_map() -> dict[str, Any]:
    spec = importlib.util.find_spec("litellm")
    if spec is None or spec.origin is None:
        return {}
    path = Path(spec.origin).parent / _MAP_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def price_of(model: str | None) -> Price | None:
    """The model's price per token, or ``None`` when the map does not know it."""
    if not model:
        return None
    prices = _price_map()
    for name in (model, model.split("/", 1)[-1]):
        entry = prices.get(name)
        if isinstance(entry, dict) and isinstance(entry.get("input_cost_per_token"), int | float):
            output = entry.get("output_cost_per_token")
            return Price(
                float(entry["input_cost_per_token"]),
                float(output) if isinstance(output, int | float) else 0.0,
            )
    return None

"""JSON schemas of the tools' argument models, cleaned for OpenAI function tools.

Rules:

- Generated from the pydantic argument model, once per model (callers get copies).
- No ``title``, no ``default: null``; an optional field the model may omit is shown
  as its plain type (``Optional[X]`` -> ``X``); ``$ref``s are inlined;
  ``additionalProperties: false`` on every object (extra arguments are refused).
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from pydantic import BaseModel

__all__ = ["compact_schema", "parameters_schema"]


def parameters_schema(args: type[BaseModel]) -> dict[str, Any]:
    """The cleaned JSON schema of ``args`` (a fresh copy: callers may mutate it)."""
    return copy.deepcopy(_parameters(args))


@functools.cache
def _parameters(args: type[BaseModel]) -> dict[str, Any]:
    return _clean_schema(args.model_json_schema())


def _clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    defs = schema.get("$defs", {})

    def clean(node: Any, required: bool = True) -> Any:
        if isinstance(node, list):
            return [clean(n) for n in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            target = defs[node["$ref"].rsplit("/", 1)[-1]]
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        node = dict(node)
        any_of = node.get("anyOf")
        if not required and isinstance(any_of, list):
            kept = [s for s in any_of if s != {"type": "null"}]
            if len(kept) == 1:  # Optional[X] that may be omitted: show X
                del node["anyOf"]
                node = {**kept[0], **node}
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in ("title", "$defs") or (key == "default" and value is None):
                continue
            if key == "properties":
                needed = set(node.get("required", ()))
                out[key] = {name: clean(sub, name in needed) for name, sub in value.items()}
            else:
                out[key] = clean(value)
        if out.get("type") == "object":
            out.setdefault("properties", {})
            out["additionalProperties"] = False
        return out

    cleaned: dict[str, Any] = clean(schema)
    return cleaned


def compact_schema(node: Any) -> Any:
    """``node`` without what a background run pays for on every call and does not need:
    field descriptions (except the date formats), ``minLength`` (the argument models
    still enforce it: an empty title is an error for the model either way)."""
    if isinstance(node, list):
        return [compact_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "minLength":
            continue
        if key == "description" and isinstance(value, str) and "YYYY" not in value:
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: compact_schema(sub) for name, sub in value.items()}
        else:
            out[key] = compact_schema(value)
    return out

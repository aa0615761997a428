"""JSON Schema of the protocol, generated from the pydantic models.

``protocol_schema()`` returns one document whose ``$defs`` hold every frame, the
``AgentConfig`` union and the storage rows; ``daemon schema`` prints it so the
desktop app can generate TypeScript types. A snapshot test turns any change to a
frame into a visible schema diff.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

from . import storage
from .agent_config import AgentConfig
from .frames import PROTOCOL_VERSION, Frame

__all__ = ["protocol_schema"]


def protocol_schema() -> dict[str, Any]:
    frame_schema = TypeAdapter(Frame).json_schema(ref_template="#/$defs/{model}")
    agent_schema = TypeAdapter(AgentConfig).json_schema(
        ref_template="#/$defs/{model}", by_alias=True
    )
    rows: list[type[BaseModel]] = [
        storage.TaskRow,
        storage.ProjectRow,
        storage.TimelineRow,
        storage.NoteRow,
        storage.TaskCommentRow,
        storage.ClientRow,
        storage.CoreMemoryRow,
    ]
    _, rows_schema = models_json_schema(
        [(m, "validation") for m in rows], ref_template="#/$defs/{model}"
    )
    defs: dict[str, Any] = {}
    for part in (frame_schema, agent_schema, rows_schema):
        defs.update(part.pop("$defs", {}))
    defs["AgentConfig"] = agent_schema
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"Tether wire protocol v{PROTOCOL_VERSION}",
        "oneOf": frame_schema["oneOf"],
        "discriminator": frame_schema.get("discriminator"),
        "$defs": defs,
    }

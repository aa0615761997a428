"""The JSON Schema export: complete, stable (snapshot) and what ``daemon schema`` prints.

protocol.md "JSON Schema": the schema is part of the test suite, so a change to a
frame shows up as a schema diff. When a change is intended, regenerate with::

    daemon schema > tests/protocol/schema_snapshot.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args

import pytest

from protocol.agent_config import AgentConfig
from protocol.codec import FRAME_TYPES, encode
from protocol.frames import Frame
from protocol.schema import protocol_schema
from protocol.storage import ROW_MODELS, TABLES
from tests.protocol.test_codec import SAMPLES

SNAPSHOT = Path(__file__).with_name("schema_snapshot.json")
REPO = Path(__file__).resolve().parents[2]
REGENERATE = "daemon schema > tests/protocol/schema_snapshot.json"


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return protocol_schema()


def _refs(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                found.append(value)
            else:
                found.extend(_refs(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_refs(item))
    return found


def _resolve(schema: dict[str, Any], ref: str) -> dict[str, Any]:
    assert ref.startswith("#/$defs/"), ref
    name = ref.removeprefix("#/$defs/")
    assert name in schema["$defs"], f"{ref} does not resolve"
    resolved: dict[str, Any] = schema["$defs"][name]
    return resolved


def test_every_frame_type_is_in_the_union(schema: dict[str, Any]) -> None:
    mapping = schema["discriminator"]["mapping"]
    assert schema["discriminator"]["propertyName"] == "type"
    assert set(mapping) == set(FRAME_TYPES)
    assert len(schema["oneOf"]) == len(FRAME_TYPES)
    assert {item["$ref"] for item in schema["oneOf"]} == set(mapping.values())
    for frame_type, ref in mapping.items():
        frame = _resolve(schema, ref)
        assert frame["properties"]["type"]["const"] == frame_type
        assert frame["type"] == "object"


def test_frame_fields_are_in_the_schema(schema: dict[str, Any]) -> None:
    """Every field of every frame model appears, and required ones are required."""
    for model in get_args(get_args(Frame)[0]):
        frame_type = model.model_fields["type"].default
        definition = _resolve(schema, schema["discriminator"]["mapping"][frame_type])
        assert set(definition["properties"]) == set(model.model_fields), frame_type
        required = {n for n, f in model.model_fields.items() if f.is_required()}
        assert set(definition.get("required", [])) == required, frame_type


def test_agent_config_union_is_in_the_schema(schema: dict[str, Any]) -> None:
    agent = schema["$defs"]["AgentConfig"]
    assert agent["discriminator"]["propertyName"] == "kind"
    kinds = set(agent["discriminator"]["mapping"])
    assert kinds == {"local_directory", "gmail", "outlook", "teams"}
    members = get_args(get_args(AgentConfig)[0])
    assert {m.__name__ for m in members} == {
        "LocalDirectoryAgent",
        "GmailAgent",
        "OutlookAgent",
        "TeamsAgent",
    }
    for kind, ref in agent["discriminator"]["mapping"].items():
        definition = _resolve(schema, ref)
        assert definition["properties"]["kind"]["const"] == kind
        assert "schedule_cron" in definition["properties"]
    local = schema["$defs"]["LocalDirectoryAgent"]
    assert "directory_paths" in local["required"]
    # aliases are exported as they travel: DateRange.from_ is "from" on the wire
    assert set(schema["$defs"]["DateRange"]["properties"]) == {"from", "to"}


def test_row_models_match_the_storage_tables(schema: dict[str, Any]) -> None:
    for table, model in ROW_MODELS.items():
        definition = schema["$defs"][model.__name__]
        assert set(definition["properties"]) == set(TABLES[table].columns), table
        assert "id" in definition["required"]
        assert "createdAt" in definition["required"]
        assert definition["properties"]["createdAt"]["type"] == "integer"
    assert schema["$defs"]["TaskRow"]["properties"]["status"]["$ref"] == "#/$defs/TaskStatus"
    assert set(schema["$defs"]["TaskStatus"]["enum"]) == {"todo", "in_progress", "done"}
    assert set(schema["$defs"]["Priority"]["enum"]) == {"high", "medium", "low"}
    assert set(schema["$defs"]["ProjectStatus"]["enum"]) == {"active", "archived"}


def test_every_ref_resolves(schema: dict[str, Any]) -> None:
    refs = _refs(schema)
    assert refs
    for ref in refs:
        _resolve(schema, ref)


def test_schema_is_a_valid_draft_2020_12_schema_that_accepts_real_frames(
    schema: dict[str, Any],
) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator_cls = jsonschema.Draft202012Validator
    validator_cls.check_schema(schema)
    validator = validator_cls(schema)
    for frame_type, frame in SAMPLES.items():
        errors = list(validator.iter_errors(json.loads(encode(frame))))
        assert not errors, f"{frame_type}: {errors[0].message}"
    assert not validator.is_valid({"type": "tool_call", "id": "c1"})  # no action
    assert not validator.is_valid({"type": "no_such_frame"})
    agent = validator_cls({**schema["$defs"]["AgentConfig"], "$defs": schema["$defs"]})
    assert agent.is_valid(
        {"kind": "gmail", "id": "g1", "name": "Mail", "schedule_cron": "0 * * * *", "account": "me"}
    )
    assert not agent.is_valid(
        {"kind": "gmail", "id": "g1", "name": "Mail", "schedule_cron": "0 * * * *"}
    )


def test_schema_matches_the_committed_snapshot(schema: dict[str, Any]) -> None:
    assert SNAPSHOT.exists(), f"no snapshot: run `{REGENERATE}`"
    committed = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    # compare through JSON so tuples/lists and key order cannot matter
    current = json.loads(json.dumps(schema))
    if current != committed:
        changed = sorted(
            name
            for name in set(current["$defs"]) | set(committed.get("$defs", {}))
            if current["$defs"].get(name) != committed.get("$defs", {}).get(name)
        )
        top = sorted(
            k
            for k in set(current) | set(committed)
            if k != "$defs" and current.get(k) != committed.get(k)
        )
        pytest.fail(
            "the protocol's JSON Schema changed (definitions: "
            f"{', '.join(changed) or '-'}; top-level: {', '.join(top) or '-'}). If the change is "
            f"intended, regenerate the snapshot with `{REGENERATE}` and commit it."
        )


def _clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env["TETHER_HOME"] = str(tmp_path / "home")
    return env


def test_daemon_schema_prints_the_same_schema(tmp_path: Path, schema: dict[str, Any]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "daemon", "schema"],
        cwd=REPO,
        env=_clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    printed = json.loads(proc.stdout)
    assert printed == json.loads(json.dumps(schema))
    assert printed == json.loads(SNAPSHOT.read_text(encoding="utf-8")), (
        f"`daemon schema` differs from the snapshot; regenerate with `{REGENERATE}`"
    )

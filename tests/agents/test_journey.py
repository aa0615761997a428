"""``agents.journey.validate_result``: the journey's result is checked by the agent
config models, and every problem is said in words the model can act on."""

from __future__ import annotations

from typing import Any

import pytest

from agents.errors import JourneyError
from agents.journey import Journey, finish_tool_schema, validate_result


@pytest.mark.parametrize(
    ("kind", "raw", "problem"),
    [
        ("gmail", [], "valid dictionary"),
        ("gmail", {}, "prompt_template: Field required"),
        ("gmail", {"prompt_template": "   "}, "prompt_template: must not be blank"),
        ("gmail", {"prompt_template": "x", "data_types": []}, "data_types: data_types must"),
        ("gmail", {"prompt_template": "x", "data_types": ["mail"]}, "data_types.0: Input"),
        ("gmail", {"prompt_template": "x", "filter_config": {"tags": []}}, "filter_config.tags"),
        ("gmail", {"prompt_template": "x", "colour": "red"}, "colour: unknown setting"),
        ("teams", {"prompt_template": "x", "file_extensions": [".md"]}, "only for file agents"),
        ("local_directory", {"prompt_template": "x", "filter_config": {}}, "only for mail"),
        ("local_directory", {"prompt_template": "x" * 20_001}, "prompt_template: String should"),
    ],
)
def test_invalid_results_say_what_is_wrong(kind: str, raw: Any, problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace(".", r"\.")):
        validate_result(kind, raw)


def test_a_valid_result_is_normalised_like_an_agent_config() -> None:
    result = validate_result(
        "gmail",
        {
            "prompt_template": "  Invoices become notes.\n",
            "data_types": ["notes", "notes", "tasks"],
            "filter_config": {"senders": ["a@b.c"], "date_range": {"from": "2026-01-01"}},
        },
    )
    assert result.prompt_template == "Invoices become notes."
    assert result.data_types == ["notes", "tasks"]
    assert result.filter_config == {"senders": ["a@b.c"], "date_range": {"from": "2026-01-01"}}
    assert result.file_extensions is None


def test_unknown_kinds_are_refused() -> None:
    with pytest.raises(JourneyError, match="kinds: local_directory, gmail, outlook, teams"):
        Journey("dropbox")
    with pytest.raises(ValueError, match="unknown kind"):
        validate_result("dropbox", {"prompt_template": "x"})


def test_the_finish_tool_schema_is_the_argument_model() -> None:
    schema = finish_tool_schema()["function"]
    assert schema["name"] == "finish_journey"
    assert schema["parameters"]["required"] == ["prompt_template"]
    assert set(schema["parameters"]["properties"]) == {
        "prompt_template",
        "data_types",
        "file_extensions",
        "filter_config",
    }

"""The CLI's parser: every verb in ``VERBS`` is a module with ``add_arguments`` and
``run``, and the verb is found on the command line before parsing (only its module is
imported; tests/e2e/test_cli.py checks that over a real process)."""

from __future__ import annotations

import importlib

import pytest

from daemon.cli import VERBS, _chosen_verb, build_parser


def test_every_verb_is_a_module_with_arguments_and_a_handler() -> None:
    for name, (module_name, help_text) in VERBS.items():
        module = importlib.import_module(f"daemon.cli.{module_name}")
        assert callable(module.add_arguments) and callable(module.run), name
        assert help_text and not help_text.endswith("."), name
    parser = build_parser()  # every verb configured, as for the docs
    assert parser.parse_args(["status", "--json"]).handler.__module__ == "daemon.cli.status"
    assert parser.parse_args(["agents", "show", "a1"]).agent_id == "a1"


@pytest.mark.parametrize(
    ("argv", "verb"),
    [
        (["status"], "status"),
        (["--debug", "trigger", "docs", "--wait"], "trigger"),
        (["--help"], None),
        ([], None),
        (["bogus"], "bogus"),  # argparse then says "invalid choice"
    ],
)
def test_the_verb_is_the_first_word_that_is_not_an_option(argv: list[str], verb: str) -> None:
    assert _chosen_verb(argv) == verb


def test_only_the_chosen_verb_gets_its_arguments() -> None:
    parser = build_parser(["trigger"])
    args = parser.parse_args(["trigger", "docs", "--timeout", "5"])
    assert args.agent == "docs" and args.timeout == 5.0
    with pytest.raises(SystemExit):  # status was listed, not configured: --json is unknown
        parser.parse_args(["status", "--json"])

"""The shipping app's agent rows (``daemon.app_compat``) and their way through the registry.

Client agents ignore unknown keys (named in ``ignored_keys``), take ``provider`` for
``kind``, drop ``oauth_token_encrypted`` unread, and keep the app's ``last_run_at``,
which the scheduler's ``last_run_at`` uses when it is newer than the journal's.
``agents.toml`` stays strict.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from daemon.agent_configs import AgentRegistry, load_agents_toml
from daemon.app_compat import effective_last_run_at, normalize_client_agents, parse_app_time
from daemon.state import StateStore
from protocol.codec import decode
from protocol.frames import DeviceHello, HomeRequest

NOW = datetime(2026, 12, 3, 14, 0, tzinfo=UTC)


def app_local(**extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": "docs",
        "name": "Docs",
        "kind": "local_directory",
        "schedule_cron": "0 * * * *",
        "directory_paths": ["/tmp/docs"],
        "user_id": "u1",
        "created_at": "2026-11-01T00:00:00Z",
        "updated_at": 1_764_000_000_000,
    }
    row.update(extra)
    return row


def app_cloud(provider: str = "gmail", **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": "mail",
        "name": "Mail",
        "provider": provider,
        "schedule_cron": "*/30 * * * *",
        "account": "me@example.com",
        "oauth_token_encrypted": "enc:secret",
    }
    row.update(extra)
    return row


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateStore]:
    store = StateStore.open(tmp_path / "state.db", clock=lambda: NOW)
    yield store
    store.close()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-12-03T13:00:00Z", datetime(2026, 12, 3, 13, tzinfo=UTC)),
        ("2026-12-03T14:00:00+01:00", datetime(2026, 12, 3, 13, tzinfo=UTC)),
        ("2026-12-03T13:00:00", datetime(2026, 12, 3, 13, tzinfo=UTC)),  # naive: UTC
        (1_764_766_800_000, datetime(2025, 12, 3, 13, tzinfo=UTC)),  # ms since the epoch
        ("yesterday", None),
        ("", None),
        (True, None),
        (-5, None),
        (float("nan"), None),
        ({"at": 1}, None),
    ],
)
def test_parse_app_time(value: Any, expected: datetime | None) -> None:
    assert parse_app_time(value) == expected


def test_unknown_keys_are_ignored_and_named_nested_ones_with_a_path() -> None:
    out = normalize_client_agents(
        [
            app_local(prompt_template=None, model=None),
            app_cloud(
                filter_config={
                    "labels": ["x"],
                    "color": "red",
                    "date_range": {"from": "2026-01-01", "tz": "x"},
                }
            ),
        ]
    )
    assert [(i.id, i.keys) for i in out.ignored] == [
        ("docs", ["created_at", "updated_at", "user_id"]),
        ("mail", ["filter_config.color", "filter_config.date_range.tz", "oauth_token_encrypted"]),
    ]
    local, cloud = out.raws
    assert "prompt_template" not in local  # null column: the default applies
    assert local["model"] is None  # a nullable setting keeps its null
    assert cloud["kind"] == "gmail" and "provider" not in cloud
    assert cloud["filter_config"] == {"labels": ["x"], "date_range": {"from": "2026-01-01"}}
    assert all("oauth_token_encrypted" not in raw for raw in out.raws)


@pytest.mark.parametrize(
    ("provider", "kind"),
    [("gmail", "gmail"), ("outlook", "outlook"), ("teams", "teams"), ("Gmail", "gmail")],
)
def test_provider_stands_for_kind(provider: str, kind: str, state: StateStore) -> None:
    result = AgentRegistry(state).sync([app_cloud(provider)], replace=True)
    assert result.accepted == ["mail"] and result.rejected == []
    agent = AgentRegistry(state).get("mail")
    assert agent is not None and agent.kind == kind


@pytest.mark.parametrize("provider", ["local", "local_directory"])
def test_provider_local_is_a_local_directory_agent(provider: str, state: StateStore) -> None:
    row = app_local(provider=provider)
    del row["kind"]
    result = AgentRegistry(state).sync([row], replace=True)
    assert result.accepted == ["docs"]
    assert AgentRegistry(state).get("docs").kind == "local_directory"  # type: ignore[union-attr]


def test_kind_and_provider_that_disagree_are_rejected_and_the_token_not_kept(
    state: StateStore,
) -> None:
    result = AgentRegistry(state).sync(
        [app_cloud("outlook", kind="gmail"), app_cloud("slack", id="chat")], replace=True
    )
    assert result.accepted == []
    mismatch, unknown = result.rejected
    assert mismatch.id == "mail" and "provider 'outlook'" in mismatch.errors[0]
    assert unknown.id == "chat" and "slack" in unknown.errors[0]
    assert "enc:secret" not in str(result.model_dump())
    # even a row of an unknown kind has its token dropped unread
    assert ("chat", ["oauth_token_encrypted"]) in [(i.id, i.keys) for i in result.ignored_keys]


def test_the_token_is_never_stored(state: StateStore, tmp_path: Path) -> None:
    AgentRegistry(state).sync([app_cloud()], replace=True)
    assert state.agent("mail") is not None
    state.close()
    for path in tmp_path.iterdir():
        data = path.read_bytes()
        assert b"enc:secret" not in data and b"oauth_token_encrypted" not in data, path


def test_agents_toml_stays_strict(tmp_path: Path) -> None:
    path = tmp_path / "agents.toml"
    path.write_text(
        '[[agents]]\nid = "docs"\nname = "Docs"\nkind = "local_directory"\n'
        'schedule_cron = "@daily"\ndirectory_paths = ["/tmp/docs"]\nuser_id = "u1"\n\n'
        '[[agents]]\nid = "mail"\nname = "Mail"\nprovider = "gmail"\n'
        'schedule_cron = "@daily"\naccount = "me@example.com"\n'
    )
    accepted, rejected = load_agents_toml(path)
    assert accepted == []
    assert [r.id for r in rejected] == ["docs", "mail"]
    assert "user_id" in rejected[0].errors[0]


def test_the_apps_last_run_at_counts_when_newer_than_the_journal(state: StateStore) -> None:
    registry = AgentRegistry(state, clock=lambda: NOW)
    last_run_at = effective_last_run_at(state)
    app_time = NOW - timedelta(minutes=5)
    registry.sync([app_local(last_run_at=app_time.isoformat())], replace=True)
    assert last_run_at("docs") == app_time  # the daemon never ran it

    # A journal run after the app's time wins; before it, the app's time stays.
    run = state.start_run("r1", "docs", "manual", started_at=NOW - timedelta(minutes=2))
    state.finish_run(
        run.run_id,
        "success",
        NOW - timedelta(minutes=1),
        items_processed=0,
        items_created=0,
        items_updated=0,
        errors=[],
        usage={},
    )
    assert last_run_at("docs") == NOW - timedelta(minutes=1)
    registry.sync([app_local(last_run_at=int(NOW.timestamp() * 1000))], replace=True)
    assert last_run_at("docs") == NOW

    # A time in the future counts as now; an unreadable one is ignored and named.
    result = registry.sync(
        [app_local(last_run_at=(NOW + timedelta(days=3)).isoformat())], replace=True
    )
    assert last_run_at("docs") == NOW and result.ignored_keys[0].keys == [
        "created_at",
        "updated_at",
        "user_id",
    ]
    result = registry.sync([app_local(last_run_at="soon")], replace=True)
    assert "last_run_at" in result.ignored_keys[0].keys and last_run_at("docs") == NOW


def test_a_rejected_agent_leaves_no_last_run_at(state: StateStore) -> None:
    registry = AgentRegistry(state, clock=lambda: NOW)
    registry.sync([app_local(schedule_cron="nope", last_run_at=NOW.isoformat())], replace=True)
    assert effective_last_run_at(state)("docs") is None


def test_integer_ids_are_taken_as_text(state: StateStore) -> None:
    result = AgentRegistry(state).sync([app_local(id=42)], replace=True)
    assert result.accepted == ["42"] and result.ignored_keys[0].id == "42"
    hello = decode('{"type": "device_hello", "device_id": "d", "agent_ids": [42, "x"]}')
    assert isinstance(hello, DeviceHello) and hello.agent_ids == ["42", "x"]
    assert "protocol" not in hello.model_fields_set and hello.protocol == 1


@pytest.mark.parametrize("context", [{"page": "dashboard"}, "Viewing note n1", ["a", 1], 42])
def test_chat_context_of_any_json_shape_decodes(context: Any) -> None:
    frame = decode(json.dumps({"type": "home_request", "message": "hi", "context": context}))
    assert isinstance(frame, HomeRequest) and frame.context == context

"""Agent configuration: validation on arrival, the cached registry, agents.toml, the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from daemon.agent_configs import AgentRegistry, load_agents_toml, validate_agent
from daemon.cli import main
from daemon.errors import ConfigError
from daemon.paths import Paths
from daemon.state import StateStore
from protocol.reference import RequestFailed
from tests.conftest import DaemonHarness


def local(**extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "id": "notes",
        "name": "Notes",
        "kind": "local_directory",
        "schedule_cron": "0 */6 * * *",
        "directory_paths": ["/tmp/notes"],
    }
    config.update(extra)
    return config


def gmail(**extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "id": "mail",
        "name": "Mail",
        "kind": "gmail",
        "schedule_cron": "*/30 * * * *",
        "account": "me@example.com",
    }
    config.update(extra)
    return config


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (local(schedule_cron="0 0 * * * *"), "schedule_cron: expected 5 fields"),
        (local(schedule_cron="61 * * * *"), "schedule_cron: minute"),
        (local(schedule_cron="every day"), "schedule_cron"),
        (local(directory_paths=["relative/path"]), "must be absolute"),
        (local(directory_paths=[]), "directory_paths"),
        (local(data_types=["tasks", "emails"]), "data_types"),
        (local(data_types=[]), "data_types must name at least one"),
        (local(kind="dropbox"), "kind"),
        (local(id="bad id with spaces"), "id must be"),
        (local(surprise=True), "surprise"),
        (gmail(account=""), "account"),
        (gmail(lookback_days=0), "lookback_days"),
        ("not an object", "an agent must be an object"),
    ],
)
def test_invalid_agents_are_rejected_with_a_reason(raw: Any, fragment: str) -> None:
    config, errors = validate_agent(raw)
    assert config is None
    assert any(fragment in e for e in errors), errors


def test_valid_agents_of_each_kind() -> None:
    config, errors = validate_agent(local(file_extensions=["MD", ".txt"], exclude=["*.tmp"]))
    assert errors == [] and config is not None
    assert config.file_extensions == [".md", ".txt"]  # type: ignore[union-attr]
    for kind in ("gmail", "outlook", "teams"):
        config, errors = validate_agent(gmail(kind=kind))
        assert errors == [] and config is not None and config.kind == kind


def test_registry_sync_accepts_and_rejects_per_agent_and_caches(tmp_path: Path) -> None:
    state = StateStore.open(tmp_path / "state.db")
    registry = AgentRegistry(state)
    changes: list[set[str]] = []
    registry.on_change(changes.append)
    result = registry.sync([local(), gmail(schedule_cron="nope"), local(name="dup")], replace=True)
    assert result.accepted == ["notes"]
    assert [(r.id, r.errors[0].split(":")[0]) for r in result.rejected] == [
        ("mail", "schedule_cron"),
        ("notes", "id 'notes' appears more than once"),
    ]
    assert changes == [{"notes"}]
    # cached: a new registry over the same state sees it (the CLI, with the app closed)
    assert [a.id for a in AgentRegistry(state).all()] == ["notes"]
    # replace=False keeps the others; replace=True drops what the client no longer sends
    registry.sync([gmail()], replace=False)
    assert [a.id for a in registry.all()] == ["mail", "notes"]
    registry.sync([gmail()], replace=True)
    assert [a.id for a in registry.all()] == ["mail"]
    state.close()


def test_agents_toml_is_validated_like_client_agents(tmp_path: Path) -> None:
    path = tmp_path / "agents.toml"
    path.write_text(
        '[[agents]]\nid = "notes"\nname = "Notes"\nkind = "local_directory"\n'
        'schedule_cron = "0 9 * * mon-fri"\ndirectory_paths = ["/tmp/notes"]\n\n'
        '[[agents]]\nid = "bad"\nname = "Bad"\nkind = "local_directory"\n'
        'schedule_cron = "0 9 * * 8"\ndirectory_paths = ["/tmp/x"]\n'
    )
    accepted, rejected = load_agents_toml(path)
    assert [a.id for a in accepted] == ["notes"]
    assert rejected[0].id == "bad" and "weekday" in rejected[0].errors[0]
    (tmp_path / "broken.toml").write_text("[[agents]\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_agents_toml(tmp_path / "broken.toml")
    assert load_agents_toml(tmp_path / "missing.toml") == ([], [])


def test_cli_agents_validate_list_show(
    tether_home: Paths, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "agents.toml"
    good.write_text(
        '[[agents]]\nid = "notes"\nname = "Notes"\nkind = "local_directory"\n'
        'schedule_cron = "@daily"\ndirectory_paths = ["/tmp/notes"]\n'
    )
    assert main(["agents", "validate", str(good)]) == 0
    assert "1 valid, 0 invalid" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text(good.read_text().replace("@daily", "0 0 0 0 0"))
    assert main(["agents", "validate", str(bad)]) == 1
    assert "invalid  notes: schedule_cron" in capsys.readouterr().out
    # list/show read the cache in the state store; no daemon needed
    with StateStore.open(tether_home.state_db) as state:
        AgentRegistry(state).sync([local()], replace=True)
    assert main(["agents", "list"]) == 0
    assert "notes" in capsys.readouterr().out
    assert main(["agents", "show", "notes"]) == 0
    assert '"schedule_cron": "0 */6 * * *"' in capsys.readouterr().out
    assert main(["agents", "show", "nope"]) == 1


async def test_agents_sync_over_the_wire_and_hello_agents(
    harness: DaemonHarness, tmp_path: Path
) -> None:
    client = await harness.device(
        tmp_path / "app.db", agents=[local(enabled=False), gmail(schedule_cron="x")]
    )
    assert client.hello_ack is not None and client.hello_ack.agents is not None
    assert client.hello_ack.agents.accepted == ["notes"]
    assert client.hello_ack.agents.rejected[0].id == "mail"
    ack = await client.agents_sync([gmail(enabled=False)], replace=False)
    assert ack.accepted == ["mail"] and ack.rejected == []
    status = await client.status()
    assert sorted(a.id for a in status.agents) == ["mail", "notes"]
    with pytest.raises(RequestFailed) as unknown:
        await client.trigger("nobody")
    assert unknown.value.code == "unknown_agent"

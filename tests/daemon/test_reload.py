"""``reload_config`` (SIGHUP): new settings apply to the running daemon, host and port
stay, a bad file changes nothing, agents.toml is re-read."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from daemon.cli.run import reload_config
from tests.conftest import DaemonHarness


@pytest.fixture(autouse=True)
def keep_log_level() -> Iterator[None]:
    """A reload sets the ``tether`` logger's level; later tests must not inherit it."""
    logger = logging.getLogger("tether")
    level = logger.level
    yield
    logger.setLevel(level)


async def test_reload_applies_the_model_keeps_the_port_and_survives_a_typo(
    harness: DaemonHarness,
) -> None:
    daemon, paths = harness.daemon, harness.paths
    assert daemon.llm.config.model is None
    paths.config_toml.write_text('port = 1234\n[llm]\nmodel = "openai/reloaded"\n')
    reload_config(paths, daemon, {"port": 0})
    assert daemon.llm.config.model == "openai/reloaded"
    assert daemon.config is daemon.server.config is daemon.runs.config
    assert daemon.config.port == 0  # host and port stay until the next start

    paths.config_toml.write_text('[llm]\nmodle = "typo"\n')
    reload_config(paths, daemon, {"port": 0})
    assert daemon.llm.config.model == "openai/reloaded"  # the running settings stay

    paths.agents_toml.write_text(
        '[[agents]]\nid = "notes"\nname = "Notes"\nkind = "local_directory"\n'
        'schedule_cron = "@daily"\ndirectory_paths = ["/tmp/notes"]\n'
    )
    reload_config(paths, daemon, {"port": 0})
    status = daemon.handlers.status("s1")
    assert [a.id for a in status.agents] == ["notes"]
    assert status.rejected_agents == []

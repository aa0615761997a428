"""daemon.config: config.toml, TETHER_* variables and flags, read in one place."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

from daemon.config import Config, Settings, is_loopback_host, load_config, load_settings
from daemon.errors import ConfigError
from daemon.logs import redact
from daemon.paths import Paths

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ("protocol", "agents", "scheduler", "daemon")


def test_config_defaults_without_a_file(paths: Paths) -> None:
    cfg = load_config(paths, env={})
    assert cfg == Config()
    assert (cfg.host, cfg.port, cfg.allow_remote, cfg.allowed_origins) == (
        "127.0.0.1",
        47821,
        False,
        [],
    )
    assert cfg.max_message_bytes == 16 * 1024 * 1024
    assert (cfg.hello_timeout_s, cfg.heartbeat_s, cfg.tool_call_timeout_s) == (5.0, 20, 30.0)
    assert (cfg.max_in_flight, cfg.max_pending_handshakes, cfg.max_bad_frames) == (64, 32, 20)
    assert (cfg.event_retention, cfg.log_level) == (1000, "INFO")
    assert cfg.llm.model is None and cfg.llm.timeout_s == 120.0 and cfg.llm.max_attempts == 5
    assert cfg.runs.max_concurrent_per_device == 1 and cfg.runs.step_budget == 12
    assert cfg.runs.max_file_bytes == 20 * 1024 * 1024 and cfg.runs.tool_call_budget == 200


def write_config(paths: Paths, text: str) -> None:
    paths.ensure()
    paths.config_toml.write_text(textwrap.dedent(text), encoding="utf-8")


def test_config_file_values_then_env_overrides(paths: Paths) -> None:
    write_config(
        paths,
        """
        port = 50000
        allowed_origins = ["app://tether"]
        log_level = "debug"
        [llm]
        model = "openai/gpt-4o-mini"
        timeout_s = 30
        [runs]
        step_budget = 4
        """,
    )
    cfg = load_config(paths, env={})
    assert cfg.port == 50000 and cfg.allowed_origins == ["app://tether"]
    assert cfg.log_level == "DEBUG"
    assert cfg.llm.model == "openai/gpt-4o-mini" and cfg.llm.timeout_s == 30.0
    assert cfg.runs.step_budget == 4 and cfg.runs.tool_call_budget == 200

    env = {
        "TETHER_MODEL": "ollama/llama3",
        "TETHER_API_BASE": "http://127.0.0.1:11434",
        "TETHER_API_KEY": "sk-test-0123456789",
        "TETHER_PORT": "51000",
        "TETHER_HOST": "::1",
        "TETHER_TOOL_CALL_TIMEOUT_S": "2.5",
        "TETHER_LOG_LEVEL": "warning",
        "TETHER_TOKEN": "",  # empty variables count as unset
    }
    cfg = load_config(paths, env=env)
    assert cfg.llm.model == "ollama/llama3" and cfg.llm.api_base == "http://127.0.0.1:11434"
    assert cfg.llm.api_key == "sk-test-0123456789" and cfg.llm.timeout_s == 30.0
    assert (cfg.port, cfg.host, cfg.tool_call_timeout_s, cfg.log_level) == (
        51000,
        "::1",
        2.5,
        "WARNING",
    )
    assert "sk-test" not in repr(cfg)
    cfg = load_config(paths, env={"TETHER_PORT": ""}, overrides={"port": 0})
    assert cfg.port == 0


def test_bad_toml_names_file_and_line(paths: Paths) -> None:
    write_config(paths, "port = 1\nhost = \n")
    with pytest.raises(ConfigError) as info:
        load_config(paths, env={})
    message = str(info.value)
    assert str(paths.config_toml) in message and "invalid TOML" in message
    assert "line 2" in message


def test_unknown_key_is_named(paths: Paths) -> None:
    write_config(paths, "prot = 1\n[llm]\nmodle = 'x'\n")
    with pytest.raises(ConfigError) as info:
        load_config(paths, env={})
    message = str(info.value)
    assert f"{paths.config_toml}: key 'prot': unknown key (did you mean 'port'?)" in message
    assert "key 'llm.modle': unknown key (did you mean 'model'?)" in message


def test_bad_port_from_env_and_file(paths: Paths) -> None:
    with pytest.raises(ConfigError, match=r"environment variable TETHER_PORT: .*integer.*'http'"):
        load_config(paths, env={"TETHER_PORT": "http"})
    write_config(paths, "port = 70000\n")
    with pytest.raises(ConfigError, match=r"config\.toml: key 'port': .*65535 \(got 70000\)"):
        load_config(paths, env={})


def test_non_loopback_host_needs_allow_remote(paths: Paths) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(paths, env={"TETHER_HOST": "0.0.0.0"})
    assert str(info.value) == (
        "environment variable TETHER_HOST: host 0.0.0.0 is not a loopback address; "
        "set allow_remote = true to bind it"
    )
    write_config(paths, 'host = "0.0.0.0"\n')
    with pytest.raises(ConfigError, match=r"config\.toml: key 'host': host 0\.0\.0\.0 is not"):
        load_config(paths, env={})
    write_config(paths, 'host = "0.0.0.0"\nallow_remote = true\n')
    assert load_config(paths, env={}).host == "0.0.0.0"


def test_secret_config_values_are_not_echoed(paths: Paths) -> None:
    write_config(paths, "[llm]\napi_key = 987654321987\n")
    with pytest.raises(ConfigError, match=r"key 'llm\.api_key'") as info:
        load_config(paths, env={})
    assert "987654321987" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__context__ is None


def test_is_loopback_host() -> None:
    for host in ("localhost", "LOCALHOST", "127.0.0.1", "127.8.9.10", "::1", "[::1]"):
        assert is_loopback_host(host), host
    for host in ("0.0.0.0", "192.168.1.2", "::", "example.com", "128.0.0.1", ""):
        assert not is_loopback_host(host), host


def test_settings_come_from_one_mapping(home: Path) -> None:
    paths = Paths.under(home)
    write_config(paths, "port = 50001\n[llm]\nmodel = 'openai/gpt-4o-mini'\n")
    env = {
        "TETHER_HOME": str(home),
        "TETHER_TOKEN": " token-from-the-app-0123456789 ",
        "TETHER_API_BASE": "http://127.0.0.1:11434",
    }
    settings = load_settings(env, overrides={"log_level": "debug"})
    assert settings.paths == paths  # TETHER_HOME first: that is where config.toml is
    assert settings.config.port == 50001 and settings.config.log_level == "DEBUG"
    assert settings.config.llm.model == "openai/gpt-4o-mini"
    assert settings.config.llm.api_base == "http://127.0.0.1:11434"
    assert settings.token == "token-from-the-app-0123456789"
    assert "token-from-the-app" not in repr(settings)
    unset = load_settings({"TETHER_HOME": str(home), "TETHER_TOKEN": "  "})
    assert unset.token is None  # empty counts as unset: the token file is used
    assert unset == Settings(paths=paths, config=unset.config)


def test_a_configured_api_key_is_redacted_once_read(paths: Paths) -> None:
    key = "k-from-the-environment-0123456789"
    assert redact(f"calling with {key}") == f"calling with {key}"
    assert load_config(paths, env={"TETHER_API_KEY": key}).llm.api_key == key
    assert redact(f"calling with {key}") == "calling with ***"


def _product_modules() -> list[Path]:
    return sorted(p for package in PRODUCT for p in (REPO / package).rglob("*.py"))


def test_only_daemon_config_names_a_tether_variable() -> None:
    """A string that is exactly a variable name (``"TETHER_PORT"``) is a lookup: one module.

    Messages and docs may mention the variables; they are longer strings.
    """
    found = []
    for path in _product_modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and node.value.startswith("TETHER_")
                and node.value.replace("_", "").isalnum()
            ):
                found.append(path.relative_to(REPO).as_posix())
    assert found and set(found) == {"daemon/config.py"}


def test_the_environment_is_read_in_known_places_only() -> None:
    """``os.environ`` / ``getenv``: the CLI's one read, and two that are not ours."""
    allowed = {
        "daemon/cli/common.py",  # the CLI's one read, handed to daemon.config
        "agents/llm.py",  # LITELLM_LOCAL_MODEL_COST_MAP before the lazy import
        "scheduler/cron.py",  # TZ: the system's zone
        "agents/local_dir/policy.py",  # Windows: SystemRoot, ProgramFiles (system folders)
    }
    readers = set()
    for path in _product_modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb"):
                readers.add(path.relative_to(REPO).as_posix())
            if isinstance(node, ast.ImportFrom) and node.module == "os":
                if any(alias.name in ("environ", "getenv") for alias in node.names):
                    readers.add(path.relative_to(REPO).as_posix())
    assert readers == allowed

"""Paths, config, pairing token, runtime file and lock, logs, secrets.

Every test runs with ``TETHER_HOME`` under ``tmp_path``; the keyring tests install
an in-memory keyring backend defined here (the OS keyring is never touched).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keyring
import pytest
from keyring.backend import KeyringBackend
from keyring.backends import fail
from keyring.errors import KeyringLocked, PasswordDeleteError

from daemon.config import Config, is_loopback_host, load_config
from daemon.errors import AlreadyRunning, ConfigError
from daemon.logs import ROOT_LOGGER, log_context, redact, register_secret, setup_logging
from daemon.pairing import read_or_create_token, rotate_token, token_source
from daemon.paths import Paths
from daemon.runtime import (
    InstanceLock,
    RuntimeInfo,
    pid_alive,
    read_runtime,
    remove_runtime,
    write_runtime,
)
from daemon.secrets import CHUNK_UNITS, COUNT_PREFIX, SERVICE, SecretStore

REPO = Path(__file__).resolve().parents[2]
POSIX = os.name == "posix"
posix_only = pytest.mark.skipif(not POSIX, reason="POSIX file modes")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("TETHER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TETHER_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def paths(home: Path) -> Paths:
    return Paths.default()


# ---------------------------------------------------------------- paths


def test_paths_under_tether_home(home: Path) -> None:
    p = Paths.default()
    assert (p.config_dir, p.state_dir, p.log_dir) == (home / "config", home / "state", home / "log")
    assert p.config_toml == home / "config" / "config.toml"
    assert p.agents_toml == home / "config" / "agents.toml"
    assert p.token_file == home / "config" / "token"
    assert p.secrets_file == home / "config" / "secrets.json"
    assert p.state_db == home / "state" / "state.db"
    assert p.runtime_file == home / "state" / "daemon.json"
    assert p.lock_file == home / "state" / "daemon.lock"
    assert p.log_file == home / "log" / "daemon.log"
    assert not p.config_dir.exists()  # nothing is created until ensure()
    p.ensure().ensure()
    for d in (p.config_dir, p.state_dir, p.log_dir):
        assert d.is_dir()
        if POSIX:
            assert mode(d) == 0o700


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG layout is Linux's")
def test_paths_follow_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TETHER_HOME", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "st"))
    p = Paths.default()
    assert p.config_dir == tmp_path / "cfg" / "tether"
    assert p.state_dir == tmp_path / "st" / "tether"
    assert p.log_dir.is_relative_to(tmp_path / "st" / "tether")
    other = Paths.default({"TETHER_HOME": str(tmp_path / "h")})
    assert other.config_dir == tmp_path / "h" / "config"


# ---------------------------------------------------------------- config


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


# ---------------------------------------------------------------- pairing token


def test_token_created_private_and_reused(paths: Paths) -> None:
    token = read_or_create_token(paths, env={})
    assert len(token) >= 43
    assert paths.token_file.read_text() == token
    if POSIX:
        assert mode(paths.token_file) == 0o600
    assert read_or_create_token(paths, env={}) == token
    assert token_source(paths, env={}) == str(paths.token_file)
    assert [p.name for p in paths.config_dir.iterdir()] == ["token"]  # no temp files left


def test_tether_token_env_wins(paths: Paths) -> None:
    env = {"TETHER_TOKEN": "from-the-desktop-app-0123456789"}
    assert read_or_create_token(paths, env=env) == "from-the-desktop-app-0123456789"
    assert not paths.token_file.exists()
    assert token_source(paths, env=env) == "TETHER_TOKEN"


def test_rotate_token_changes_it(paths: Paths) -> None:
    first = read_or_create_token(paths, env={})
    second = rotate_token(paths)
    assert second != first
    assert read_or_create_token(paths, env={}) == second
    if POSIX:
        assert mode(paths.token_file) == 0o600


@posix_only
def test_loose_token_permissions_fixed(paths: Paths, caplog: pytest.LogCaptureFixture) -> None:
    token = read_or_create_token(paths, env={})
    paths.token_file.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="tether"):
        assert read_or_create_token(paths, env={}) == token
    assert mode(paths.token_file) == 0o600
    assert "had mode 644" in caplog.text


def test_empty_token_file_replaced(paths: Paths) -> None:
    paths.ensure()
    paths.token_file.write_text("  \n")
    token = read_or_create_token(paths, env={})
    assert token and paths.token_file.read_text() == token


# ---------------------------------------------------------------- runtime file


def info_for(pid: int, port: int = 43210) -> RuntimeInfo:
    return RuntimeInfo(
        pid=pid,
        port=port,
        host="127.0.0.1",
        version="0.1.0",
        protocol=1,
        started_at="2025-01-01T00:00:00Z",
    )


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_runtime_write_read_remove(paths: Paths) -> None:
    assert read_runtime(paths) is None
    info = RuntimeInfo.for_this_process(port=43210, host="127.0.0.1", version="0.1.0", protocol=1)
    write_runtime(paths, info)
    if POSIX:
        assert mode(paths.runtime_file) == 0o600
    assert read_runtime(paths) == info
    assert json.loads(paths.runtime_file.read_text())["port"] == 43210
    assert remove_runtime(paths) is True
    assert not paths.runtime_file.exists()
    assert remove_runtime(paths) is False  # idempotent


def test_runtime_stale_corrupt_and_foreign(paths: Paths) -> None:
    pid = dead_pid()
    assert not pid_alive(pid) and pid_alive(os.getpid()) and not pid_alive(0)
    write_runtime(paths, info_for(pid))
    assert read_runtime(paths) is None  # stale: ignored
    assert paths.runtime_file.exists()  # ... but a reader deletes nothing
    assert remove_runtime(paths) is False  # not ours
    assert paths.runtime_file.exists()
    for junk in ("{not json", "[]", '{"pid": "1"}', ""):
        paths.runtime_file.write_text(junk)
        assert read_runtime(paths) is None
    paths.runtime_file.write_text(json.dumps({**info_for(os.getpid()).__dict__, "pid": True}))
    assert read_runtime(paths) is None


# ---------------------------------------------------------------- instance lock

PROBE = """
import json, sys
from daemon.errors import AlreadyRunning
from daemon.paths import Paths
from daemon.runtime import InstanceLock
try:
    InstanceLock(Paths.default()).acquire()
except AlreadyRunning as exc:
    print(json.dumps({"pid": exc.pid, "port": exc.port, "message": str(exc)}))
    sys.exit(3)
print("acquired")
"""


def probe_lock(home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TETHER_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_second_instance_in_subprocess_names_pid_and_port(home: Path, paths: Paths) -> None:
    with InstanceLock(paths) as lock:
        assert lock.held
        write_runtime(paths, info_for(os.getpid(), port=43210))
        result = probe_lock(home)
        assert result.returncode == 3, result.stderr
        seen = json.loads(result.stdout)
        assert (seen["pid"], seen["port"]) == (os.getpid(), 43210)
        assert f"pid {os.getpid()}, port 43210" in seen["message"]
        remove_runtime(paths)
    assert not lock.held
    lock.release()  # idempotent
    result = probe_lock(home)
    assert (result.returncode, result.stdout.strip()) == (0, "acquired"), result.stderr


def test_lock_holder_without_runtime_file(paths: Paths) -> None:
    first = InstanceLock(paths)
    first.acquire()
    first.acquire()  # idempotent while held
    try:
        with pytest.raises(AlreadyRunning) as info:
            InstanceLock(paths, runtime_wait_s=0.1).acquire()
        assert (info.value.pid, info.value.port) == (None, None)
        # a stale runtime file from an earlier crash must not be reported as the holder
        write_runtime(paths, info_for(dead_pid()))
        with pytest.raises(AlreadyRunning) as info:
            InstanceLock(paths, runtime_wait_s=0.1).acquire()
        assert info.value.pid is None
    finally:
        first.release()
    with InstanceLock(paths):
        pass


def test_loser_waits_briefly_for_the_holders_runtime_file(paths: Paths) -> None:
    # The holder takes the lock first and writes daemon.json only once it listens.
    with InstanceLock(paths):
        timer = threading.Timer(0.2, write_runtime, (paths, info_for(os.getpid(), port=45678)))
        timer.start()
        try:
            with pytest.raises(AlreadyRunning) as info:
                InstanceLock(paths, runtime_wait_s=5.0).acquire()
        finally:
            timer.join()
        assert (info.value.pid, info.value.port) == (os.getpid(), 45678)


# ---------------------------------------------------------------- logs


@pytest.fixture
def json_log(paths: Paths) -> Iterator[Path]:
    logger = logging.getLogger(ROOT_LOGGER)
    saved = (list(logger.handlers), logger.level, logger.propagate)
    setup_logging(paths, "DEBUG")
    yield paths.log_file
    for handler in logger.handlers[:]:
        if handler not in saved[0]:
            logger.removeHandler(handler)
            handler.close()
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def log_lines(path: Path) -> list[dict[str, Any]]:
    for handler in logging.getLogger(ROOT_LOGGER).handlers:
        handler.flush()
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_logs_are_json_lines_with_context(json_log: Path, paths: Paths) -> None:
    setup_logging(paths, "DEBUG")  # idempotent: still one handler, one line per record
    log = logging.getLogger("tether.test")
    root_handler = ListHandler()
    logging.getLogger().addHandler(root_handler)  # as a library's basicConfig would
    try:
        log.info("plain %d", 1)
    finally:
        logging.getLogger().removeHandler(root_handler)
    assert root_handler.records == []  # our lines go to our handlers only
    with log_context(run_id="run-1", session_id="s-1"):
        with log_context(agent_id="inbox"):
            log.warning("inside", extra={"files": 3, "run_id": "explicit"})
        log.debug("outer only")
    log.info("after")
    lines = log_lines(json_log)
    assert [line["msg"] for line in lines] == ["plain 1", "inside", "outer only", "after"]
    first, inside, outer, after = lines
    assert list(first) == ["ts", "level", "logger", "msg"]
    assert first["level"] == "INFO" and first["logger"] == "tether.test"
    assert first["ts"].endswith("Z") and len(first["ts"]) == len("2025-01-01T00:00:00.000Z")
    assert list(inside)[:7] == ["ts", "level", "logger", "msg", "run_id", "session_id", "agent_id"]
    assert (inside["run_id"], inside["session_id"], inside["agent_id"], inside["files"]) == (
        "explicit",
        "s-1",
        "inbox",
        3,
    )
    assert (outer["run_id"], "agent_id" in outer) == ("run-1", False)
    assert "run_id" not in after
    with pytest.raises(ValueError, match="reserved"), log_context(msg="x"):
        pass


async def test_log_context_is_per_task(json_log: Path) -> None:
    log = logging.getLogger("tether.test")

    async def run(run_id: str) -> None:
        with log_context(run_id=run_id):
            for step in range(3):
                log.info("step %d of %s", step, run_id)
                await asyncio.sleep(0)

    await asyncio.gather(run("a"), run("b"))
    lines = log_lines(json_log)
    assert len(lines) == 6
    assert all(line["msg"].endswith(f"of {line['run_id']}") for line in lines)


def test_log_redaction(json_log: Path) -> None:
    log = logging.getLogger("tether.test")
    token = "pairing-TOKEN-Zx9y8w7v6u5t"
    register_secret(token)
    register_secret("short")  # too short to register: must not mask ordinary words
    log.info("hello from client with token %s", token)
    log.info("headers: Authorization: Bearer abc.def-ghi")
    log.info("llm call with api_key=sk-proj-ABCDEFGH12345678 model=x")
    log.info("frame %s", {"type": "device_hello", "token": "zzz-frame-token", "password": "pw"})
    log.info('raw {"refresh_token": "rt-123", "max_tokens": 512}')
    log.info("extra fields", extra={"api_key": "k-123", "detail": f"used {token}"})
    log.info("a short word stays")
    try:
        raise RuntimeError(f"server rejected token {token}")
    except RuntimeError:
        log.exception("call failed")
    text = json_log.read_text(encoding="utf-8")
    for secret in (token, "abc.def-ghi", "sk-proj", "zzz-frame-token", "'pw'", "rt-123", "k-123"):
        assert secret not in text, secret
    lines = log_lines(json_log)
    assert lines[0]["msg"] == "hello from client with token ***"
    assert lines[1]["msg"] == "headers: Authorization: Bearer ***"
    assert lines[2]["msg"] == "llm call with api_key=*** model=x"
    assert lines[3]["msg"] == "frame {'type': 'device_hello', 'token': '***', 'password': '***'}"
    assert lines[4]["msg"] == 'raw {"refresh_token": "***", "max_tokens": 512}'
    assert (lines[5]["api_key"], lines[5]["detail"]) == ("***", "used ***")
    assert lines[6]["msg"] == "a short word stays"
    assert "RuntimeError: server rejected token ***" in lines[7]["exc"]


def test_redact_edge_cases() -> None:
    assert redact("task-processing-queue is fine") == "task-processing-queue is fine"
    assert redact("key sk-abcdefgh1234") == "key ***"
    assert redact("?access_token=abc123&x=1") == "?access_token=***&x=1"
    assert redact('{\\"token\\": \\"abc\\"}') == '{\\"token\\": \\"***\\"}'
    assert redact("Authorization: Basic dXNlcjpwYXNz") == "Authorization: Basic ***"
    assert redact("usage prompt_tokens=12 max_tokens: 5") == "usage prompt_tokens=12 max_tokens: 5"


def test_stderr_handler_is_redacted(
    paths: Paths, json_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging(paths, "INFO", stderr=True)
    with log_context(run_id="r-9"):
        logging.getLogger("tether.test").warning("password=hunter22 given")
    err = capsys.readouterr().err
    assert "tether.test: password=*** given" in err and "run_id=r-9" in err
    assert "hunter22" not in err and "hunter22" not in json_log.read_text()


# ---------------------------------------------------------------- secrets


class MemoryKeyring(KeyringBackend):
    """An in-memory keyring backend that can be told to fail (an edge fake)."""

    priority = 1

    def __init__(self, fail_with: Exception | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.entries: dict[tuple[str, str], str] = {}
        self.fail_with = fail_with

    def get_password(self, service: str, username: str) -> str | None:
        if self.fail_with:
            raise self.fail_with
        return self.entries.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        if self.fail_with:
            raise self.fail_with
        # the Windows limit this store must respect: 2560 bytes of UTF-16
        assert len(password.encode("utf-16-le")) <= 2560
        self.entries[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        if self.fail_with:
            raise self.fail_with
        if self.entries.pop((service, username), None) is None:
            raise PasswordDeleteError(username)


@pytest.fixture
def use_keyring() -> Iterator[Any]:
    previous = keyring.get_keyring()
    yield keyring.set_keyring
    keyring.set_keyring(previous)


@posix_only
def test_secrets_fall_back_to_private_file(
    paths: Paths, use_keyring: Any, caplog: pytest.LogCaptureFixture
) -> None:
    use_keyring(fail.Keyring())  # type: ignore[no-untyped-call]
    store = SecretStore(paths)
    with caplog.at_level(logging.WARNING, logger="tether"):
        assert store.is_fallback()
        assert store.backend_name() == f"file {paths.secrets_file}"
        assert store.get("gmail:refresh_token") is None
        store.set("gmail:refresh_token", "1//refresh-value")
        store.set("llm:api_key", "sk-abcdefgh12345678")
        SecretStore(paths).set("other", "value-from-a-second-store")
    assert caplog.text.count("no OS keyring available; storing secrets in") == 1
    assert f"{paths.secrets_file} (mode 0600)" in caplog.text
    assert mode(paths.secrets_file) == 0o600
    assert SecretStore(paths).get("gmail:refresh_token") == "1//refresh-value"
    store.delete("gmail:refresh_token")
    store.delete("gmail:refresh_token")  # idempotent
    assert store.get("gmail:refresh_token") is None
    assert store.get("llm:api_key") == "sk-abcdefgh12345678"
    paths.secrets_file.chmod(0o644)
    assert store.get("other") == "value-from-a-second-store"
    assert mode(paths.secrets_file) == 0o600
    paths.secrets_file.write_text("{broken")
    with pytest.raises(ConfigError, match="corrupt"):
        store.get("other")


def test_secrets_chunked_in_keyring(paths: Paths, use_keyring: Any) -> None:
    backend = MemoryKeyring()
    use_keyring(backend)
    store = SecretStore(paths)
    assert not store.is_fallback()
    assert store.backend_name().endswith("MemoryKeyring")
    big = "".join(chr(ord("a") + i % 26) for i in range(4500)) + "\U0001f600" * 700
    store.set("outlook:tokens", big)
    count = int(backend.entries[(SERVICE, "outlook:tokens")].removeprefix(COUNT_PREFIX))
    assert count >= 6
    chunks = [backend.entries[(SERVICE, f"outlook:tokens#{i}")] for i in range(1, count + 1)]
    assert all(len(chunk.encode("utf-16-le")) <= 2 * CHUNK_UNITS for chunk in chunks)
    assert SecretStore(paths).get("outlook:tokens") == big
    store.set("outlook:tokens", "short now")  # stale chunks are removed
    assert set(backend.entries) == {(SERVICE, "outlook:tokens")}
    assert store.get("outlook:tokens") == "short now"
    store.set("tricky", COUNT_PREFIX + "2")  # a value that looks like a count entry
    assert store.get("tricky") == COUNT_PREFIX + "2"
    store.set("outlook:tokens", big)
    del backend.entries[(SERVICE, "outlook:tokens#2")]
    assert store.get("outlook:tokens") is None  # incomplete: treated as missing
    store.delete("outlook:tokens")
    store.delete("tricky")
    assert backend.entries == {}
    assert not paths.secrets_file.exists()
    with pytest.raises(ValueError):
        store.set("bad#key", "x")


def test_keyring_error_switches_to_file(paths: Paths, use_keyring: Any) -> None:
    use_keyring(MemoryKeyring(fail_with=KeyringLocked("locked")))
    store = SecretStore(paths)
    assert not store.is_fallback()
    store.set("teams:refresh_token", "refresh-after-lock")
    assert store.is_fallback()
    assert json.loads(paths.secrets_file.read_text())["secrets"] == {
        "teams:refresh_token": "refresh-after-lock"
    }
    assert store.get("teams:refresh_token") == "refresh-after-lock"


def test_keyring_takes_over_from_the_fallback_file(paths: Paths, use_keyring: Any) -> None:
    use_keyring(fail.Keyring())  # type: ignore[no-untyped-call]
    SecretStore(paths).set("gmail:refresh_token", "stored-while-headless")
    SecretStore(paths).set("llm:api_key", "also-stored-while-headless")
    backend = MemoryKeyring()
    use_keyring(backend)
    store = SecretStore(paths)
    assert store.get("gmail:refresh_token") == "stored-while-headless"  # read-through
    store.set("gmail:refresh_token", "now-in-the-keyring")
    assert backend.entries == {(SERVICE, "gmail:refresh_token"): "now-in-the-keyring"}
    left = json.loads(paths.secrets_file.read_text())["secrets"]
    assert left == {"llm:api_key": "also-stored-while-headless"}  # no stale copy on disk
    store.delete("llm:api_key")
    assert json.loads(paths.secrets_file.read_text())["secrets"] == {}

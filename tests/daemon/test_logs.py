"""daemon.logs: JSON lines with run context, and secrets redacted everywhere."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.logs import ROOT_LOGGER, log_context, redact, register_secret, setup_logging
from daemon.paths import Paths


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

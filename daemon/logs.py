"""Logging: one JSON object per line, with run context, and secrets redacted.

Rules:

- Our modules log under ``tether.*`` (``logging.getLogger("tether.server")``).
  :func:`setup_logging` configures the ``tether`` logger only; third-party loggers
  are left alone. Once it installs a handler, ``tether`` stops propagating to the
  root logger, so a library calling ``logging.basicConfig`` cannot copy our lines
  elsewhere. Without handlers (tests, library use) records propagate as usual.
- Each line of ``daemon.log`` (rotating, 5 MB x 5) has ``ts`` (ISO 8601 UTC,
  milliseconds), ``level``, ``logger``, ``msg``; then ``run_id`` / ``session_id`` /
  ``agent_id`` and other fields from :func:`log_context` and ``extra=``; then
  ``exc`` (the traceback) and ``stack`` when present. Explicit ``extra=`` values win
  over context values of the same name.
- :func:`log_context` keeps its fields in a ``ContextVar``: each asyncio task sees
  the context it was created in, so concurrent runs never mix their ids.
- Every handler we install carries :class:`RedactFilter`, which rewrites the record
  in place before any handler formats it: the message (after ``%`` formatting; the
  args are dropped), ``extra`` fields, the exception text and stack. It replaces
  registered secrets (:func:`register_secret`: the pairing token, API keys, OAuth
  tokens), ``Bearer <credential>``, ``sk-...`` keys, and the values of fields whose
  name says secret (``token``, ``api_key``, ``secret``, ``password``,
  ``authorization``, ... in ``key=value``, ``key: value``, JSON and Python-repr
  forms) with ``***``. Over-redacting is acceptable; leaking is not.
- No line quotes more than ``MAX_MESSAGE_CHARS`` of a message or a string field:
  the rest is cut and the line says how long it was (a client's 15 MB frame must
  not rotate the earlier logs away). The cut happens after redaction, so a secret
  is never split into a visible prefix.
- ``daemon.log`` and its rotated copies are created 0600 whatever the umask (an
  existing file is narrowed to 0600 on start).
- :func:`setup_logging` is idempotent: a second call replaces our handlers.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import logging.handlers
import os
import re
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

from daemon.paths import Paths

__all__ = [
    "LOG_BACKUPS",
    "LOG_MAX_BYTES",
    "MAX_MESSAGE_CHARS",
    "ROOT_LOGGER",
    "JsonFormatter",
    "RedactFilter",
    "TextFormatter",
    "log_context",
    "redact",
    "register_secret",
    "setup_logging",
]

ROOT_LOGGER = "tether"
LOG_MAX_BYTES = 5 * 1024 * 1024
LOG_BACKUPS = 5
MASK = "***"
MAX_MESSAGE_CHARS = 8192
# Redaction runs on at most this much of a huge value (more than the cut plus the
# longest secret, so whatever is cut at this bound lies beyond what is kept).
_REDACT_WINDOW = 4 * MAX_MESSAGE_CHARS
MIN_SECRET_LEN = 8  # shorter values would mask ordinary words all over the log
CONTEXT_FIRST = ("run_id", "session_id", "agent_id")

# Attributes every LogRecord has; anything else on a record came from extra= or context.
_RECORD_ATTRS = frozenset(logging.LogRecord("", logging.INFO, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
_HANDLER_MARK = "_tether_handler"
_REDACTED_MARK = "_tether_redacted"

# ---------------------------------------------------------------------------
# redaction

_SECRET_WORDS = r"(?:token|api[_-]?key|secret|password|passwd|authorization|cookie)"
_SECRET_NAME = re.compile(rf"(?i)[\w.-]*{_SECRET_WORDS}")
_BEARER = re.compile(r"(?i)\b(bearer)\s+(?!\*\*\*)[A-Za-z0-9._~+/=-]+")
_SK_KEY = re.compile(r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_-]{8,}")
_SCHEME = re.compile(r"(?i)(?:bearer|basic|token|digest)\s+")
_KEY_VALUE = re.compile(
    rf"""
    (?P<key>{_SECRET_WORDS}(?:\\?["'])?)   # the name's tail: refresh_token, x-api-key
    (?P<sep>\s*[:=]\s*)
    (?P<val>
        \\"(?:[^"\\]|\\[^"])*\\"            # \"...\" : JSON inside a quoted string
      | "(?:[^"\\]|\\.)*"                   # "..."
      | '(?:[^'\\]|\\.)*'                   # '...'
      | (?:(?:bearer|basic|token|digest)\s+)?[^\s"',;&)}}\]]+
    )
    """,
    re.IGNORECASE | re.VERBOSE,
)

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_secrets_re: re.Pattern[str] | None = None


def register_secret(value: str | None) -> None:
    """Mask ``value`` wherever it appears in a log record from now on.

    Values shorter than 8 characters are ignored (they would mask ordinary words).
    """
    global _secrets_re
    if not value:
        return
    value = value.strip()
    if len(value) < MIN_SECRET_LEN:
        return
    with _secrets_lock:
        if value in _secrets:
            return
        _secrets.add(value)
        ordered = sorted(_secrets, key=len, reverse=True)  # longest first: no partial masks
        _secrets_re = re.compile("|".join(re.escape(s) for s in ordered))


def redact(text: str) -> str:
    """``text`` with registered secrets and secret-looking values replaced by ``***``."""
    pattern = _secrets_re
    if pattern is not None:
        text = pattern.sub(MASK, text)
    text = _BEARER.sub(rf"\1 {MASK}", text)
    text = _SK_KEY.sub(MASK, text)
    return _KEY_VALUE.sub(_mask_value, text)


def _redact_clipped(text: str) -> str:
    """``redact(text)``, cut to ``MAX_MESSAGE_CHARS`` with the original length noted."""
    if len(text) <= MAX_MESSAGE_CHARS:
        return redact(text)
    kept = redact(text[:_REDACT_WINDOW])[:MAX_MESSAGE_CHARS]
    return f"{kept}... [cut: {len(text):,} characters in all]"


def _mask_value(match: re.Match[str]) -> str:
    value = match["val"]
    if value.startswith('\\"'):
        masked = f'\\"{MASK}\\"'
    elif value[0] in "\"'":
        masked = f"{value[0]}{MASK}{value[0]}"
    else:
        scheme = _SCHEME.match(value)
        masked = (scheme.group(0) if scheme else "") + MASK
    return f"{match['key']}{match['sep']}{masked}"


def _redact_field(name: str, value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if name and _SECRET_NAME.fullmatch(name):
        return MASK
    if isinstance(value, str):
        return _redact_clipped(value)
    if isinstance(value, Mapping):
        return {str(k): _redact_field(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_field("", v) for v in value]
    return _redact_clipped(str(value))  # unknown objects: their text, redacted


_plain_formatter = logging.Formatter()


class RedactFilter(logging.Filter):
    """Rewrite a record in place so no handler can see a secret. Never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _REDACTED_MARK, False):
            return True  # already done by another of our handlers
        try:
            message = record.getMessage()
        except Exception:  # bad %-args: keep what we can rather than lose the line
            message = f"{record.msg!s} (unformattable args: {record.args!r})"
        record.msg = _redact_clipped(message)
        record.args = None
        for name, value in list(record.__dict__.items()):
            if name not in _RECORD_ATTRS and not name.startswith("_"):
                record.__dict__[name] = _redact_field(name, value)
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = redact(_plain_formatter.formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        setattr(record, _REDACTED_MARK, True)
        return True


# ---------------------------------------------------------------------------
# context

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "tether_log_context", default=_EMPTY
)


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` to every record logged inside the block (this task/thread only).

    Nested blocks add to the outer fields; a field set to ``None`` is removed.
    """
    bad = sorted(name for name in fields if name in _RECORD_ATTRS or name.startswith("_"))
    if bad:
        raise ValueError(f"log_context: reserved field name(s): {', '.join(bad)}")
    merged = {**_context.get(), **fields}
    token = _context.set(MappingProxyType({k: v for k, v in merged.items() if v is not None}))
    try:
        yield
    finally:
        _context.reset(token)


class _ContextFilter(logging.Filter):
    """Copy the current log_context fields onto the record (explicit extra= wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _context.get().items():
            if name not in record.__dict__:
                record.__dict__[name] = value
        return True


# ---------------------------------------------------------------------------
# formatters


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    extra = {
        name: value
        for name, value in record.__dict__.items()
        if name not in _RECORD_ATTRS and not name.startswith("_")
    }
    ordered = {name: extra.pop(name) for name in CONTEXT_FIRST if name in extra}
    ordered.update(extra)
    return ordered


def _timestamp(record: logging.LogRecord) -> str:
    when = dt.datetime.fromtimestamp(record.created, tz=dt.UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, keys in a fixed order (see the module rules)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name, value in _fields(record).items():
            line.setdefault(name, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """Human-readable lines for stderr: time, level, logger, message, ``key=value`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        when = dt.datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        text = f"{when} {record.levelname:<7} {record.name}: {record.getMessage()}"
        fields = _fields(record)
        if fields:
            text += "  " + " ".join(f"{k}={v}" for k, v in fields.items())
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text += "\n" + record.exc_text
        if record.stack_info:
            text += "\n" + record.stack_info
        return text


# ---------------------------------------------------------------------------
# setup


class _PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating log whose files are created 0600 whatever the umask."""

    def _open(self) -> Any:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(self.baseFilename, flags, 0o600)
        if os.name == "posix":
            os.fchmod(fd, 0o600)  # the umask may have narrowed it; an old file may be wider
        return open(fd, "a", encoding=self.encoding, errors=self.errors)


_context_filter = _ContextFilter()
_redact_filter = RedactFilter()


def setup_logging(paths: Paths | None, level: str | int = "INFO", *, stderr: bool = False) -> None:
    """Send ``tether.*`` records to ``paths.log_file`` (JSON lines) and optionally stderr.

    ``paths=None`` skips the file. Calling it again replaces the handlers it installed.
    Raises ``ValueError`` for an unknown level name.
    """
    logger = logging.getLogger(ROOT_LOGGER)
    logger.setLevel(level.upper() if isinstance(level, str) else level)
    for handler in list(logger.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            logger.removeHandler(handler)
            handler.close()
    handlers: list[logging.Handler] = []
    if paths is not None:
        paths.ensure()
        file_handler = _PrivateRotatingFileHandler(
            paths.log_file, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8"
        )
        file_handler.setFormatter(JsonFormatter())
        handlers.append(file_handler)
    if stderr:
        stream_handler = logging.StreamHandler(sys.stderr)
        stream_handler.setFormatter(TextFormatter())
        handlers.append(stream_handler)
    for handler in handlers:
        handler.addFilter(_context_filter)
        handler.addFilter(_redact_filter)
        setattr(handler, _HANDLER_MARK, True)
        logger.addHandler(handler)
    logger.propagate = not handlers

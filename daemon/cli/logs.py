"""``daemon logs [--follow] [--run ID] [--level L] [-n N]``: the JSON-lines log, readable.

Rules:

- Reads ``daemon.log`` (and, without ``--follow``, its rotated backups
  ``daemon.log.N`` first, oldest first) and prints one line per record:
  ``time level logger: message  run=… key=value``; a line that is not JSON is
  printed as it is (nothing is hidden).
- ``--run ID`` keeps the records whose ``run_id`` is ID (a prefix of 6+ characters
  is enough); ``--level L`` keeps records at L or above. ``-n N`` shows the last N
  matching records (default 50; 0 = all).
- ``--follow`` then polls the file for new lines, and reopens it when it is
  rotated (a new inode or a smaller size) until Ctrl-C.
- :func:`format_record` and :func:`matches` are pure.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from daemon.logs import CONTEXT_FIRST, LOG_BACKUPS

from .common import load_paths

__all__ = ["add_arguments", "format_record", "matches", "parse_line", "run"]

LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
FOLLOW_POLL_S = 0.5
_FIXED = ("ts", "level", "logger", "msg", "exc", "stack")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p.add_argument("--run", metavar="ID", help="only the lines of this run")
    p.add_argument(
        "--level",
        type=str.upper,
        choices=list(LEVELS),
        metavar="LEVEL",
        help="only this level and above (DEBUG, INFO, WARNING, ERROR)",
    )
    p.add_argument("-n", "--lines", type=int, default=50, help="last N lines (0 = all)")
    p.add_argument("--json", action="store_true", help="print the raw JSON lines")
    p.set_defaults(handler=run)


def parse_line(line: str) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def matches(record: dict[str, Any] | None, *, run_id: str | None, level: str | None) -> bool:
    if record is None:  # not JSON: only shown when nothing filters
        return run_id is None and level is None
    if run_id is not None:
        rid = str(record.get("run_id") or "")
        if not rid or not (rid == run_id or (len(run_id) >= 6 and rid.startswith(run_id))):
            return False
    if level is not None:
        return LEVELS.get(str(record.get("level", "")).upper(), 0) >= LEVELS[level]
    return True


def format_record(record: dict[str, Any]) -> str:
    ts = str(record.get("ts", ""))
    try:
        when = dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone()
        shown = when.strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        shown = ts
    text = (
        f"{shown} {record.get('level', '?')!s:<7} "
        f"{str(record.get('logger', '')).removeprefix('tether.')}: {record.get('msg', '')}"
    )
    fields = [
        f"{name.removesuffix('_id')}={str(record[name])[:12] if name == 'run_id' else record[name]}"
        for name in CONTEXT_FIRST
        if name in record
    ]
    fields += [f"{k}={v}" for k, v in record.items() if k not in _FIXED and k not in CONTEXT_FIRST]
    if fields:
        text += "  " + " ".join(fields)
    for key in ("exc", "stack"):
        if record.get(key):
            text += "\n    " + str(record[key]).rstrip().replace("\n", "\n    ")
    return text


def _backups(log_file: Path) -> list[Path]:
    names = [log_file.with_name(f"{log_file.name}.{i}") for i in range(LOG_BACKUPS, 0, -1)]
    return [p for p in names if p.exists()]


def _lines_of(fp: IO[bytes]) -> Iterator[str]:
    """Whole lines from ``fp``'s position on; a partial last line is left unread."""
    while True:
        start = fp.tell()
        chunk = fp.readline()
        if not chunk:
            return
        if not chunk.endswith(b"\n"):
            fp.seek(start)  # the writer is mid-line: read it next time
            return
        yield chunk.decode("utf-8", errors="replace").rstrip("\n")


def _open(path: Path) -> IO[bytes] | None:
    try:
        return path.open("rb")
    except OSError:
        return None


def _emit(line: str, args: argparse.Namespace, out: IO[str]) -> bool:
    record = parse_line(line)
    if not line.strip() or not matches(record, run_id=args.run, level=args.level):
        return False
    out.write((line if args.json or record is None else format_record(record)) + "\n")
    return True


def run(args: argparse.Namespace) -> int:
    paths = load_paths()
    log_file = paths.log_file
    out = sys.stdout
    if not log_file.exists() and not args.follow:
        print(f"no log yet at {log_file} (the daemon writes it once it runs)")
        return 0
    keep = args.lines if args.lines > 0 else None
    tail: collections.deque[str] = collections.deque(maxlen=keep)

    def collect(lines: Iterable[str]) -> None:
        for line in lines:
            if line.strip() and matches(parse_line(line), run_id=args.run, level=args.level):
                tail.append(line)

    current = _open(log_file)  # stays open: --follow goes on from where this read ends
    try:
        for backup in _backups(log_file):
            backup_fp = _open(backup)
            if backup_fp is not None:
                with backup_fp:
                    collect(_lines_of(backup_fp))
        if current is not None:
            collect(_lines_of(current))
        for line in tail:
            _emit(line, args, out)
        out.flush()
        if args.run and not tail and not args.follow:
            print(
                f"no log lines for run {args.run} (see run ids with: daemon runs)",
                file=sys.stderr,
            )
            return 1
        if args.follow:
            current = _follow(log_file, current, args, out)
    finally:
        if current is not None:
            current.close()
    return 0


def _follow(
    log_file: Path, fp: IO[bytes] | None, args: argparse.Namespace, out: IO[str]
) -> IO[bytes] | None:
    """Print lines appended to ``log_file`` until interrupted; survive rotation.
    Returns the handle open at the end (the caller closes it)."""
    inode = os.fstat(fp.fileno()).st_ino if fp is not None else None
    while True:
        if fp is None:
            fp = _open(log_file)
            if fp is None:
                time.sleep(FOLLOW_POLL_S)
                continue
            inode = os.fstat(fp.fileno()).st_ino
        printed = False
        for line in _lines_of(fp):
            printed = _emit(line, args, out) or printed
        if printed:
            out.flush()
        time.sleep(FOLLOW_POLL_S)
        try:
            now = log_file.stat()
        except OSError:
            continue
        if now.st_ino != inode or now.st_size < fp.tell():
            for line in _lines_of(fp):  # the rest of the rotated file first
                _emit(line, args, out)
            fp.close()
            fp = None  # then the new file from its start

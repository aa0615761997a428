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
from daemon.paths import Paths

__all__ = ["add_parser", "format_record", "matches", "parse_line", "run"]

LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
FOLLOW_POLL_S = 0.5
_FIXED = ("ts", "level", "logger", "msg", "exc", "stack")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("logs", help="show the daemon's log, readable; --follow for new lines")
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


def _files(log_file: Path) -> list[Path]:
    backups = [log_file.with_name(f"{log_file.name}.{i}") for i in range(LOG_BACKUPS, 0, -1)]
    return [p for p in (*backups, log_file) if p.exists()]


def _read_lines(files: Iterable[Path]) -> Iterator[str]:
    for path in files:
        try:
            with path.open(encoding="utf-8", errors="replace") as fp:
                yield from (line.rstrip("\n") for line in fp)
        except OSError:
            continue


def _emit(line: str, args: argparse.Namespace, out: IO[str]) -> bool:
    record = parse_line(line)
    if not line.strip() or not matches(record, run_id=args.run, level=args.level):
        return False
    out.write((line if args.json or record is None else format_record(record)) + "\n")
    return True


def run(args: argparse.Namespace) -> int:
    paths = Paths.default()
    log_file = paths.log_file
    out = sys.stdout
    if not log_file.exists() and not args.follow:
        print(f"no log yet at {log_file} (the daemon writes it once it runs)")
        return 0
    keep = args.lines if args.lines > 0 else None
    tail: collections.deque[str] = collections.deque(maxlen=keep)
    for line in _read_lines(_files(log_file)):
        record = parse_line(line)
        if line.strip() and matches(record, run_id=args.run, level=args.level):
            tail.append(line)
    for line in tail:
        _emit(line, args, out)
    out.flush()
    if args.run and not tail and not args.follow:
        print(f"no log lines for run {args.run} (see run ids with: daemon runs)", file=sys.stderr)
        return 1
    if args.follow:
        _follow(log_file, args, out)
    return 0


def _follow(log_file: Path, args: argparse.Namespace, out: IO[str]) -> None:
    """Print lines appended to ``log_file`` until interrupted; survive rotation."""
    fp: IO[bytes] | None = None
    inode: int | None = None
    pending = b""
    first = True
    try:
        while True:
            if fp is None:
                try:
                    fp = log_file.open("rb")
                    inode = os.fstat(fp.fileno()).st_ino
                except OSError:
                    time.sleep(FOLLOW_POLL_S)
                    continue
                if first:  # what is there was printed above
                    fp.seek(0, os.SEEK_END)
                first = False
                pending = b""
            chunk = fp.readline()
            if chunk:
                pending += chunk
                if pending.endswith(b"\n"):
                    line = pending.decode("utf-8", errors="replace").rstrip("\n")
                    pending = b""
                    if _emit(line, args, out):
                        out.flush()
                continue
            time.sleep(FOLLOW_POLL_S)
            try:
                now = log_file.stat()
            except OSError:
                continue
            if now.st_ino != inode or now.st_size < fp.tell():
                fp.close()
                fp = None  # rotated: read the new file from its start
    finally:
        if fp is not None:
            fp.close()

"""Benchmark: rescan of an unchanged tree against ``find ROOT -type f``.

Usage: ``python tests/bench/scan.py [--files N] [--repeats R] [--keep DIR]``
(default 100_000 files, best of 3).

Builds a tree of N small files (about 100 per folder, two folder levels, every
supported extension) in a temporary folder, scans it once to build the index,
then times the rescan and ``find ROOT -type f`` on the same warm tree, runs
interleaved so that background load hits both alike; best of R each.
Target: rescan <= 2x find, 0 files opened, 0 changed.

Two reference figures are printed beside the target, for reading the ratio:
``find -printf '%s %T@'`` (find made to stat every file, as change detection
must; GNU find only) and a bare ``os.scandir`` + ``stat`` loop (the floor for
any Python scan). ``find -type f`` itself stats nothing: it reads the file type
from the directory entries.

Prints a table and a final JSON line; exits 1 when the rescan opened a file,
reported a change or an error.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agents.books import FileRecord
from agents.local_dir.scan import SUPPORTED_EXTENSIONS, ScanResult, ScanRules, scan

PER_DIR = 100


def build_tree(root: Path, files: int) -> None:
    """N files, ``PER_DIR`` per folder, folders grouped ``PER_DIR`` to a parent."""
    exts = sorted(SUPPORTED_EXTENSIONS)
    for i in range(files):
        folder = root / f"g{i // (PER_DIR * PER_DIR):03d}" / f"d{(i // PER_DIR) % PER_DIR:03d}"
        if i % PER_DIR == 0:
            folder.mkdir(parents=True, exist_ok=True)
        ext = exts[i % len(exts)]
        (folder / f"file{i:07d}{ext}").write_bytes(f"file {i}\n".encode())


def bare_walk(root: str) -> int:
    """The least a Python scan can do: list every folder and stat every file."""
    count = 0
    stack = [root]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if entry.is_file(follow_symlinks=False):
                    entry.stat(follow_symlinks=False)
                    count += 1
                elif entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
    return count


def gnu_find_printf() -> bool:
    probe = subprocess.run(
        ["find", "/", "-maxdepth", "0", "-printf", "%s %T@\n"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", help="build the tree here (or reuse it) and keep it")
    args = parser.parse_args(argv)
    if shutil.which("find") is None:
        print("find(1) is not available; cannot measure the baseline", file=sys.stderr)
        return 2

    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="tether-bench-scan-"))
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        root = tmp / f"tree-{args.files}"
        t0 = time.perf_counter()
        if not root.exists():
            build_tree(root, args.files)
        build_s = time.perf_counter() - t0

        rules = ScanRules(roots=(str(root),))
        t0 = time.perf_counter()
        first = scan(rules, {})
        first_s = time.perf_counter() - t0
        index: dict[str, FileRecord] = {f.path: f.record() for f in first.changed}

        rescans: list[ScanResult] = []
        find_cmd = ["find", str(root), "-type", "f"]
        fns: dict[str, Callable[[], object]] = {
            "rescan": lambda: rescans.append(scan(rules, index)),
            "find": lambda: subprocess.run(find_cmd, check=True, stdout=subprocess.DEVNULL),
            "bare_walk": lambda: bare_walk(str(root)),
        }
        if gnu_find_printf():
            stat_cmd = [*find_cmd, "-printf", "%s %T@\n"]
            fns["find_stat"] = lambda: subprocess.run(
                stat_cmd, check=True, stdout=subprocess.DEVNULL
            )
        fns["find"]()  # warm the caches for everyone
        best = time_interleaved(fns, args.repeats)
        last = rescans[-1]
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    ratio = best["rescan"] / best["find"]
    ok = last.files_opened == 0 and not last.changed and not last.errors
    figures: dict[str, object] = {
        "benchmark": "scan",
        "files": args.files,
        "first_scan_s": round(first_s, 3),
        "first_scan_opened": first.files_opened,
        "rescan_s": round(best["rescan"], 4),
        "find_s": round(best["find"], 4),
        "ratio": round(ratio, 2),
        "target_ratio": 2.0,
        "bare_walk_s": round(best["bare_walk"], 4),
        "ratio_to_bare_walk": round(best["rescan"] / best["bare_walk"], 2),
        "find_stat_s": round(best["find_stat"], 4) if "find_stat" in best else None,
        "ratio_to_find_stat": (
            round(best["rescan"] / best["find_stat"], 2) if "find_stat" in best else None
        ),
        "files_seen": last.files_seen,
        "files_opened": last.files_opened,
        "changed": len(last.changed),
        "errors": len(last.errors),
        "ok": ok and ratio <= 2.0,
    }
    rows = [
        ("rescan (s)", f"{best['rescan']:.4f}"),
        ("find -type f (s)", f"{best['find']:.4f}"),
        ("ratio rescan/find, target <= 2", f"{ratio:.2f}"),
        ("ref: find -printf size+mtime (s)", figures["find_stat_s"]),
        ("ref: ratio rescan/find-stat", figures["ratio_to_find_stat"]),
        ("ref: bare scandir+stat loop (s)", f"{best['bare_walk']:.4f}"),
        ("ref: ratio rescan/bare loop", figures["ratio_to_bare_walk"]),
        ("files seen", last.files_seen),
        ("files opened (must be 0)", last.files_opened),
        ("changed (must be 0)", len(last.changed)),
    ]
    print(
        f"tree: {args.files} files (built in {build_s:.1f} s), first scan {first_s:.2f} s, "
        f"best of {args.repeats}, interleaved"
    )
    for label, value in rows:
        print(f"  {label:<36}{value!s:>10}")
    print(json.dumps(figures))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""The scan against real trees in tmp_path: change detection, filters, links, bad input."""

from __future__ import annotations

import hashlib
import os
import sys
import types
from pathlib import Path

import pytest

from agents.books import FileRecord
from agents.local_dir.scan import (
    SUPPORTED_EXTENSIONS,
    ScanResult,
    ScanRules,
    format_size,
    scan,
)

needs_symlinks = pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")


def _modes_are_enforced() -> bool:
    """False for root (or a process with CAP_DAC_OVERRIDE): it reads mode-000 files."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe"
        probe.write_text("x")
        probe.chmod(0)
        try:
            probe.read_text()
        except PermissionError:
            return True
        return False


needs_enforced_modes = pytest.mark.skipif(
    os.name == "nt" or not _modes_are_enforced(),
    reason="this user reads files whatever their mode (root): run as a normal user to test",
)


def write(path: Path, content: str = "content") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def index_of(
    result: ScanResult, previous: dict[str, FileRecord] | None = None
) -> dict[str, FileRecord]:
    """What the caller stores after processing every changed file and refreshing touched."""
    index = dict(previous or {})
    for path in result.missing:
        index.pop(path, None)
    for f in result.changed:
        index[f.path] = f.record()
    for rec in result.touched:
        index[rec.path] = rec
    return index


def paths(result: ScanResult) -> list[str]:
    return [f.path for f in result.changed]


def bump_mtime(path: Path, seconds: int = 10) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 1_000_000_000))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    write(root / "a.txt", "alpha")
    write(root / "notes" / "b.md", "# beta")
    write(root / "notes" / "deep" / "c.csv", "x,y\n1,2\n")
    write(root / "notes" / "deep" / "deeper" / "d.json", '{"d": 1}')
    return root


# --- change detection --------------------------------------------------------------------


def test_first_scan_reports_every_file_as_new(tree: Path) -> None:
    result = scan(ScanRules(roots=(str(tree),)), {})
    expected = sorted(str(p) for p in tree.rglob("*") if p.is_file())
    assert paths(result) == expected
    assert all(f.is_new and f.root == str(tree) for f in result.changed)
    a = next(f for f in result.changed if f.path.endswith("a.txt"))
    assert a.sha256 == sha(tree / "a.txt")
    assert a.size == 5
    assert a.mtime_ns == (tree / "a.txt").stat().st_mtime_ns
    assert a.record() == FileRecord(a.path, 5, a.mtime_ns, a.sha256)
    assert result.files_opened == 4
    assert result.files_seen == 4
    assert (result.unchanged, result.touched, result.missing, result.errors) == (0, [], [], [])


def test_rescan_of_an_unchanged_tree_opens_nothing(tree: Path) -> None:
    rules = ScanRules(roots=(str(tree),))
    index = index_of(scan(rules, {}))
    again = scan(rules, index)
    assert again.files_opened == 0
    assert again.changed == [] and again.touched == [] and again.missing == []
    assert again.unchanged == 4
    assert again.files_seen == 4


def test_touched_file_is_hashed_but_not_changed(tree: Path) -> None:
    rules = ScanRules(roots=(str(tree),))
    index = index_of(scan(rules, {}))
    target = tree / "notes" / "b.md"
    bump_mtime(target)
    result = scan(rules, index)
    assert result.files_opened == 1
    assert result.changed == []
    assert result.touched == [
        FileRecord(str(target), target.stat().st_size, target.stat().st_mtime_ns, sha(target))
    ]
    assert result.unchanged == 3
    # once the caller refreshes the stat, the next scan opens nothing
    assert scan(rules, index_of(result, index)).files_opened == 0


def test_changed_content_is_changed(tree: Path) -> None:
    rules = ScanRules(roots=(str(tree),))
    index = index_of(scan(rules, {}))
    target = tree / "a.txt"
    target.write_text("ALPHA")  # same size
    bump_mtime(target)
    result = scan(rules, index)
    assert paths(result) == [str(target)]
    changed = result.changed[0]
    assert not changed.is_new
    assert changed.sha256 == sha(target) != index[str(target)].sha256
    assert result.files_opened == 1


def test_new_file_next_to_indexed_ones(tree: Path) -> None:
    rules = ScanRules(roots=(str(tree),))
    index = index_of(scan(rules, {}))
    new = write(tree / "notes" / "new.txt", "fresh")
    result = scan(rules, index)
    assert [(f.path, f.is_new) for f in result.changed] == [(str(new), True)]
    assert result.files_opened == 1


def test_deleted_file_is_missing(tree: Path) -> None:
    rules = ScanRules(roots=(str(tree),))
    index = index_of(scan(rules, {}))
    (tree / "notes" / "deep" / "c.csv").unlink()
    result = scan(rules, index)
    assert result.missing == [str(tree / "notes" / "deep" / "c.csv")]
    assert result.changed == [] and result.files_opened == 0


def test_indexed_paths_out_of_scope_are_missing(tree: Path) -> None:
    index = index_of(scan(ScanRules(roots=(str(tree),)), {}))
    index["/elsewhere/old.txt"] = FileRecord("/elsewhere/old.txt", 1, 1, "0" * 64)
    result = scan(ScanRules(roots=(str(tree),), exclude=("deep",)), index)
    assert result.missing == sorted(
        [
            "/elsewhere/old.txt",
            str(tree / "notes" / "deep" / "c.csv"),
            str(tree / "notes" / "deep" / "deeper" / "d.json"),
        ]
    )


def test_output_is_sorted_and_deterministic(tmp_path: Path) -> None:
    root = tmp_path / "r"
    for name in ["z.txt", "m.txt", "a.txt", "k/b.txt", "c/y.md"]:
        write(root / name, name)
    rules = ScanRules(roots=(str(root),))
    first = scan(rules, {})
    assert paths(first) == sorted(paths(first))
    assert scan(rules, {}) == first


# --- filters -----------------------------------------------------------------------------


def test_hidden_files_and_folders_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / "r"
    write(root / "visible.txt")
    write(root / ".hidden.txt")
    write(root / ".git" / "config.txt")
    write(root / "sub" / ".cache" / "deep" / "x.md")
    write(root / "sub" / "ok.md")
    result = scan(ScanRules(roots=(str(root),)), {})
    assert paths(result) == [str(root / "sub" / "ok.md"), str(root / "visible.txt")]


@needs_symlinks
def test_hidden_folders_are_not_entered(tmp_path: Path) -> None:
    root = tmp_path / "r"
    (root / ".git").mkdir(parents=True)
    os.symlink("/nonexistent/target", root / ".git" / "broken.txt")
    result = scan(ScanRules(roots=(str(root),)), {})
    assert result.errors == []


def test_extensions_filter_is_case_insensitive_and_normalised(tmp_path: Path) -> None:
    root = tmp_path / "r"
    for name in ["a.md", "B.MD", "c.txt", "d.pdf", "e.Pdf", "noext", "f.rtf", "g.md.bak"]:
        write(root / name)
    result = scan(ScanRules(roots=(str(root),), extensions=frozenset({".md", "PDF"})), {})
    assert [Path(p).name for p in paths(result)] == ["B.MD", "a.md", "d.pdf", "e.Pdf"]
    everything = scan(ScanRules(roots=(str(root),), extensions=frozenset()), {})
    assert {Path(p).suffix.lower() for p in paths(everything)} <= SUPPORTED_EXTENSIONS
    assert len(everything.changed) == 5


def test_unsupported_extension_in_rules_is_reported(tmp_path: Path) -> None:
    write(tmp_path / "r" / "a.rtf")
    result = scan(ScanRules(roots=(str(tmp_path / "r"),), extensions=frozenset({".rtf"})), {})
    assert result.changed == []
    assert result.errors == ["extension '.rtf' is not supported; ignored"]


@needs_symlinks
def test_exclude_globs(tmp_path: Path) -> None:
    root = tmp_path / "r"
    keep = [
        "keep.txt",
        "sub/drafts/kept-because-not-top-level.md",
        "build/top-level-build-is-fine.json",
        "docs/readme.md",
    ]
    drop = [
        "scratch.bak.md",
        "node_modules/pkg/readme.md",
        "deep/er/node_modules/x.txt",
        "drafts/one.md",
        "drafts/nested/two.md",
        "src/build/out.json",
        "a/b/build/out.json",
    ]
    for name in keep + drop:
        write(root / name)
    # a broken link inside an excluded folder proves the folder is not even entered
    os.symlink("/nonexistent", root / "node_modules" / "dangling.txt")
    rules = ScanRules(
        roots=(str(root),),
        exclude=("*.bak.md", "node_modules", "drafts/**", "**/*/build/*.json"),
    )
    result = scan(rules, {})
    assert paths(result) == sorted(str(root / k) for k in keep)
    assert result.errors == []


def test_exclude_star_does_not_cross_folders(tmp_path: Path) -> None:
    root = tmp_path / "r"
    write(root / "notes" / "a.md")
    write(root / "notes" / "sub" / "b.md")
    result = scan(ScanRules(roots=(str(root),), exclude=("notes/*.md",)), {})
    assert paths(result) == [str(root / "notes" / "sub" / "b.md")]


def test_file_over_the_size_limit_is_skipped_with_an_entry(tmp_path: Path) -> None:
    root = tmp_path / "r"
    small = write(root / "small.txt", "0123456789")
    big = write(root / "big.txt", "0123456789A")
    rules = ScanRules(roots=(str(root),), max_file_bytes=10)
    result = scan(rules, {})
    assert paths(result) == [str(small)]
    assert result.errors == [f"skipped {big}: 11 bytes is over the 10 bytes limit"]
    assert result.files_opened == 1
    # a file that grew over the limit is not reported missing (it is still there)
    index = {str(big): FileRecord(str(big), 3, 1, "0" * 64)}
    assert scan(rules, index).missing == []


def test_200_mb_sparse_file_is_skipped_without_being_opened(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    huge = root / "huge.txt"
    with huge.open("wb") as fh:
        fh.truncate(200 * 1024 * 1024)
    result = scan(ScanRules(roots=(str(root),)), {})
    assert result.changed == []
    assert result.files_opened == 0
    assert result.errors == [f"skipped {huge}: 200 MB is over the 20 MB limit"]


def test_format_size() -> None:
    assert format_size(0) == "0 bytes"
    assert format_size(1536) == "1.5 KB"
    assert format_size(20 * 1024 * 1024) == "20 MB"
    assert format_size(210 * 1000 * 1000) == "200 MB"
    assert format_size(3 * 1024**4) == "3072 GB"


def test_fifo_is_ignored_not_opened(tmp_path: Path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    root = tmp_path / "r"
    root.mkdir()
    os.mkfifo(root / "pipe.txt")  # opening it for reading would block forever
    write(root / "a.txt")
    result = scan(ScanRules(roots=(str(root),)), {})
    assert paths(result) == [str(root / "a.txt")]
    assert result.errors == []


# --- symlinks ----------------------------------------------------------------------------


@needs_symlinks
def test_symlink_to_a_scanned_file_is_a_duplicate(tmp_path: Path) -> None:
    root = tmp_path / "r"
    target = write(root / "real" / "doc.md", "shared")
    os.symlink(target, root / "alias.md")
    os.symlink("real", root / "alias-dir")
    result = scan(ScanRules(roots=(str(root),)), {})
    assert paths(result) == [str(target)]
    assert result.errors == []
    rescan = scan(ScanRules(roots=(str(root),)), index_of(result))
    assert rescan.files_opened == 0 and rescan.unchanged == 1 and rescan.missing == []


@needs_symlinks
def test_symlink_to_a_file_the_scan_skips_is_kept_under_the_link(tmp_path: Path) -> None:
    root = tmp_path / "r"
    target = write(root / ".private" / "plan.md", "linked on purpose")
    os.symlink(target, root / "plan.md")
    os.symlink(root / ".private", root / "private-notes")
    result = scan(ScanRules(roots=(str(root),)), {})
    # the file link is kept; the folder link leads to the same file, already kept
    assert paths(result) == [str(root / "plan.md")]
    assert result.changed[0].sha256 == sha(target)
    index = index_of(result)
    assert scan(ScanRules(roots=(str(root),)), index).files_opened == 0
    target.write_text("linked on purpose, edited")
    again = scan(ScanRules(roots=(str(root),)), index)
    assert paths(again) == [str(root / "plan.md")]


@needs_symlinks
def test_symlinked_folder_inside_the_roots_is_walked_under_the_link(tmp_path: Path) -> None:
    root = tmp_path / "r"
    write(root / ".archive" / "2023" / "old.md", "old")
    os.symlink(root / ".archive", root / "archive")
    result = scan(ScanRules(roots=(str(root),)), {})
    assert paths(result) == [str(root / "archive" / "2023" / "old.md")]


@needs_symlinks
def test_symlinks_outside_the_roots_are_errors(tmp_path: Path) -> None:
    root = tmp_path / "r"
    outside = tmp_path / "outside"
    secret = write(outside / "secret.txt", "do not read")
    write(outside / "more" / "x.md")
    write(root / "ok.txt")
    os.symlink(secret, root / "leak.txt")
    os.symlink(outside, root / "leakdir")
    result = scan(ScanRules(roots=(str(root),)), {})
    assert paths(result) == [str(root / "ok.txt")]
    assert result.files_opened == 1
    outside_msg = "is outside the agent's folders"
    assert result.errors == [
        f"skipped {root / 'leak.txt'}: symlink to {secret.resolve()} {outside_msg}",
        f"skipped {root / 'leakdir'}: symlink to {outside.resolve()} {outside_msg}",
    ]


@needs_symlinks
@pytest.mark.timeout(20)
def test_symlink_loops_do_not_hang(tmp_path: Path) -> None:
    root = tmp_path / "r"
    write(root / "sub" / "a.txt")
    os.symlink(root, root / "sub" / "up")  # a folder link to an ancestor
    os.symlink(root / "sub", root / "sub" / "self")
    os.symlink("b.txt", root / "a-loop.txt")  # a -> b -> a
    os.symlink("a-loop.txt", root / "b.txt")
    os.symlink("nowhere.txt", root / "broken.txt")
    result = scan(ScanRules(roots=(str(root),)), {})
    assert paths(result) == [str(root / "sub" / "a.txt")]
    assert result.errors == [
        f"skipped {root / 'a-loop.txt'}: symlink loop",
        f"skipped {root / 'b.txt'}: symlink loop",
        f"skipped {root / 'broken.txt'}: broken symlink to nowhere.txt",
    ]


@needs_symlinks
def test_root_given_through_a_symlink_reports_paths_under_it(tmp_path: Path) -> None:
    real = tmp_path / "real"
    write(real / "a.txt")
    os.symlink(real, tmp_path / "link")
    result = scan(ScanRules(roots=(str(tmp_path / "link"),)), {})
    assert paths(result) == [str(tmp_path / "link" / "a.txt")]


# --- roots and bad input -----------------------------------------------------------------


def test_bad_roots_are_errors_and_the_good_ones_are_scanned(tmp_path: Path) -> None:
    good = tmp_path / "good"
    write(good / "a.txt")
    a_file = write(tmp_path / "file.txt")
    gone = tmp_path / "gone"
    rules = ScanRules(roots=(str(gone), str(a_file), "relative/dir", "", str(good)))
    index = {str(gone / "x.txt"): FileRecord(str(gone / "x.txt"), 1, 1, "0" * 64)}
    result = scan(rules, index)
    assert paths(result) == [str(good / "a.txt")]
    assert result.errors == sorted(
        [
            f"root not found: {gone}",
            f"root is not a directory: {a_file}",
            "root is not an absolute path: 'relative/dir'",
            "root is not an absolute path: ''",
        ]
    )
    # an unplugged drive must not make the caller forget what it processed
    assert result.missing == []


def test_overlapping_roots_are_walked_once(tmp_path: Path) -> None:
    outer = tmp_path / "outer"
    write(outer / "a.txt")
    write(outer / "inner" / "b.txt")
    both = scan(ScanRules(roots=(str(outer), str(outer / "inner") + os.sep)), {})
    assert paths(both) == [str(outer / "a.txt"), str(outer / "inner" / "b.txt")]
    assert both.changed[1].root == str(outer)


def test_empty_roots_scan_nothing() -> None:
    result = scan(ScanRules(roots=()), {})
    assert result == ScanResult()


@needs_enforced_modes
def test_unreadable_file_is_an_error_and_not_missing(tmp_path: Path) -> None:
    root = tmp_path / "r"
    locked = write(root / "locked.txt")
    write(root / "ok.txt")
    locked.chmod(0)
    try:
        index = {str(locked): FileRecord(str(locked), 1, 1, "0" * 64)}
        result = scan(ScanRules(roots=(str(root),)), index)
    finally:
        locked.chmod(0o644)
    assert paths(result) == [str(root / "ok.txt")]
    assert result.errors == [f"cannot read {locked}: permission denied"]
    assert result.missing == []


@needs_enforced_modes
def test_unreadable_folder_is_an_error_and_the_scan_goes_on(tmp_path: Path) -> None:
    root = tmp_path / "r"
    locked = root / "locked"
    inside = write(locked / "a.txt")
    write(root / "ok.txt")
    locked.chmod(0)
    try:
        index = {str(inside): FileRecord(str(inside), 1, 1, "0" * 64)}
        result = scan(ScanRules(roots=(str(root),)), index)
    finally:
        locked.chmod(0o755)
    assert paths(result) == [str(root / "ok.txt")]
    assert result.errors == [f"cannot read folder {locked}: permission denied"]
    assert result.missing == []


def test_deep_tree_needs_no_recursion(tmp_path: Path) -> None:
    root = tmp_path / "r"
    deep = root
    for _ in range(150):
        deep = deep / "d"
    write(deep / "bottom.txt")
    depth = 0
    frame: types.FrameType | None = sys._getframe()
    while frame is not None:
        depth, frame = depth + 1, frame.f_back
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + 50)  # far less than the tree is deep
    try:
        result = scan(ScanRules(roots=(str(root),)), {})
    finally:
        sys.setrecursionlimit(limit)
    assert paths(result) == [str(deep / "bottom.txt")]

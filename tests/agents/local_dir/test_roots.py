"""The file tools' confinement and data, on real trees in tmp_path."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from agents.errors import PathOutsideRoots, ToolError
from agents.local_dir.roots import (
    get_file_metadata,
    list_directory,
    read_file_content,
    resolve_within,
)
from tests.agents.local_dir.builders import write_pdf

needs_symlinks = pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
MAY_1_2024 = 1_714_555_800  # 2024-05-01T09:30:00Z


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "docs" / "deep").mkdir(parents=True)
    (r / "docs" / "plan.md").write_text("# Plan\nship it")
    (r / "docs" / "deep" / "x.txt").write_text("deep")
    (r / "readme.txt").write_text("hello")
    (r / ".env").write_text("API_KEY=secret")
    (r / ".git").mkdir()
    (r / "image.bin").write_bytes(b"\x00\x01")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("top secret")
    return r


# --- resolve_within ----------------------------------------------------------------------


def test_paths_inside_resolve(root: Path) -> None:
    roots = [str(root)]
    assert (
        resolve_within(roots, str(root / "docs" / "plan.md"))
        == (root / "docs" / "plan.md").resolve()
    )
    assert resolve_within(roots, "docs/plan.md") == (root / "docs" / "plan.md").resolve()
    assert resolve_within(roots, str(root)) == root.resolve()
    assert resolve_within(roots, "docs/deep/../plan.md") == (root / "docs" / "plan.md").resolve()


def test_relative_paths_use_the_first_root(tmp_path: Path, root: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    assert resolve_within([str(other), str(root)], "x.txt") == (other / "x.txt").resolve()


@pytest.mark.parametrize(
    "path",
    ["../outside/secret.txt", "docs/../../outside/secret.txt", "/etc/passwd", "..", "/"],
)
def test_dot_dot_and_absolute_escapes_are_refused(root: Path, path: str) -> None:
    with pytest.raises(PathOutsideRoots, match="is outside the agent's folders"):
        resolve_within([str(root)], path)


def test_sibling_with_a_common_prefix_is_outside(tmp_path: Path, root: Path) -> None:
    sibling = tmp_path / "root-evil"
    sibling.mkdir()
    with pytest.raises(PathOutsideRoots):
        resolve_within([str(root)], str(sibling))


@needs_symlinks
def test_symlinks_out_of_the_roots_are_refused(tmp_path: Path, root: Path) -> None:
    os.symlink(tmp_path / "outside" / "secret.txt", root / "link.txt")
    os.symlink(tmp_path / "outside", root / "linkdir")
    for path in ("link.txt", "linkdir/secret.txt", str(root / "linkdir")):
        with pytest.raises(PathOutsideRoots):
            resolve_within([str(root)], path)
    with pytest.raises(ToolError, match="outside"):
        read_file_content([str(root)], "link.txt")


@needs_symlinks
def test_symlinks_inside_the_roots_resolve_to_their_target(root: Path) -> None:
    os.symlink(root / "docs", root / "shortcut")
    assert resolve_within([str(root)], "shortcut/plan.md") == (root / "docs" / "plan.md").resolve()


def test_hidden_paths_are_refused(root: Path) -> None:
    for path in (".env", ".git", str(root / ".env")):
        with pytest.raises(ToolError, match="hidden"):
            resolve_within([str(root)], path)


def test_a_root_inside_a_hidden_folder_still_works(tmp_path: Path) -> None:
    root = tmp_path / ".notes"
    root.mkdir()
    (root / "a.md").write_text("a")
    assert resolve_within([str(root)], "a.md") == (root / "a.md").resolve()


def test_no_roots_means_nothing_is_inside(root: Path) -> None:
    with pytest.raises(PathOutsideRoots):
        resolve_within([], str(root / "readme.txt"))
    with pytest.raises(PathOutsideRoots):
        resolve_within(["relative/only"], "readme.txt")


def test_nul_in_path_is_refused(root: Path) -> None:
    with pytest.raises(PathOutsideRoots):
        resolve_within([str(root)], "readme.txt\0.md")


# --- list_directory ----------------------------------------------------------------------


@needs_symlinks
def test_list_directory(tmp_path: Path, root: Path) -> None:
    os.utime(root / "readme.txt", (MAY_1_2024, MAY_1_2024))
    os.symlink(tmp_path / "outside", root / "escape")
    os.symlink(root / "docs" / "plan.md", root / "plan-link.md")
    entries = list_directory([str(root)], str(root))
    assert [(e["name"], e["kind"]) for e in entries] == [
        ("docs", "dir"),
        ("image.bin", "file"),
        ("plan-link.md", "file"),
        ("readme.txt", "file"),
    ]
    readme = entries[3]
    assert readme == {
        "name": "readme.txt",
        "path": str((root / "readme.txt").resolve()),
        "kind": "file",
        "size": 5,
        "modified": "2024-05-01T09:30:00Z",
    }
    assert entries[0]["size"] is None and ISO_UTC.match(entries[0]["modified"])
    assert entries[2]["path"] == str((root / "docs" / "plan.md").resolve())


def test_list_directory_limit_and_relative_path(root: Path) -> None:
    for i in range(30):
        (root / "docs" / f"n{i:02d}.txt").write_text("x")
    entries = list_directory([str(root)], "docs", limit=5)
    assert [e["name"] for e in entries] == ["deep", "n00.txt", "n01.txt", "n02.txt", "n03.txt"]


def test_list_directory_refuses_files_and_missing_folders(root: Path) -> None:
    with pytest.raises(ToolError, match="not a folder"):
        list_directory([str(root)], "readme.txt")
    with pytest.raises(ToolError, match="does not exist"):
        list_directory([str(root)], "nope")
    with pytest.raises(PathOutsideRoots):
        list_directory([str(root)], "..")


# --- get_file_metadata -------------------------------------------------------------------


def test_get_file_metadata(root: Path) -> None:
    os.utime(root / "docs" / "plan.md", (MAY_1_2024, MAY_1_2024))
    meta = get_file_metadata([str(root)], "docs/plan.md")
    assert meta == {
        "path": str((root / "docs" / "plan.md").resolve()),
        "kind": "file",
        "size": len("# Plan\nship it"),
        "modified": "2024-05-01T09:30:00Z",
        "extension": ".md",
        "supported": True,
    }
    assert get_file_metadata([str(root)], "image.bin")["supported"] is False
    assert get_file_metadata([str(root)], "docs")["kind"] == "dir"
    with pytest.raises(ToolError, match="does not exist"):
        get_file_metadata([str(root)], "missing.txt")


# --- read_file_content -------------------------------------------------------------------


def test_read_file_content_pages_through_the_text(root: Path) -> None:
    text = "".join(f"{i:04d}\n" for i in range(100))  # 500 characters
    (root / "long.txt").write_text(text)
    first = read_file_content([str(root)], "long.txt", max_chars=200)
    assert first == {
        "path": str((root / "long.txt").resolve()),
        "text": text[:200],
        "offset": 0,
        "returned_chars": 200,
        "total_chars": 500,
        "truncated": True,
    }
    last = read_file_content([str(root)], "long.txt", offset=400, max_chars=200)
    assert (last["text"], last["returned_chars"], last["truncated"]) == (text[400:], 100, False)
    past = read_file_content([str(root)], "long.txt", offset=900)
    assert (past["text"], past["returned_chars"], past["truncated"]) == ("", 0, False)


def test_read_file_content_sees_edits(root: Path) -> None:
    p = root / "readme.txt"
    assert read_file_content([str(root)], "readme.txt")["text"] == "hello"
    p.write_text("hello again")
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert read_file_content([str(root)], "readme.txt")["text"] == "hello again"


def test_read_file_content_extracts_pdf(root: Path) -> None:
    write_pdf(root / "docs" / "report.pdf", ["Quarterly numbers"])
    assert read_file_content([str(root)], "docs/report.pdf")["text"] == "Quarterly numbers"


def test_read_file_content_errors_are_tool_errors(root: Path) -> None:
    (root / "fake.pdf").write_text("not a pdf")
    with pytest.raises(ToolError, match="not a valid PDF"):
        read_file_content([str(root)], "fake.pdf")
    with pytest.raises(ToolError, match="not supported"):
        read_file_content([str(root)], "image.bin")
    with pytest.raises(ToolError, match="is a folder"):
        read_file_content([str(root)], "docs")
    with pytest.raises(ToolError, match="does not exist"):
        read_file_content([str(root)], "missing.txt")
    with pytest.raises(ToolError, match="offset"):
        read_file_content([str(root)], "readme.txt", offset=-1)
    with pytest.raises(ToolError, match="max_chars"):
        read_file_content([str(root)], "readme.txt", max_chars=0)
    with pytest.raises(ToolError, match="hidden"):
        read_file_content([str(root)], ".env")

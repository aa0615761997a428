"""No check-then-open race: a file or folder swapped for a link after the check is
refused, never followed — over real files, in process and through a real run."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from agents.books import FileRecord
from agents.errors import ExtractError
from agents.llm import LiteLLM, LLMSettings
from agents.local_dir.roots import read_file_content
from agents.local_dir.safe_open import open_parts, read_under_roots, resolve_under_roots
from agents.local_dir.source import LocalDirectorySource
from agents.pipeline import run_pipeline
from agents.run import RunContext
from protocol.agent_config import LocalDirectoryAgent
from tests.support import inotify
from tests.support.agent_model import OfficeModel
from tests.support.llm_server import FakeLLMServer
from tests.support.stores import SqliteBackedStore

SECRET = "root:$6$never-to-leave-the-machine$:19000:0:99999:7:::"
posix_only = pytest.mark.skipif(os.name != "posix", reason="symlinks and dir_fd opens")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "notes.md").write_text("TASK: Water the plants\n")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "shadow.md").write_text(SECRET)
    return root


def swap_for_link(path: Path, target: Path) -> None:
    link = path.with_name(path.name + ".tmp-link")
    link.symlink_to(target)
    os.replace(link, path)


@posix_only
def test_a_file_swapped_for_a_link_after_the_check_is_refused(tree: Path) -> None:
    path = str(tree / "sub" / "notes.md")
    root, parts = resolve_under_roots(path, [str(tree)])
    swap_for_link(tree / "sub" / "notes.md", tree.parent / "outside" / "shadow.md")
    with pytest.raises(ExtractError, match="became a link"):
        open_parts(path, root, parts)


@posix_only
def test_a_folder_swapped_for_a_link_after_the_check_is_refused(tree: Path) -> None:
    path = str(tree / "sub" / "notes.md")
    root, parts = resolve_under_roots(path, [str(tree)])
    shutil.rmtree(tree / "sub")
    (tree / "sub").symlink_to(tree.parent / "outside")
    (tree.parent / "outside" / "notes.md").write_text(SECRET)
    with pytest.raises(ExtractError, match="became a link"):
        open_parts(path, root, parts)


@posix_only
def test_links_inside_the_roots_still_read_and_links_out_are_refused(tree: Path) -> None:
    (tree / "alias.md").symlink_to(tree / "sub" / "notes.md")
    assert b"Water" in read_under_roots(str(tree / "alias.md"), [str(tree)], 1000)
    (tree / "out.md").symlink_to(tree.parent / "outside" / "shadow.md")
    with pytest.raises(ExtractError, match="outside"):
        read_under_roots(str(tree / "out.md"), [str(tree)], 1000)


@posix_only
@pytest.mark.timeout(10)
def test_a_fifo_is_refused_without_hanging(tree: Path) -> None:
    os.mkfifo(tree / "pipe.md")
    with pytest.raises(ExtractError, match="not a regular file"):
        read_under_roots(str(tree / "pipe.md"), [str(tree)], 1000)


def test_content_that_differs_from_the_scan_is_refused(tree: Path) -> None:
    path = str(tree / "sub" / "notes.md")
    with pytest.raises(ExtractError, match="changed since the scan"):
        read_under_roots(path, [str(tree)], 1000, expect_sha256="0" * 64)


class _Books:
    def __init__(self) -> None:
        self.files: dict[str, FileRecord] = {}
        self.cursors: dict[str, str] = {}

    def file_index(self) -> dict[str, FileRecord]:
        return dict(self.files)

    def record_file(self, rec: FileRecord) -> None:
        self.files[rec.path] = rec

    def forget_files(self, paths: Any) -> None:
        for p in paths:
            self.files.pop(p, None)

    def processed_ids(self, provider: str, account: str, ids: Any) -> set[str]:
        return set()

    def mark_processed(self, provider: str, account: str, message_id: str) -> None:
        pass

    def get_cursor(self, key: str) -> str | None:
        return self.cursors.get(key)

    def set_cursor(self, key: str, value: str) -> None:
        self.cursors[key] = value


async def _progress(phase: str, done: int, total: int, detail: str | None) -> None:
    return None


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(responder=OfficeModel()) as s:
        yield s


def context(root: Path, store: SqliteBackedStore, server: FakeLLMServer) -> RunContext:
    agent = LocalDirectoryAgent(
        id="a",
        name="a",
        kind="local_directory",
        schedule_cron="0 * * * *",
        directory_paths=[str(root)],
        data_types=["tasks", "notes", "timelines"],
    )
    llm = LiteLLM(
        LLMSettings(model="openai/office", api_base=server.base_url, timeout_s=10, max_attempts=1)
    )
    return RunContext(
        run_id="r",
        agent=agent,
        store=store,
        llm=llm,
        books=_Books(),
        progress=_progress,
        cancel=asyncio.Event(),
        tz=UTC,
    )


@posix_only
async def test_the_source_refuses_a_swap_between_scan_and_extraction(
    tree: Path, tmp_path: Path, server: FakeLLMServer
) -> None:
    store = SqliteBackedStore(tmp_path / "app.db")
    source = LocalDirectorySource(context(tree, store, server))
    changes = await source.changes()
    (item,) = changes.items
    swap_for_link(tree / "sub" / "notes.md", tree.parent / "outside" / "shadow.md")
    with pytest.raises(ExtractError):
        await source.text(item)
    # a regular file with other content in its place: the scan's hash says no
    os.remove(tree / "sub" / "notes.md")
    shutil.copy(tree.parent / "outside" / "shadow.md", tree / "sub" / "notes.md")
    with pytest.raises(ExtractError, match="changed since the scan"):
        await source.text(item)
    store.close()


@posix_only
@pytest.mark.skipif(not inotify.available(), reason="needs Linux inotify")
async def test_an_inotify_timed_swap_during_runs_sends_nothing_of_the_outside_file(
    tree: Path, tmp_path: Path, server: FakeLLMServer
) -> None:
    """The trial's attack, 20 times: the moment the scan has hashed the file (it closes
    it after reading), it becomes a link to a secret; no request to the model may hold
    a byte of the secret, and nothing is recorded for it."""
    target = tree / "sub" / "notes.md"
    secret = tree.parent / "outside" / "shadow.md"
    refused = 0
    for attempt in range(20):
        target.unlink(missing_ok=True)
        target.write_text(f"TASK: Water the plants {attempt}\n")
        swapped = threading.Event()

        def on_event(name: str, mask: int, swapped: threading.Event = swapped) -> None:
            if name == "notes.md" and not swapped.is_set():
                swapped.set()
                swap_for_link(target, secret)

        watcher = inotify.Watcher(str(tree / "sub"), inotify.IN_CLOSE_NOWRITE, on_event)
        store = SqliteBackedStore(tmp_path / f"app{attempt}.db")
        try:
            report = await run_pipeline(
                context(tree, store, server), LocalDirectorySource(context(tree, store, server))
            )
        finally:
            watcher.close()
            store.close()
        assert swapped.is_set(), "the watcher never saw the scan read the file"
        sent = repr(server.requests)
        assert "never-to-leave" not in sent, f"attempt {attempt}: the secret reached the model"
        # Either the read won the race (the file's own text was processed) or the swap
        # did and the file was refused, reported and left for the next run.
        if report.items_processed == 0:
            refused += 1
            assert any("notes.md" in e for e in report.errors), report
    print(f"swap won the race {refused} of 20 times; the secret never left")


def test_read_file_content_refuses_a_link_out(tree: Path) -> None:
    (tree / "evil.md").symlink_to(tree.parent / "outside" / "shadow.md")
    with pytest.raises(Exception) as refused:
        read_file_content([str(tree)], "evil.md")
    assert SECRET not in str(refused.value)

"""Hardening (issue 14) of the server, sessions, state store and logs, over real sockets.

Each test is the attack first: a flood of silent sockets, duplicate headers, a
malformed ``tool_result``, a full disk in the middle of a run, a secret at the
edge of a huge log line. The daemon is the in-process one of ``tests/conftest.py``
(real server on loopback, real SQLite state store).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import logging.handlers
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus
from websockets.protocol import State

from agents.errors import DeviceOffline, ToolCallError
from daemon.disk import disk_space_warning
from daemon.errors import DiskFull
from daemon.logs import MAX_MESSAGE_CHARS, RedactFilter, register_secret, setup_logging
from daemon.paths import Paths
from daemon.state import StateStore
from protocol.codec import encode
from protocol.frames import ControlHello, ToolCall
from protocol.reference import ProtocolClient
from tests.conftest import DaemonFactory
from tests.daemon.test_server import (
    device_hello,
    hello,
    http_upgrade_status,
    open_ws,
    recv_frame,
)
from tests.support.agent_model import OfficeModel
from tests.support.disk import fill, small_disk
from tests.support.llm_server import FakeLLMServer

# --- the upgrade ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        "Host: 127.0.0.1\r\n",  # a second Host (the first is the request's own)
        "Origin: http://a.example\r\nOrigin: http://b.example\r\n",
        "Authorization: Bearer x\r\nAuthorization: Bearer y\r\n",
    ],
)
async def test_a_header_given_twice_is_400_without_a_traceback(
    make_daemon: DaemonFactory, extra: str, caplog: pytest.LogCaptureFixture
) -> None:
    harness = await make_daemon()
    with caplog.at_level(logging.DEBUG):
        status = await http_upgrade_status(harness.port, f"127.0.0.1:{harness.port}", extra)
    assert status == 400
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    # ... and the server goes on.
    assert await http_upgrade_status(harness.port, f"127.0.0.1:{harness.port}") == 101


async def test_token_in_the_query_opens_the_session(make_daemon: DaemonFactory) -> None:
    harness = await make_daemon()
    ws = await open_ws(f"{harness.url}?token={harness.token}")
    try:
        await hello(ws, encode(ControlHello(protocol=1)))  # no token in the hello
    finally:
        await ws.close()
    with pytest.raises(InvalidStatus) as wrong:
        await open_ws(f"{harness.url}?token=not-the-token")
    assert wrong.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as twice:
        await open_ws(
            f"{harness.url}?token={harness.token}",
            headers={"Authorization": "Bearer something-else"},
        )
    assert twice.value.response.status_code == 400


async def test_silent_socket_flood_never_locks_out_a_client_with_the_token(
    make_daemon: DaemonFactory,
) -> None:
    """Eight loops keep reopening silent sockets (more than the cap on connections
    without hello); a client with the token at the upgrade connects every time."""
    harness = await make_daemon(max_pending_handshakes=8, hello_timeout_s=30)
    stop = asyncio.Event()
    saturated = asyncio.Event()

    async def flood() -> None:
        held: list[ClientConnection] = []
        try:
            while not stop.is_set():
                held = [ws for ws in held if ws.state is State.OPEN]
                if len(held) >= 4:
                    await asyncio.sleep(0.005)
                    continue
                try:
                    held.append(await open_ws(harness.url))
                except InvalidStatus:
                    saturated.set()
                    await asyncio.sleep(0.005)
        finally:
            for ws in held:
                ws.transport.abort()

    loops = [asyncio.create_task(flood()) for _ in range(8)]
    try:
        # The attack works: a client without the token at the upgrade is refused.
        await asyncio.wait_for(saturated.wait(), 20)
        with pytest.raises(InvalidStatus) as info:
            await open_ws(harness.url)
        assert info.value.response.status_code == 503
        # A client with the token at the upgrade connects every time, both ways.
        for attempt in range(20):
            if attempt % 2:
                ws = await open_ws(f"{harness.url}?token={harness.token}")
                ack = await hello(ws, device_hello(None, f"app-{attempt}"))
                await ws.close()
            else:
                app = ProtocolClient(harness.url, harness.token, authorization_header=True)
                ack = await app.connect()
                await app.close()
            assert ack.session_id
        assert not any(loop.done() for loop in loops)  # the flood went on all along
    finally:
        stop.set()
        await asyncio.gather(*loops)


# --- tool results -----------------------------------------------------------------------


async def test_malformed_tool_result_fails_its_call_at_once_with_the_reason(
    make_daemon: DaemonFactory,
) -> None:
    harness = await make_daemon(tool_call_timeout_s=60)
    ws = await open_ws(harness.url)
    try:
        await hello(ws, device_hello(harness.token, "laptop"))
        session = harness.daemon.server.device("laptop")
        assert session is not None
        call = asyncio.create_task(session.store().select("tasks"))
        frame = await recv_frame(ws)
        assert isinstance(frame, ToolCall)
        await ws.send(json.dumps({"type": "tool_result", "id": frame.id, "rows": "not a list"}))
        # With a 60 s timeout, only failing at once can finish here.
        with pytest.raises(ToolCallError) as failed:
            await asyncio.wait_for(call, 20)
        assert failed.value.code == "bad_frame"
        assert "malformed tool_result" in str(failed.value)
        assert "rows" in str(failed.value)
        assert session.in_flight == 0
        error = await recv_frame(ws)  # the app is told too, and the session goes on
        assert error.type == "error" and getattr(error, "id", None) == frame.id
    finally:
        await ws.close()


async def test_calls_racing_a_closing_connection_leave_no_unread_future(
    make_daemon: DaemonFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Calls sent while the app's close is under way fail with DeviceOffline, and no
    future is left holding an exception nobody read (asyncio would log it)."""
    harness = await make_daemon()
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        for i in range(30):
            ws = await open_ws(harness.url)
            await hello(ws, device_hello(harness.token, f"laptop-{i}"))
            session = harness.daemon.server.device(f"laptop-{i}")
            assert session is not None
            closing = asyncio.create_task(ws.close())
            calls = []
            for _ in range(40):
                calls.append(asyncio.create_task(session.store().select("tasks")))
                await asyncio.sleep(0)
            await closing
            results = await asyncio.gather(*calls, return_exceptions=True)
            assert all(isinstance(r, DeviceOffline) for r in results), results
            del calls, results
            gc.collect()
    assert "never retrieved" not in caplog.text


# --- a full disk in the middle of a run ----------------------------------------------------


@pytest.mark.skipif(os.name != "posix", reason="tmpfs")
async def test_disk_full_in_the_middle_of_a_run_ends_it_error_with_a_run_complete(
    make_daemon: DaemonFactory,
    tether_home: Paths,
    llm_server: FakeLLMServer,
    tmp_path: Path,
) -> None:
    llm_server.responder = OfficeModel()
    root = tmp_path / "work"
    for i in range(4):
        (root / f"f{i}.md").parent.mkdir(parents=True, exist_ok=True)
        (root / f"f{i}.md").write_text(f"TASK: Thing {i}\n", encoding="utf-8")
    with small_disk(tether_home.state_dir):
        harness = await make_daemon(llm__model="openai/office", llm__api_base=llm_server.base_url)

        async def fill_at_the_first_insert(call: ToolCall) -> None:
            if call.action == "insert" and not (tether_home.state_dir / "filler").exists():
                fill(tether_home.state_dir)

        app = await harness.device(
            tmp_path / "app.db",
            agents=[
                {
                    "id": "folder",
                    "name": "Folder",
                    "kind": "local_directory",
                    "schedule_cron": "0 0 1 1 *",
                    "directory_paths": [str(root)],
                    "data_types": ["tasks"],
                    "enabled": False,
                }
            ],
            before_tool_call=fill_at_the_first_insert,
        )
        ack = await app.trigger("folder")
        done = await app.wait_run(ack.run_id, timeout=30)
        assert done.status == "error", done
        assert done.errors[0].startswith("disk full ("), done.errors
        assert str(tether_home.state_db) in done.errors[0]
        # The run stopped: not every file was processed.
        assert done.items_processed < 4
        assert harness.daemon.runs.active() == []
        status = await app.status()
        assert status.active_runs == []
        for client in harness.clients:
            await client.close()
        harness.clients.clear()
        await harness.daemon.stop()


# --- the state store ---------------------------------------------------------------------


def test_the_wal_is_bounded_and_truncated_by_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    wal = Path(f"{path}-wal")
    largest = 0
    with StateStore.open(path) as state:
        for i in range(1500):  # about 6 MB through the WAL, one small transaction each
            state.set_cursor("a", f"k{i % 50}", f"{i}" + "v" * 3000)
            largest = max(largest, wal.stat().st_size)
        # SQLite's default (checkpoint at 1,000 pages, never truncate) keeps ~4 MB.
        assert largest < 1.5 * 1024 * 1024, largest
        state.checkpoint()
        assert wal.stat().st_size == 0


def test_a_full_disk_is_disk_full_and_the_store_goes_on_after(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    with small_disk(directory), StateStore.open(directory / "state.db") as state:
        state.start_run("r0", "a", "manual", datetime.now(UTC))
        fill(directory)
        with pytest.raises(DiskFull) as full:
            state.start_run("r1", "a", "manual", datetime.now(UTC))
        assert str(full.value).startswith("disk full (")
        assert str(directory / "state.db") in str(full.value)
        with pytest.raises(DiskFull):
            state.update_run_counts("r0", items_processed=1, items_created=2, items_updated=0)
        assert state.run("r0") is not None  # reads still work
        assert disk_space_warning(directory) is not None
        (directory / "filler").unlink()
        assert state.update_run_counts("r0", items_processed=1, items_created=2, items_updated=0)
        record = state.run("r0")
        assert record is not None and (record.items_processed, record.items_created) == (1, 2)


def test_disk_space_warning_names_the_directory(tmp_path: Path) -> None:
    assert disk_space_warning(tmp_path, low_bytes=0) is None
    warning = disk_space_warning(tmp_path, low_bytes=1 << 62)
    assert warning is not None and str(tmp_path) in warning and "MiB free" in warning


def test_update_run_counts_touches_only_a_running_run(tmp_path: Path) -> None:
    with StateStore.open(tmp_path / "state.db") as state:
        now = datetime.now(UTC)
        state.start_run("r", "a", "manual", now)
        assert state.update_run_counts("r", items_processed=2, items_created=5, items_updated=1)
        state.finish_run(
            "r",
            "success",
            now,
            items_processed=3,
            items_created=6,
            items_updated=1,
            errors=[],
            usage={},
        )
        assert not state.update_run_counts("r", items_processed=0, items_created=0, items_updated=0)
        assert not state.update_run_counts(
            "nope", items_processed=1, items_created=1, items_updated=1
        )
        record = state.run("r")
        assert record is not None and (record.items_processed, record.items_created) == (3, 6)


# --- logs --------------------------------------------------------------------------------


def test_a_huge_message_is_cut_after_redaction_with_its_length() -> None:
    secret = "hardening-secret-value-7d3f"
    register_secret(secret)
    # The secret straddles the cut: no prefix of it may show.
    text = "x" * (MAX_MESSAGE_CHARS - 5) + secret + "y" * 15_000_000
    record = logging.LogRecord("tether.test", logging.WARNING, __file__, 1, "%s", (text,), None)
    RedactFilter().filter(record)
    message = record.getMessage()
    assert len(message) < MAX_MESSAGE_CHARS + 100
    assert f"{len(text):,} characters in all" in message
    assert secret[:5] not in message
    field = logging.LogRecord("tether.test", logging.WARNING, __file__, 1, "m", None, None)
    field.payload = "z" * 100_000
    RedactFilter().filter(field)
    assert len(field.payload) < MAX_MESSAGE_CHARS + 100


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_log_and_its_rotations_are_0600_under_umask_0(tmp_path: Path) -> None:
    paths = Paths.under(tmp_path).ensure()
    old = os.umask(0)
    try:
        setup_logging(paths, "INFO")
        logging.getLogger("tether.test").info("before the rotation")
        handler = next(
            h
            for h in logging.getLogger("tether").handlers
            if isinstance(h, logging.handlers.RotatingFileHandler)
        )
        handler.doRollover()
        logging.getLogger("tether.test").info("after the rotation")
    finally:
        os.umask(old)
        setup_logging(None, "NOTSET")
    rotated = Path(f"{paths.log_file}.1")
    assert "before the rotation" in rotated.read_text(encoding="utf-8")
    assert "after the rotation" in paths.log_file.read_text(encoding="utf-8")
    assert stat.S_IMODE(paths.log_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(rotated.stat().st_mode) == 0o600


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_an_existing_state_db_is_narrowed_to_0600(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with StateStore.open(path) as state:
        state.set_meta("k", "v")
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if name.exists():
            name.chmod(0o644)
    with StateStore.open(path) as state:
        assert state.get_meta("k") == "v"
        for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            assert stat.S_IMODE(name.stat().st_mode) == 0o600, name

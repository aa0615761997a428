"""The desktop app as it ships, replayed against a real ``daemon run`` process (issue 11).

The frames below are the app's, as the issue writes them: its hello
``{"type": "device_hello", "device_id": "…", "agent_ids": [...]}`` (no ``protocol``,
no token in the frame), its stored agent rows (``user_id``, ``created_at``,
``updated_at``, ``last_run_at``; a cloud row with ``provider`` and
``oauth_token_encrypted``), chat requests whose history has other roles and ``null``
content and which carry ``context``. What must hold: the hello pairs as protocol 1,
the rows are accepted with their extra keys named, the OAuth token is nowhere on
disk, an agent the app says ran recently is not caught up, a floating answer opens
with ``floating_domain``, an update mutation is ``{id, updates, row}``, and a browser
``Origin`` is still refused.

Real parts: the daemon is ``python -m daemon run`` (its log and state on disk), the
app is the reference client serving a real SQLite file, the model is the local fake.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from daemon.paths import Paths
from protocol.codec import encode
from protocol.frames import (
    DeviceHello,
    FloatingDomain,
    RunComplete,
    RunStarted,
    StreamEnd,
    StreamStart,
    StreamText,
)
from protocol.reference import HandshakeRefused, ProtocolClient, ReferenceClient, SqliteStore
from tests.e2e.test_cli import Cli, cli  # noqa: F401  (the fixture)
from tests.support.llm_server import Call, FakeLLMServer, Text, ToolCalls

pytestmark = [
    pytest.mark.skipif(os.name != "posix", reason="spawns daemon processes"),
    pytest.mark.timeout(90),
]

DEVICE = "adiuva-desktop-7f3a"
APP_AGENT_IDS = ["docs-folder", "work-mail"]
# The token the app keeps for the Gmail agent: it must never reach the daemon's disk.
OAUTH_SECRET = "enc:v1:Zm9vYmFyLW9hdXRoLXRva2VuLXNlY3JldA=="

YEARLY = "0 0 1 1 *"
ChatFrame = FloatingDomain | StreamStart | StreamText | StreamEnd


def app_hello() -> DeviceHello:
    """The shipping app's hello: no protocol, no token (it is in the URL), agent_ids."""
    return DeviceHello(device_id=DEVICE, agent_ids=APP_AGENT_IDS)


class App(ReferenceClient):
    """The reference client saying the app's hello and recording chat frames."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.frames: dict[str, list[ChatFrame]] = {}
        self.ended: dict[str, asyncio.Event] = {}

    def hello(self) -> DeviceHello:
        return app_hello()

    def _on_chat_frame(self, frame: ChatFrame) -> None:
        self.frames.setdefault(frame.request_id, []).append(frame)
        if isinstance(frame, StreamEnd):
            self.ended.setdefault(frame.request_id, asyncio.Event()).set()
        super()._on_chat_frame(frame)

    async def send_app_frame(self, frame: dict[str, Any]) -> StreamEnd:
        """Send a chat request as raw JSON text and wait for its ``stream_end``."""
        request_id = frame["request_id"]
        done = self.ended.setdefault(request_id, asyncio.Event())
        await self.send_raw(json.dumps(frame))
        await asyncio.wait_for(done.wait(), 30)
        end = self.frames[request_id][-1]
        assert isinstance(end, StreamEnd)
        return end


@dataclass
class Running:
    cli: Cli
    proc: Any  # the `daemon run` process (DaemonProcess of the CLI test harness)
    db: Path

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.proc.port}/"

    def app(self) -> App:
        # The app's credential goes in the upgrade, not in the hello frame.
        return App(self.url, self.cli.token(), db=str(self.db), authorization_header=True)

    @property
    def log(self) -> Path:
        return Paths.under(self.cli.home).log_file

    def files_under_home(self) -> dict[Path, bytes]:
        return {p: p.read_bytes() for p in self.cli.home.rglob("*") if p.is_file()}


@pytest.fixture
def daemon(cli: Cli, llm_server: FakeLLMServer, tmp_path: Path) -> Iterator[Running]:  # noqa: F811
    cli.env.update(TETHER_MODEL="openai/fake", TETHER_API_BASE=llm_server.base_url)
    proc = cli.start()
    db = tmp_path / "app.db"
    with SqliteStore(db) as store:
        store.handle("insert", "tasks", data={"title": "Send invoice"})
        store.handle("insert", "notes", data={"title": "Call notes", "content": "Likes blue"})
    yield Running(cli, proc, db)
    proc.stop()


@pytest.fixture
async def clients() -> AsyncIterator[list[ProtocolClient]]:
    opened: list[ProtocolClient] = []
    yield opened
    for client in opened:
        await client.close()


async def connected(running: Running, clients: list[ProtocolClient]) -> App:
    app = running.app()
    clients.append(app)
    await app.connect()
    return app


def local_row(
    agent_id: str, root: Path, last_run_at: Any, cron: str = "0 * * * *"
) -> dict[str, Any]:
    """A local agent as the app stores it (its own bookkeeping columns included)."""
    return {
        "id": agent_id,
        "user_id": "user-1",
        "name": "Docs folder",
        "kind": "local_directory",
        "enabled": True,
        "schedule_cron": cron,
        "directory_paths": [str(root)],
        "file_extensions": [".md"],
        "data_types": ["tasks", "notes"],
        "prompt_template": None,
        "created_at": "2026-11-02T09:15:00.000Z",
        "updated_at": 1_764_000_000_000,
        "last_run_at": last_run_at,
    }


def gmail_row() -> dict[str, Any]:
    """A cloud agent as the app stores it: ``provider`` for ``kind``, its token along."""
    return {
        "id": "work-mail",
        "user_id": "user-1",
        "name": "Work mail",
        "provider": "gmail",
        "account": "me@example.com",
        "oauth_token_encrypted": OAUTH_SECRET,
        "enabled": False,
        "schedule_cron": "*/30 * * * *",
        "filter_config": {"labels": ["clients"], "color": "#ffcc00"},
        "created_at": "2026-11-02T09:20:00.000Z",
        "updated_at": "2026-11-20T10:00:00.000Z",
        "last_run_at": None,
    }


# --- the hello -------------------------------------------------------------------------


def test_the_apps_hello_is_exactly_the_issues_frame() -> None:
    assert json.loads(encode(app_hello())) == {
        "type": "device_hello",
        "device_id": DEVICE,
        "agent_ids": APP_AGENT_IDS,
    }


async def test_the_apps_hello_pairs_as_protocol_1_and_is_logged_once(
    daemon: Running, clients: list[ProtocolClient]
) -> None:
    app = await connected(daemon, clients)
    assert app.hello_ack is not None and app.hello_ack.protocol == 1
    status = await app.status()
    assert status.devices == [DEVICE]
    [device] = status.device_details
    assert device.device_id == DEVICE and device.legacy
    assert device.agent_ids == APP_AGENT_IDS
    assert device.unknown_agent_ids == APP_AGENT_IDS  # none synced yet: they cannot run
    shown = await asyncio.to_thread(daemon.cli.run, "status")
    assert shown.returncode == 0, shown.stderr
    assert f"{DEVICE} has agents the daemon has no configuration for: docs-folder, work-mail" in (
        shown.stdout
    )

    await app.close()
    again = await connected(daemon, clients)  # the app restarts: same device
    assert (await again.status()).device_details[0].legacy
    log = daemon.log
    lines = [line for line in log.read_text().splitlines() if "legacy client" in line]
    assert len(lines) == 1 and DEVICE in lines[0]


async def test_a_browser_origin_is_still_refused(daemon: Running) -> None:
    headers = {"Origin": "https://evil.example", "Authorization": f"Bearer {daemon.cli.token()}"}
    with pytest.raises(InvalidStatus) as info:
        async with connect(daemon.url, additional_headers=headers):
            pass
    assert info.value.response.status_code == 403


async def test_the_token_in_the_upgrade_url(daemon: Running, clients: list[ProtocolClient]) -> None:
    """``ws://…/?token=`` is how the app sends its credential (daemon/server.py): the
    right token pairs, a wrong one is refused, and the token is never logged."""
    token = daemon.cli.token()
    right = App(f"{daemon.url}?token={token}", None, db=str(daemon.db))
    clients.append(right)
    ack = await right.connect()
    assert ack.protocol == 1
    wrong = App(f"{daemon.url}?token={token}x", None, db=str(daemon.db))
    with pytest.raises(HandshakeRefused) as info:
        await wrong.connect()
    assert info.value.code == 4401 or info.value.status == 401
    assert token not in daemon.log.read_text()


# --- agent rows --------------------------------------------------------------------------


async def test_the_apps_agent_rows_are_accepted_and_the_token_is_nowhere(
    daemon: Running, clients: list[ProtocolClient], tmp_path: Path
) -> None:
    app = await connected(daemon, clients)
    docs = tmp_path / "docs"  # not tmp_path itself: it holds the daemon's home
    docs.mkdir()
    rows = [local_row("docs-folder", docs, "2026-11-30T08:00:00Z"), gmail_row()]
    ack = await app.agents_sync(rows, replace=True)

    assert ack.accepted == ["docs-folder", "work-mail"] and ack.rejected == []
    assert [(i.id, i.keys) for i in ack.ignored_keys or []] == [
        ("docs-folder", ["created_at", "updated_at", "user_id"]),
        (
            "work-mail",
            ["created_at", "filter_config.color", "oauth_token_encrypted", "updated_at", "user_id"],
        ),
    ]
    status = await app.status()
    kinds = {a.id: a.kind for a in status.agents}
    assert kinds == {"docs-folder": "local_directory", "work-mail": "gmail"}
    assert status.device_details[0].unknown_agent_ids == []
    # `daemon agents` (a separate process reading the cached set) sees them too.
    listed = await asyncio.to_thread(daemon.cli.run, "agents", "list")
    assert listed.returncode == 0 and "work-mail" in listed.stdout

    # The token is in no file of the daemon: state store (and its WAL), log, config.
    files = daemon.files_under_home()
    assert any(p.name == "state.db" for p in files) and any(p.name == "daemon.log" for p in files)
    for path, data in files.items():
        assert OAUTH_SECRET.encode() not in data, path
        assert b"oauth_token_encrypted" not in data, path


async def test_the_same_rows_in_a_hello_get_ignored_keys_in_hello_ack(
    daemon: Running, clients: list[ProtocolClient], tmp_path: Path
) -> None:
    app = daemon.app()
    app.hello = lambda: DeviceHello(  # type: ignore[method-assign]
        device_id=DEVICE, agent_ids=APP_AGENT_IDS, agents=[gmail_row()]
    )
    clients.append(app)
    ack = await app.connect()
    assert ack.agents is not None
    assert ack.agents.accepted == ["work-mail"]
    [ignored] = ack.agents.ignored_keys
    assert ignored.id == "work-mail" and "oauth_token_encrypted" in ignored.keys


async def test_an_agent_the_app_ran_recently_is_not_caught_up(
    daemon: Running, clients: list[ProtocolClient], tmp_path: Path
) -> None:
    """Two yearly agents (no fire during the test), neither ever run by the daemon: the app says ``a-recent`` ran
    just now (ms since the epoch, as its storage keeps times), ``b-stale`` never did.
    On reconnect the catch-up runs ``b-stale`` only (``a-recent`` would come first)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    now_ms = int(time.time() * 1000)
    app = await connected(daemon, clients)
    ack = await app.agents_sync(
        [
            local_row("a-recent", empty, now_ms, YEARLY),
            local_row("b-stale", empty, None, YEARLY),
        ],
        replace=True,
    )
    assert ack.accepted == ["a-recent", "b-stale"]
    await app.close()

    again = await connected(daemon, clients)
    started = await again.next_event(RunStarted, timeout=30)
    assert isinstance(started, RunStarted)
    assert (started.agent_id, started.trigger) == ("b-stale", "reconnect")
    done = await again.wait_run(started.run_id, timeout=30)
    assert isinstance(done, RunComplete) and done.status == "success"

    status = await again.status()
    by_id = {a.id: a for a in status.agents}
    assert by_id["a-recent"].last_status is None  # the daemon never ran it
    recent = by_id["a-recent"].last_run_at
    assert recent is not None
    assert abs(datetime.fromisoformat(recent).timestamp() * 1000 - now_ms) < 1000
    assert again.events.empty()  # no run of a-recent started meanwhile


# --- chat --------------------------------------------------------------------------------


async def test_home_request_with_the_apps_history_and_context(
    daemon: Running, clients: list[ProtocolClient], llm_server: FakeLLMServer
) -> None:
    app = await connected(daemon, clients)
    task = app.store.rows("tasks")[0]
    llm_server.script(
        ToolCalls([Call("update_task", {"task_id": task["id"], "status": "done"})]),
        Text("Marked it done."),
    )
    frame = {
        "type": "home_request",
        "request_id": "home-1",
        "message": "mark the invoice task done",
        "conversation_history": [
            {"role": "system", "content": "You are Adiuva."},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": None},
            {"role": "tool", "content": '{"rows": []}'},
        ],
        "context": {"page": "dashboard", "selectedTaskIds": [task["id"]]},
    }
    end = await app.send_app_frame(frame)

    assert end.error is None
    kinds = [f.type for f in app.frames["home-1"]]
    assert kinds[0] == "stream_start" and kinds[-1] == "stream_end"
    [mutation] = end.mutations
    row = app.store.rows("tasks")[0]
    assert row["status"] == "done"
    assert (mutation.action, mutation.table) == ("update", "tasks")
    assert mutation.data == {"id": task["id"], "updates": {"status": "done"}, "row": row}

    messages = llm_server.requests[0]["messages"]
    assert messages[0]["role"] == "system"
    system = messages[0]["content"]
    assert "<app_context>" in system and '"selectedTaskIds"' in system and task["id"] in system
    assert messages[1:] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "mark the invoice task done"},
    ]


async def test_a_floating_answer_opens_with_floating_domain(
    daemon: Running, clients: list[ProtocolClient], llm_server: FakeLLMServer
) -> None:
    app = await connected(daemon, clients)
    note = app.store.rows("notes")[0]
    llm_server.script(ToolCalls([Call("list_notes", {})]), Text("The client likes blue."))
    frame = {
        "type": "floating_request",
        "request_id": "float-1",
        "message": "what does the client like?",
        "scope": {"type": "note", "id": note["id"]},
        "context": "The user has the note 'Call notes' open.",
    }
    end = await app.send_app_frame(frame)

    assert end.error is None
    received = app.frames["float-1"]
    assert isinstance(received[0], FloatingDomain) and received[0].domain == "notes"
    assert [f.type for f in received[:2]] == ["floating_domain", "stream_start"]
    assert [f.type for f in received].count("floating_domain") == 1
    assert "".join(f.chunk for f in received if isinstance(f, StreamText)) == (
        "The client likes blue."
    )
    system = llm_server.requests[0]["messages"][0]["content"]
    assert "The user has the note 'Call notes' open." in system

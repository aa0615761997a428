"""End to end: Gmail, Outlook and Teams agents through the one pipeline.

The real daemon (in process, and as a ``daemon run`` process for the SIGKILL case),
the reference client with its SQLite file as the app, real litellm against the local
test model (``OfficeModel``) and real httpx against the local fake Google and
Microsoft servers (``tests/support/fake_google.py``, ``fake_microsoft.py``).

What must hold (issue 12, agents.md "Cloud connectors"):

- a first run over ~30 messages on >= 3 pages creates each expected item once, and
  nothing from quoted reply history, system events or deleted messages;
- the next run with 2 new messages fetches only those 2 bodies and creates only
  their items; after the history id / delta link expires (a lost Teams cursor), a
  run creates nothing twice and fetches no body already processed;
- an expired access token is refreshed once and the run goes on; Microsoft's rotated
  refresh token is the one used next time; a revoked one ends the run ``error`` with
  the reconnect message, marks the account and changes nothing else;
- a daemon killed (SIGKILL) mid-run, then a new run: no duplicate, nothing skipped;
- no token in the log, the state store, any frame or any LLM request.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import os
import signal
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.state import StateStore
from protocol.frames import CredentialsPut, EstimateRequest, EstimateResult, RunComplete, ToolCall
from protocol.reference import ReferenceClient, SqliteStore
from tests.conftest import DaemonFactory, DaemonHarness
from tests.e2e.test_daemon_restart import TOKEN, Setup, until
from tests.support.agent_model import OfficeModel
from tests.support.fake_google import FakeGmail
from tests.support.fake_microsoft import FakeGraph
from tests.support.llm_server import FakeLLMServer

KINDS = ("gmail", "outlook", "teams")
AGENT_ID = "inbox"
PROJECTS = ("Website", "Branding")
PAGE = 5  # the fakes' page size: ~30 messages are >= 3 pages everywhere


class Box:
    """One kind's fake mailbox, and what the daemon needs to reach it."""

    def __init__(self, kind: str, server: FakeGmail | FakeGraph) -> None:
        self.kind = kind
        self.server = server
        self.provider = "google" if kind == "gmail" else "microsoft"
        self.account = server.signed_in_account
        self.chats: dict[str, str] = {}
        self.expected: list[str] = []  # task titles the app must end with, once each
        if isinstance(server, FakeGraph):
            server.page_cap = PAGE
            server.chat_page_size = 1  # the chat list itself is paged too
            if kind == "teams":
                for name in (*PROJECTS, "Coffee"):
                    self.chats[name] = server.add_chat(f"{name} chat")
        else:
            server.page_cap = PAGE

    def config(self) -> dict[str, Any]:
        url = self.server.url
        return {
            "cloud.gmail_api_base": f"{url}/gmail/v1",
            "cloud.graph_api_base": f"{url}/v1.0",
            "cloud.google_token_url": url + self.server.token_path,
            "cloud.microsoft_token_url": url + self.server.token_path,
            "cloud.google_client_id": self.server.client_id,
            "cloud.microsoft_client_id": self.server.client_id,
        }

    def env(self) -> dict[str, str]:
        return {
            "TETHER_" + key.split(".")[1].upper(): str(value)
            for key, value in self.config().items()
        }

    def agent(self) -> dict[str, Any]:
        return {
            "id": AGENT_ID,
            "name": f"My {self.kind}",
            "kind": self.kind,
            "account": self.account,
            "schedule_cron": "0 */6 * * *",
            "data_types": ["tasks", "notes", "timelines"],
            "enabled": False,
        }

    def add(self, project: str, title: str, *, extra: str = "") -> str:
        """A message with one task line; ``project`` names it in the subject (or chat)."""
        text = f"Hi, see below.\nTASK: {title}\n{extra}"
        self.expected.append(title)
        return self._add(project, f"{project} update: {title}", text)

    def _add(self, project: str, subject: str, text: str) -> str:
        server = self.server
        if isinstance(server, FakeGmail):
            return server.add_message(subject=subject, text=text)
        if self.kind == "outlook":
            return server.add_mail(subject, text=text)
        body = "".join(f"<p>{html.escape(line)}</p>" for line in text.splitlines())
        return server.add_chat_message(self.chats.get(project, self.chats["Coffee"]), body)

    def add_noise(self) -> None:
        """Quoted history, and (where the service has them) deleted messages and system events."""
        server = self.server
        if self.kind in ("gmail", "outlook"):
            self.add(
                "Website",
                "Reply with fresh task",
                extra="\nOn Mon, Nov 3, 2026 at 9:00 AM Dana <dana@example.com> wrote:\n"
                "> TASK: Quoted old task\n> Thanks\n",
            )
        if isinstance(server, FakeGraph) and self.kind == "outlook":
            gone = server.add_mail("Website: withdrawn", text="TASK: Deleted task")
            server.delete_mail(gone)
        if isinstance(server, FakeGraph) and self.kind == "teams":
            server.add_chat_message(self.chats["Website"], "", message_type="systemEventMessage")
            server.add_chat_message(
                self.chats["Website"], "<p>TASK: Deleted task</p>", deleted=True
            )

    def bodies(self) -> list[str]:
        return list(self.server.gets)

    def expire(self, harness: DaemonHarness | None = None) -> None:
        server = self.server
        if isinstance(server, FakeGmail):
            server.expire_history()
        elif self.kind == "outlook":
            server.expire_delta()
        else:  # Teams has no delta link: the saved per-chat cursor is lost
            assert harness is not None
            harness.daemon.state.set_cursor(AGENT_ID, f"cursor:{self.account}", "")

    def credentials(self, request_id: str = "cred-1") -> CredentialsPut:
        tokens = self.server.issue_tokens(self.account)
        return CredentialsPut(
            id=request_id,
            provider=self.kind,  # an alias of the provider
            account=self.account,
            secret={
                "access_token": tokens["access_token"],
                "refresh_token": tokens["refresh_token"],
                "expires_at": 4102444800,  # the fake decides when it really expires
                "token_type": "Bearer",
            },
        )


def make_box(kind: str) -> Iterator[Box]:
    server = FakeGmail() if kind == "gmail" else FakeGraph()
    with server:
        yield Box(kind, server)


@pytest.fixture(params=KINDS)
def box(request: pytest.FixtureRequest) -> Iterator[Box]:
    yield from make_box(request.param)


@pytest.fixture
def model(llm_server: FakeLLMServer) -> OfficeModel:
    office = OfficeModel()
    llm_server.responder = office
    return office


@pytest.fixture
def app_db(tmp_path: Path) -> Path:
    path = tmp_path / "app.db"
    with SqliteStore(path) as db:
        for name in PROJECTS:
            db.handle("insert", "projects", data={"name": name})
    return path


async def start(make_daemon: DaemonFactory, llm_server: FakeLLMServer, box: Box) -> DaemonHarness:
    cloud = {k.replace(".", "__"): v for k, v in box.config().items()}
    return await make_daemon(llm__model="openai/office", llm__api_base=llm_server.base_url, **cloud)


async def connect(daemon: DaemonHarness, db: Path, box: Box) -> ReferenceClient:
    app = await daemon.device(db, agents=[box.agent()])
    await app.request(box.credentials())
    return app


async def run(app: ReferenceClient) -> RunComplete:
    ack = await app.trigger(AGENT_ID)
    assert ack.run_id
    return await app.wait_run(ack.run_id, timeout=90)


def tasks(db: SqliteStore) -> list[str]:
    return sorted(str(r["title"]) for r in db.rows("tasks"))


def in_project(db: SqliteStore, project: str) -> list[str]:
    pid = next(p["id"] for p in db.rows("projects") if p["name"] == project)
    return sorted(str(r["title"]) for r in db.rows("tasks") if r.get("projectId") == pid)


def seed(box: Box, count: int = 28) -> None:
    for n in range(count):
        box.add(PROJECTS[n % 2] if n % 7 else "Coffee", f"Task {n:02d}")
    box.add_noise()


async def test_first_run_then_two_new_then_an_expired_cursor(
    make_daemon: DaemonFactory,
    llm_server: FakeLLMServer,
    model: OfficeModel,
    box: Box,
    app_db: Path,
) -> None:
    seed(box)
    count = len(box.expected)  # 28 messages, and the reply with quoted history by mail
    assert count == (28 if box.kind == "teams" else 29)
    daemon = await start(make_daemon, llm_server, box)
    app = await connect(daemon, app_db, box)

    first = await run(app)
    assert first.status == "success", first.errors
    listed = box.bodies()
    assert len(listed) == count  # no body of a deleted or system message
    assert len(set(listed)) == len(listed)
    assert tasks(app.store) == sorted(box.expected)  # each once; nothing quoted or deleted
    assert "Quoted old task" not in tasks(app.store) and "Deleted task" not in tasks(app.store)
    website = [t for n, t in enumerate(box.expected[:28]) if n % 7 and n % 2 == 0]
    if box.kind != "teams":
        website.append("Reply with fresh task")
    assert in_project(app.store, "Website") == sorted(website)
    assert first.items_created == count
    # >= 3 pages of listing
    pages = [r for r in box.server.requests if r.path.endswith(("/messages", "/delta"))]
    assert len(pages) >= 3

    # an unchanged re-run: no body, no model call
    calls = llm_server.calls
    again = await run(app)
    assert again.status == "success", again.errors
    assert (again.items_processed, again.items_created, llm_server.calls) == (0, 0, calls)
    assert box.bodies() == listed

    # two new messages: only their bodies, only their items
    new = [box.add("Branding", "New one"), box.add("Website", "New two")]
    two = await run(app)
    assert two.status == "success", two.errors
    fetched = box.bodies()[len(listed) :]
    assert len(fetched) == 2 and all(any(n in f for f in fetched) for n in new)
    assert (two.items_processed, two.items_created) == (2, 2)
    assert tasks(app.store) == sorted(box.expected)

    # the history id / delta link expired: a resync lists everything again
    box.expire(daemon)
    box.add("Website", "After resync")
    before = len(box.bodies())
    calls = llm_server.calls
    resync = await run(app)
    assert resync.status == "success", resync.errors
    assert len(box.bodies()) - before == 1  # only the new message's body
    assert (resync.items_processed, resync.items_created) == (1, 1)
    assert llm_server.calls - calls <= 3  # triage + process for one message
    assert tasks(app.store) == sorted(box.expected)

    # the account shows what it took in
    status = await app.status()
    [account] = status.accounts
    assert (account.provider, account.account, account.state) == (
        box.provider,
        box.account,
        "connected",
    )
    assert account.messages_taken == count + 2 + 1
    assert account.last_sync is not None


@pytest.fixture
def microsoft_box() -> Iterator[Box]:
    yield from make_box("outlook")


@pytest.fixture
def google_box() -> Iterator[Box]:
    yield from make_box("gmail")


async def test_an_expired_access_token_is_refreshed_once_and_a_rotated_one_is_used_next(
    make_daemon: DaemonFactory,
    llm_server: FakeLLMServer,
    model: OfficeModel,
    microsoft_box: Box,
    app_db: Path,
) -> None:
    box = microsoft_box
    assert isinstance(box.server, FakeGraph)
    box.server.rotate_refresh = True
    box.add("Website", "First")
    daemon = await start(make_daemon, llm_server, box)
    app = await connect(daemon, app_db, box)
    box.server.expire_access_tokens()
    first = await run(app)
    assert first.status == "success", first.errors
    assert box.server.refresh_count == 1
    assert tasks(app.store) == ["First"]
    # the rotated refresh token is the only one the fake accepts now: a second refresh works
    box.server.expire_access_tokens()
    box.add("Branding", "Second")
    second = await run(app)
    assert second.status == "success", second.errors
    assert box.server.refresh_count == 2
    assert tasks(app.store) == ["First", "Second"]


async def test_a_revoked_refresh_token_ends_the_run_with_the_reconnect_message(
    make_daemon: DaemonFactory,
    llm_server: FakeLLMServer,
    model: OfficeModel,
    google_box: Box,
    app_db: Path,
) -> None:
    box = google_box
    box.add("Website", "Never")
    daemon = await start(make_daemon, llm_server, box)
    app = await connect(daemon, app_db, box)
    box.server.revoke()
    box.server.expire_access_tokens()
    done = await run(app)
    assert done.status == "error"
    assert len(done.errors) == 1
    assert done.errors[0].startswith(f"reconnect your Google account {box.account} (")
    assert "invalid_grant" in done.errors[0]
    assert llm_server.calls == 0 and tasks(app.store) == [] and box.bodies() == []
    with StateStore.open(daemon.paths.state_db) as state:
        assert state.get_cursor(AGENT_ID, f"cursor:{box.account}") is None
    [account] = (await app.status()).accounts
    assert account.state == "needs_reconnect" and "invalid_grant" in (account.reason or "")
    assert account.last_sync is None and account.messages_taken == 0


async def test_throttling_past_the_wait_ends_the_run_saying_until_when(
    make_daemon: DaemonFactory,
    llm_server: FakeLLMServer,
    model: OfficeModel,
    google_box: Box,
    app_db: Path,
) -> None:
    box = google_box
    box.add("Website", "Later")
    daemon = await start(make_daemon, llm_server, box)
    app = await connect(daemon, app_db, box)
    box.server.fail("/messages", 429, {"error": {"code": 429}}, retry_after="3600", times=10)
    done = await run(app)
    assert done.status == "error"
    [error] = done.errors
    assert f"Gmail is throttling {box.account} until 20" in error and "UTC" in error, error
    assert llm_server.calls == 0 and tasks(app.store) == []
    [account] = (await app.status()).accounts
    assert account.state == "connected" and account.throttled_until is not None
    assert account.last_sync is None
    # once the provider allows it again, the next run takes the message in
    with box.server.lock:
        box.server.faults.clear()
    again = await run(app)
    assert again.status == "success", again.errors
    assert tasks(app.store) == ["Later"]
    [account] = (await app.status()).accounts
    assert account.throttled_until is None and account.messages_taken == 1


async def test_an_estimate_reads_the_mailbox_and_records_nothing(
    make_daemon: DaemonFactory,
    llm_server: FakeLLMServer,
    model: OfficeModel,
    microsoft_box: Box,
    app_db: Path,
) -> None:
    box = microsoft_box
    for n in range(3):
        box.add("Website", f"Estimated {n}")
    daemon = await start(make_daemon, llm_server, box)
    app = await connect(daemon, app_db, box)
    answer = await app.request(EstimateRequest(id="e1", agent_id=AGENT_ID))
    assert isinstance(answer, EstimateResult)
    assert (answer.items_new, answer.items_unchanged, answer.runs) == (3, 0, 1)
    assert answer.llm_calls >= 2 and llm_server.calls == 0  # triage, then processing
    done = await run(app)  # the estimate recorded nothing: the run takes all three in
    assert (done.status, done.items_processed, done.items_created) == ("success", 3, 3)
    again = await app.request(EstimateRequest(id="e2", agent_id=AGENT_ID))
    assert isinstance(again, EstimateResult)
    assert (again.items_new, again.llm_calls) == (0, 0)


async def test_a_run_fetches_no_more_bodies_than_its_budget_can_process(
    make_daemon: DaemonFactory,
    llm_server: FakeLLMServer,
    model: OfficeModel,
    google_box: Box,
    app_db: Path,
) -> None:
    box = google_box
    for n in range(20):
        box.add("Website", f"Budgeted {n:02d}")
    # 2 calls a run, one call processes at most 8 messages (batch_items): 16 bodies a run
    daemon = await start(make_daemon, llm_server, box)
    agent = {**box.agent(), "budget": {"max_llm_calls": 2}}
    app = await daemon.device(app_db, agents=[agent])
    await app.request(box.credentials())
    first = await run(app)
    assert first.status == "partial", first.errors
    assert len(box.bodies()) == 16  # not all 20
    assert any("more new messages wait for the next run" in e for e in first.errors)
    statuses = [first.status]
    for _ in range(8):
        done = await run(app)
        statuses.append(done.status)
        if done.status == "success":
            break
    assert statuses[-1] == "success", statuses
    assert tasks(app.store) == sorted(box.expected)  # every message once
    assert len(set(box.bodies())) == 20 and len(box.bodies()) < 2 * 20
    last = await run(app)
    assert (last.status, last.items_processed, last.usage.llm_calls) == ("success", 0, 0)


def _state_dump(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        rows = []
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'"):
            rows.extend(repr(r) for r in conn.execute(f'SELECT * FROM "{table}"'))
    return "\n".join(rows)


# --- real ``daemon run`` processes ------------------------------------------------------


@contextlib.asynccontextmanager
async def processes(tmp_path: Path, llm_server: FakeLLMServer, box: Box) -> AsyncIterator[Setup]:
    """A ``Setup`` (tests/e2e/test_daemon_restart.py) whose daemons reach ``box``'s fake."""
    llm_server.responder = OfficeModel()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env.update(
        TETHER_HOME=str(tmp_path / "home"),
        TETHER_MODEL="openai/office",
        TETHER_API_BASE=llm_server.base_url,
        TETHER_TOKEN=TOKEN,
        TETHER_LOG_LEVEL="DEBUG",
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        PYTHONUNBUFFERED="1",
        **box.env(),
    )
    setup = Setup(home=tmp_path / "home", env=env, tmp=tmp_path)
    try:
        yield setup
    finally:
        for client in setup.clients:
            await client.close()
        for proc in setup.procs:
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
            try:
                proc.popen.wait(15)
            except subprocess.TimeoutExpired:  # pragma: no cover
                proc.popen.kill()
                proc.popen.wait(5)
            if proc.popen.stdout is not None:
                proc.popen.stdout.close()


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
@pytest.mark.timeout(120)
async def test_daemon_killed_mid_run_then_a_new_run_duplicates_nothing_and_skips_nothing(
    tmp_path: Path, llm_server: FakeLLMServer, google_box: Box, app_db: Path
) -> None:
    box = google_box
    for n in range(12):
        box.add(PROJECTS[n % 2], f"Killed {n:02d}")
    async with processes(tmp_path, llm_server, box) as setup:
        first = await setup.start_daemon()
        inserts = 0
        killed = asyncio.Event()

        async def kill_on_fifth_insert(call: ToolCall) -> None:
            nonlocal inserts
            if call.action != "insert":
                return
            inserts += 1
            if inserts == 5:
                os.kill(first.pid, signal.SIGKILL)
                await asyncio.to_thread(first.popen.wait, 10)
                killed.set()

        app = await setup.app(
            first, app_db, agents=[box.agent()], before_tool_call=kill_on_fifth_insert
        )
        await app.request(box.credentials())
        ack = await app.trigger(AGENT_ID)
        assert ack.run_id
        await asyncio.wait_for(killed.wait(), 60)
        await until(lambda: not app.connected, 5, "the app to see the connection drop")
        landed = len(app.store.rows("tasks"))
        assert 4 <= landed < 12
        bodies_before = len(box.bodies())
        with StateStore.open(setup.paths.state_db) as state:
            recorded = state.processed_ids("gmail", box.account, AGENT_ID, box.bodies())
        assert len(recorded) < 12

        second = await setup.start_daemon()
        again = await setup.app(second, app_db, agents=[box.agent()])
        ack = await again.trigger(AGENT_ID)
        assert ack.run_id
        done = await again.wait_run(ack.run_id, timeout=90)
        assert done.status == "success", done.errors
        assert tasks(again.store) == sorted(box.expected)  # nothing twice, nothing skipped
        # only the messages not recorded before the kill are fetched and processed again
        refetched = box.bodies()[bodies_before:]
        assert len(refetched) == done.items_processed == 12 - len(recorded)
        assert not set(refetched) & recorded
        ack = await again.trigger(AGENT_ID)
        assert ack.run_id
        third = await again.wait_run(ack.run_id, timeout=60)
        assert (third.status, third.items_processed, third.items_created) == ("success", 0, 0)


@pytest.mark.timeout(120)
async def test_no_token_in_the_log_the_state_store_any_frame_or_any_llm_request(
    tmp_path: Path, llm_server: FakeLLMServer, microsoft_box: Box, app_db: Path
) -> None:
    box = microsoft_box
    assert isinstance(box.server, FakeGraph)
    box.server.rotate_refresh = True
    for n in range(3):
        box.add("Website", f"Leak check {n}")
    frames: list[str] = []
    async with processes(tmp_path, llm_server, box) as setup:
        daemon = await setup.start_daemon()
        app = await setup.app(daemon, app_db, agents=[box.agent()])
        app.on_event = lambda event: frames.append(event.model_dump_json())
        await app.request(box.credentials())
        box.server.expire_access_tokens()  # one refresh: a new access and refresh token
        done = await run(app)
        assert done.status == "success", done.errors
        assert box.server.refresh_count == 1
        frames.append((await app.status()).model_dump_json())
        frames.extend(call.model_dump_json() for call in app.tool_calls)
        frames.append(done.model_dump_json())
        cli = [setup.cli("status"), setup.cli("accounts"), setup.cli("status", "--json")]
        assert all(c.returncode == 0 for c in cli), [c.stdout + c.stderr for c in cli]
        for listing in cli[:2]:
            line = next(x for x in listing.stdout.splitlines() if box.account in x)
            assert "microsoft" in line and "connected" in line, line
            assert "3 messages taken in" in line and "last sync never" not in line, line
        frames.extend(c.stdout for c in cli)
        paths = setup.paths
        with box.server.lock:
            tokens = [*box.server.access_tokens, *box.server.refresh_tokens]
        assert len(tokens) >= 3  # the first pair, the new access token (and refresh token)
        places = {
            "log": "\n".join(
                p.read_text(errors="replace") for p in paths.log_dir.rglob("*") if p.is_file()
            ),
            "state store": _state_dump(paths.state_db)
            + (paths.state_dir / "accounts.json").read_text(),
            "frames and CLI output": "\n".join(frames),
            "llm requests": json.dumps(llm_server.requests),
        }
    assert (
        "Leak check 0" in places["frames and CLI output"]
        and "Leak check 0" in places["llm requests"]
    )
    assert "refresh" in places["log"] or "run" in places["log"]  # the log is not empty
    for where, text in places.items():
        for token in tokens:
            assert token not in text, f"a token leaked into the {where}"

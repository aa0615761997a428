"""The three clients through ``open_client`` as the pipeline will drive them: a ledger of
processed ids, cursors advanced only after processing, resyncs that fetch nothing twice."""

from __future__ import annotations

import asyncio

import pytest

from agents.cloud.clients import open_client
from agents.cloud.oauth import TokenManager
from agents.cloud.settings import CloudSettings
from agents.cloud.types import Message
from tests.agents.cloud.conftest import connect
from tests.support.fake_cloud import MemoryVault
from tests.support.fake_google import FakeGmail
from tests.support.fake_microsoft import FakeGraph


class Ledger:
    """What the pipeline keeps: processed ids and the cursor, advanced after processing."""

    def __init__(self) -> None:
        self.done: set[str] = set()
        self.cursor: str | None = None
        self.bodies: list[Message] = []


async def run_once(
    kind: str, account: str, settings: CloudSettings, manager: TokenManager, ledger: Ledger
) -> tuple[int, bool]:
    async with open_client(kind, account, settings, manager) as client:
        changes = await client.list_changes(ledger.cursor)
        todo = [r for r in changes.refs if r.id not in ledger.done]
        refs = await client.refs_with_headers(todo)
        messages = await asyncio.gather(*(client.get_message(r) for r in refs))
        for message in messages:
            ledger.bodies.append(message)
            ledger.done.add(message.ref.id)
        ledger.cursor = changes.cursor  # only after every item is done
        return client.bodies_fetched, changes.resynced


@pytest.mark.parametrize("kind", ["gmail", "outlook", "teams"])
async def test_first_run_next_run_and_resync(
    kind: str,
    gmail_server: FakeGmail,
    graph_server: FakeGraph,
    vault: MemoryVault,
    settings: CloudSettings,
    manager: TokenManager,
) -> None:
    server: FakeGmail | FakeGraph
    if kind == "gmail":
        server = gmail_server
        account = connect(server, vault, "google")

        def add(n: int, prefix: str) -> None:
            for i in range(n):
                gmail_server.add_message(subject=f"{prefix} {i}", text=f"{prefix} body {i}")

        expire = gmail_server.expire_history

    elif kind == "outlook":
        server = graph_server
        account = connect(server, vault, "microsoft")

        def add(n: int, prefix: str) -> None:
            for i in range(n):
                graph_server.add_mail(f"{prefix} {i}", text=f"{prefix} body {i}")

        expire = graph_server.expire_delta
    else:
        server = graph_server
        account = connect(server, vault, "microsoft")
        chat = graph_server.add_chat("Project")

        def add(n: int, prefix: str) -> None:
            for i in range(n):
                graph_server.add_chat_message(chat, f"<p>{prefix} body {i}</p>")

        def expire() -> None:  # Teams cursors do not expire; a lost cursor is the resync
            ledger.cursor = None

    server.latency_s = 0.01
    ledger = Ledger()
    add(130 if kind != "gmail" else 30, "First")
    fetched, _ = await run_once(kind, account, settings, manager, ledger)
    assert fetched == len(ledger.bodies) == (130 if kind != "gmail" else 30)
    assert sorted(m.body for m in ledger.bodies)[:1] == ["First body 0"]
    add(2, "Second")
    fetched, resynced = await run_once(kind, account, settings, manager, ledger)
    assert fetched == 2 and not resynced
    assert sorted(m.body for m in ledger.bodies[-2:]) == ["Second body 0", "Second body 1"]
    expire()
    add(1, "Third")
    fetched, resynced = await run_once(kind, account, settings, manager, ledger)
    assert fetched == 1 and (resynced or kind == "teams")
    assert ledger.bodies[-1].body == "Third body 0"
    bodies = [m.ref.id for m in ledger.bodies]
    assert len(bodies) == len(set(bodies))  # nothing twice
    assert server.max_in_flight <= 4
    text, cut = ledger.bodies[-1].as_text(8000)
    assert "Third body 0" in text and not cut


async def test_unknown_kind(settings: CloudSettings, manager: TokenManager) -> None:
    with pytest.raises(ValueError, match="unknown cloud agent kind"):
        async with open_client("yahoo", "x", settings, manager):
            pass

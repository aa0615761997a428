"""daemon.handlers and daemon.chats: requests over a real WebSocket to an in-process daemon.

The run manager's refusals (``RunRefused``) arrive as ``error`` frames with their code;
``credentials_put`` lands in the daemon's secret store (an in-memory keyring here).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from keyring.backend import KeyringBackend

from daemon.errors import RunRefused
from daemon.secrets import SERVICE
from protocol.errors import ProtocolError
from protocol.frames import Ack, CredentialsPut, HomeRequest
from protocol.reference import RequestFailed
from tests.conftest import DaemonHarness
from tests.support.keyrings import MemoryKeyring

UseKeyring = Callable[[KeyringBackend], None]


def agent(folder: Path, **extra: object) -> dict[str, object]:
    return {
        "id": "notes",
        "name": "Notes",
        "kind": "local_directory",
        "schedule_cron": "0 * * * *",
        "directory_paths": [str(folder)],
        **extra,
    }


async def test_run_refusals_are_error_frames_with_their_code(
    harness: DaemonHarness, tmp_path: Path
) -> None:
    control = await harness.control()
    with pytest.raises(RequestFailed) as unknown:
        await control.trigger("nope")
    assert (unknown.value.code, unknown.value.message) == ("unknown_agent", "no agent 'nope'")
    await control.agents_sync([agent(tmp_path / "notes")])
    with pytest.raises(RequestFailed) as offline:
        await control.trigger("notes")
    assert offline.value.code == "device_offline"
    assert "needs the desktop app" in offline.value.message
    await control.status()  # the session is still fine after refusals


async def test_the_run_manager_raises_its_own_refusal(
    harness: DaemonHarness, tmp_path: Path
) -> None:
    runs = harness.daemon.runs
    with pytest.raises(RunRefused) as unknown:
        runs.start("nope", "manual")
    assert unknown.value.code == "unknown_agent"
    control = await harness.control()
    await control.agents_sync([agent(tmp_path / "notes")])
    notes = harness.daemon.registry.get("notes")
    assert notes is not None
    # The scheduler's way in answers with the code instead of raising.
    assert await harness.daemon._scheduled_run(notes, "schedule") == "device_offline"
    await runs.shutdown()
    with pytest.raises(RunRefused) as closing:
        runs.start("notes", "manual")
    assert closing.value.code == "busy"


async def test_cancel_of_nothing_is_not_found(harness: DaemonHarness) -> None:
    control = await harness.control()
    with pytest.raises(RequestFailed) as info:
        await control.cancel("no-such-run")
    assert info.value.code == "not_found"
    assert "neither an active run nor a chat request" in info.value.message


async def test_credentials_put_stores_the_tokens_and_lists_the_account(
    harness: DaemonHarness, use_keyring: UseKeyring
) -> None:
    backend = MemoryKeyring()
    use_keyring(backend)
    control = await harness.control()
    tokens = {
        "access_token": "at-0123456789",
        "refresh_token": "rt-9876543210",
        "expires_at": 4102444800,
    }
    answer = await control.request(
        CredentialsPut(id="c2", provider="outlook", account="me@example.com", secret=tokens)
    )
    assert isinstance(answer, Ack) and answer.id == "c2"
    # outlook is an alias of microsoft; the keyring holds the refresh token, never the access one
    stored = json.loads(backend.entries[(SERVICE, "oauth:microsoft:me@example.com")])
    assert stored["refresh_token"] == "rt-9876543210"
    assert "at-0123456789" not in json.dumps(stored)
    status = await control.status()
    assert [(a.provider, a.account, a.state) for a in status.accounts] == [
        ("microsoft", "me@example.com", "connected")
    ]
    assert "rt-9876543210" not in status.model_dump_json()
    assert "at-0123456789" not in status.model_dump_json()


@pytest.mark.parametrize(
    ("provider", "secret", "says"),
    [
        ("gmail", "rt-0123456789", "secret must be a JSON object of tokens"),
        ("gmail", {"access_token": 5}, "secret.access_token must be a string"),
        ("dropbox", {"refresh_token": "rt-1"}, "unknown provider 'dropbox'"),
    ],
)
async def test_credentials_put_refuses_a_bundle_it_cannot_use(
    harness: DaemonHarness, use_keyring: UseKeyring, provider: str, secret: object, says: str
) -> None:
    backend = MemoryKeyring()
    use_keyring(backend)
    control = await harness.control()
    with pytest.raises(RequestFailed) as failed:
        await control.request(
            CredentialsPut(id="c1", provider=provider, account="me@example.com", secret=secret)  # type: ignore[arg-type]
        )
    assert failed.value.code == "invalid_config"
    assert says in failed.value.message
    assert backend.entries == {}
    assert (await control.status()).accounts == []


async def test_a_chat_without_an_app_is_still_a_whole_stream(harness: DaemonHarness) -> None:
    control = await harness.control()
    result = await control.home("hello")
    assert result.started
    assert result.error == "no desktop app is connected to read or change data"
    assert result.request_id not in harness.daemon.chats  # finished chats are forgotten


async def test_a_chat_gets_an_id_and_a_second_with_a_running_id_is_refused(
    harness: DaemonHarness,
) -> None:
    await harness.control()
    chats = harness.daemon.chats
    session = next(iter(harness.daemon.server.sessions()))
    unnamed = HomeRequest(message="hello")
    await chats.start(session, unnamed)
    assert unnamed.request_id is not None and unnamed.request_id.startswith("chat-")
    first = chats.start(session, HomeRequest(message="hello", request_id="same"))
    with pytest.raises(ProtocolError, match="chat request same is already running") as info:
        chats.start(session, HomeRequest(message="again", request_id="same"))
    assert info.value.code == "bad_frame"
    assert "same" in chats and chats.cancel("same") is True
    await first
    assert "same" not in chats and chats.cancel("same") is False

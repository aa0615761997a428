"""The daemon side of cloud accounts: the vault over SecretStore, bookkeeping, the CLI verbs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest
from keyring.backends import fail

from agents.cloud.http import CloudHttp
from agents.cloud.oauth import TokenManager
from daemon.accounts import Accounts, AccountState, cloud_settings, secret_key
from daemon.config import load_config
from daemon.errors import ConfigError
from daemon.paths import Paths
from tests.support.fake_google import FakeGmail
from tests.support.fake_microsoft import FakeGraph

BROWSER_SCRIPT = Path(__file__).resolve().parents[2] / "support" / "fake_browser.py"


@pytest.fixture
def paths(tmp_path: Path) -> Iterator[Paths]:
    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())  # type: ignore[no-untyped-call]  # secrets go to the 0600 file
    try:
        yield Paths.under(tmp_path / "home").ensure()
    finally:
        keyring.set_keyring(previous)


def test_config_section_and_env(paths: Paths) -> None:
    env = {
        "TETHER_GMAIL_API_BASE": "http://127.0.0.1:9/gmail/v1/",
        "TETHER_MICROSOFT_CLIENT_ID": "abc",
    }
    config = load_config(paths, env)
    settings = cloud_settings(config.cloud)
    assert settings.gmail_api_base == "http://127.0.0.1:9/gmail/v1"
    assert settings.microsoft_client_id == "abc"
    assert settings.graph_api_base == "https://graph.microsoft.com/v1.0"


def test_config_file_section(paths: Paths) -> None:
    paths.config_toml.write_text(
        '[cloud]\ngoogle_client_id = "from-file"\ngoogle_client_secret = "hunter2-secret"\n'
    )
    config = load_config(paths, {"TETHER_GOOGLE_CLIENT_ID": "from-env"})
    assert config.cloud.google_client_id == "from-env"
    assert "hunter2-secret" not in repr(config)
    paths.config_toml.write_text('[cloud]\ngoogle_clientid = "x"\n')
    with pytest.raises(ConfigError, match="did you mean 'google_client_id'"):
        load_config(paths, {})


def test_put_credentials_aliases_and_bad_input(paths: Paths) -> None:
    accounts = Accounts(paths)
    secret = {
        "access_token": "at-" + "a" * 20,
        "refresh_token": "rt-" + "r" * 20,
        "expires_at": time.time() + 3600,
    }
    state = accounts.put_credentials("gmail", "me@example.com", secret)
    assert (state.provider, state.account, state.state) == ("google", "me@example.com", "connected")
    accounts.put_credentials("teams", "me@contoso.com", json.dumps(secret))
    assert [(s.provider, s.account) for s in accounts.list()] == [
        ("google", "me@example.com"),
        ("microsoft", "me@contoso.com"),
    ]
    with pytest.raises(ValueError, match="unknown provider"):
        accounts.put_credentials("yahoo", "x", secret)
    with pytest.raises(ValueError, match="expires_at"):
        accounts.put_credentials("google", "x", {**secret, "expires_at": "soon"})
    with pytest.raises(ValueError, match="JSON"):
        accounts.put_credentials("google", "x", "not json")
    # no token in the bookkeeping file; the refresh token only in the secrets store
    text = accounts.file.read_text()
    assert "rt-" not in text and "at-" not in text
    stored = json.loads(paths.secrets_file.read_text())["secrets"][
        secret_key("google", "me@example.com")
    ]
    assert json.loads(stored)["refresh_token"] == secret["refresh_token"]
    assert "at-" not in stored  # access tokens stay in memory


async def test_vault_refreshes_after_restart_and_keeps_rotation(
    paths: Paths, tmp_path: Path
) -> None:
    with FakeGraph() as server:
        data = server.issue_tokens()
        settings = cloud_settings(
            load_config(
                paths,
                {
                    "TETHER_GRAPH_API_BASE": server.api_base,
                    "TETHER_MICROSOFT_TOKEN_URL": server.token_url,
                    "TETHER_MICROSOFT_CLIENT_ID": server.client_id,
                },
            ).cloud
        )
        first = Accounts(paths)
        first.put_credentials(
            "microsoft", "me@contoso.com", {**data, "expires_at": time.time() + 3600}
        )
        # a new daemon process: no access token in memory, so one refresh with the stored token
        later = Accounts(paths)
        manager = TokenManager(later.vault, settings, tmp_path / "locks")
        async with CloudHttp(
            "microsoft", "me@contoso.com", manager.account("outlook", "me@contoso.com"), settings
        ) as http:
            me = await http.get_json(f"{server.api_base}/me")
        await manager.aclose()
        assert me["mail"] == "me@contoso.com" and server.refresh_count == 1
        rotated = later.load_tokens("microsoft", "me@contoso.com")
        assert rotated is not None and rotated.refresh_token != data["refresh_token"]
        assert rotated.refresh_token in server.refresh_tokens


def test_bookkeeping(paths: Paths) -> None:
    accounts = Accounts(paths)
    accounts.put_credentials("google", "me@example.com", {"refresh_token": "rt-" + "x" * 20})
    accounts.mark_throttled("google", "me@example.com", 2_000_000_000.0)
    accounts.mark_needs_reconnect(
        "google", "me@example.com", "invalid_grant: Token has been expired or revoked."
    )
    state = accounts.get("gmail", "me@example.com")
    assert (
        state is not None
        and state.state == "needs_reconnect"
        and state.throttled_until == 2_000_000_000.0
    )
    accounts.record_sync("google", "me@example.com", 3, at=1_900_000_000.0)
    accounts.record_sync("google", "me@example.com", 2, at=1_900_000_100.0)
    state = Accounts(paths).get("google", "me@example.com")
    assert state is not None
    assert (
        state.state,
        state.reason,
        state.throttled_until,
        state.last_sync,
        state.messages_taken,
    ) == (
        "connected",
        None,
        None,
        1_900_000_100.0,
        5,
    )
    assert accounts.remove("google", "me@example.com") is True
    assert accounts.remove("google", "me@example.com") is False
    assert accounts.list() == [] and accounts.load_tokens("google", "me@example.com") is None


# --- the CLI ---------------------------------------------------------------------------


def daemon(
    home: Path, server: FakeGmail, *args: str, browser: str = "user"
) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TETHER_")},
        "TETHER_HOME": str(home),
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
        "TETHER_GMAIL_API_BASE": server.api_base,
        "TETHER_GOOGLE_AUTH_URL": server.url + server.auth_path,
        "TETHER_GOOGLE_TOKEN_URL": server.url + server.token_path,
        "TETHER_GOOGLE_CLIENT_ID": server.client_id,
        "TETHER_GOOGLE_CLIENT_SECRET": server.client_secret or "",
        "BROWSER": f"{sys.executable} {BROWSER_SCRIPT} %s",
        "FAKE_BROWSER": browser,
    }
    return subprocess.run(
        [sys.executable, "-m", "daemon", *args], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.slow
def test_connect_list_remove(tmp_path: Path) -> None:
    with FakeGmail(client_secret="s3cret-desktop") as server:
        done = daemon(tmp_path, server, "connect", "gmail")
        assert done.returncode == 0, done.stderr
        assert "connected google account me@example.com" in done.stdout
        assert (
            "accounts.google.com" not in done.stdout and server.url in done.stdout
        )  # the URL is printed
        listed = daemon(tmp_path, server, "accounts")
        assert "me@example.com" in listed.stdout and "connected" in listed.stdout
        assert "0 messages taken in" in listed.stdout
        for token in [*server.access_tokens, *server.refresh_tokens]:
            assert token not in done.stdout + done.stderr + listed.stdout
        removed = daemon(tmp_path, server, "accounts", "remove", "me@example.com")
        assert removed.returncode == 0 and "removed google account" in removed.stdout
        assert "no accounts connected" in daemon(tmp_path, server, "accounts").stdout


@pytest.mark.slow
def test_connect_rejects_a_wrong_state_and_times_out(tmp_path: Path) -> None:
    with FakeGmail(client_secret="s3cret-desktop") as server:
        server.tamper_state = True
        forged = daemon(tmp_path, server, "connect", "google", "--account", "me@example.com")
        assert forged.returncode == 1 and "wrong state" in forged.stderr
        assert "Traceback" not in forged.stderr
        server.tamper_state = False
        nobody = daemon(tmp_path, server, "connect", "google", "--timeout", "1", browser="absent")
        assert nobody.returncode == 1 and "nobody signed in within 1 s" in nobody.stderr
        assert "no accounts connected" in daemon(tmp_path, server, "accounts").stdout


def test_accounts_lines_say_the_state() -> None:
    from daemon.cli.accounts import describe

    broken = AccountState(
        "google", "me@example.com", "needs_reconnect", "invalid_grant: revoked", 2e9, 1.9e9, 12
    )
    line = describe(broken, now=1.95e9)
    assert (
        "needs reconnect (invalid_grant: revoked)" in line and "throttled until 2033-05-18" in line
    )
    assert "last sync 2030-03-17" in line and "12 messages taken in" in line
    assert "throttled" not in describe(
        AccountState("microsoft", "a@b", throttled_until=1.0), now=2.0
    )

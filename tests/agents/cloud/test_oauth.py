"""OAuth: sign-in against the fake authorization servers with a fake browser, and refresh."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import webbrowser
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from agents.cloud.http import CloudHttp
from agents.cloud.oauth import TokenBundle, TokenManager, classify_token_error, sign_in
from agents.cloud.settings import CloudSettings
from agents.errors import CloudConfigError, CloudUnavailable, NeedsReconnect, SignInFailed
from tests.agents.cloud.conftest import connect
from tests.support.fake_cloud import MemoryVault, follow_authorization
from tests.support.fake_google import FakeGmail
from tests.support.fake_microsoft import FakeGraph


class FakeBrowser(webbrowser.BaseBrowser):
    """A webbrowser controller: records the URL and runs ``action`` (the user)."""

    def __init__(self) -> None:
        super().__init__("tether-fake")
        self.opened: list[str] = []
        self.action: Callable[[str], None] | None = follow_authorization

    def open(self, url: str, new: int = 0, autoraise: bool = True) -> bool:
        self.opened.append(url)
        if self.action is not None:
            self.action(url)
        return True


@pytest.fixture
def browser() -> Iterator[FakeBrowser]:
    fake = FakeBrowser()
    webbrowser.register("tether-fake", None, fake, preferred=True)
    try:
        yield fake
    finally:
        webbrowser._browsers.pop("tether-fake", None)  # type: ignore[attr-defined]
        while "tether-fake" in webbrowser._tryorder:  # type: ignore[attr-defined]
            webbrowser._tryorder.remove("tether-fake")  # type: ignore[attr-defined]


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def test_google_sign_in_by_get(
    gmail_server: FakeGmail, settings: CloudSettings, browser: FakeBrowser
) -> None:
    printed: list[str] = []
    bundle = await sign_in("gmail", settings, timeout_s=30, out=printed.append)
    assert bundle.refresh_token in gmail_server.refresh_tokens
    assert bundle.access_token in gmail_server.access_tokens and bundle.expires_at > time.time()
    [url] = browser.opened
    assert any(url in line for line in printed)
    q = query(url)
    assert q["redirect_uri"].startswith("http://127.0.0.1:")
    assert q["code_challenge_method"] == "S256" and len(q["code_challenge"]) == 43
    assert q["access_type"] == "offline" and q["prompt"] == "consent"
    assert "gmail.readonly" in q["scope"]
    assert (
        "client_secret" in gmail_server.token_forms[-1]
        and "code_verifier" in gmail_server.token_forms[-1]
    )
    assert bundle.access_token not in repr(bundle) and bundle.refresh_token not in repr(bundle)


async def test_microsoft_sign_in_by_form_post(
    graph_server: FakeGraph, settings: CloudSettings, browser: FakeBrowser
) -> None:
    bundle = await sign_in(
        "outlook", settings, timeout_s=30, response_mode="form_post", out=lambda _: None
    )
    assert bundle.refresh_token in graph_server.refresh_tokens
    q = query(browser.opened[0])
    assert q["redirect_uri"].startswith("http://localhost:")
    assert "offline_access" in q["scope"].split() and q["response_mode"] == "form_post"
    assert "client_secret" not in graph_server.token_forms[-1]  # a public client


async def test_stray_requests_do_not_end_the_sign_in(
    gmail_server: FakeGmail, settings: CloudSettings, browser: FakeBrowser
) -> None:
    def user(url: str) -> None:
        redirect = query(url)["redirect_uri"]
        assert httpx.get(redirect + "/favicon.ico").status_code == 404
        assert httpx.get(redirect).status_code == 404  # no code, no error: keep waiting
        follow_authorization(url)

    browser.action = user
    bundle = await sign_in("google", settings, timeout_s=30, out=lambda _: None)
    assert bundle.refresh_token


async def test_wrong_state_is_rejected(
    gmail_server: FakeGmail, settings: CloudSettings, browser: FakeBrowser
) -> None:
    gmail_server.tamper_state = True
    with pytest.raises(SignInFailed, match="wrong state"):
        await sign_in("google", settings, timeout_s=30, out=lambda _: None)
    assert gmail_server.token_forms == []  # the code was never exchanged


async def test_refused_sign_in(
    graph_server: FakeGraph, settings: CloudSettings, browser: FakeBrowser
) -> None:
    graph_server.deny = True
    with pytest.raises(SignInFailed, match="access_denied"):
        await sign_in("microsoft", settings, timeout_s=30, out=lambda _: None)


async def test_nobody_signs_in(
    gmail_server: FakeGmail, settings: CloudSettings, browser: FakeBrowser
) -> None:
    browser.action = None
    with pytest.raises(SignInFailed, match="nobody signed in"):
        await sign_in("google", settings, timeout_s=0.5, out=lambda _: None)
    port = urlsplit(query(browser.opened[0])["redirect_uri"]).port
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass  # the loopback server is gone


async def test_no_client_configured() -> None:
    with pytest.raises(CloudConfigError, match="TETHER_GOOGLE_CLIENT_ID"):
        await sign_in("google", CloudSettings(), out=lambda _: None)


# --- refresh ---------------------------------------------------------------------------


async def test_expired_access_token_refreshed_once_for_concurrent_callers(
    gmail_server: FakeGmail, vault: MemoryVault, manager: TokenManager
) -> None:
    account = connect(gmail_server, vault, "google")
    old = vault.bundles[("google", account)]
    vault.bundles[("google", account)] = TokenBundle(
        old.access_token, old.refresh_token, time.time() - 1
    )
    tokens = manager.account("google", account)
    got = await asyncio.gather(*(tokens.access_token() for _ in range(5)))
    assert len(set(got)) == 1 and got[0] != old.access_token
    assert gmail_server.refresh_count == 1
    assert (
        vault.bundles[("google", account)].refresh_token == old.refresh_token
    )  # Google does not rotate


async def test_microsoft_rotated_refresh_token_is_saved_and_used_next_time(
    graph_server: FakeGraph, vault: MemoryVault, settings: CloudSettings, tmp_path: Path
) -> None:
    account = connect(graph_server, vault, "microsoft")
    first = vault.bundles[("microsoft", account)]
    graph_server.expire_access_tokens()
    manager = TokenManager(vault, settings, tmp_path / "locks")
    async with CloudHttp(
        "microsoft", account, manager.account("microsoft", account), settings
    ) as http:
        me = await http.get_json(f"{graph_server.api_base}/me")
    await manager.aclose()
    assert me["mail"] == account
    rotated = vault.bundles[("microsoft", account)]
    assert rotated.refresh_token != first.refresh_token
    assert first.refresh_token not in graph_server.refresh_tokens  # the old one is dead now
    # a new process (a new manager; access tokens live in memory only) refreshes with it
    vault.bundles[("microsoft", account)] = TokenBundle("", rotated.refresh_token, 0)
    later = TokenManager(vault, settings, tmp_path / "locks")
    token = await later.account("microsoft", account).access_token()
    await later.aclose()
    assert token in graph_server.access_tokens
    assert graph_server.refresh_count == 2


class FailingSaveVault(MemoryVault):
    async def save(self, provider: str, account: str, bundle: Any) -> None:
        raise OSError("keyring locked")


async def test_new_access_token_is_not_used_before_the_refresh_token_is_saved(
    graph_server: FakeGraph, settings: CloudSettings, tmp_path: Path
) -> None:
    vault = FailingSaveVault()
    account = connect(graph_server, vault, "microsoft")
    graph_server.expire_access_tokens()
    manager = TokenManager(vault, settings, tmp_path / "locks")
    http = CloudHttp("microsoft", account, manager.account("microsoft", account), settings)
    with pytest.raises(OSError, match="keyring locked"):
        await http.get_json(f"{graph_server.api_base}/me")
    await http.aclose()
    await manager.aclose()
    assert graph_server.refresh_count == 1
    assert [r.path for r in graph_server.api_requests()] == ["/v1.0/me"]  # only the 401 before


async def test_two_processes_refresh_once(
    graph_server: FakeGraph, vault: MemoryVault, settings: CloudSettings, tmp_path: Path
) -> None:
    account = connect(graph_server, vault, "microsoft")
    graph_server.expire_access_tokens()
    graph_server.latency_s = 0.05
    a = TokenManager(vault, settings, tmp_path / "locks")
    b = TokenManager(vault, settings, tmp_path / "locks")
    stale = vault.bundles[("microsoft", account)].access_token
    got = await asyncio.gather(
        a.account("microsoft", account).refreshed(stale),
        b.account("microsoft", account).refreshed(stale),
    )
    await a.aclose()
    await b.aclose()
    assert got[0] == got[1]
    assert graph_server.refresh_count == 1  # the second found the first one's token under the lock


async def test_revoked_microsoft_token_needs_reconnect(
    graph_server: FakeGraph, vault: MemoryVault, manager: TokenManager
) -> None:
    account = connect(graph_server, vault, "microsoft")
    before = vault.bundles[("microsoft", account)]
    graph_server.revoke()
    graph_server.expire_access_tokens()
    with pytest.raises(NeedsReconnect) as caught:
        await manager.account("teams", account).refreshed(before.access_token)
    assert "AADSTS50173" in caught.value.reason
    assert str(caught.value).startswith(f"reconnect your Microsoft account {account} (")
    assert vault.bundles[("microsoft", account)] == before  # nothing else changed


async def test_revoked_google_token_ends_a_request(
    gmail_server: FakeGmail, vault: MemoryVault, gmail_http: CloudHttp
) -> None:
    gmail_server.revoke(
        {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}
    )
    gmail_server.expire_access_tokens()
    with pytest.raises(
        NeedsReconnect, match=r"reconnect your Google account .*Token has been expired or revoked"
    ):
        await gmail_http.get_json(f"{gmail_server.api_base}/users/me/profile")


async def test_token_endpoint_outage_keeps_the_token(
    gmail_server: FakeGmail, vault: MemoryVault, manager: TokenManager
) -> None:
    account = connect(gmail_server, vault, "google")
    before = vault.bundles[("google", account)]
    gmail_server.fail("/token", 503, {"error": "backend"}, method="POST")
    with pytest.raises(CloudUnavailable):
        await manager.account("google", account).refreshed(before.access_token)
    assert vault.bundles[("google", account)] == before and vault.saves == []


async def test_misconfigured_client(
    graph_server: FakeGraph, vault: MemoryVault, settings: CloudSettings, tmp_path: Path
) -> None:
    account = connect(graph_server, vault, "microsoft")
    wrong = CloudSettings(**{**settings.__dict__, "microsoft_client_id": "not-registered"})
    manager = TokenManager(vault, wrong, tmp_path / "locks")
    stale = vault.bundles[("microsoft", account)].access_token
    with pytest.raises(CloudConfigError, match="AADSTS700016"):
        await manager.account("microsoft", account).refreshed(stale)
    await manager.aclose()


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (
            400,
            {
                "error": "invalid_grant",
                "error_description": "AADSTS700082: The refresh token has expired.\r\nTrace ID: x",
            },
            NeedsReconnect,
        ),
        (400, {"error": "invalid_grant", "error_codes": [70008]}, NeedsReconnect),
        (
            400,
            {"error": "interaction_required", "error_description": "AADSTS50076: MFA required"},
            NeedsReconnect,
        ),
        (
            400,
            {"error": "invalid_grant", "error_description": "AADSTS65001: consent"},
            NeedsReconnect,
        ),
        (
            400,
            {"error": "invalid_request", "error_description": "AADSTS700025: Client is public"},
            CloudConfigError,
        ),
        (400, {"error": "invalid_client", "error_codes": [50011]}, CloudConfigError),
        (401, {"error": "invalid_client"}, CloudConfigError),
        (500, {"error": "server_error"}, CloudUnavailable),
        (429, None, CloudUnavailable),
    ],
)
def test_token_errors_fall_in_three_kinds(
    status: int, body: dict[str, Any] | None, kind: type[Exception]
) -> None:
    error = classify_token_error("microsoft", "me@contoso.com", status, body)
    assert type(error) is kind
    if isinstance(error, NeedsReconnect):
        assert error.reason.split(":")[0] == body["error"]  # type: ignore[index]
        assert "Trace ID" not in error.reason


async def test_tokens_never_reach_the_log(
    graph_server: FakeGraph,
    vault: MemoryVault,
    settings: CloudSettings,
    browser: FakeBrowser,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    printed: list[str] = []
    bundle = await sign_in("microsoft", settings, timeout_s=30, out=printed.append)
    vault.bundles[("microsoft", "me@contoso.com")] = bundle
    graph_server.expire_access_tokens()
    manager = TokenManager(vault, settings, tmp_path / "locks")
    async with CloudHttp(
        "microsoft", "me@contoso.com", manager.account("microsoft", "me@contoso.com"), settings
    ) as http:
        await http.get_json(f"{graph_server.api_base}/me")
    graph_server.revoke()
    graph_server.expire_access_tokens()
    with pytest.raises(NeedsReconnect) as caught:
        await manager.account("microsoft", "me@contoso.com").refreshed(
            vault.bundles[("microsoft", "me@contoso.com")].access_token
        )
    await manager.aclose()
    assert "refreshed the microsoft access token" in caplog.text
    secrets = [
        *graph_server.access_tokens,
        bundle.refresh_token,
        *[s.refresh_token for _, _, s in vault.saves],
    ]
    assert len(secrets) >= 3
    for secret in secrets:
        assert secret and secret not in caplog.text
        assert secret not in "\n".join(printed) and secret not in str(caught.value)

"""Fixtures for the cloud connector tests: the fake providers, settings, tokens, clients."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agents.cloud.http import CloudHttp
from agents.cloud.oauth import TokenBundle, TokenManager
from agents.cloud.settings import CloudSettings
from tests.support.fake_cloud import MemoryVault
from tests.support.fake_google import FakeGmail
from tests.support.fake_microsoft import FakeGraph

GOOGLE_SECRET = "test-desktop-secret"


@pytest.fixture
def gmail_server() -> Iterator[FakeGmail]:
    with FakeGmail(client_secret=GOOGLE_SECRET) as server:
        yield server  # type: ignore[misc]


@pytest.fixture
def graph_server() -> Iterator[FakeGraph]:
    with FakeGraph() as server:
        yield server  # type: ignore[misc]


@pytest.fixture
def settings(gmail_server: FakeGmail, graph_server: FakeGraph) -> CloudSettings:
    return CloudSettings(
        gmail_api_base=gmail_server.api_base,
        graph_api_base=graph_server.api_base,
        google_auth_url=gmail_server.url + gmail_server.auth_path,
        google_token_url=gmail_server.url + gmail_server.token_path,
        microsoft_auth_url=graph_server.auth_url,
        microsoft_token_url=graph_server.token_url,
        google_client_id=gmail_server.client_id,
        google_client_secret=GOOGLE_SECRET,
        microsoft_client_id=graph_server.client_id,
        timeout_s=10.0,
    )


@pytest.fixture
def vault() -> MemoryVault:
    return MemoryVault()


@pytest.fixture
async def manager(
    vault: MemoryVault, settings: CloudSettings, tmp_path: Path
) -> AsyncIterator[TokenManager]:
    tm = TokenManager(vault, settings, tmp_path / "locks")
    yield tm
    await tm.aclose()


def connect(server: FakeGmail | FakeGraph, vault: MemoryVault, provider: str) -> str:
    """Store a fresh token pair for the server's account, as credentials_put would."""
    data = server.issue_tokens()
    account = server.signed_in_account
    vault.bundles[(provider, account)] = TokenBundle.from_response(data, time.time())
    return account


@pytest.fixture
async def gmail_http(
    gmail_server: FakeGmail, vault: MemoryVault, manager: TokenManager, settings: CloudSettings
) -> AsyncIterator[CloudHttp]:
    account = connect(gmail_server, vault, "google")
    async with CloudHttp(
        "google", account, manager.account("google", account), settings, backoff_s=0.01
    ) as http:
        yield http


@pytest.fixture
async def graph_http(
    graph_server: FakeGraph, vault: MemoryVault, manager: TokenManager, settings: CloudSettings
) -> AsyncIterator[CloudHttp]:
    account = connect(graph_server, vault, "microsoft")
    async with CloudHttp(
        "microsoft", account, manager.account("microsoft", account), settings, backoff_s=0.01
    ) as http:
        yield http

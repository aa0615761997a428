"""The ``loopback_only`` guard of tests/conftest.py: tests talk only to 127.0.0.1.

A model call with a real provider's ``api_base`` is refused inside httpx, before
any name lookup or connection, so it fails at once and offline; lookups and
connects to other hosts are refused in the socket module; and a test whose code
swallows the refusal still fails.
"""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from agents.errors import LLMError
from agents.llm import LiteLLM, LLMSettings
from tests.conftest import LoopbackGuard, is_loopback
from tests.support.llm_server import FakeLLMServer, Text

pytest_plugins = ["pytester"]


def llm(api_base: str) -> LiteLLM:
    return LiteLLM(
        LLMSettings(
            model="openai/gpt-4o-mini", api_base=api_base, api_key="sk-test", max_attempts=1
        )
    )


async def test_a_model_call_to_a_real_provider_is_refused_before_the_network(
    loopback_only: LoopbackGuard,
) -> None:
    with pytest.raises(LLMError):
        await llm("https://api.openai.com/v1").complete([{"role": "user", "content": "hi"}])
    # Refused in httpx with the request in hand: no name lookup, no connect.
    assert len(loopback_only.refused) == 1, loopback_only.refused
    assert loopback_only.refused[0].startswith(
        "tests talk only to 127.0.0.1: refused POST https://api.openai.com/v1/"
    )
    loopback_only.refused.clear()  # expected here; any other test would now fail


async def test_a_model_call_to_the_local_test_server_goes_through(
    loopback_only: LoopbackGuard, llm_server: FakeLLMServer
) -> None:
    llm_server.script(Text("hello from 127.0.0.1"))
    reply = await llm(llm_server.base_url).complete([{"role": "user", "content": "hi"}])
    assert reply.text == "hello from 127.0.0.1"
    assert llm_server.calls == 1 and loopback_only.refused == []


async def test_lookups_and_connects_elsewhere_are_refused(loopback_only: LoopbackGuard) -> None:
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("example.com", 443)
    with pytest.raises(OSError):
        await asyncio.open_connection("example.com", 443)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        with pytest.raises(ConnectionRefusedError):
            sock.connect(("10.1.2.3", 443))
    # loopback goes through
    with socket.create_server(("127.0.0.1", 0)) as server:
        with socket.create_connection(server.getsockname()[:2], timeout=5):
            pass
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("http://192.0.2.7/")
    assert len(loopback_only.refused) == 4, loopback_only.refused
    loopback_only.refused.clear()


def test_loopback_names_and_addresses() -> None:
    for host in ("127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost", "0.0.0.0", None, b"::1"):
        assert is_loopback(host), host
    for host in ("api.openai.com", "10.0.0.1", "192.168.1.2", "::ffff:8.8.8.8", "localhost.evil"):
        assert not is_loopback(host), host


def test_a_test_that_swallows_the_refusal_still_fails(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makeconftest("from tests.conftest import loopback_only  # noqa: F401\n")
    pytester.makepyfile(
        """
        import httpx

        def test_swallows_it():
            try:
                httpx.get("https://api.openai.com/v1/models")
            except httpx.ConnectError:
                pass  # the code under test hid the failure
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["*tests talk only to 127.0.0.1: refused GET https://api.openai.com/v1/models*"]
    )

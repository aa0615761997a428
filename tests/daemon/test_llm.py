"""daemon.llm: LLM settings resolved once (config, environment, keyring) and injected.

The keyring is ``tests.support.keyrings``' in-memory backend behind the real
``SecretStore``; the OS keyring is never touched. The model server is the local fake.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
from keyring.backend import KeyringBackend
from keyring.backends import fail

from agents.errors import LLMNotConfigured
from agents.llm import LiteLLM
from daemon.config import LLMConfig, load_settings
from daemon.llm import API_KEY_SECRET, LLMFactory, stored_api_key
from daemon.paths import Paths
from daemon.secrets import SERVICE, SecretStore
from protocol.agent_config import LocalDirectoryAgent
from tests.support.keyrings import HangingKeyring, MemoryKeyring
from tests.support.llm_server import FakeLLMServer, Text

UseKeyring = Callable[[KeyringBackend], None]
KEYRING_KEY = "key-from-the-keyring-0123456789"


def factory(config: LLMConfig, paths: Paths) -> LLMFactory:
    return LLMFactory(config, stored_key=partial(stored_api_key, SecretStore(paths)))


def test_the_entry_is_the_one_the_401_hint_names() -> None:
    assert (SERVICE, API_KEY_SECRET) == ("tether", "llm-api-key")


def test_config_and_environment_are_applied_once(home: Path, use_keyring: UseKeyring) -> None:
    store = MemoryKeyring({(SERVICE, API_KEY_SECRET): KEYRING_KEY})
    use_keyring(store)
    paths = Paths.under(home).ensure()
    paths.config_toml.write_text(
        '[llm]\nmodel = "ollama/llama3.1"\napi_base = "http://127.0.0.1:11434"\n'
        'api_key = "k0-from-the-file"\ntimeout_s = 9\n',
        encoding="utf-8",
    )
    env = {
        "TETHER_HOME": str(home),
        "TETHER_MODEL": "openai/gpt-4o-mini",
        "TETHER_API_BASE": "",  # empty counts as unset: the file's value stays
        "TETHER_API_KEY": "k1-from-the-environment",
    }
    settings = factory(load_settings(env).config.llm, paths).settings()
    assert settings.model == "openai/gpt-4o-mini"
    assert settings.api_base == "http://127.0.0.1:11434"
    assert settings.api_key == "k1-from-the-environment"
    assert settings.timeout_s == 9
    from_file = factory(load_settings({"TETHER_HOME": str(home)}).config.llm, paths)
    assert from_file.settings().api_key == "k0-from-the-file"
    assert from_file.settings("openai/office").model == "openai/office"  # the agent's own
    assert store.lookups == 0  # a key was configured: the keyring is not asked


def test_the_keyring_supplies_the_key_when_none_is_configured(
    paths: Paths, use_keyring: UseKeyring
) -> None:
    store = MemoryKeyring({(SERVICE, API_KEY_SECRET): KEYRING_KEY})
    use_keyring(store)
    llm = factory(LLMConfig(model="openai/gpt-4o-mini"), paths)
    settings = llm.settings()
    assert settings.api_key == KEYRING_KEY
    assert KEYRING_KEY not in repr(settings)
    store.entries[(SERVICE, API_KEY_SECRET)] = "a-key-stored-while-running-0123"
    assert llm.settings().api_key == "a-key-stored-while-running-0123"  # no restart needed


def test_no_model_is_refused_before_the_keyring_is_asked(
    paths: Paths, use_keyring: UseKeyring
) -> None:
    store = MemoryKeyring({(SERVICE, API_KEY_SECRET): KEYRING_KEY})
    use_keyring(store)
    llm = factory(LLMConfig(), paths)
    with pytest.raises(LLMNotConfigured, match=r"TETHER_MODEL .* \[llm\] model in config\.toml"):
        llm()
    assert store.lookups == 0
    agent = LocalDirectoryAgent.model_validate(
        {
            "id": "notes",
            "name": "Notes",
            "kind": "local_directory",
            "schedule_cron": "0 * * * *",
            "directory_paths": ["/tmp"],
            "model": "openai/office",
        }
    )
    built = llm.for_agent(agent)
    assert isinstance(built, LiteLLM) and built.settings.model == "openai/office"


def test_a_failing_keyring_means_no_key(paths: Paths, use_keyring: UseKeyring) -> None:
    use_keyring(fail.Keyring())  # type: ignore[no-untyped-call]
    assert factory(LLMConfig(model="ollama/llama3.1"), paths).settings().api_key is None


def test_a_corrupt_fallback_file_means_no_key_and_says_why(
    paths: Paths, use_keyring: UseKeyring, caplog: pytest.LogCaptureFixture
) -> None:
    use_keyring(fail.Keyring())  # type: ignore[no-untyped-call]
    paths.ensure()
    paths.secrets_file.write_text("{broken", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="tether"):
        assert stored_api_key(SecretStore(paths)) is None
    assert "no stored LLM API key" in caplog.text and "corrupt" in caplog.text


def test_a_hanging_keyring_is_not_waited_for(paths: Paths, use_keyring: UseKeyring) -> None:
    backend = HangingKeyring({(SERVICE, API_KEY_SECRET): KEYRING_KEY})
    use_keyring(backend)
    try:
        assert stored_api_key(SecretStore(paths), timeout_s=0.05) is None
        assert backend.waiting.is_set()  # it was asked, and is still stuck
    finally:
        backend.release.set()


async def test_the_built_llm_calls_the_configured_model(
    paths: Paths, use_keyring: UseKeyring
) -> None:
    use_keyring(MemoryKeyring({(SERVICE, API_KEY_SECRET): KEYRING_KEY}))
    with FakeLLMServer() as server:
        server.script(Text("hello from the fake"))
        llm = factory(LLMConfig(model="openai/office", api_base=server.base_url), paths)()
        reply = await llm.complete([{"role": "user", "content": "hi"}])
        assert reply.text == "hello from the fake"
        assert server.requests[0]["model"] == "office"
        assert server.authorizations == [f"Bearer {KEYRING_KEY}"]  # the keyring's key

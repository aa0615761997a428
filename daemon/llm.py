"""The daemon's LLM: settings resolved in one place, injected into ``agents.llm.LiteLLM``.

Rules:

- :class:`LLMFactory` turns the ``[llm]`` table of :class:`~daemon.config.Config`
  (config.toml, ``TETHER_MODEL`` / ``TETHER_API_BASE`` / ``TETHER_API_KEY`` already
  applied by ``daemon.config``) into ``agents.llm.LLMSettings``. Nothing here reads
  the environment, and ``agents`` never does: it receives the settings.
- An agent's own ``model`` wins over the configured one.
- No model: :class:`~agents.errors.LLMNotConfigured` naming what to set, before the
  keyring is asked or litellm imported.
- No key configured: the secret ``llm-api-key`` of ``daemon.secrets`` (the keyring
  entry ``tether`` / ``llm-api-key``, or the fallback file) is asked on each build,
  so a key stored while the daemon runs is used by the next run without a restart.
  A missing, failing, corrupt or hanging store means no key (a local model needs
  none); the lookup never waits longer than ``KEYRING_TIMEOUT_S``.
- Building may block (the keyring on D-Bus): callers build off the event loop
  (``asyncio.to_thread``), as the run manager and the chat service do.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from agents.errors import LLMNotConfigured
from agents.llm import LLM, LiteLLM, LLMSettings
from protocol.agent_config import AgentConfig

from .config import LLMConfig
from .errors import ConfigError
from .secrets import SecretStore

__all__ = ["API_KEY_SECRET", "KEYRING_TIMEOUT_S", "LLMFactory", "stored_api_key"]

log = logging.getLogger("tether.llm")

API_KEY_SECRET = "llm-api-key"
"""The ``daemon.secrets`` key of the LLM API key: keyring entry ``tether/llm-api-key``."""

# A keyring backend on a headless box may block on D-Bus; never wait longer than this.
KEYRING_TIMEOUT_S = 2.0

NOT_CONFIGURED = (
    "no model configured: set TETHER_MODEL (for example openai/gpt-4o-mini or "
    "ollama/llama3.1) or [llm] model in config.toml"
)

KeyLookup = Callable[[], str | None]


def stored_api_key(secrets: SecretStore, *, timeout_s: float = KEYRING_TIMEOUT_S) -> str | None:
    """The stored LLM API key, or None; runs in a daemon thread so it cannot hang us."""
    result: list[str | None] = [None]

    def lookup() -> None:
        try:
            result[0] = secrets.get(API_KEY_SECRET) or None
        except ConfigError as exc:  # a corrupt fallback file: no key, and say why
            log.warning("no stored LLM API key: %s", exc)
        except Exception as exc:  # no backend, locked, D-Bus gone, ...: no key
            log.debug("no stored LLM API key: %s: %s", type(exc).__name__, exc)

    thread = threading.Thread(target=lookup, name="tether-keyring", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        log.warning(
            "the keyring did not answer within %.1f s; calling the model without a key", timeout_s
        )
        return None
    return result[0]


class LLMFactory:
    """Builds the :class:`~agents.llm.LLM` for a run or a chat (see the module rules)."""

    def __init__(self, config: LLMConfig, *, stored_key: KeyLookup) -> None:
        self.config = config
        self._stored_key = stored_key

    def settings(self, model: str | None = None) -> LLMSettings:
        """The settings for ``model`` (default: the configured one); raises if there is none."""
        config = self.config
        model = model or config.model
        if not model:
            raise LLMNotConfigured(NOT_CONFIGURED)
        return LLMSettings(
            model=model,
            api_base=config.api_base,
            api_key=config.api_key or self._stored_key(),
            timeout_s=config.timeout_s,
            max_attempts=config.max_attempts,
        )

    def __call__(self, model: str | None = None) -> LLM:
        return LiteLLM(self.settings(model))

    def for_agent(self, agent: AgentConfig) -> LLM:
        return self(agent.model)

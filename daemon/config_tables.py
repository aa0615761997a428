"""The tables of ``config.toml`` as pydantic models: what each setting may be and its
default. ``daemon.config`` reads the file and the ``TETHER_*`` variables and
validates them with :class:`Config`; it loads this module on first use, so a CLI
verb that needs only the paths (``daemon status``) does not build these models.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agents.cloud.settings import CloudSettings
from agents.limits import RunLimits

__all__ = [
    "BudgetConfig",
    "CloudConfig",
    "Config",
    "LLMConfig",
    "LogLevel",
    "RunsConfig",
    "is_loopback_host",
]

MiB = 1024 * 1024

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


def is_loopback_host(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ``::1`` (brackets allowed)."""
    name = host.strip().rstrip(".").lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LLMConfig(_Section):
    """The ``[llm]`` table: which model litellm calls, and how patiently."""

    model: str | None = None
    api_base: str | None = None
    api_key: str | None = Field(default=None, repr=False)
    timeout_s: float = Field(default=120.0, gt=0)
    max_attempts: int = Field(default=5, ge=1)
    # Embeds notes for semantic search when the app has a vector store; None: never.
    embedding_model: str | None = None


class BudgetConfig(_Section):
    """The ``[runs.budget]`` table: what one run may spend unless the agent says otherwise.

    Cautious defaults: a first run over a large folder is split over several runs
    instead of costing a fortune at once. ``max_cost_usd`` applies to models whose
    price litellm knows; a local model is bounded by calls and tokens."""

    max_llm_calls: int | None = Field(default=500, ge=1)
    max_prompt_tokens: int | None = Field(default=2_000_000, ge=1)
    max_cost_usd: float | None = Field(default=1.0, gt=0)


class RunsConfig(_Section):
    """The ``[runs]`` table: limits on agent runs."""

    max_concurrent_per_device: int = Field(default=1, ge=1)
    progress_interval_s: float = Field(default=0.25, gt=0)
    max_file_bytes: int = Field(default=RunLimits.max_file_bytes, ge=1)
    step_budget: int = Field(default=RunLimits.step_budget, ge=1)
    tool_call_budget: int = Field(default=RunLimits.tool_call_budget, ge=1)
    # Characters of an item per model call (long files are cut, small ones packed up
    # to this): lower it for a local model with a small context window.
    chunk_chars: int = Field(default=RunLimits.chunk_chars, ge=1000)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)


class CloudConfig(_Section):
    """The ``[cloud]`` table: Gmail/Graph endpoints and the OAuth clients (issue 12)."""

    # The defaults live once, in the agents-side settings (as RunLimits' do above).
    gmail_api_base: str = CloudSettings.gmail_api_base
    graph_api_base: str = CloudSettings.graph_api_base
    google_auth_url: str = CloudSettings.google_auth_url
    google_token_url: str = CloudSettings.google_token_url
    microsoft_auth_url: str = CloudSettings.microsoft_auth_url
    microsoft_token_url: str = CloudSettings.microsoft_token_url
    google_client_id: str | None = None
    google_client_secret: str | None = Field(default=None, repr=False)
    microsoft_client_id: str | None = None
    timeout_s: float = Field(default=CloudSettings.timeout_s, gt=0)
    max_attachment_bytes: int = Field(default=10 * MiB, ge=0)


class Config(_Section):
    """All settings of the daemon process."""

    host: str = "127.0.0.1"
    port: int = Field(default=47821, ge=0, le=65535)  # 0 = let the OS pick
    allow_remote: bool = False
    allowed_origins: list[str] = Field(default_factory=list)
    max_message_bytes: int = Field(default=16 * MiB, ge=1024)
    hello_timeout_s: float = Field(default=5.0, gt=0)
    heartbeat_s: float = Field(default=20, gt=0)
    tool_call_timeout_s: float = Field(default=30.0, gt=0)
    max_in_flight: int = Field(default=64, ge=1)
    max_chats_per_session: int = Field(default=4, ge=1)  # answering at once; others wait
    max_queued_chats_per_session: int = Field(default=64, ge=0)  # then `busy`
    max_pending_handshakes: int = Field(default=32, ge=1)
    max_bad_frames: int = Field(default=20, ge=1)
    event_retention: int = Field(default=1000, ge=0)
    log_level: LogLevel = "INFO"
    llm: LLMConfig = Field(default_factory=LLMConfig)
    runs: RunsConfig = Field(default_factory=RunsConfig)
    cloud: CloudConfig = Field(default_factory=CloudConfig)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("host")
    @classmethod
    def _host_not_empty(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _loopback_unless_allowed(self) -> Config:
        if not self.allow_remote and not is_loopback_host(self.host):
            raise ValueError(
                f"host {self.host} is not a loopback address; set allow_remote = true to bind it"
            )
        return self

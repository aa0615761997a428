"""Agent configuration: the ``AgentConfig`` union of agents.md, discriminated on ``kind``.

Rules:

- Structure and value checks live here (ids, data types, absolute roots, extensions);
  the cron expression is checked by the daemon with ``scheduler.cron`` (this package
  depends on nothing of ours), see ``daemon.agent_configs``.
- Unknown fields are rejected (``extra="forbid"``): a typo in ``agents.toml`` must not
  silently drop a setting.
- ``data_types`` is a non-empty subset of tasks, notes, timelines, projects.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

__all__ = [
    "DATA_TYPES",
    "AgentConfig",
    "CloudAgent",
    "DateRange",
    "FilterConfig",
    "GmailAgent",
    "LocalDirectoryAgent",
    "OutlookAgent",
    "RunBudget",
    "TeamsAgent",
    "agent_config_adapter",
]

DATA_TYPES = ("tasks", "notes", "timelines", "projects")
DataType = Literal["tasks", "notes", "timelines", "projects"]
_DEFAULT_DATA_TYPES: tuple[DataType, ...] = ("tasks", "notes", "timelines")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


class RunBudget(BaseModel):
    """What one run of the agent may spend; an omitted limit takes the daemon's default
    (``[runs.budget]`` in config.toml). Reaching one ends the run ``partial``; the next
    run carries on with what is left."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_llm_calls: int | None = Field(default=None, ge=1)
    max_prompt_tokens: int | None = Field(default=None, ge=1)
    max_cost_usd: float | None = Field(default=None, gt=0)


class _AgentBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    name: str = Field(min_length=1, max_length=200)
    enabled: bool = True
    schedule_cron: str = Field(min_length=1, max_length=200)
    data_types: list[DataType] = Field(default_factory=lambda: list(_DEFAULT_DATA_TYPES))
    prompt_template: str = Field(default="", max_length=20_000)
    device_id: str | None = None
    model: str | None = None
    run_context: dict[str, Any] | None = None
    budget: RunBudget = Field(default_factory=RunBudget)

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError(
                "id must be 1-128 characters of letters, digits, '_', '-', '.', ':' "
                "and start with a letter or digit"
            )
        return value

    @field_validator("data_types")
    @classmethod
    def _check_data_types(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("data_types must name at least one of " + ", ".join(DATA_TYPES))
        return list(dict.fromkeys(value))


class LocalDirectoryAgent(_AgentBase):
    kind: Literal["local_directory"] = "local_directory"
    directory_paths: list[str] = Field(min_length=1)
    file_extensions: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    # A root with more candidate files stops before any LLM call (a folder chosen by
    # mistake, such as a whole home directory, must not be sent to the model).
    max_files: int = Field(default=20_000, ge=1)

    @field_validator("directory_paths")
    @classmethod
    def _check_roots(cls, value: list[str]) -> list[str]:
        out = []
        for raw in value:
            path = os.path.expanduser(raw)
            if not os.path.isabs(path):
                raise ValueError(f"directory path {raw!r} must be absolute")
            out.append(os.path.normpath(path))
        return out

    @field_validator("file_extensions")
    @classmethod
    def _check_extensions(cls, value: list[str]) -> list[str]:
        out = []
        for ext in value:
            ext = ext.strip().lower()
            if not ext:
                continue
            out.append(ext if ext.startswith(".") else "." + ext)
        return out


class DateRange(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    from_: str | None = Field(default=None, alias="from")
    to: str | None = None


class FilterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    labels: list[str] = Field(default_factory=list)
    senders: list[str] = Field(default_factory=list)
    folders: list[str] = Field(default_factory=list)
    chats: list[str] = Field(default_factory=list)
    date_range: DateRange | None = None


class CloudAgent(_AgentBase):
    account: str = Field(min_length=1)
    filter_config: FilterConfig = Field(default_factory=FilterConfig)
    lookback_days: int = Field(default=7, ge=1, le=365)


class GmailAgent(CloudAgent):
    kind: Literal["gmail"] = "gmail"


class OutlookAgent(CloudAgent):
    kind: Literal["outlook"] = "outlook"


class TeamsAgent(CloudAgent):
    kind: Literal["teams"] = "teams"


AgentConfig = Annotated[
    LocalDirectoryAgent | GmailAgent | OutlookAgent | TeamsAgent,
    Field(discriminator="kind"),
]

agent_config_adapter: TypeAdapter[AgentConfig] = TypeAdapter(AgentConfig)

"""Agent kinds: the composition root's map from a kind to its source, runner and checks.

Rules:

- A new source of work is one folder under ``agents/`` with a ``Source``, plus one
  entry in the kind map here; nothing else in the daemon names a kind's modules.
- :func:`kind_map` gives every kind's source factory and runner; the cloud kinds
  (``gmail``, ``outlook``, ``teams``) need the daemon's shared :class:`CloudAccess`
  (one token manager and one account book per daemon), so they are there only when
  one is given. ``SOURCES``/``RUNNERS`` are the kinds that need nothing shared.
- Runners run the one pipeline over each kind's source; a cloud runner closes its
  HTTP client and turns account problems into the report (``run_messages``).
- Gmail attachments are extracted by the local-directory extractors (only this
  module names ``agents.local_dir``), bounded by ``[cloud] max_attachment_bytes``.
- ``agent_problems`` is what a kind adds to validation beyond the config's own
  schema (a local directory's roots must not leak the machine), checked when an
  agent arrives and again at run time by the source itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial

from agents.cloud.clients import KINDS as CLOUD_KINDS
from agents.cloud.oauth import TokenManager
from agents.cloud.settings import CloudSettings
from agents.cloud.source import AccountEvents, CloudAccess, MessageSource, run_messages
from agents.local_dir.extract import extract_bytes
from agents.local_dir.policy import root_refusal
from agents.local_dir.source import LocalDirectorySource
from agents.pipeline import run_pipeline
from agents.run import AgentRunner, RunContext, RunReport
from agents.source import Source
from protocol.agent_config import AgentConfig, LocalDirectoryAgent

__all__ = ["RUNNERS", "SOURCES", "SourceFactory", "agent_problems", "cloud_access", "kind_map"]

SourceFactory = Callable[[RunContext], Source]

SOURCES: Mapping[str, SourceFactory] = {"local_directory": LocalDirectorySource}


def _runner(factory: SourceFactory) -> AgentRunner:
    async def run(ctx: RunContext) -> RunReport:
        return await run_pipeline(ctx, factory(ctx))

    return run


RUNNERS: Mapping[str, AgentRunner] = {kind: _runner(f) for kind, f in SOURCES.items()}


def cloud_access(
    settings: CloudSettings,
    tokens: TokenManager,
    events: AccountEvents | None,
    max_attachment_bytes: int,
) -> CloudAccess:
    """What the cloud kinds share, with attachments read by the local extractors."""
    return CloudAccess(
        settings=settings,
        tokens=tokens,
        events=events,
        extract=partial(extract_bytes, max_bytes=max_attachment_bytes),
        max_attachment_bytes=max_attachment_bytes,
    )


def kind_map(
    cloud: CloudAccess | None = None,
) -> tuple[dict[str, SourceFactory], dict[str, AgentRunner]]:
    """Every kind's source factory and runner (the cloud kinds when ``cloud`` is given)."""
    sources: dict[str, SourceFactory] = dict(SOURCES)
    runners: dict[str, AgentRunner] = dict(RUNNERS)
    if cloud is not None:
        access = cloud

        def message_source(ctx: RunContext) -> Source:
            # the estimator's source: every new message, however many runs they take
            return MessageSource(ctx, access, cap_to_budget=False)

        async def run(ctx: RunContext) -> RunReport:
            return await run_messages(ctx, access)

        for kind in CLOUD_KINDS:
            sources[kind] = message_source
            runners[kind] = run
    return sources, runners


def agent_problems(config: AgentConfig, protected: Sequence[str] = ()) -> list[str]:
    """What makes ``config`` unusable beyond its schema (empty when nothing does)."""
    if isinstance(config, LocalDirectoryAgent):
        return [
            f"directory_paths: {reason}"
            for path in config.directory_paths
            if (reason := root_refusal(path, protected=protected)) is not None
        ]
    return []

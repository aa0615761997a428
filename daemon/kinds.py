"""Agent kinds: the composition root's map from a kind to its source, runner and checks.

Rules:

- A new source of work is one folder under ``agents/`` with a ``Source``, plus one
  entry in ``SOURCES`` here; nothing else in the daemon names a kind's modules.
- ``RUNNERS`` runs the one pipeline over each kind's source.
- ``agent_problems`` is what a kind adds to validation beyond the config's own
  schema (a local directory's roots must not leak the machine), checked when an
  agent arrives and again at run time by the source itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from agents.local_dir.policy import root_refusal
from agents.local_dir.source import LocalDirectorySource
from agents.pipeline import run_pipeline
from agents.run import AgentRunner, RunContext, RunReport
from agents.source import Source
from protocol.agent_config import AgentConfig, LocalDirectoryAgent

__all__ = ["RUNNERS", "SOURCES", "agent_problems"]

SourceFactory = Callable[[RunContext], Source]

SOURCES: Mapping[str, SourceFactory] = {"local_directory": LocalDirectorySource}


def _runner(factory: SourceFactory) -> AgentRunner:
    async def run(ctx: RunContext) -> RunReport:
        return await run_pipeline(ctx, factory(ctx))

    return run


RUNNERS: Mapping[str, AgentRunner] = {kind: _runner(f) for kind, f in SOURCES.items()}


def agent_problems(config: AgentConfig, protected: Sequence[str] = ()) -> list[str]:
    """What makes ``config`` unusable beyond its schema (empty when nothing does)."""
    if isinstance(config, LocalDirectoryAgent):
        return [
            f"directory_paths: {reason}"
            for path in config.directory_paths
            if (reason := root_refusal(path, protected=protected)) is not None
        ]
    return []

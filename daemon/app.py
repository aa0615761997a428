"""The composition root: wires server, state, agents, runs, scheduler and chat.

Rules (architecture.md):

- ``Daemon`` is the only place that composes the packages, and it only wires: the
  frame handlers live in ``daemon.handlers``, the chat registry in
  ``daemon.chats``, the LLM settings in ``daemon.llm``. It holds the parts the
  handlers read (``daemon.handlers.Parts``).
- Everything from outside is injected: the config, paths and token (from
  ``daemon.config``, the one reader of the environment), the state store, the
  zone, the clock and the scheduler's next-fire maths.
- Start: close runs the journal still shows as running ("daemon stopped during the
  run"), load ``agents.toml``, listen, start the scheduler.
- Stop (idempotent, ordered): stop accepting, cancel runs (journal says
  ``cancelled``), close sessions with 1001, stop the scheduler, close the state store.
- litellm is never imported here: the LLM adapter imports it on the first call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from functools import partial

from agents.chat import ChatService
from agents.cloud.oauth import TokenManager
from protocol.agent_config import AgentConfig
from scheduler.cron import local_tz
from scheduler.service import NextFire, SchedulerService, cron_next_fire

from . import __version__
from .accounts import AccountBook, Accounts, cloud_settings
from .agent_configs import AgentRegistry
from .app_compat import effective_last_run_at
from .chats import ChatRegistry
from .config import Config
from .errors import RunRefused
from .estimates import Estimator
from .events import EventLog
from .handlers import FrameHandlers
from .journeys import JourneyRegistry
from .kinds import cloud_access, kind_map
from .llm import LLMFactory, stored_api_key
from .paths import Paths
from .runs import RunManager, _iso
from .secrets import SecretStore
from .server import Server
from .state import StateStore
from .vectors import NoteVectors

__all__ = ["Daemon"]

log = logging.getLogger("tether.daemon")


class Daemon:
    def __init__(
        self,
        *,
        config: Config,
        paths: Paths,
        token: str,
        state: StateStore,
        pid: int | None = None,
        tz: tzinfo | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        next_fire: NextFire = cron_next_fire,
    ) -> None:
        self.config = config
        self.paths = paths
        self.state = state
        self.tz = tz or local_tz()
        self.clock = clock
        self.secrets = SecretStore(paths)
        # One account book and one token manager per daemon: every cloud run shares them.
        self.accounts = Accounts(paths, self.secrets)
        settings = cloud_settings(config.cloud)
        self.cloud_tokens = TokenManager(self.accounts.vault, settings, paths.state_dir)
        sources, runners = kind_map(
            cloud_access(
                settings,
                self.cloud_tokens,
                AccountBook(self.accounts),
                config.cloud.max_attachment_bytes,
            )
        )
        self.llm = LLMFactory(config.llm, stored_key=partial(stored_api_key, self.secrets))
        protected = paths.protected()
        self.registry = AgentRegistry(state, protected=protected, clock=clock)
        self.vectors = NoteVectors(state, self.llm)
        self.handlers = FrameHandlers(self)
        self.server = Server(config, token, self.handlers, version=__version__, pid=pid)
        self.events = EventLog(state, self.server, retention=config.event_retention)
        self.runs = RunManager(
            state=state,
            registry=self.registry,
            server=self.server,
            events=self.events,
            config=config,
            llm_factory=self.llm.for_agent,
            runners=runners,
            protected=protected,
            tz=self.tz,
            clock=clock,
            vectors=self.vectors,
        )
        self.estimates = Estimator(
            state=state,
            registry=self.registry,
            config=config,
            sources=sources,
            tz=self.tz,
            protected=protected,
        )
        self.scheduler = SchedulerService(
            agents=self.registry.all,
            last_run_at=effective_last_run_at(state),
            is_online=lambda agent: self.runs.device_for(agent) is not None,
            start_run=self._scheduled_run,
            record_skipped=self.runs.record_skipped,
            tz=self.tz,
            clock=clock,
            next_fire=next_fire,
        )
        self.registry.on_change(self.scheduler.agents_changed)
        self.chat = ChatService(llm_factory=self.llm, tz=self.tz)
        self.chats = ChatRegistry(
            self.chat,
            self.server.device,
            vectors=self.vectors,
            max_per_session=config.max_chats_per_session,
            max_queued=config.max_queued_chats_per_session,
        )
        self.journeys = JourneyRegistry(self.llm)
        self._stopped = False

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> int:
        """Recover the journal, load agents.toml, listen, schedule. Returns the port."""
        now = self.clock()
        for run in self.state.close_orphaned_runs("daemon stopped during the run", now):
            log.warning(
                "run %s of %s was still running at the last stop",
                run.run_id,
                run.agent_id,
                extra={"run_id": run.run_id, "agent_id": run.agent_id},
            )
            await self.events.run_complete(
                run_id=run.run_id,
                agent_id=run.agent_id,
                trigger=run.trigger,
                status="error",
                started_at=_iso(run.started_at),
                finished_at=_iso(now),
                errors=["daemon stopped during the run"],
            )
        self.registry.load_file(self.paths.agents_toml)
        port = await self.server.start(self.config.host, self.config.port)
        self.scheduler.start()
        log.info("listening on %s:%d", self.config.host, port)
        return port

    async def stop(self) -> None:
        """Ordered, idempotent shutdown."""
        if self._stopped:
            return
        self._stopped = True
        log.info("shutting down")
        self.server.stop_accepting()
        self.chats.close()
        self.journeys.close()
        await self.vectors.close()
        await self.runs.shutdown()
        await self.server.close()
        self.scheduler.shutdown()
        await self.cloud_tokens.aclose()
        self.state.close()
        log.info("stopped")

    async def _scheduled_run(self, agent: AgentConfig, trigger: str) -> str:
        """The scheduler's way in: 'started', or the refusal's code ('already_running', ...)."""
        try:
            self.runs.start(agent.id, trigger)
        except RunRefused as exc:
            return str(exc.code)
        return "started"

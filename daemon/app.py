"""The composition root: wires server, state, agents, runs, scheduler and chat.

Rules (architecture.md):

- ``Daemon`` is the only place that composes the packages; it implements the
  server's ``Handlers``.
- Start: close runs the journal still shows as running ("daemon stopped during the
  run"), load ``agents.toml``, listen, start the scheduler.
- Stop (idempotent, ordered): stop accepting, cancel runs (journal says
  ``cancelled``), close sessions with 1001, stop the scheduler, close the state store.
- litellm is never imported here: the LLM adapter imports it on the first call.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, tzinfo

from agents.chat import ChatService
from agents.errors import LLMNotConfigured
from agents.llm import LLM, LiteLLM, LLMSettings, settings_from_env
from agents.local_dir.source import run_local_directory
from agents.run import AgentRunner
from protocol.agent_config import AgentConfig
from protocol.errors import ErrorCode, ProtocolError
from protocol.frames import (
    Ack,
    AgentsResult,
    AgentsSync,
    AgentStatus,
    Cancel,
    ControlHello,
    CredentialsPut,
    DaemonInfo,
    DeviceHello,
    FloatingRequest,
    HomeRequest,
    Status,
    StatusRequest,
    StreamEnd,
    StreamStart,
    Trigger,
    _Frame,
)
from scheduler.cron import local_tz
from scheduler.service import SchedulerService

from . import __version__
from .agent_configs import AgentRegistry
from .config import Config
from .events import EventLog
from .paths import Paths
from .runs import RunManager, _iso
from .secrets import SecretStore
from .server import Server
from .session import DeviceSession, Session
from .state import StateStore

__all__ = ["Daemon"]

log = logging.getLogger("tether.daemon")

# Agent kind -> its runner. A new source of work is one new entry here.
RUNNERS: dict[str, AgentRunner] = {"local_directory": run_local_directory}


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
    ) -> None:
        self.config = config
        self.paths = paths
        self.state = state
        self.tz = tz or local_tz()
        self.clock = clock
        self.registry = AgentRegistry(state)
        self.server = Server(config, token, self, version=__version__, pid=pid)
        self.events = EventLog(state, self.server, retention=config.event_retention)
        self.runs = RunManager(
            state=state,
            registry=self.registry,
            server=self.server,
            events=self.events,
            config=config,
            llm_factory=self.llm_for_agent,
            runners=RUNNERS,
            tz=self.tz,
            clock=clock,
        )
        self.scheduler = SchedulerService(
            agents=self.registry.all,
            last_run_at=state.last_run_at,
            is_online=lambda agent: self.runs.device_for(agent) is not None,
            start_run=self._scheduled_run,
            record_skipped=self.runs.record_skipped,
            tz=self.tz,
            clock=clock,
        )
        self.registry.on_change(self.scheduler.agents_changed)
        self.chat = ChatService(llm_factory=self.llm, tz=self.tz)
        self._chats: dict[str, tuple[asyncio.Task[None], asyncio.Event, Session]] = {}
        self._stopped = False

    # --- LLM ---------------------------------------------------------------------------

    def llm_settings(self, model: str | None = None) -> LLMSettings:
        llm = self.config.llm
        base = LLMSettings(
            model=llm.model,
            api_base=llm.api_base,
            api_key=llm.api_key,
            timeout_s=llm.timeout_s,
            max_attempts=llm.max_attempts,
        )
        settings = settings_from_env(base)
        if model:
            settings = replace(settings, model=model)
        return settings

    def llm(self, model: str | None = None) -> LLM:
        settings = self.llm_settings(model)
        if not settings.model:
            raise LLMNotConfigured(
                "no model configured: set TETHER_MODEL (for example openai/gpt-4o-mini or "
                "ollama/llama3.1) or [llm] model in config.toml"
            )
        return LiteLLM(settings)

    def llm_for_agent(self, agent: AgentConfig) -> LLM:
        return self.llm(agent.model)

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
        for task, cancel, _ in list(self._chats.values()):
            cancel.set()
            task.cancel()
        await self.runs.shutdown()
        await self.server.close()
        self.scheduler.shutdown()
        self.state.close()
        log.info("stopped")

    # --- server handlers ---------------------------------------------------------------

    async def on_hello(
        self, session: Session, hello: DeviceHello | ControlHello
    ) -> AgentsResult | None:
        if isinstance(hello, DeviceHello) and hello.agents is not None:
            return self.registry.sync(hello.agents, replace=True)
        return None

    async def after_hello(self, session: Session, hello: DeviceHello | ControlHello) -> None:
        if hello.last_event_seq is not None:
            await self.events.replay(session, hello.last_event_seq)
        if isinstance(session, DeviceSession):
            self.scheduler.device_online(session.device_id)

    def on_closed(self, session: Session) -> None:
        for request_id, (task, cancel, owner) in list(self._chats.items()):
            if owner is session:
                cancel.set()
                task.cancel()
                self._chats.pop(request_id, None)

    async def on_request(self, session: Session, frame: _Frame) -> None:
        if isinstance(frame, StatusRequest):
            await session.send(self.status(frame.id))
        elif isinstance(frame, AgentsSync):
            result = self.registry.sync(frame.agents, replace=frame.replace)
            await session.send(Ack(id=frame.id, accepted=result.accepted, rejected=result.rejected))
        elif isinstance(frame, Trigger):
            run = self.runs.start(frame.agent_id, "manual", run_context=frame.run_context)
            await session.send(Ack(id=frame.id, run_id=run.run_id))
        elif isinstance(frame, Cancel):
            await self._cancel(session, frame)
        elif isinstance(frame, HomeRequest | FloatingRequest):
            self._start_chat(session, frame)
        elif isinstance(frame, CredentialsPut):
            secret = frame.secret if isinstance(frame.secret, str) else json.dumps(frame.secret)
            await asyncio.to_thread(
                SecretStore(self.paths).set, f"{frame.provider}:{frame.account}", secret
            )
            await session.send(Ack(id=frame.id))
        else:
            raise ProtocolError(f"{frame.type} is not a request", code=ErrorCode.BAD_FRAME)

    async def _cancel(self, session: Session, frame: Cancel) -> None:
        if self.runs.cancel(frame.target):
            await session.send(Ack(id=frame.id))
            return
        chat = self._chats.get(frame.target)
        if chat is not None:
            chat[1].set()
            await session.send(Ack(id=frame.id))
            return
        raise ProtocolError(
            f"nothing to cancel: {frame.target!r} is neither an active run nor a chat request",
            code=ErrorCode.NOT_FOUND,
        )

    async def _scheduled_run(self, agent: AgentConfig, trigger: str) -> str:
        """The scheduler's way in: 'started', 'already_running' or 'device_offline'."""
        try:
            self.runs.start(agent.id, trigger)
        except ProtocolError as exc:
            return str(exc.code)
        return "started"

    # --- chat --------------------------------------------------------------------------

    def _start_chat(self, session: Session, frame: HomeRequest | FloatingRequest) -> None:
        request_id = frame.request_id or f"chat-{uuid.uuid4().hex}"
        frame.request_id = request_id
        if request_id in self._chats:
            raise ProtocolError(
                f"chat request {request_id} is already running", code=ErrorCode.BAD_FRAME
            )
        device = session if isinstance(session, DeviceSession) else self.server.device()
        cancel = asyncio.Event()

        async def run() -> None:
            try:
                if device is None or device.closed:
                    # Still a whole stream: the app's chat view opens on stream_start.
                    await session.send(StreamStart(request_id=request_id))
                    await session.send(
                        StreamEnd(
                            request_id=request_id,
                            error="no desktop app is connected to read or change data",
                        )
                    )
                    return
                await self.chat.handle(
                    frame, send=session.send, store=device.store(), cancel=cancel
                )
            finally:
                self._chats.pop(request_id, None)

        task = asyncio.create_task(run(), name=f"chat-{request_id}")
        self._chats[request_id] = (task, cancel, session)

    # --- status ------------------------------------------------------------------------

    def status(self, request_id: str) -> Status:
        agents = []
        for agent in self.registry.all():
            last = self.state.last_finished(agent.id, include_skipped=True)
            last_run_at = self.state.last_run_at(agent.id)
            next_run = self.scheduler.next_run_at(agent.id)
            agents.append(
                AgentStatus(
                    id=agent.id,
                    name=agent.name,
                    kind=agent.kind,
                    enabled=agent.enabled,
                    schedule_cron=agent.schedule_cron,
                    device_id=agent.device_id,
                    next_run_at=_iso(next_run) if next_run else None,
                    last_run_at=_iso(last_run_at) if last_run_at else None,
                    last_status=last.status if last else None,
                )
            )
        return Status(
            id=request_id,
            agents=agents,
            active_runs=[r.summary() for r in self.runs.active()],
            device_online=bool(self.server.devices),
            devices=sorted(self.server.devices),
            daemon=DaemonInfo(version=__version__, pid=self.server.pid, port=self.server.port),
            rejected_agents=self.registry.rejected(),
        )

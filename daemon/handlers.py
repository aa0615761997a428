"""The frame handlers: what the daemon answers to each request (the server's ``Handlers``).

Rules (protocol.md):

- ``on_request`` answers every request with its own frame (``ack``, ``status``) or
  raises ``ProtocolError``, which the server sends as an ``error`` frame with the
  request's id. A :class:`~daemon.errors.RunRefused` from the run manager becomes
  that error with the refusal's code (``unknown_agent``, ``already_running``,
  ``device_offline``, ``busy``).
- ``cancel`` targets a run id, a chat request id or a journey session id; none of
  them: ``not_found``.
- ``journey_start`` answers the first ``journey_message`` (seeded with the agent's
  ``prompt_template`` when ``agent_id`` names a known agent; an unknown one is
  ``unknown_agent``); ``journey_reply`` answers the next (``daemon.journeys``).
- ``credentials_put`` stores the tokens through ``daemon.accounts.Accounts`` off the
  event loop (the keyring may block); a bundle it cannot use is an
  ``invalid_config`` error; the secret is never logged.
- ``status`` lists the cloud accounts (state, throttling, last sync, messages
  taken in), never a token.
- A device hello with agents replaces the agent list; every hello with
  ``last_event_seq`` gets the events after it; a device coming online starts the
  scheduler's catch-up and, when it announced vectors, the embedding of its
  existing notes (``daemon.vectors``).
- The shipping app's hello (no ``protocol``, ``agent_ids``): protocol 1, logged
  once per device as a legacy client; ``agent_ids`` is recorded on the session and
  shown in ``status.device_details`` with the ids the daemon has no configuration
  for (the app holds agents it never synced: they cannot run). It is not a
  configuration: nothing is added or removed because of it.
- ``last_run_at`` in ``status`` is the newer of the journal's and the app's
  (``daemon.app_compat``), the same one the scheduler uses.
- The handlers own no state: they read the parts the composition root made
  (:class:`Parts`, which ``daemon.app.Daemon`` is).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Protocol

from protocol.errors import ErrorCode, ProtocolError
from protocol.frames import (
    AccountInfo,
    Ack,
    AgentsResult,
    AgentsSync,
    AgentStatus,
    Cancel,
    ControlHello,
    CredentialsPut,
    DaemonInfo,
    DeviceHello,
    DeviceStatus,
    EstimateRequest,
    EstimateResult,
    FloatingRequest,
    HomeRequest,
    JourneyMessage,
    JourneyReply,
    JourneyStart,
    Status,
    StatusRequest,
    Trigger,
    _Frame,
)
from scheduler.service import SchedulerService

from . import __version__
from .accounts import Accounts, AccountState
from .agent_configs import AgentRegistry
from .app_compat import effective_last_run_at
from .chats import ChatRegistry
from .errors import RunRefused
from .estimates import Estimator
from .events import EventLog
from .journeys import JourneyRegistry
from .runs import RunManager, _iso
from .secrets import SecretStore
from .server import Server
from .session import DeviceSession, Session
from .state import StateStore
from .vectors import NoteVectors

__all__ = ["FrameHandlers", "Parts"]

log = logging.getLogger("tether.server")


class Parts(Protocol):
    """The daemon's parts the handlers use (read at call time, so built in any order)."""

    state: StateStore
    registry: AgentRegistry
    server: Server
    events: EventLog
    runs: RunManager
    scheduler: SchedulerService
    chats: ChatRegistry
    journeys: JourneyRegistry
    vectors: NoteVectors
    secrets: SecretStore
    accounts: Accounts
    estimates: Estimator


class FrameHandlers:
    """Implements ``daemon.server.Handlers`` over the daemon's parts."""

    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self._legacy_logged: set[str] = set()

    async def on_hello(
        self, session: Session, hello: DeviceHello | ControlHello
    ) -> AgentsResult | None:
        if not isinstance(hello, DeviceHello):
            return None
        if isinstance(session, DeviceSession):
            session.agent_ids = hello.agent_ids
            session.legacy = "protocol" not in hello.model_fields_set
            if session.legacy and hello.device_id not in self._legacy_logged:
                self._legacy_logged.add(hello.device_id)
                log.info(
                    "device %s is a legacy client (hello without 'protocol'): protocol 1",
                    hello.device_id,
                )
        if hello.agents is not None:
            return self.parts.registry.sync(hello.agents, replace=True)
        return None

    async def after_hello(self, session: Session, hello: DeviceHello | ControlHello) -> None:
        if hello.last_event_seq is not None:
            await self.parts.events.replay(session, hello.last_event_seq)
        if isinstance(session, DeviceSession):
            self.parts.scheduler.device_online(session.device_id)
            self.parts.vectors.device_online(session)

    def on_closed(self, session: Session) -> None:
        self.parts.chats.session_closed(session)

    async def on_request(self, session: Session, frame: _Frame) -> None:
        try:
            await self._answer(session, frame)
        except RunRefused as exc:
            raise ProtocolError(exc.message, code=exc.code) from None

    async def _answer(self, session: Session, frame: _Frame) -> None:
        parts = self.parts
        if isinstance(frame, StatusRequest):
            await session.send(self.status(frame.id))
        elif isinstance(frame, AgentsSync):
            result = parts.registry.sync(frame.agents, replace=frame.replace)
            await session.send(
                Ack(
                    id=frame.id,
                    accepted=result.accepted,
                    rejected=result.rejected,
                    ignored_keys=result.ignored_keys,
                )
            )
        elif isinstance(frame, Trigger):
            run = parts.runs.start(frame.agent_id, "manual", run_context=frame.run_context)
            await session.send(Ack(id=frame.id, run_id=run.run_id))
        elif isinstance(frame, Cancel):
            await self._cancel(session, frame)
        elif isinstance(frame, EstimateRequest):
            est, model = await parts.estimates.estimate(frame.agent_id)
            await session.send(
                EstimateResult(id=frame.id, agent_id=frame.agent_id, model=model, **vars(est))
            )
        elif isinstance(frame, HomeRequest | FloatingRequest):
            parts.chats.start(session, frame)
        elif isinstance(frame, JourneyStart):
            await session.send(self._journey_start(frame))
        elif isinstance(frame, JourneyReply):
            answer = await parts.journeys.reply(
                frame.session_id, frame.message, request_id=frame.id
            )
            await session.send(answer)
        elif isinstance(frame, CredentialsPut):
            try:
                await asyncio.to_thread(
                    parts.accounts.put_credentials, frame.provider, frame.account, frame.secret
                )
            except ValueError as exc:
                raise ProtocolError(
                    f"credentials_put: {exc}", code=ErrorCode.INVALID_CONFIG
                ) from None
            await session.send(Ack(id=frame.id))
        else:
            raise ProtocolError(f"{frame.type} is not a request", code=ErrorCode.BAD_FRAME)

    def _journey_start(self, frame: JourneyStart) -> JourneyMessage:
        existing: str | None = None
        if frame.agent_id is not None:
            agent = self.parts.registry.get(frame.agent_id)
            if agent is None:
                raise ProtocolError(
                    f"no agent {frame.agent_id!r} to refine", code=ErrorCode.UNKNOWN_AGENT
                )
            existing = agent.prompt_template
        return self.parts.journeys.start(
            frame.kind, existing_template=existing, request_id=frame.id
        )

    async def _cancel(self, session: Session, frame: Cancel) -> None:
        parts = self.parts
        if (
            parts.runs.cancel(frame.target)
            or parts.chats.cancel(frame.target)
            or parts.journeys.cancel(frame.target)
        ):
            await session.send(Ack(id=frame.id))
            return
        raise ProtocolError(
            f"nothing to cancel: {frame.target!r} is neither an active run nor a chat request "
            "nor an open journey",
            code=ErrorCode.NOT_FOUND,
        )

    def status(self, request_id: str) -> Status:
        """The ``status`` frame: every agent's schedule and last run, active runs, devices."""
        parts = self.parts
        agents = []
        effective = effective_last_run_at(parts.state)
        for agent in parts.registry.all():
            last = parts.state.last_finished(agent.id, include_skipped=True)
            last_run_at = effective(agent.id)
            next_run = parts.scheduler.next_run_at(agent.id)
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
        server = parts.server
        return Status(
            id=request_id,
            agents=agents,
            active_runs=[r.summary() for r in parts.runs.active()],
            device_online=bool(server.devices),
            devices=sorted(server.devices),
            device_details=[self._device_status(server.devices[d]) for d in sorted(server.devices)],
            daemon=DaemonInfo(name="tether", version=__version__, pid=server.pid, port=server.port),
            rejected_agents=parts.registry.rejected(),
            accounts=[account_info(a, time.time()) for a in parts.accounts.list()],
        )

    def _device_status(self, session: DeviceSession) -> DeviceStatus:
        known = self.parts.registry.get
        unknown = [i for i in session.agent_ids or [] if known(i) is None]
        return DeviceStatus(
            device_id=session.device_id,
            agent_ids=session.agent_ids,
            unknown_agent_ids=unknown,
            legacy=session.legacy,
        )


def _utc(at: float) -> str:
    return _iso(datetime.fromtimestamp(at, UTC))


def account_info(state: AccountState, now: float) -> AccountInfo:
    """What ``status`` shows of one account."""
    throttled = state.throttled_until
    return AccountInfo(
        provider=state.provider,
        account=state.account,
        state="needs_reconnect" if state.state == "needs_reconnect" else "connected",
        reason=state.reason,
        throttled_until=_utc(throttled) if throttled is not None and throttled > now else None,
        last_sync=_utc(state.last_sync) if state.last_sync is not None else None,
        messages_taken=state.messages_taken,
    )

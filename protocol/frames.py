"""Every frame of wire protocol v1, as pydantic models in one discriminated union.

Rules (protocol.md):

- Every frame has ``type``; ``Frame`` is the union discriminated on it.
- Decoding ignores unknown fields, so a newer peer may send more.
- Encoding sends only the fields that were set (``exclude_unset``), plus ``type``;
  that keeps ``{"row": null}`` on the wire when it was set and drops what was not.
- Requests carry an ``id`` unique per sender per session; each gets exactly one
  terminal answer.
- Timestamps in run events are ISO 8601 UTC strings; storage timestamps are ms.
- Agent configurations travel as plain objects and are validated by the daemon one
  by one, so a bad agent is rejected without failing the frame that carried it.

One module, past 500 lines, on purpose: every frame of the wire protocol and the one
discriminated union that decodes them; splitting it would split the vocabulary the
JSON Schema is generated from.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

__all__ = [
    "PROTOCOL_VERSION",
    "SUPPORTED_PROTOCOLS",
    "AccountInfo",
    "Ack",
    "AgentStatus",
    "AgentsResult",
    "AgentsSync",
    "Cancel",
    "Capabilities",
    "ChatMessage",
    "ClientInfo",
    "ControlHello",
    "CredentialsPut",
    "DaemonInfo",
    "DeviceHello",
    "DeviceStatus",
    "Error",
    "ErrorBody",
    "EstimateRequest",
    "EstimateResult",
    "FloatingDomain",
    "FloatingRequest",
    "Frame",
    "HelloAck",
    "HomeRequest",
    "IgnoredKeys",
    "JourneyMessage",
    "JourneyReply",
    "JourneyStart",
    "Mutation",
    "Ping",
    "Pong",
    "RecordChange",
    "RejectedAgent",
    "RunComplete",
    "RunProgress",
    "RunStarted",
    "RunSummary",
    "Scope",
    "Status",
    "StatusRequest",
    "StreamEnd",
    "StreamStart",
    "StreamText",
    "ToolCall",
    "ToolResult",
    "Trigger",
    "Usage",
]

PROTOCOL_VERSION = 1
SUPPORTED_PROTOCOLS: tuple[int, ...] = (1,)

RunTrigger = Literal["schedule", "manual", "reconnect"]
RunStatus = Literal["running", "success", "partial", "error", "cancelled", "skipped"]
RunPhase = Literal["scan", "triage", "process", "fetch"]
ChatDomain = Literal["tasks", "notes", "timelines", "projects"]


def _ids_as_text(value: Any) -> Any:
    # Informational: a numeric id (an app's integer key) must not fail the hello.
    if isinstance(value, list):
        return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
    return value


# The agent ids of a device's hello (and of status's device_details), as text.
AgentIds = Annotated[list[str] | None, BeforeValidator(_ids_as_text)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=False, populate_by_name=True)


class _Frame(_Model):
    """Base of every frame: ``type`` always counts as set, so it is always encoded."""

    type: str

    def model_post_init(self, context: Any, /) -> None:
        self.__pydantic_fields_set__.add("type")


# --- shared parts -----------------------------------------------------------------


class ClientInfo(_Model):
    name: str = Field(max_length=200)
    version: str = Field(default="", max_length=100)


class Capabilities(_Model):
    tables: list[str] = Field(
        default_factory=lambda: [
            "tasks",
            "projects",
            "notes",
            "timelines",
            "taskComments",
            "clients",
        ]
    )
    idempotency: bool = False
    vector: bool = False


class DaemonInfo(_Model):
    name: str = "tether"
    version: str
    pid: int | None = None
    port: int | None = None


class AccountInfo(_Model):
    """A connected cloud account as the user sees it (never a token). Times are ISO 8601
    UTC; ``throttled_until`` only while it is in the future."""

    provider: str  # google | microsoft
    account: str
    state: Literal["connected", "needs_reconnect"] = "connected"
    reason: str | None = None  # why it needs reconnecting
    throttled_until: str | None = None
    last_sync: str | None = None  # the last successful sync
    messages_taken: int = 0


class RejectedAgent(_Model):
    id: str | None
    errors: list[str]


class IgnoredKeys(_Model):
    """Keys of a client's agent that the daemon did not use (the app's own bookkeeping
    such as ``user_id``, or ``oauth_token_encrypted``, which is dropped unread)."""

    id: str | None
    keys: list[str]


class AgentsResult(_Model):
    accepted: list[str] = Field(default_factory=list)
    rejected: list[RejectedAgent] = Field(default_factory=list)
    ignored_keys: list[IgnoredKeys] = Field(default_factory=list)


class ErrorBody(_Model):
    code: str
    message: str = ""


class Usage(_Model):
    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None


class Mutation(_Model):
    """One write of a chat request. ``data``: the row for an insert, ``{id, updates,
    row}`` for an update (the app's shape plus the row), ``{id}`` for a delete."""

    action: Literal["insert", "update", "delete"]
    table: str
    data: dict[str, Any]


class ChatMessage(_Model):
    """One turn of ``conversation_history``. The app also keeps turns of other roles
    (e.g. ``system``) and turns without content: the daemon accepts both and passes
    only ``user`` and ``assistant`` turns to the model, ``null`` content as empty."""

    role: str = Field(max_length=50)
    content: str | None = None


class Scope(_Model):
    type: str
    id: str | None = None


class AgentStatus(_Model):
    id: str
    name: str
    kind: str | None = None
    enabled: bool
    schedule_cron: str
    device_id: str | None = None
    next_run_at: str | None = None
    last_run_at: str | None = None
    last_status: str | None = None


class RunSummary(_Model):
    run_id: str
    agent_id: str
    trigger: RunTrigger
    started_at: str
    phase: str | None = None
    done: int | None = None
    total: int | None = None


# --- handshake --------------------------------------------------------------------


class DeviceHello(_Frame):
    """The desktop app's hello. Without ``protocol`` (the app as it ships) it is
    protocol 1; ``agent_ids`` (the ids of the agents the app holds) is recorded on
    the session and shown in ``status``."""

    type: Literal["device_hello"] = "device_hello"
    protocol: int | list[int] = PROTOCOL_VERSION
    token: str | None = None
    device_id: str = Field(min_length=1, max_length=200)
    agent_ids: AgentIds = None

    client: ClientInfo | None = None
    capabilities: Capabilities = Field(default_factory=Capabilities)
    agents: list[dict[str, Any]] | None = None
    last_event_seq: int | None = None


class ControlHello(_Frame):
    type: Literal["control_hello"] = "control_hello"
    protocol: int | list[int]
    token: str | None = None
    client: ClientInfo | None = None
    subscribe: bool = True
    last_event_seq: int | None = None


class HelloAck(_Frame):
    type: Literal["hello_ack"] = "hello_ack"
    protocol: int
    session_id: str
    daemon: DaemonInfo
    heartbeat_s: int
    features: list[str]
    agents: AgentsResult | None = None


# --- daemon -> client: storage ----------------------------------------------------


class ToolCall(_Frame):
    type: Literal["tool_call"] = "tool_call"
    id: str
    action: str
    table: str | None = None
    data: dict[str, Any] | None = None
    filters: dict[str, Any] | None = None
    limit: int | None = None
    vector: list[float] | None = None
    run_id: str | None = None
    run_context: dict[str, Any] | None = None
    idempotency_key: str | None = None


class ToolResult(_Frame):
    """A client's answer to a tool_call. Without ``ok`` it is a success unless ``error``."""

    type: Literal["tool_result"] = "tool_result"
    id: str
    ok: bool | None = None
    error: ErrorBody | str | None = None
    rows: list[dict[str, Any]] | None = None
    row: dict[str, Any] | None = None
    deleted: bool | None = None
    results: list[dict[str, Any]] | None = None

    @property
    def succeeded(self) -> bool:
        if self.ok is not None:
            return self.ok
        return self.error is None

    def error_body(self) -> ErrorBody:
        if isinstance(self.error, ErrorBody):
            return self.error
        return ErrorBody(code="internal", message=self.error or "the client reported a failure")


# --- client -> daemon: requests ---------------------------------------------------


class AgentsSync(_Frame):
    type: Literal["agents_sync"] = "agents_sync"
    id: str
    agents: list[dict[str, Any]]
    replace: bool = False


class Trigger(_Frame):
    type: Literal["trigger"] = "trigger"
    id: str
    agent_id: str
    run_context: dict[str, Any] | None = None


class Cancel(_Frame):
    type: Literal["cancel"] = "cancel"
    id: str
    target: str


class StatusRequest(_Frame):
    type: Literal["status_request"] = "status_request"
    id: str


class HomeRequest(_Frame):
    """``context``: whatever the app attaches (any JSON value; the app sends an object
    or text); it reaches the model as a marked section of the prompt."""

    type: Literal["home_request"] = "home_request"
    request_id: str | None = None
    message: str = Field(min_length=1)
    conversation_history: list[ChatMessage] | None = None
    context: Any = None


class FloatingRequest(_Frame):
    type: Literal["floating_request"] = "floating_request"
    request_id: str | None = None
    message: str = Field(min_length=1)
    scope: Scope
    conversation_history: list[ChatMessage] | None = None
    context: Any = None


class EstimateRequest(_Frame):
    """What a run of the agent would read and cost now, without any LLM call."""

    type: Literal["estimate"] = "estimate"
    id: str
    agent_id: str


class CredentialsPut(_Frame):
    type: Literal["credentials_put"] = "credentials_put"
    id: str
    provider: str
    account: str
    secret: dict[str, Any] | str


class JourneyStart(_Frame):
    """Open an agent-setup conversation for an agent of ``kind`` (refining the prompt of
    ``agent_id`` when given). Answered by the first ``journey_message``."""

    type: Literal["journey_start"] = "journey_start"
    id: str
    kind: str = Field(min_length=1, max_length=100)
    agent_id: str | None = None


class JourneyReply(_Frame):
    """The user's answer to the last ``journey_message``. ``id`` is optional: the
    answering ``journey_message`` echoes it when given."""

    type: Literal["journey_reply"] = "journey_reply"
    id: str | None = None
    session_id: str = Field(min_length=1, max_length=200)
    message: str = Field(min_length=1, max_length=20_000)


class Ping(_Frame):
    type: Literal["ping"] = "ping"
    id: str | None = None


class Pong(_Frame):
    type: Literal["pong"] = "pong"
    id: str | None = None


# --- daemon -> client: answers ----------------------------------------------------


class Ack(_Frame):
    type: Literal["ack"] = "ack"
    id: str
    run_id: str | None = None
    accepted: list[str] | None = None
    rejected: list[RejectedAgent] | None = None
    ignored_keys: list[IgnoredKeys] | None = None


class DeviceStatus(_Model):
    """A connected device; ``agent_ids`` as its hello announced them (None: not sent)
    and ``unknown_agent_ids``, those of them the daemon holds no configuration for."""

    device_id: str
    agent_ids: AgentIds = None

    unknown_agent_ids: list[str] = Field(default_factory=list)
    legacy: bool = False


class Status(_Frame):
    type: Literal["status"] = "status"
    id: str
    agents: list[AgentStatus]
    active_runs: list[RunSummary]
    device_online: bool
    devices: list[str] = Field(default_factory=list)
    device_details: list[DeviceStatus] = Field(default_factory=list)
    daemon: DaemonInfo | None = None
    rejected_agents: list[RejectedAgent] = Field(default_factory=list)
    accounts: list[AccountInfo] = Field(default_factory=list)


class EstimateResult(_Frame):
    """The answer to ``estimate``. Items are files for a local agent, messages for a
    mailbox. ``prompt_tokens`` and ``llm_calls`` assume every changed item is processed
    (items skipped at triage cost less); ``cost_usd`` is ``None`` when the model's price
    is unknown (a local model); ``runs`` is how many runs the agent's budget splits it into."""

    type: Literal["estimate_result"] = "estimate_result"
    id: str
    agent_id: str
    items_new: int = 0
    items_changed: int = 0
    items_unchanged: int = 0
    items_moved: int = 0
    items_unreadable: int = 0
    chars: int = 0
    prompt_tokens: int = 0
    llm_calls: int = 0
    model: str | None = None
    cost_usd: float | None = None
    runs: int = 0
    notes: list[str] = Field(default_factory=list)


class JourneyMessage(_Frame):
    """The daemon's turn in a journey: a question (``done: false``) or, with
    ``done: true``, the result: ``prompt_template`` and the suggested ``data_types``
    and ``file_extensions`` (files) or ``filter_config`` (mail, messages), already
    validated like an agent config. ``id`` echoes the request's when it had one."""

    type: Literal["journey_message"] = "journey_message"
    id: str | None = None
    session_id: str
    message: str
    done: bool = False
    prompt_template: str | None = None
    data_types: list[str] | None = None
    file_extensions: list[str] | None = None
    filter_config: dict[str, Any] | None = None


class Error(_Frame):
    type: Literal["error"] = "error"
    id: str | None = None
    code: str
    message: str = ""
    supported: list[int] | None = None


# --- chat stream -------------------------------------------------------------------


class StreamStart(_Frame):
    type: Literal["stream_start"] = "stream_start"
    request_id: str


class FloatingDomain(_Frame):
    type: Literal["floating_domain"] = "floating_domain"
    request_id: str
    domain: ChatDomain


class StreamText(_Frame):
    type: Literal["stream_text"] = "stream_text"
    request_id: str
    chunk: str


class StreamEnd(_Frame):
    type: Literal["stream_end"] = "stream_end"
    request_id: str
    mutations: list[Mutation] = Field(default_factory=list)
    error: str | None = None


# --- run events --------------------------------------------------------------------


class RunStarted(_Frame):
    type: Literal["run_started"] = "run_started"
    seq: int
    run_id: str
    agent_id: str
    agent_name: str
    trigger: RunTrigger
    started_at: str | None = None
    run_context: dict[str, Any] | None = None


class RunProgress(_Frame):
    type: Literal["run_progress"] = "run_progress"
    seq: int
    run_id: str
    phase: RunPhase
    done: int
    total: int
    detail: str | None = None


class RecordChange(_Model):
    table: str
    id: str
    field: str
    before: Any = None
    after: Any = None


class RunComplete(_Frame):
    type: Literal["run_complete"] = "run_complete"
    seq: int
    run_id: str
    agent_id: str
    agent_name: str | None = None
    trigger: RunTrigger
    status: Literal["success", "partial", "error", "cancelled", "skipped"]
    started_at: str
    finished_at: str
    items_processed: int = 0
    items_created: int = 0
    items_updated: int = 0
    errors: list[str] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    # Changes the run made to records the user created or approved (the app can show
    # and undo them): {table, id, field, before, after}.
    changes: list[RecordChange] | None = None
    run_context: dict[str, Any] | None = None


Frame = Annotated[
    DeviceHello
    | ControlHello
    | HelloAck
    | ToolCall
    | ToolResult
    | AgentsSync
    | Trigger
    | Cancel
    | StatusRequest
    | HomeRequest
    | FloatingRequest
    | CredentialsPut
    | EstimateRequest
    | EstimateResult
    | JourneyStart
    | JourneyReply
    | JourneyMessage
    | Ping
    | Pong
    | Ack
    | Status
    | Error
    | StreamStart
    | FloatingDomain
    | StreamText
    | StreamEnd
    | RunStarted
    | RunProgress
    | RunComplete,
    Field(discriminator="type"),
]

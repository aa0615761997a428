/* Tether wire protocol: TypeScript types generated from `daemon schema`.
 * Do not edit: run `npm run gen-types` in packaging/electron/example after a
 * protocol change (`npm run check-types` fails while this file is stale). */

export type AgentConfig = LocalDirectoryAgent | GmailAgent | OutlookAgent | TeamsAgent;
/**
 * Any frame of the wire protocol (discriminated on `type`).
 */
export type Frame =
  | DeviceHello
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
  | RunComplete;
export type ProjectStatus = "active" | "archived";
export type Priority = "high" | "medium" | "low";
export type TaskStatus = "todo" | "in_progress" | "done";

/**
 * Not a frame: the index that makes the generator emit every type. Frames: `Frame`; storage rows: `TaskRow`, `ProjectRow`…; agent configurations: `AgentConfig`.
 */
export interface TetherProtocol {
  AgentConfig?: AgentConfig;
  ClientRow?: ClientRow;
  CoreMemoryRow?: CoreMemoryRow;
  Frame?: Frame;
  NoteRow?: NoteRow;
  ProjectRow?: ProjectRow;
  TaskCommentRow?: TaskCommentRow;
  TaskRow?: TaskRow;
  TimelineRow?: TimelineRow;
}
export interface LocalDirectoryAgent {
  budget?: RunBudget;
  data_types?: ("tasks" | "notes" | "timelines" | "projects")[];
  device_id?: string | null;
  /**
   * @minItems 1
   */
  directory_paths: [string, ...string[]];
  enabled?: boolean;
  exclude?: string[];
  file_extensions?: string[];
  id: string;
  kind?: "local_directory";
  max_files?: number;
  model?: string | null;
  name: string;
  prompt_template?: string;
  run_context?: {
    [k: string]: unknown | undefined;
  } | null;
  schedule_cron: string;
}
/**
 * What one run of the agent may spend; an omitted limit takes the daemon's default
 * (``[runs.budget]`` in config.toml). Reaching one ends the run ``partial``; the next
 * run carries on with what is left.
 */
export interface RunBudget {
  max_cost_usd?: number | null;
  max_llm_calls?: number | null;
  max_prompt_tokens?: number | null;
}
export interface GmailAgent {
  account: string;
  budget?: RunBudget;
  data_types?: ("tasks" | "notes" | "timelines" | "projects")[];
  device_id?: string | null;
  enabled?: boolean;
  filter_config?: FilterConfig;
  id: string;
  kind?: "gmail";
  lookback_days?: number;
  model?: string | null;
  name: string;
  prompt_template?: string;
  run_context?: {
    [k: string]: unknown | undefined;
  } | null;
  schedule_cron: string;
}
export interface FilterConfig {
  chats?: string[];
  date_range?: DateRange | null;
  folders?: string[];
  labels?: string[];
  senders?: string[];
}
export interface DateRange {
  from?: string | null;
  to?: string | null;
}
export interface OutlookAgent {
  account: string;
  budget?: RunBudget;
  data_types?: ("tasks" | "notes" | "timelines" | "projects")[];
  device_id?: string | null;
  enabled?: boolean;
  filter_config?: FilterConfig;
  id: string;
  kind?: "outlook";
  lookback_days?: number;
  model?: string | null;
  name: string;
  prompt_template?: string;
  run_context?: {
    [k: string]: unknown | undefined;
  } | null;
  schedule_cron: string;
}
export interface TeamsAgent {
  account: string;
  budget?: RunBudget;
  data_types?: ("tasks" | "notes" | "timelines" | "projects")[];
  device_id?: string | null;
  enabled?: boolean;
  filter_config?: FilterConfig;
  id: string;
  kind?: "teams";
  lookback_days?: number;
  model?: string | null;
  name: string;
  prompt_template?: string;
  run_context?: {
    [k: string]: unknown | undefined;
  } | null;
  schedule_cron: string;
}
export interface ClientRow {
  createdAt: number;
  id: string;
  industry?: string | null;
  name: string;
  parentId?: string | null;
  [k: string]: unknown | undefined;
}
/**
 * A preference the user stated ("I work 9 to 5 CET"), under a short ``key``.
 */
export interface CoreMemoryRow {
  createdAt: number;
  id: string;
  key: string;
  updatedAt?: number | null;
  value: string;
  [k: string]: unknown | undefined;
}
/**
 * The desktop app's hello. Without ``protocol`` (the app as it ships) it is
 * protocol 1; ``agent_ids`` (the ids of the agents the app holds) is recorded on
 * the session and shown in ``status``.
 */
export interface DeviceHello {
  agent_ids?: string[] | null;
  agents?:
    | {
        [k: string]: unknown | undefined;
      }[]
    | null;
  capabilities?: Capabilities;
  client?: ClientInfo | null;
  device_id: string;
  last_event_seq?: number | null;
  protocol?: number | number[];
  token?: string | null;
  type: "device_hello";
}
export interface Capabilities {
  idempotency?: boolean;
  tables?: string[];
  vector?: boolean;
}
export interface ClientInfo {
  name: string;
  version?: string;
}
export interface ControlHello {
  client?: ClientInfo | null;
  last_event_seq?: number | null;
  protocol: number | number[];
  subscribe?: boolean;
  token?: string | null;
  type: "control_hello";
}
export interface HelloAck {
  agents?: AgentsResult | null;
  daemon: DaemonInfo;
  features: string[];
  heartbeat_s: number;
  protocol: number;
  session_id: string;
  type: "hello_ack";
}
export interface AgentsResult {
  accepted?: string[];
  ignored_keys?: IgnoredKeys[];
  rejected?: RejectedAgent[];
}
/**
 * Keys of a client's agent that the daemon did not use (the app's own bookkeeping
 * such as ``user_id``, or ``oauth_token_encrypted``, which is dropped unread).
 */
export interface IgnoredKeys {
  id: string | null;
  keys: string[];
}
export interface RejectedAgent {
  errors: string[];
  id: string | null;
}
export interface DaemonInfo {
  name?: string;
  pid?: number | null;
  port?: number | null;
  version: string;
}
export interface ToolCall {
  action: string;
  data?: {
    [k: string]: unknown | undefined;
  } | null;
  filters?: {
    [k: string]: unknown | undefined;
  } | null;
  id: string;
  idempotency_key?: string | null;
  limit?: number | null;
  run_context?: {
    [k: string]: unknown | undefined;
  } | null;
  run_id?: string | null;
  table?: string | null;
  type: "tool_call";
  vector?: number[] | null;
}
/**
 * A client's answer to a tool_call. Without ``ok`` it is a success unless ``error``.
 */
export interface ToolResult {
  deleted?: boolean | null;
  error?: ErrorBody | string | null;
  id: string;
  ok?: boolean | null;
  results?:
    | {
        [k: string]: unknown | undefined;
      }[]
    | null;
  row?: {
    [k: string]: unknown | undefined;
  } | null;
  rows?:
    | {
        [k: string]: unknown | undefined;
      }[]
    | null;
  type: "tool_result";
}
export interface ErrorBody {
  code: string;
  message?: string;
}
export interface AgentsSync {
  agents: {
    [k: string]: unknown | undefined;
  }[];
  id: string;
  replace?: boolean;
  type: "agents_sync";
}
export interface Trigger {
  agent_id: string;
  id: string;
  run_context?: {
    [k: string]: unknown | undefined;
  } | null;
  type: "trigger";
}
export interface Cancel {
  id: string;
  target: string;
  type: "cancel";
}
export interface StatusRequest {
  id: string;
  type: "status_request";
}
/**
 * ``context``: whatever the app attaches (any JSON value; the app sends an object
 * or text); it reaches the model as a marked section of the prompt.
 */
export interface HomeRequest {
  context?: {
    [k: string]: unknown | undefined;
  };
  conversation_history?: ChatMessage[] | null;
  message: string;
  request_id?: string | null;
  type: "home_request";
}
/**
 * One turn of ``conversation_history``. The app also keeps turns of other roles
 * (e.g. ``system``) and turns without content: the daemon accepts both and passes
 * only ``user`` and ``assistant`` turns to the model, ``null`` content as empty.
 */
export interface ChatMessage {
  content?: string | null;
  role: string;
}
export interface FloatingRequest {
  context?: {
    [k: string]: unknown | undefined;
  };
  conversation_history?: ChatMessage[] | null;
  message: string;
  request_id?: string | null;
  scope: Scope;
  type: "floating_request";
}
export interface Scope {
  id?: string | null;
  type: string;
}
export interface CredentialsPut {
  account: string;
  id: string;
  provider: string;
  secret:
    | {
        [k: string]: unknown | undefined;
      }
    | string;
  type: "credentials_put";
}
/**
 * What a run of the agent would read and cost now, without any LLM call.
 */
export interface EstimateRequest {
  agent_id: string;
  id: string;
  type: "estimate";
}
/**
 * The answer to ``estimate``. Items are files for a local agent, messages for a
 * mailbox. ``prompt_tokens`` and ``llm_calls`` assume every changed item is processed
 * (items skipped at triage cost less); ``cost_usd`` is ``None`` when the model's price
 * is unknown (a local model); ``runs`` is how many runs the agent's budget splits it into.
 */
export interface EstimateResult {
  agent_id: string;
  chars?: number;
  cost_usd?: number | null;
  id: string;
  items_changed?: number;
  items_moved?: number;
  items_new?: number;
  items_unchanged?: number;
  items_unreadable?: number;
  llm_calls?: number;
  model?: string | null;
  notes?: string[];
  prompt_tokens?: number;
  runs?: number;
  type: "estimate_result";
}
/**
 * Open an agent-setup conversation for an agent of ``kind`` (refining the prompt of
 * ``agent_id`` when given). Answered by the first ``journey_message``.
 */
export interface JourneyStart {
  agent_id?: string | null;
  id: string;
  kind: string;
  type: "journey_start";
}
/**
 * The user's answer to the last ``journey_message``. ``id`` is optional: the
 * answering ``journey_message`` echoes it when given.
 */
export interface JourneyReply {
  id?: string | null;
  message: string;
  session_id: string;
  type: "journey_reply";
}
/**
 * The daemon's turn in a journey: a question (``done: false``) or, with
 * ``done: true``, the result: ``prompt_template`` and the suggested ``data_types``
 * and ``file_extensions`` (files) or ``filter_config`` (mail, messages), already
 * validated like an agent config. ``id`` echoes the request's when it had one.
 */
export interface JourneyMessage {
  data_types?: string[] | null;
  done?: boolean;
  file_extensions?: string[] | null;
  filter_config?: {
    [k: string]: unknown | undefined;
  } | null;
  id?: string | null;
  message: string;
  prompt_template?: string | null;
  session_id: string;
  type: "journey_message";
}
export interface Ping {
  id?: string | null;
  type: "ping";
}
export interface Pong {
  id?: string | null;
  type: "pong";
}
export interface Ack {
  accepted?: string[] | null;
  id: string;
  ignored_keys?: IgnoredKeys[] | null;
  rejected?: RejectedAgent[] | null;
  run_id?: string | null;
  type: "ack";
}
export interface Status {
  accounts?: AccountInfo[];
  active_runs: RunSummary[];
  agents: AgentStatus[];
  daemon?: DaemonInfo | null;
  device_details?: DeviceStatus[];
  device_online: boolean;
  devices?: string[];
  id: string;
  rejected_agents?: RejectedAgent[];
  type: "status";
}
/**
 * A connected cloud account as the user sees it (never a token). Times are ISO 8601
 * UTC; ``throttled_until`` only while it is in the future.
 */
export interface AccountInfo {
  account: string;
  last_sync?: string | null;
  messages_taken?: number;
  provider: string;
  reason?: string | null;
  state?: "connected" | "needs_reconnect";
  throttled_until?: string | null;
}
export interface RunSummary {
  agent_id: string;
  done?: number | null;
  phase?: string | null;
  run_id: string;
  started_at: string;
  total?: number | null;
  trigger: "schedule" | "manual" | "reconnect";
}
export interface AgentStatus {
  device_id?: string | null;
  enabled: boolean;
  id: string;
  kind?: string | null;
  last_run_at?: string | null;
  last_status?: string | null;
  name: string;
  next_run_at?: string | null;
  schedule_cron: string;
}
/**
 * A connected device; ``agent_ids`` as its hello announced them (None: not sent)
 * and ``unknown_agent_ids``, those of them the daemon holds no configuration for.
 */
export interface DeviceStatus {
  agent_ids?: string[] | null;
  device_id: string;
  legacy?: boolean;
  unknown_agent_ids?: string[];
}
export interface Error {
  code: string;
  id?: string | null;
  message?: string;
  supported?: number[] | null;
  type: "error";
}
export interface StreamStart {
  request_id: string;
  type: "stream_start";
}
export interface FloatingDomain {
  domain: "tasks" | "notes" | "timelines" | "projects";
  request_id: string;
  type: "floating_domain";
}
export interface StreamText {
  chunk: string;
  request_id: string;
  type: "stream_text";
}
export interface StreamEnd {
  error?: string | null;
  mutations?: Mutation[];
  request_id: string;
  type: "stream_end";
}
/**
 * One write of a chat request. ``data``: the row for an insert, ``{id, updates,
 * row}`` for an update (the app's shape plus the row), ``{id}`` for a delete.
 */
export interface Mutation {
  action: "insert" | "update" | "delete";
  data: {
    [k: string]: unknown | undefined;
  };
  table: string;
}
export interface RunStarted {
  agent_id: string;
  agent_name: string;
  run_context?: {
    [k: string]: unknown | undefined;
  } | null;
  run_id: string;
  seq: number;
  started_at?: string | null;
  trigger: "schedule" | "manual" | "reconnect";
  type: "run_started";
}
export interface RunProgress {
  detail?: string | null;
  done: number;
  phase: "scan" | "triage" | "process" | "fetch";
  run_id: string;
  seq: number;
  total: number;
  type: "run_progress";
}
export interface RunComplete {
  agent_id: string;
  agent_name?: string | null;
  changes?: RecordChange[] | null;
  errors?: string[];
  finished_at: string;
  items_created?: number;
  items_processed?: number;
  items_updated?: number;
  run_context?: {
    [k: string]: unknown | undefined;
  } | null;
  run_id: string;
  seq: number;
  started_at: string;
  status: "success" | "partial" | "error" | "cancelled" | "skipped";
  trigger: "schedule" | "manual" | "reconnect";
  type: "run_complete";
  usage?: Usage;
}
export interface RecordChange {
  after?: {
    [k: string]: unknown | undefined;
  };
  before?: {
    [k: string]: unknown | undefined;
  };
  field: string;
  id: string;
  table: string;
}
export interface Usage {
  completion_tokens?: number;
  cost_usd?: number | null;
  llm_calls?: number;
  prompt_tokens?: number;
}
export interface NoteRow {
  content?: string | null;
  createdAt: number;
  id: string;
  isAiSuggested?: number;
  isApproved?: number;
  projectId?: string | null;
  title: string;
  updatedAt?: number | null;
  [k: string]: unknown | undefined;
}
export interface ProjectRow {
  aiSummary?: string | null;
  clientId?: string | null;
  createdAt: number;
  id: string;
  isAiSuggested?: number;
  isApproved?: number;
  name: string;
  status?: ProjectStatus;
  [k: string]: unknown | undefined;
}
export interface TaskCommentRow {
  author?: string | null;
  content: string;
  createdAt: number;
  id: string;
  taskId: string;
  [k: string]: unknown | undefined;
}
export interface TaskRow {
  assignee?: string | null;
  createdAt: number;
  description?: string | null;
  dueDate?: number | null;
  id: string;
  isAiSuggested?: number;
  isApproved?: number;
  priority?: Priority;
  projectId?: string | null;
  status?: TaskStatus;
  title: string;
  [k: string]: unknown | undefined;
}
export interface TimelineRow {
  createdAt: number;
  date?: number | null;
  id: string;
  isAiSuggested?: number;
  isApproved?: number;
  projectId: string;
  title: string;
  [k: string]: unknown | undefined;
}

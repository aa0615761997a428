// The app's side of the Tether protocol over `ws`: connect, pair, serve the daemon's
// tool calls, chat, and reconnect with backoff. Frames are typed by the generated
// ../../types/protocol.d.ts (from `daemon schema`).
//
// Lifecycle of one connection:
//   locate() → {host, port, token}   (re-read before every attempt: the port changes
//                                     when the daemon restarts with --port 0)
//   ws://host:port/ with "Authorization: Bearer <token>" (and no Origin header: the
//   daemon refuses browser pages)
//   → device_hello {protocol: 1, token, device_id, capabilities, last_event_seq}
//   ← hello_ack, then replayed run events, then tool_calls, chat streams, run events
// Agent-setup journeys (Settings → Agents): journey() asks the daemon's questions
// through the app's `answer` callback until the last journey_message (done: true)
// carries the suggested prompt_template and settings; cancelJourney() ends one.
// Vectors: with `vector: true` the hello announces `capabilities.vector` and the
// store answers vector_upsert / vector_search; without it such a call is refused.
// On close: pending chats and requests fail at once; reconnect after a jittered
// delay (200 ms doubling to 10 s; reset by a successful hello). Close codes that
// retrying cannot fix stop the loop: 4402 (upgrade the app), 4409 (another window
// of this device took over), and 4401 (unauthorized) twice with the same token.

import { randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import { setTimeout as sleep } from "node:timers/promises";

import WebSocket from "ws";

/** @typedef {import("../../types/protocol.js").Frame} Frame */
/** @typedef {import("../../types/protocol.js").DeviceHello} DeviceHello */
/** @typedef {import("../../types/protocol.js").HelloAck} HelloAck */
/** @typedef {import("../../types/protocol.js").ToolCall} ToolCall */
/** @typedef {import("../../types/protocol.js").ToolResult} ToolResult */
/** @typedef {import("../../types/protocol.js").HomeRequest} HomeRequest */
/** @typedef {import("../../types/protocol.js").ChatMessage} ChatMessage */
/** @typedef {import("../../types/protocol.js").StreamEnd} StreamEnd */
/** @typedef {import("../../types/protocol.js").Mutation} Mutation */
/** @typedef {import("../../types/protocol.js").StatusRequest} StatusRequest */
/** @typedef {import("../../types/protocol.js").Status} Status */
/** @typedef {import("../../types/protocol.js").Trigger} Trigger */
/** @typedef {import("../../types/protocol.js").Ack} Ack */
/** @typedef {import("../../types/protocol.js").Ping} Ping */
/** @typedef {import("../../types/protocol.js").Pong} Pong */
/** @typedef {import("../../types/protocol.js").Error} ErrorFrame */
/** @typedef {import("../../types/protocol.js").Cancel} Cancel */
/** @typedef {import("../../types/protocol.js").JourneyStart} JourneyStart */
/** @typedef {import("../../types/protocol.js").JourneyReply} JourneyReply */
/** @typedef {import("../../types/protocol.js").JourneyMessage} JourneyMessage */
/** @typedef {import("./daemon.js").Target} Target */

/** What a client request may be answered with. */
/** @typedef {Ack | Status | Pong | JourneyMessage | ErrorFrame} Answer */

/**
 * The outcome of one chat request (the stream, collected).
 * @typedef {{requestId: string, text: string, chunks: string[], domain: string | null,
 *            mutations: Mutation[], error: string | null}} ChatResult
 */

/**
 * Anything that answers tool calls; `MemoryStore` is one.
 * @typedef {{answer(call: ToolCall): ToolResult | Promise<ToolResult>, tableNames: string[]}} ToolServer
 */

/** An `error` frame answering one of this client's requests, as an exception. */
export class DaemonError extends Error {
  /** @param {ErrorFrame} frame */
  constructor(frame) {
    super(frame.message || frame.code);
    this.code = frame.code; // e.g. not_found, busy, cancelled, bad_request, internal
  }
}

export const PROTOCOL_VERSION = 1;
const NO_RETRY = new Map([
  [4402, "the daemon speaks another protocol version: upgrade the app"],
  [4409, "another session of this device took over"],
]);

export class TetherClient extends EventEmitter {
  /**
   * @param {{locate: () => Promise<Target>, store: ToolServer, deviceId: string,
   *          client?: {name: string, version?: string}, lastEventSeq?: number,
   *          minDelayMs?: number, maxDelayMs?: number, vector?: boolean}} options
   *
   * `vector: true` announces `capabilities.vector`: the daemon then sends the store
   * vector_upsert for every note a run or chat writes (and the notes it had before),
   * and vector_search for the chat's search_notes, when it has an embedding model.
   *
   * Events: "connected" (HelloAck, Target), "disconnected" ({code, reason}),
   * "retry" ({delayMs, error?}), "tool_call" (ToolCall, ToolResult), "run_event" (frame),
   * "daemon_error" (ErrorFrame), "stopped" (reason).
   */
  constructor({ locate, store, deviceId, client = { name: "tether-electron-example", version: "0.1.0" },
    lastEventSeq = 0, minDelayMs = 200, maxDelayMs = 10_000, vector = false }) {
    super();
    this.vector = vector;
    this.locate = locate;
    this.store = store;
    this.deviceId = deviceId;
    this.clientInfo = client;
    this.lastEventSeq = lastEventSeq;
    this.minDelayMs = minDelayMs;
    this.maxDelayMs = maxDelayMs;
    /** @type {WebSocket | null} */
    this.ws = null;
    /** @type {HelloAck | null} null while not paired */
    this.session = null;
    this.closed = false;
    /** @type {Map<string, {resolve: (r: ChatResult) => void, reject: (e: Error) => void, result: ChatResult}>} */
    this.chats = new Map();
    /** @type {Map<string, {resolve: (f: Answer) => void, reject: (e: Error) => void}>} */
    this.requests = new Map();
    /** @type {Promise<void> | null} */
    this.loop = null;
    this.abort = new AbortController(); // cuts a backoff wait short on close()
  }

  /** Start connecting (and reconnecting) in the background. */
  start() {
    this.loop ??= this.#run();
    return this;
  }

  /** Resolve with the next hello_ack (at once if already paired). */
  connected() {
    if (this.session) return Promise.resolve(this.session);
    return new Promise((resolve, reject) => {
      /** @param {HelloAck} ack */
      const ok = (ack) => {
        this.off("stopped", stop);
        resolve(ack);
      };
      /** @param {string} reason */
      const stop = (reason) => {
        this.off("connected", ok);
        reject(new Error(`stopped: ${reason}`));
      };
      this.once("connected", ok);
      this.once("stopped", stop);
    });
  }

  async close() {
    this.closed = true;
    this.abort.abort();
    this.ws?.close(1000, "app closing");
    await this.loop;
  }

  /** @param {number} ms */
  async #wait(ms) {
    await sleep(ms, undefined, { signal: this.abort.signal }).catch(() => {});
  }

  /**
   * Send a home_request and collect its stream until stream_end.
   * @param {string} message
   * @param {{history?: ChatMessage[], onText?: (chunk: string) => void}} [options]
   * @returns {Promise<ChatResult>}
   */
  chat(message, { history, onText } = {}) {
    const requestId = randomUUID();
    /** @type {HomeRequest} */
    const frame = { type: "home_request", request_id: requestId, message };
    if (history) frame.conversation_history = history;
    return new Promise((resolve, reject) => {
      const result = { requestId, text: "", chunks: [], domain: null, mutations: [], error: null };
      this.chats.set(requestId, { resolve, reject, result });
      if (onText) this.on(`text:${requestId}`, onText);
      if (!this.#send(frame)) {
        this.chats.delete(requestId);
        reject(new Error("not connected to the daemon"));
      }
    });
  }

  /**
   * Run an agent-setup journey to its end: journey_start, then one journey_reply per
   * question, each written by `answer` (the app's UI asking the user). Resolves with
   * the last journey_message (`done: true`, with prompt_template and the suggested
   * data_types and file_extensions or filter_config, already validated by the daemon;
   * save them with agents_sync when the user applies them). A daemon `error` answer
   * (not_found when expired or cancelled, busy, internal when the model failed)
   * rejects with a DaemonError. `onStart` gets the first message, whose session_id
   * `cancelJourney` takes. When `answer` throws (the user closed the dialog) or a reply
   * fails, the journey is cancelled on the daemon before the promise rejects.
   * @param {{kind: string, agentId?: string,
   *          answer: (question: JourneyMessage) => string | Promise<string>,
   *          onStart?: (first: JourneyMessage) => void}} options
   * @returns {Promise<JourneyMessage>}
   */
  async journey({ kind, agentId, answer, onStart }) {
    let step = await this.journeyStart(kind, { agentId });
    const sessionId = step.session_id;
    try {
      onStart?.(step);
      while (!step.done) step = await this.journeyReply(sessionId, await answer(step));
      return step;
    } catch (e) {
      // Free the daemon's session at once rather than after 30 idle minutes (it may be
      // gone already: not_found, or the socket closed; either way nothing is left to do).
      await this.cancelJourney(sessionId).catch(() => {});
      throw e;
    }
  }

  /**
   * journey_start: the first question (`done: false`; it costs no model call).
   * @param {string} kind local_directory, gmail, outlook or teams
   * @param {{agentId?: string}} [options] refine that agent's prompt_template
   * @returns {Promise<JourneyMessage>}
   */
  async journeyStart(kind, { agentId } = {}) {
    /** @type {Omit<JourneyStart, "id">} */
    const frame = { type: "journey_start", kind };
    if (agentId) frame.agent_id = agentId;
    return this.#journeyAnswer(await this.request(frame));
  }

  /**
   * journey_reply: the user's answer; the next question, or the result (`done: true`).
   * One model call: it may take seconds.
   * @param {string} sessionId @param {string} message
   * @returns {Promise<JourneyMessage>}
   */
  async journeyReply(sessionId, message) {
    /** @type {Omit<JourneyReply, "id">} */
    const frame = { type: "journey_reply", session_id: sessionId, message };
    return this.#journeyAnswer(await this.request(frame));
  }

  /**
   * End a journey (`cancel {target: session_id}`): a reply in flight then fails with
   * `cancelled`, later ones with `not_found`. Rejects with DaemonError not_found when
   * there is no such journey (finished, expired or cancelled already).
   * @param {string} sessionId
   */
  async cancelJourney(sessionId) {
    /** @type {Omit<Cancel, "id">} */
    const frame = { type: "cancel", target: sessionId };
    const answer = await this.request(frame);
    if (answer.type === "error") throw new DaemonError(answer);
  }

  /** @param {Answer} answer @returns {JourneyMessage} */
  #journeyAnswer(answer) {
    if (answer.type === "error") throw new DaemonError(answer);
    if (answer.type !== "journey_message") throw new Error(`unexpected answer to a journey request: ${answer.type}`);
    return answer;
  }

  /**
   * Send a request with an `id` and wait for its answer (ack, status, pong,
   * journey_message or error).
   * @template {StatusRequest | Trigger | Ping | Cancel | JourneyStart | JourneyReply} F
   * @param {Omit<F, "id">} frame
   * @returns {Promise<Answer>}
   */
  request(frame) {
    const id = randomUUID();
    return new Promise((resolve, reject) => {
      this.requests.set(id, { resolve, reject });
      if (!this.#send(/** @type {Frame} */ ({ ...frame, id }))) {
        this.requests.delete(id);
        reject(new Error("not connected to the daemon"));
      }
    });
  }

  /** @param {Frame} frame */
  #send(frame) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  async #run() {
    let delay = this.minDelayMs;
    /** @type {string | null} */
    let rejectedToken = null;
    while (!this.closed) {
      /** @type {Target} */
      let target;
      try {
        target = await this.locate();
      } catch (e) {
        const wait = Math.round(Math.random() * delay);
        this.emit("retry", { delayMs: wait, error: e });
        await this.#wait(wait);
        delay = Math.min(delay * 2, this.maxDelayMs);
        continue;
      }
      if (this.closed) break; // close() was called while the daemon was being located
      const { code, reason, paired } = await this.#connectOnce(target);
      if (this.closed) break;
      if (paired) {
        delay = this.minDelayMs;
        rejectedToken = null;
      }
      const fatal = NO_RETRY.get(code);
      if (fatal) {
        this.#stop(fatal);
        break;
      }
      if (code === 4401) {
        // The token was rotated (`daemon pair --rotate`) or is wrong: locate() re-reads
        // it; the same token refused twice will not get better by retrying.
        if (rejectedToken === target.token) {
          this.#stop("the daemon refused the pairing token; pair again (daemon pair)");
          break;
        }
        rejectedToken = target.token;
      }
      const wait = Math.round(Math.random() * delay);
      this.emit("retry", { delayMs: wait, code, reason });
      await this.#wait(wait);
      delay = Math.min(delay * 2, this.maxDelayMs);
    }
  }

  /** @param {string} reason */
  #stop(reason) {
    this.closed = true;
    this.emit("stopped", reason);
  }

  /**
   * One connection, from the upgrade to the close.
   * @param {Target} target
   * @returns {Promise<{code: number, reason: string, paired: boolean}>}
   */
  #connectOnce(target) {
    return new Promise((resolve) => {
      const ws = new WebSocket(`ws://${target.host}:${target.port}/`, {
        headers: { Authorization: `Bearer ${target.token}` },
        perMessageDeflate: false, // the daemon has compression off
        handshakeTimeout: 10_000,
      });
      this.ws = ws;
      let paired = false;
      let httpStatus = 0;
      /** @type {NodeJS.Timeout | undefined} */
      let watchdog;
      // The daemon pings every heartbeat_s (ws answers by itself); a connection
      // silent for twice that is dead (a sleeping laptop, a killed daemon).
      const alive = () => {
        clearTimeout(watchdog);
        const beat = this.session?.heartbeat_s ?? 20;
        watchdog = setTimeout(() => ws.terminate(), 2 * beat * 1000 + 1000);
      };

      ws.on("open", () => {
        alive();
        /** @type {DeviceHello} */
        const hello = {
          type: "device_hello",
          protocol: PROTOCOL_VERSION,
          token: target.token,
          device_id: this.deviceId,
          client: this.clientInfo,
          capabilities: { tables: this.store.tableNames, idempotency: true, vector: this.vector },
          last_event_seq: this.lastEventSeq,
        };
        ws.send(JSON.stringify(hello));
      });
      ws.on("ping", alive);
      ws.on("message", (raw) => {
        alive();
        /** @type {Frame} */
        let frame;
        try {
          frame = JSON.parse(raw.toString());
        } catch {
          return; // the daemon only sends JSON; nothing sensible to answer
        }
        if (frame.type === "hello_ack") {
          paired = true;
          this.session = frame;
          alive();
          this.emit("connected", frame, target);
          return;
        }
        void this.#onFrame(frame);
      });
      ws.on("unexpected-response", (req, res) => {
        httpStatus = res.statusCode ?? 0; // 401 wrong token, 403 Host/Origin refused
        res.resume();
        req.destroy();
      });
      ws.on("error", () => {}); // always followed by "close"
      ws.on("close", (code, reasonBuffer) => {
        clearTimeout(watchdog);
        this.ws = null;
        this.session = null;
        const reason = reasonBuffer.toString() || (httpStatus ? `HTTP ${httpStatus}` : "");
        const effective = httpStatus === 401 ? 4401 : code;
        this.#failPending(`disconnected from the daemon (${effective}${reason ? `: ${reason}` : ""})`);
        this.emit("disconnected", { code: effective, reason });
        resolve({ code: effective, reason, paired });
      });
    });
  }

  /** @param {Frame} frame */
  async #onFrame(frame) {
    switch (frame.type) {
      case "tool_call": {
        /** @type {ToolResult} */
        let result;
        try {
          if ((frame.action === "vector_upsert" || frame.action === "vector_search") && !this.vector) {
            // Not announced: refuse rather than half-serve (the reference client does the same).
            const message = `${frame.action}: this client has no vector store`;
            result = { type: "tool_result", id: frame.id, ok: false, error: { code: "bad_request", message } };
          } else {
            result = await this.store.answer(frame);
          }
        } catch (e) {
          // Every call gets exactly one answer, or the daemon waits for its timeout.
          const message = e instanceof Error ? e.message : String(e);
          result = { type: "tool_result", id: frame.id, ok: false, error: { code: "internal", message } };
        }
        this.#send(result);
        this.emit("tool_call", frame, result);
        return;
      }
      case "ping":
        this.#send({ type: "pong", id: frame.id });
        return;
      case "stream_start":
        return;
      case "floating_domain": {
        const chat = this.chats.get(frame.request_id);
        if (chat) chat.result.domain = frame.domain;
        return;
      }
      case "stream_text": {
        const chat = this.chats.get(frame.request_id);
        if (chat) {
          chat.result.chunks.push(frame.chunk);
          chat.result.text += frame.chunk;
        }
        this.emit(`text:${frame.request_id}`, frame.chunk);
        return;
      }
      case "stream_end": {
        const chat = this.chats.get(frame.request_id);
        this.removeAllListeners(`text:${frame.request_id}`);
        if (!chat) return;
        this.chats.delete(frame.request_id);
        chat.result.mutations = frame.mutations ?? [];
        chat.result.error = frame.error ?? null;
        chat.resolve(chat.result);
        return;
      }
      case "run_started":
      case "run_complete":
        this.lastEventSeq = Math.max(this.lastEventSeq, frame.seq); // replayed after a reconnect
        this.emit("run_event", frame);
        return;
      case "run_progress":
        this.emit("run_event", frame);
        return;
      case "ack":
      case "status":
      case "pong":
      case "journey_message":
      case "error": {
        const pending = frame.id ? this.requests.get(frame.id) : undefined;
        if (pending && frame.id) {
          this.requests.delete(frame.id);
          pending.resolve(frame);
        } else if (frame.type === "error") {
          this.emit("daemon_error", frame);
        }
        return;
      }
      default:
        return; // a newer daemon may send frames this app does not know: ignore them
    }
  }

  /** @param {string} why */
  #failPending(why) {
    for (const [id, chat] of this.chats) {
      this.removeAllListeners(`text:${id}`);
      chat.reject(new Error(why));
    }
    this.chats.clear();
    for (const pending of this.requests.values()) pending.reject(new Error(why));
    this.requests.clear();
  }
}

// The example against the real daemon (node --test).
//
// Real processes only: the daemon is the project's Python (`TETHER_DAEMON`, else
// `$TETHER_PYTHON -m daemon`, else the repository's .venv), with TETHER_HOME in a temp
// dir; its model is the project's fake OpenAI-compatible server
// (`python -m tests.support.llm_server`), which answers a user message by calling
// `list_tasks` and then quotes the tool's result, so a finished chat proves that the
// example served the daemon's `select`. The journey, vector and coreMemory tests start
// their own fake server, scripted the same way to call `finish_journey`, `create_note`
// or `update_core_memory`; its /v1/embeddings gives hashed bag-of-words vectors.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import { DaemonError } from "../src/client.js";
import { REPO_ROOT, readRuntime, spawnDaemon } from "../src/daemon.js";
import { seededStore, startApp } from "../src/main.js";
import { MemoryStore } from "../src/store.js";

const PYTHON =
  process.env.TETHER_PYTHON ||
  join(REPO_ROOT, ".venv", process.platform === "win32" ? "Scripts/python.exe" : "bin/python");
const DAEMON = (process.env.TETHER_DAEMON ?? "").trim()
  ? /** @type {string} */ (process.env.TETHER_DAEMON).trim().split(/\s+/)
  : [PYTHON, "-m", "daemon"];
const MAIN = fileURLToPath(new URL("../src/main.js", import.meta.url));
const TIMEOUT = 180_000; // per test: each starts Python daemons on a shared CI machine
const TITLES = ["Draft homepage copy", "Pick fonts", "Renew domain"];

/** @type {import("node:child_process").ChildProcess[]} */
const llms = [];
/** @type {string} */
let baseUrl;
/** @type {string} */
let scratch;
let homes = 0;

/**
 * Start the fake model: it answers a user message by calling `tool` with `args`, and a
 * tool's result with `reply` and that result.
 * @param {string} tool @param {Record<string, unknown>} [args] @param {string} [reply]
 * @returns {Promise<string>} its base URL
 */
async function startFakeLlm(tool, args = {}, reply = "ok") {
  const fakeLlm = ["-m", "tests.support.llm_server", "--tool", tool, "--tool-args", JSON.stringify(args), "--reply", reply];
  const llm = spawn(PYTHON, [...fakeLlm, "--exit-on-stdin-eof"], {
    cwd: REPO_ROOT,
    stdio: ["pipe", "pipe", "inherit"], // our stdin pipe closes when this process dies, however
  });
  llms.push(llm);
  const line = await firstLine(llm);
  return JSON.parse(line).base_url;
}

before(async () => {
  assert.ok(existsSync(DAEMON[0]) || !DAEMON[0].includes("/"), `no daemon at ${DAEMON[0]}: set TETHER_DAEMON`);
  scratch = mkdtempSync(join(tmpdir(), "tether-node-"));
  baseUrl = await startFakeLlm("list_tasks", {}, "Here is your list:");
});

after(() => {
  for (const llm of llms) llm.kill();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

/** @param {import("node:child_process").ChildProcess} child @returns {Promise<string>} */
function firstLine(child) {
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: /** @type {import("node:stream").Readable} */ (child.stdout) });
    lines.once("line", (line) => {
      lines.close();
      resolve(line);
    });
    child.once("exit", (code) => reject(new Error(`${child.spawnfile} exited (${code}) before its first line`)));
  });
}

/**
 * The daemon's environment: a fresh TETHER_HOME, the fake model, no host secrets.
 * @param {NodeJS.ProcessEnv} [extra] e.g. another fake model's TETHER_API_BASE
 */
function daemonEnv(extra = {}) {
  /** @type {NodeJS.ProcessEnv} */
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("TETHER_")));
  return {
    ...env,
    TETHER_HOME: join(scratch, `home-${homes++}`),
    TETHER_MODEL: "openai/fake",
    TETHER_API_BASE: baseUrl,
    TETHER_API_KEY: "sk-fake",
    LITELLM_LOCAL_MODEL_COST_MAP: "True",
    PYTHON_KEYRING_BACKEND: "keyring.backends.null.Keyring",
    PYTHONUNBUFFERED: "1",
    ...extra,
  };
}

/**
 * Resolve once `check()` holds, looking again after every tool call the client serves
 * (for work the daemon does after a chat has ended, such as embedding its notes). No
 * timer: the test's own timeout is the only limit.
 * @param {import("../src/client.js").TetherClient} client @param {() => boolean} check
 * @returns {Promise<void>}
 */
function afterToolCalls(client, check) {
  return new Promise((resolve) => {
    const look = () => {
      if (!check()) return;
      client.off("tool_call", look);
      resolve();
    };
    client.on("tool_call", look);
    look();
  });
}

/**
 * Resolve with the next "connected" event of the client.
 * @param {import("../src/client.js").TetherClient} client
 * @returns {Promise<{ack: import("../../types/protocol.js").HelloAck, port: number}>}
 */
function nextConnection(client) {
  return new Promise((resolve, reject) => {
    client.once("connected", (ack, target) => resolve({ ack, port: target.port }));
    client.once("stopped", (reason) => reject(new Error(`client stopped: ${reason}`)));
  });
}

/** Occupy a port so the restarted daemon cannot get the old one back. */
function holdPort(/** @type {number} */ port) {
  const server = createServer();
  server.on("error", () => {}); // the port still busy: the check below then says so
  server.listen(port, "127.0.0.1"); // binds synchronously for an IP literal
  return server;
}

/**
 * A chat that must read the tasks through a `select` served by the example's store.
 * @param {ReturnType<typeof startApp>} app
 */
async function chatAboutTasks(app) {
  const before = app.store.calls.length;
  const result = await app.client.chat("What is on my list?");
  assert.equal(result.error, null, `the chat failed: ${result.error}`);
  const calls = app.store.calls.slice(before);
  assert.ok(
    calls.some((c) => c.action === "select" && c.table === "tasks"),
    `no select on tasks was served: ${JSON.stringify(calls)}`,
  );
  assert.ok(result.text.startsWith("Here is your list:"), result.text);
  for (const title of TITLES) assert.ok(result.text.includes(title), `${title} missing from ${result.text}`);
  assert.ok(result.chunks.length > 1, "the answer was streamed in chunks");
  assert.deepEqual(result.mutations, []);
  return result;
}

describe("the example against the real daemon", () => {
  test("spawns the daemon, pairs, serves a select, chats, and reconnects after a crash on a new port", { timeout: TIMEOUT }, async () => {
    const app = startApp({ command: DAEMON, env: daemonEnv(), cwd: REPO_ROOT, deviceId: "laptop-1" });
    try {
      const first = await nextConnection(app.client);
      assert.equal(first.ack.protocol, 1);
      assert.ok(first.ack.session_id);
      assert.ok(first.ack.features.includes("chat"));
      const pid = /** @type {import("../src/daemon.js").ReadyLine} */ (app.supervisor.ready).pid;
      assert.equal(first.port, app.supervisor.ready?.port);
      await chatAboutTasks(app);

      // The daemon crashes. The example respawns it; the new one listens elsewhere.
      /** @type {import("node:net").Server | undefined} */
      let held;
      app.supervisor.once("exit", ({ port }) => {
        held = holdPort(port);
      });
      const disconnected = new Promise((resolve) => app.client.once("disconnected", resolve));
      const second = nextConnection(app.client);
      process.kill(pid, "SIGKILL");
      await disconnected;
      const again = await second;
      held?.close();
      assert.ok(held, "the supervisor saw the daemon exit");
      assert.notEqual(again.port, first.port, "the restarted daemon is on a new port");
      assert.notEqual(app.supervisor.ready?.pid, pid, "a new daemon process");
      assert.equal(again.port, app.supervisor.ready?.port, "connected to the port of the new ready line");
      assert.notEqual(again.ack.session_id, first.ack.session_id);

      await chatAboutTasks(app); // and it serves the new daemon's calls
    } finally {
      await app.stop();
    }
  });

  test("attaches to a running daemon and follows daemon.json across a restart on a new port", { timeout: TIMEOUT }, async () => {
    const env = daemonEnv();
    const daemonA = await spawnDaemon({ command: DAEMON, env, cwd: REPO_ROOT });
    const app = startApp({ mode: "attach", command: DAEMON, env, cwd: REPO_ROOT, deviceId: "laptop-2" });
    /** @type {import("node:child_process").ChildProcess | undefined} */
    let daemonB;
    try {
      const first = await nextConnection(app.client);
      assert.equal(first.port, daemonA.ready.port);
      assert.equal(readRuntime(env)?.port, daemonA.ready.port);
      await chatAboutTasks(app);
      const pong = await app.client.request({ type: "ping" });
      assert.equal(pong.type, "pong");

      // The daemon restarts (an upgrade, autostart's Restart=): a clean stop removes
      // daemon.json; the client retries until the new daemon has written its own.
      const second = nextConnection(app.client);
      const exited = new Promise((resolve) => daemonA.child.once("exit", resolve));
      daemonA.child.kill("SIGTERM");
      await exited;
      const held = holdPort(daemonA.ready.port);
      try {
        const started = await spawnDaemon({ command: DAEMON, env, cwd: REPO_ROOT });
        daemonB = started.child;
        const again = await second;
        assert.equal(again.port, started.ready.port);
        assert.notEqual(again.port, first.port);
      } finally {
        held.close();
      }
      await chatAboutTasks(app);
    } finally {
      await app.stop();
      for (const child of [daemonA.child, daemonB]) if (child && child.exitCode === null) child.kill();
    }
  });

  test("comes back with the new token after `daemon pair --rotate`", { timeout: TIMEOUT }, async () => {
    const env = daemonEnv();
    const app = startApp({ command: DAEMON, env, cwd: REPO_ROOT, deviceId: "laptop-3" });
    try {
      const first = await nextConnection(app.client);
      const closed = new Promise((resolve) => app.client.once("disconnected", resolve));
      const second = nextConnection(app.client);
      const rotate = spawn(DAEMON[0], [...DAEMON.slice(1), "pair", "--rotate"], { env, cwd: REPO_ROOT, stdio: "ignore" });
      const code = await new Promise((resolve) => rotate.once("exit", resolve));
      assert.equal(code, 0, "daemon pair --rotate failed");
      assert.equal(/** @type {{code: number}} */ (await closed).code, 4401);
      const again = await second;
      assert.equal(again.port, first.port, "same daemon, new session");
      assert.notEqual(again.ack.session_id, first.ack.session_id);
      const status = await app.client.request({ type: "status_request" });
      assert.equal(status.type, "status");
      assert.equal(status.type === "status" && status.device_online, true);
    } finally {
      await app.stop();
    }
  });

  test("`node src/main.js --once` spawns the daemon, chats, and leaves no daemon behind", { timeout: TIMEOUT }, async () => {
    const env = daemonEnv();
    const child = spawn(process.execPath, [MAIN, "--once", "What is on my list?"], {
      env: { ...env, TETHER_DAEMON: DAEMON.join(" ") },
      cwd: REPO_ROOT,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (chunk) => (out += chunk));
    child.stderr.on("data", (chunk) => (err += chunk));
    const code = await new Promise((resolve) => child.once("exit", resolve));
    assert.equal(code, 0, `exit ${code}: ${err}`);
    for (const title of TITLES) assert.ok(out.includes(title), `${title} missing from ${out}`);
    assert.match(err, /tool_call select tasks: ok/);
    assert.equal(readRuntime(env), null, "the daemon stopped and removed daemon.json");
  });
});

describe("agent-setup journeys against the real daemon", { concurrency: true }, () => {
  // The model ends a journey by calling `finish_journey`; this one does so at the first reply.
  const SUGGESTION = {
    prompt_template: "Turn client requests into tasks with due dates.",
    data_types: ["tasks", "notes"],
    filter_config: { senders: ["ana@example.com"], labels: ["clients"] },
  };
  /** @type {ReturnType<typeof startApp>} */
  let app;
  /** @type {string} */
  let api;

  before(async () => {
    api = await startFakeLlm("finish_journey", SUGGESTION);
    app = startApp({ command: DAEMON, env: daemonEnv({ TETHER_API_BASE: api }), cwd: REPO_ROOT, deviceId: "laptop-j" });
    await app.client.connected();
  });
  after(() => app?.stop());

  test("a journey ends with done: true and the model's suggestion, validated", { timeout: TIMEOUT }, async () => {
    /** @type {import("../../types/protocol.js").JourneyMessage[]} */
    const asked = [];
    const result = await app.client.journey({
      kind: "gmail",
      answer: (question) => {
        asked.push(question);
        return "Requests from my clients become tasks; mostly Ana, label clients";
      },
    });
    assert.equal(asked.length, 1, "one question, then the model finished");
    assert.equal(asked[0].done ?? false, false);
    assert.match(asked[0].message, /email/i, "the first question fits a mail agent");
    assert.equal(result.done, true);
    assert.equal(result.session_id, asked[0].session_id);
    assert.equal(result.prompt_template, SUGGESTION.prompt_template);
    assert.deepEqual(result.data_types, SUGGESTION.data_types);
    assert.deepEqual(result.filter_config, SUGGESTION.filter_config);
    assert.equal(result.file_extensions ?? null, null, "no file_extensions for a mail agent");
    // A finished journey is gone: the daemon keeps nothing.
    await assert.rejects(app.client.journeyReply(result.session_id, "one more thing"),
      (e) => e instanceof DaemonError && e.code === "not_found");
  });

  test("a cancelled journey is gone; an unknown kind is refused", { timeout: TIMEOUT }, async () => {
    const first = await app.client.journeyStart("teams");
    assert.equal(first.done ?? false, false);
    assert.match(first.message, /chat/i);
    await app.client.cancelJourney(first.session_id);
    await assert.rejects(app.client.journeyReply(first.session_id, "requests to me become tasks"),
      (e) => e instanceof DaemonError && e.code === "not_found");
    await assert.rejects(app.client.cancelJourney(first.session_id),
      (e) => e instanceof DaemonError && e.code === "not_found");
    // The user closes the dialog: journey() cancels the journey on the daemon.
    /** @type {string | undefined} */
    let sessionId;
    await assert.rejects(app.client.journey({
      kind: "local_directory",
      onStart: (start) => (sessionId = start.session_id),
      answer: () => Promise.reject(new Error("dialog closed")),
    }), /dialog closed/);
    assert.ok(sessionId);
    await assert.rejects(app.client.cancelJourney(sessionId),
      (e) => e instanceof DaemonError && e.code === "not_found", "already cancelled by journey()");
    await assert.rejects(app.client.journeyStart("fax"),
      (e) => e instanceof DaemonError && e.code === "bad_request" && /fax/.test(e.message));
  });

  test("`node src/main.js --journey gmail` asks on the terminal and prints the suggestion", { timeout: TIMEOUT }, async () => {
    const env = daemonEnv({ TETHER_API_BASE: api, TETHER_DAEMON: DAEMON.join(" ") });
    const child = spawn(process.execPath, [MAIN, "--journey", "gmail"], { env, cwd: REPO_ROOT, stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (chunk) => (out += chunk));
    child.stderr.on("data", (chunk) => (err += chunk));
    child.stdin.end("Client requests become tasks\n");
    const code = await new Promise((resolve) => child.once("exit", resolve));
    assert.equal(code, 0, `exit ${code}: ${err}`);
    assert.match(out, /Which emails/);
    const printed = JSON.parse(out.slice(out.indexOf("{")));
    assert.deepEqual(printed, SUGGESTION);
    assert.equal(readRuntime(env), null, "the daemon stopped and removed daemon.json");
  });
});

describe("vectors and core memory against the real daemon", { concurrency: true }, () => {
  test("with vector: true and an embedding model, notes reach the store's vector index", { timeout: TIMEOUT }, async () => {
    const note = { title: "Kickoff call", content: "The client wants a blue logo and a spring launch" };
    const api = await startFakeLlm("create_note", note, "Noted:");
    const store = seededStore();
    const before = store.add("notes", { title: "Invoice details", content: "VAT number and billing address" });
    const env = daemonEnv({ TETHER_API_BASE: api, TETHER_EMBEDDING_MODEL: "openai/fake-embed" });
    const app = startApp({ command: DAEMON, env, cwd: REPO_ROOT, deviceId: "laptop-v", store, vector: true });
    try {
      await app.client.connected();
      const result = await app.client.chat("Write down what the client said in the kickoff call");
      assert.equal(result.error, null, `the chat failed: ${result.error}`);
      const created = result.mutations.find((m) => m.action === "insert" && m.table === "notes");
      assert.ok(created, `no note was created: ${JSON.stringify(result.mutations)}`);
      const id = String(/** @type {Record<string, unknown>} */ (created.data).id);
      assert.deepEqual(store.rows("notes").map((r) => r.title), ["Invoice details", "Kickoff call"]);

      // The new note (after the chat) and the one the app had before (the background
      // pass after the hello) are embedded and sent with vector_upsert.
      const index = store.vectors.entries;
      await afterToolCalls(app.client, () => index.has(id) && index.has(String(before.id)));
      const upserts = store.calls.filter((c) => c.action === "vector_upsert");
      assert.ok(upserts.some((c) => c.data?.id === id), "the chat's note came by vector_upsert");
      const entry = /** @type {{content: string, vector: number[]}} */ (index.get(id));
      assert.equal(entry.content, `${note.title}\n\n${note.content}`);
      assert.ok(entry.vector.length > 0 && entry.vector.some((x) => x !== 0));
      // What vector_search answers: the note itself first, with the best score.
      const found = /** @type {{results: {id: string, score: number}[]}} */ (
        store.handle({ action: "vector_search", vector: entry.vector, limit: 5 })
      );
      assert.equal(found.results[0].id, id);
      assert.ok(Math.abs(found.results[0].score - 1) < 1e-9);
      assert.ok(found.results.length === 2 && found.results[1].score < found.results[0].score);
      // The chat read the user's core memory first (coreMemory is in the hello's tables).
      assert.ok(store.calls.some((c) => c.action === "select" && c.table === "coreMemory"));
    } finally {
      await app.stop();
    }
  });

  test("the chat's update_core_memory inserts, then updates, the store's coreMemory row", { timeout: TIMEOUT }, async () => {
    const api = await startFakeLlm("update_core_memory", { key: "working_hours", value: "9 to 5 CET" }, "Saved:");
    const store = seededStore();
    const app = startApp({ command: DAEMON, env: daemonEnv({ TETHER_API_BASE: api }), cwd: REPO_ROOT,
      deviceId: "laptop-m", store });
    try {
      await app.client.connected();
      const first = await app.client.chat("I work 9 to 5 CET");
      assert.equal(first.error, null, `the chat failed: ${first.error}`);
      assert.deepEqual(first.mutations.map((m) => `${m.action} ${m.table}`), ["insert coreMemory"]);
      const [row] = store.rows("coreMemory");
      assert.deepEqual([row.key, row.value], ["working_hours", "9 to 5 CET"]);
      assert.equal(typeof row.createdAt, "number");

      // The user changed it in the app; the chat sets it back with an update of that row.
      store.handle({ action: "update", table: "coreMemory", data: { id: row.id, updates: { value: "8 to 4" } } });
      const again = await app.client.chat("Remember: 9 to 5 CET");
      assert.equal(again.error, null, `the chat failed: ${again.error}`);
      assert.deepEqual(again.mutations.map((m) => `${m.action} ${m.table}`), ["update coreMemory"]);
      const rows = store.rows("coreMemory");
      assert.equal(rows.length, 1, "one row per key");
      assert.deepEqual([rows[0].id, rows[0].value], [row.id, "9 to 5 CET"]);
      assert.ok(store.calls.some((c) => c.action === "select" && c.table === "coreMemory" && c.filters == null));
    } finally {
      await app.stop();
    }
  });
});

describe("the example's store", () => {
  test("an idempotency_key repeated returns the first row and inserts nothing", () => {
    const store = new MemoryStore();
    const call = { action: "insert", table: "tasks", data: { title: "Call Ana" }, idempotency_key: "sha256:1" };
    const first = /** @type {{row: Record<string, unknown>}} */ (store.handle(call));
    const again = /** @type {{row: Record<string, unknown>}} */ (store.handle(call));
    assert.deepEqual(again.row, first.row);
    assert.equal(store.rows("tasks").length, 1);
    const other = store.answer({ type: "tool_call", id: "c2", ...call, table: "notes", data: { title: "x" } });
    assert.equal(other.ok, false);
    assert.deepEqual(other.error && typeof other.error === "object" && other.error.code, "bad_request");
  });

  test("select applies storage.md's filters and refuses unknown ones", () => {
    const store = seededStore();
    const done = /** @type {{rows: Record<string, unknown>[]}} */ (
      store.handle({ action: "select", table: "tasks", filters: { status: "done", projectId: null } })
    );
    assert.deepEqual(done.rows.map((r) => r.title), ["Renew domain"]);
    const byPriority = /** @type {{rows: Record<string, unknown>[]}} */ (
      store.handle({ action: "select", table: "tasks", filters: { orderBy: "priority" }, limit: 2 })
    );
    assert.deepEqual(byPriority.rows.map((r) => r.title), ["Draft homepage copy", "Pick fonts"]);
    const typo = store.answer({ type: "tool_call", id: "c1", action: "select", table: "tasks", filters: { stauts: "x" } });
    assert.equal(typo.ok, false);
    assert.match(JSON.stringify(typo.error), /bad_request.*stauts/);
  });

  test("update and delete of a missing row are not_found; get of one is {row: null}", () => {
    const store = new MemoryStore();
    const missing = { id: "nope" };
    assert.deepEqual(store.handle({ action: "get", table: "notes", data: missing }), { row: null });
    for (const action of ["update", "delete"]) {
      const result = store.answer({ type: "tool_call", id: action, action, table: "notes",
        data: { ...missing, updates: { title: "x" } } });
      assert.equal(result.ok, false);
      assert.match(JSON.stringify(result.error), /not_found/);
    }
    const note = store.add("notes", { title: "Plan" });
    const updated = /** @type {{row: Record<string, unknown>}} */ (
      store.handle({ action: "update", table: "notes", data: { id: note.id, updates: { content: "# Plan" } } })
    );
    assert.equal(updated.row.content, "# Plan");
    assert.deepEqual(store.handle({ action: "delete", table: "notes", data: { id: note.id } }), { deleted: true });
  });

  test("vector_upsert replaces an id's entry; vector_search ranks by cosine, filters by projectId", () => {
    const store = new MemoryStore();
    const up = (/** @type {string} */ id, /** @type {number[]} */ vector, projectId = "p1") =>
      store.answer({ type: "tool_call", id: `u-${id}`, action: "vector_upsert", data: { id, projectId, content: id }, vector });
    assert.deepEqual(up("a", [1, 0]), { type: "tool_result", id: "u-a", ok: true });
    up("b", [1, 1]);
    up("c", [0, 1], "p2");
    up("a", [0.9, 0.1]); // the note changed: its vector is replaced
    const search = (/** @type {Record<string, unknown>} */ extra) =>
      store.answer({ type: "tool_call", id: "s", action: "vector_search", vector: [1, 0], ...extra });
    const all = search({ limit: 10 });
    assert.deepEqual(all.results?.map((r) => r.id), ["a", "b", "c"]);
    assert.equal(store.vectors.entries.size, 3);
    assert.deepEqual(search({ limit: 1 }).results?.map((r) => r.id), ["a"]);
    assert.deepEqual(search({ filters: { projectId: "p2" } }).results?.map((r) => r.id), ["c"]);
    for (const [extra, why] of /** @type {[Record<string, unknown>, RegExp][]} */ ([
      [{ vector: [1, 0, 0] }, /dimensions/],
      [{ vector: [] }, /non-empty/],
      [{ filters: { title: "x" } }, /unknown filter/],
    ])) {
      const refused = search(extra);
      assert.equal(refused.ok, false);
      assert.match(JSON.stringify(refused.error), why);
    }
    const noContent = store.answer({ type: "tool_call", id: "u", action: "vector_upsert", data: { id: "d" }, vector: [1, 0] });
    assert.match(JSON.stringify(noContent.error), /bad_request.*content/);
  });

  test("coreMemory: select by key, insert, update, as the daemon calls them", () => {
    const store = new MemoryStore();
    const row = store.add("coreMemory", { key: "timezone", value: "CET" });
    assert.equal(row.updatedAt, row.createdAt);
    store.add("coreMemory", { key: "working_hours", value: "9 to 5" });
    const byKey = /** @type {{rows: Record<string, unknown>[]}} */ (
      store.handle({ action: "select", table: "coreMemory", filters: { key: "timezone" }, limit: 500 })
    );
    assert.deepEqual(byKey.rows.map((r) => r.value), ["CET"]);
    const updated = /** @type {{row: Record<string, unknown>}} */ (
      store.handle({ action: "update", table: "coreMemory", data: { id: row.id, updates: { value: "CEST" } } })
    );
    assert.equal(updated.row.value, "CEST");
    const missing = store.answer({ type: "tool_call", id: "m", action: "insert", table: "coreMemory", data: { key: "k" } });
    assert.match(JSON.stringify(missing.error), /bad_request.*value/);
  });
});

// The example against the real daemon (node --test).
//
// Real processes only: the daemon is the project's Python (`TETHER_DAEMON`, else
// `$TETHER_PYTHON -m daemon`, else the repository's .venv), with TETHER_HOME in a temp
// dir; its model is the project's fake OpenAI-compatible server
// (`python -m tests.support.llm_server`), which answers a user message by calling
// `list_tasks` and then quotes the tool's result, so a finished chat proves that the
// example served the daemon's `select`.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

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

/** @type {import("node:child_process").ChildProcess} */
let llm;
/** @type {string} */
let baseUrl;
/** @type {string} */
let scratch;
let homes = 0;

before(async () => {
  assert.ok(existsSync(DAEMON[0]) || !DAEMON[0].includes("/"), `no daemon at ${DAEMON[0]}: set TETHER_DAEMON`);
  scratch = mkdtempSync(join(tmpdir(), "tether-node-"));
  const fakeLlm = ["-m", "tests.support.llm_server", "--tool", "list_tasks", "--reply", "Here is your list:"];
  llm = spawn(PYTHON, [...fakeLlm, "--exit-on-stdin-eof"], {
    cwd: REPO_ROOT,
    stdio: ["pipe", "pipe", "inherit"], // our stdin pipe closes when this process dies, however
  });
  const line = await firstLine(llm);
  baseUrl = JSON.parse(line).base_url;
});

after(() => {
  llm?.kill();
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

/** The daemon's environment: a fresh TETHER_HOME, the fake model, no host secrets. */
function daemonEnv() {
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
  };
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
});

// The example app: spawn (or attach to) the daemon, pair, serve tool calls from an
// in-memory store, chat, and stay connected across daemon restarts.
//
//   node src/main.js                      run until Ctrl-C; chat once when first paired
//   node src/main.js --once "message"     chat once, print the answer, exit
//   node src/main.js --attach             use the daemon that already runs (autostart)
//   node src/main.js --journey gmail      set up an agent's prompt by answering questions
//   node src/main.js --vector             announce a vector store (semantic note search;
//                                         the daemon also needs TETHER_EMBEDDING_MODEL)
//
// The daemon command comes from TETHER_DAEMON (see daemon.js); the daemon needs a
// model (TETHER_MODEL, TETHER_API_BASE, TETHER_API_KEY or config.toml) to chat.

import { hostname } from "node:os";
import { createInterface } from "node:readline/promises";
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { TetherClient } from "./client.js";
import { DaemonSupervisor } from "./daemon.js";
import { MemoryStore } from "./store.js";

/** @typedef {import("./client.js").ChatResult} ChatResult */

/**
 * Wire the three parts together the way an Electron main process would.
 *
 * @param {{mode?: "spawn" | "attach", command?: string[], env?: NodeJS.ProcessEnv,
 *          token?: string, deviceId?: string, store?: MemoryStore, cwd?: string,
 *          vector?: boolean, log?: (line: string) => void}} [options]
 */
export function startApp({ mode = "spawn", command, env = process.env, token, deviceId, store, cwd,
  vector = false, log = () => {} } = {}) {
  const db = store ?? seededStore();
  const supervisor = new DaemonSupervisor({ mode, command, env, token, cwd });
  const client = new TetherClient({
    locate: () => supervisor.locate(),
    store: db,
    deviceId: deviceId ?? `example-${hostname()}`,
    client: { name: "tether-electron-example", version: "0.1.0" },
    vector, // announce capabilities.vector: the store then answers vector_upsert/vector_search
  });
  supervisor.on("spawned", (ready) => log(`daemon started: pid ${ready.pid}, port ${ready.port}`));
  supervisor.on("attached", (info) => log(`using the running daemon: pid ${info.pid}, port ${info.port}`));
  supervisor.on("exit", ({ code, signal }) => log(`daemon exited (${signal ?? `code ${code}`}); restarting`));
  client.on("connected", (ack, target) => log(`paired: session ${ack.session_id} on port ${target.port}`));
  client.on("disconnected", ({ code, reason }) => log(`disconnected: ${code}${reason ? ` ${reason}` : ""}`));
  client.on("retry", ({ delayMs, error }) =>
    log(`reconnecting in ${delayMs} ms${error ? ` (${error.message})` : ""}`));
  client.on("tool_call", (call, result) =>
    log(`tool_call ${call.action} ${call.table ?? ""}: ${result.ok ? "ok" : JSON.stringify(result.error)}`));
  client.on("run_event", (frame) => {
    if (frame.type === "run_complete") log(`run ${frame.run_id} of ${frame.agent_id}: ${frame.status}`);
  });
  client.on("stopped", (reason) => log(`stopped: ${reason}`));
  client.start();
  return {
    client,
    supervisor,
    store: db,
    async stop() {
      await client.close();
      await supervisor.stop();
    },
  };
}

/** What the app's database might hold: one project, three tasks. */
export function seededStore() {
  const store = new MemoryStore();
  const project = store.add("projects", { name: "Website relaunch" });
  store.add("tasks", { projectId: project.id, title: "Draft homepage copy", priority: "high" });
  store.add("tasks", { projectId: project.id, title: "Pick fonts" });
  store.add("tasks", { projectId: project.id, title: "Renew domain", priority: "low", status: "done" });
  return store;
}

/**
 * The agent-setup journey on a terminal: print each question, read the answer, and
 * show the suggestion the daemon ends with. An app shows this in Settings → Agents
 * and saves the result with agents_sync when the user applies it.
 * @param {import("./client.js").TetherClient} client @param {string} kind
 */
async function setUpAgent(client, kind) {
  const terminal = createInterface({ input: process.stdin });
  const lines = terminal[Symbol.asyncIterator](); // buffers lines typed (or piped) early
  try {
    const result = await client.journey({
      kind,
      answer: async (question) => {
        process.stdout.write(`${question.message}\n> `);
        const line = await lines.next();
        if (line.done) throw new Error("no answer (end of input)");
        return line.value;
      },
    });
    const { message, prompt_template, data_types, file_extensions, filter_config } = result;
    console.log(message);
    console.log(JSON.stringify({ prompt_template, data_types, file_extensions, filter_config }, null, 2));
  } finally {
    terminal.close();
  }
}

/** @param {ChatResult} result */
function describe(result) {
  const changes = result.mutations.map((m) => `${m.action} ${m.table}`).join(", ");
  return changes ? `(changed: ${changes})` : "(no changes)";
}

async function main() {
  const argv = process.argv.slice(2);
  const onceAt = argv.indexOf("--once");
  const once = onceAt >= 0;
  const message = once ? argv[onceAt + 1] || "What is on my list?" : "What is on my list?";
  const log = (/** @type {string} */ line) => console.error(`[example] ${line}`);
  const journeyAt = argv.indexOf("--journey");
  const app = startApp({ mode: argv.includes("--attach") ? "attach" : "spawn", vector: argv.includes("--vector"), log });
  let stopping = false;
  const stop = async (/** @type {number} */ code) => {
    if (stopping) return;
    stopping = true;
    await app.stop();
    process.exit(code);
  };
  process.on("SIGINT", () => void stop(130));
  process.on("SIGTERM", () => void stop(143));
  app.client.on("stopped", () => void stop(1));

  await app.client.connected();
  if (journeyAt >= 0) {
    const ok = await setUpAgent(app.client, argv[journeyAt + 1] || "local_directory").then(
      () => true,
      (e) => (log(`journey failed: ${e.message}`), false),
    );
    await stop(ok ? 0 : 1);
    return;
  }
  const result = await app.client.chat(message, { onText: (chunk) => process.stdout.write(chunk) });
  process.stdout.write("\n");
  log(result.error ? `chat failed: ${result.error}` : `chat done ${describe(result)}`);
  if (once) await stop(result.error ? 1 : 0);
  else log("serving tool calls; Ctrl-C to stop");
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((e) => {
    console.error(`[example] ${e instanceof Error ? e.message : e}`);
    process.exit(1);
  });
}

// Finding, spawning and attaching to the Tether daemon.
//
// The desktop app either spawns its own daemon, tied to its life:
//
//     daemon run --port 0 --ready-json --parent-pid <app pid>
//
// and reads the one JSON line the daemon prints on stdout once it listens
// ({"event":"ready","port":…,"pid":…,"token_file":…}), or, when a daemon already
// runs (the user enabled autostart), attaches to it through the runtime file
// `daemon.json` in the daemon's state directory ({pid, port, host, version, protocol}).
// `--port 0` lets the OS pick the port, so it changes at every start: read it again
// (new ready line or runtime file) before every reconnect. `DaemonSupervisor.locate()`
// does exactly that, and respawns a spawned daemon that died.

import { spawn } from "node:child_process";
import { EventEmitter } from "node:events";
import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

/** @typedef {import("node:child_process").ChildProcess} ChildProcess */

/**
 * What the client needs to connect: where, and with which pairing token.
 * @typedef {{port: number, host: string, token: string, pid: number}} Target
 */

/**
 * The ready line of `daemon run --ready-json`.
 * @typedef {{event: "ready", port: number, pid: number, token_file: string | null}} ReadyLine
 */

/**
 * The runtime file `daemon.json`.
 * @typedef {{pid: number, port: number, host?: string, version?: string, protocol?: number}} RuntimeInfo
 */

const here = dirname(fileURLToPath(import.meta.url));

/** The repository's root (this file is packaging/electron/example/src/daemon.js). */
export const REPO_ROOT = resolve(here, "../../../..");

/**
 * The command that runs the daemon, as [program, ...args].
 *
 * `TETHER_DAEMON` holds a command line split on whitespace, e.g. "/opt/app/daemon" (the
 * frozen build), "/home/me/tether/.venv/bin/daemon" or ".venv/bin/python -m daemon". An
 * app that ships the daemon passes the path itself (`DaemonSupervisor({command})`), which
 * also allows spaces in it. Unset: the repository's .venv, else `daemon` on PATH.
 *
 * @param {NodeJS.ProcessEnv} [env]
 * @returns {string[]}
 */
export function daemonCommand(env = process.env) {
  const configured = (env.TETHER_DAEMON ?? "").trim();
  if (configured) return configured.split(/\s+/);
  const venvPython =
    process.platform === "win32"
      ? join(REPO_ROOT, ".venv", "Scripts", "python.exe")
      : join(REPO_ROOT, ".venv", "bin", "python");
  if (existsSync(venvPython)) return [venvPython, "-m", "daemon"];
  return ["daemon"];
}

/**
 * The daemon's config and state directories, as the daemon computes them
 * (platformdirs, app name "tether"; `TETHER_HOME` wins when set).
 *
 * @param {NodeJS.ProcessEnv} [env]
 * @param {NodeJS.Platform} [platform]
 * @returns {{configDir: string, stateDir: string}}
 */
export function tetherDirs(env = process.env, platform = process.platform) {
  const home = (env.TETHER_HOME ?? "").trim();
  if (home) return { configDir: join(home, "config"), stateDir: join(home, "state") };
  if (platform === "win32") {
    const local = env.LOCALAPPDATA || join(homedir(), "AppData", "Local");
    return { configDir: join(local, "tether"), stateDir: join(local, "tether") };
  }
  if (platform === "darwin") {
    const support = join(homedir(), "Library", "Application Support", "tether");
    return { configDir: support, stateDir: support };
  }
  const config = env.XDG_CONFIG_HOME || join(homedir(), ".config");
  const state = env.XDG_STATE_HOME || join(homedir(), ".local", "state");
  return { configDir: join(config, "tether"), stateDir: join(state, "tether") };
}

/** @param {number} pid */
function pidAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return /** @type {NodeJS.ErrnoException} */ (e).code === "EPERM";
  }
}

/**
 * The running daemon's runtime file, or null when there is none, it is unreadable,
 * or its process is gone (a daemon killed hard leaves a stale file behind).
 *
 * @param {NodeJS.ProcessEnv} [env]
 * @returns {RuntimeInfo | null}
 */
export function readRuntime(env = process.env) {
  const file = join(tetherDirs(env).stateDir, "daemon.json");
  try {
    const info = JSON.parse(readFileSync(file, "utf8"));
    if (typeof info?.port !== "number" || typeof info?.pid !== "number") return null;
    return pidAlive(info.pid) ? info : null;
  } catch {
    return null;
  }
}

/**
 * The pairing token: `TETHER_TOKEN` if the app chose one, else the token file
 * (mode 0600; named by the ready line, or `<config dir>/token`).
 *
 * @param {{tokenFile?: string | null, env?: NodeJS.ProcessEnv}} [options]
 * @returns {string}
 */
export function readToken({ tokenFile, env = process.env } = {}) {
  const fromEnv = (env.TETHER_TOKEN ?? "").trim();
  if (fromEnv) return fromEnv;
  const file = tokenFile || join(tetherDirs(env).configDir, "token");
  try {
    const token = readFileSync(file, "utf8").trim();
    if (token) return token;
  } catch (e) {
    throw new Error(`cannot read the pairing token from ${file}: ${/** @type {Error} */ (e).message}`);
  }
  throw new Error(`the pairing token file ${file} is empty`);
}

/** Raised when `daemon run` exits because another daemon already runs. */
export class AlreadyRunning extends Error {}

/**
 * Spawn `daemon run --port 0 --ready-json --parent-pid <pid>` and wait for its ready line.
 *
 * @param {{command: string[], env?: NodeJS.ProcessEnv, parentPid?: number, cwd?: string,
 *          readyTimeoutMs?: number}} options
 * @returns {Promise<{child: ChildProcess, ready: ReadyLine, stderr: () => string}>}
 */
export function spawnDaemon({ command, env = process.env, parentPid = process.pid, cwd, readyTimeoutMs = 30_000 }) {
  const [program, ...pre] = command;
  const args = [...pre, "run", "--port", "0", "--ready-json", "--parent-pid", String(parentPid)];
  const child = spawn(program, args, { env, cwd, stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stderr?.setEncoding("utf8");
  child.stderr?.on("data", (chunk) => {
    stderr = (stderr + chunk).slice(-20_000); // the daemon logs to its file; stderr is for failures
  });
  const lines = createInterface({ input: /** @type {import("node:stream").Readable} */ (child.stdout) });
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      child.kill();
      reject(new Error(`the daemon printed no ready line in ${readyTimeoutMs} ms: ${stderr.trim()}`));
    }, readyTimeoutMs);
    /** @param {Error} e */
    const fail = (e) => {
      clearTimeout(timer);
      lines.close();
      reject(e);
    };
    child.once("error", (e) => fail(new Error(`cannot start the daemon (${program}): ${e.message}`)));
    child.once("exit", (code, signal) => {
      const said = stderr.trim() || `exit ${code ?? signal}`;
      if (/already running/i.test(said)) fail(new AlreadyRunning(said));
      else fail(new Error(`the daemon exited before it was ready: ${said}`));
    });
    lines.once("line", (line) => {
      clearTimeout(timer);
      child.removeAllListeners("exit");
      child.removeAllListeners("error");
      child.on("error", () => {}); // reported through "exit"
      let ready;
      try {
        ready = JSON.parse(line);
      } catch {
        child.kill();
        reject(new Error(`the daemon's first line is not the ready JSON: ${line}`));
        return;
      }
      if (ready?.event !== "ready" || typeof ready.port !== "number") {
        child.kill();
        reject(new Error(`unexpected ready line: ${line}`));
        return;
      }
      resolvePromise({ child, ready, stderr: () => stderr });
    });
  });
}

/**
 * Keeps a daemon available for the client and tells it where to connect.
 *
 * mode "spawn" (default): spawn a daemon tied to this process; if one already runs
 * (autostart), attach to it instead. When the spawned daemon dies, the next
 * `locate()` spawns a new one (the client calls it before every reconnect, so the
 * client's backoff paces the respawns).
 * mode "attach": never spawn; read the runtime file at every `locate()`.
 *
 * Events: "spawned" (ReadyLine), "exit" ({code, signal, port, stderr}), "attached" (RuntimeInfo).
 */
export class DaemonSupervisor extends EventEmitter {
  /**
   * @param {{command?: string[], env?: NodeJS.ProcessEnv, mode?: "spawn" | "attach",
   *          token?: string, parentPid?: number, cwd?: string}} [options]
   */
  constructor({ command, env = process.env, mode = "spawn", token, parentPid = process.pid, cwd } = {}) {
    super();
    this.command = command ?? daemonCommand(env);
    // A token the app chose goes to the daemon as TETHER_TOKEN; else the token file is used.
    this.env = token ? { ...env, TETHER_TOKEN: token } : { ...env };
    this.mode = mode;
    this.parentPid = parentPid;
    this.cwd = cwd;
    /** @type {ChildProcess | null} */
    this.child = null;
    /** @type {ReadyLine | null} the spawned daemon's ready line, while it runs */
    this.ready = null;
    this.stopping = false;
    /** @type {Promise<Target> | null} */
    this.pending = null;
  }

  /**
   * Where to connect now. Spawns (or respawns) the daemon when needed. The token is
   * read again every time: `daemon pair --rotate` closes sessions with 4401 and the
   * client must come back with the new one.
   * @returns {Promise<Target>}
   */
  async locate() {
    if (this.ready) return this.#target(this.ready.port, this.ready.pid, this.ready.token_file);
    this.pending ??= this.#locate().finally(() => {
      this.pending = null;
    });
    return this.pending;
  }

  /** @param {number} port @param {number} pid @param {string | null} [tokenFile] @returns {Target} */
  #target(port, pid, tokenFile) {
    return { port, pid, host: "127.0.0.1", token: readToken({ tokenFile, env: this.env }) };
  }

  async #locate() {
    if (this.stopping) throw new Error("the supervisor is stopped");
    if (this.mode === "spawn") {
      try {
        const ready = await this.#spawn();
        return this.#target(ready.port, ready.pid, ready.token_file);
      } catch (e) {
        if (!(e instanceof AlreadyRunning)) throw e;
      }
    }
    const info = readRuntime(this.env);
    if (!info) throw new Error("no daemon is running (no live runtime file daemon.json)");
    this.emit("attached", info);
    return this.#target(info.port, info.pid);
  }

  async #spawn() {
    const { child, ready, stderr } = await spawnDaemon({
      command: this.command,
      env: this.env,
      parentPid: this.parentPid,
      cwd: this.cwd,
    });
    this.child = child;
    this.ready = ready;
    child.once("exit", (code, signal) => {
      if (this.child === child) {
        this.child = null;
        this.ready = null;
      }
      if (!this.stopping) this.emit("exit", { code, signal, port: ready.port, stderr: stderr() });
    });
    this.emit("spawned", ready);
    return ready;
  }

  /** Stop the spawned daemon (SIGTERM: it removes its runtime file) and wait for it. */
  async stop(timeoutMs = 10_000) {
    this.stopping = true;
    if (this.pending) await this.pending.catch(() => {});
    const child = this.child;
    this.child = null;
    this.ready = null;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    await new Promise((done) => {
      const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
      child.once("exit", () => {
        clearTimeout(timer);
        done(undefined);
      });
      child.kill("SIGTERM");
    });
  }
}

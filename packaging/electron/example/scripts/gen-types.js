// Generate ../../types/protocol.d.ts from `daemon schema` (json-schema-to-typescript).
//
//   npm run gen-types      write the file
//   npm run check-types    regenerate into a temp file and fail if the committed one differs
//
// The daemon is the command in TETHER_DAEMON (e.g. "/path/.venv/bin/daemon" or
// "/path/.venv/bin/python -m daemon"); unset, the repository's .venv is used.
//
// Adjustments to the schema before compiling (none changes what is valid on the wire):
// - every frame carries `type` (pydantic marks it optional because it has a default,
//   which would make the union useless for narrowing): it is made required;
// - pydantic titles every property ("Id", "Type"…); json-schema-to-typescript would turn
//   each into an exported alias (Id1, Id2, Type3…), so only the definitions keep titles;
// - the frames' union is named `Frame`; the root is an index of every named type.

import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { compile } from "json-schema-to-typescript";

import { daemonCommand } from "../src/daemon.js";

const here = dirname(fileURLToPath(import.meta.url));
const TARGET = resolve(here, "../../types/protocol.d.ts");
const BANNER = `/* Tether wire protocol: TypeScript types generated from \`daemon schema\`.
 * Do not edit: run \`npm run gen-types\` in packaging/electron/example after a
 * protocol change (\`npm run check-types\` fails while this file is stale). */`;

/** @returns {Record<string, any>} the schema printed by `daemon schema` */
function daemonSchema() {
  const [command, ...args] = daemonCommand();
  let out;
  try {
    out = execFileSync(command, [...args, "schema"], { encoding: "utf8" });
  } catch (e) {
    const err = /** @type {Error & {code?: string}} */ (e);
    const what = err.code === "ENOENT" ? `${command} was not found` : err.message;
    throw new Error(
      `could not run \`daemon schema\` (${what}); set TETHER_DAEMON to the daemon's command, ` +
        `e.g. TETHER_DAEMON="/path/to/.venv/bin/python -m daemon"`,
    );
  }
  return JSON.parse(out);
}

const SCHEMA_MAPS = ["properties", "patternProperties", "$defs"];
const SCHEMA_LISTS = ["anyOf", "oneOf", "allOf", "prefixItems"];
const SCHEMA_ONE = ["items", "additionalProperties", "not"];

/**
 * Remove `title` from a schema and its subschemas (only schema keywords are walked, so a
 * property called "title" or a default value is left alone).
 * @param {any} schema
 */
function stripTitles(schema) {
  if (!schema || typeof schema !== "object" || Array.isArray(schema)) return;
  delete schema.title;
  for (const key of SCHEMA_MAPS) Object.values(schema[key] ?? {}).forEach(stripTitles);
  for (const key of SCHEMA_LISTS) (schema[key] ?? []).forEach(stripTitles);
  for (const key of SCHEMA_ONE) stripTitles(schema[key]);
}

/**
 * @param {Record<string, any>} schema
 * @returns {import("json-schema-to-typescript").JSONSchema}
 */
function prepare(schema) {
  const defs = structuredClone(schema.$defs ?? {});
  for (const def of Object.values(defs)) {
    const title = def.title;
    stripTitles(def);
    if (title) def.title = title;
    const type = def?.properties?.type;
    if (type && typeof type.const === "string") {
      def.required = Array.from(new Set(["type", ...(def.required ?? [])]));
    }
  }
  defs.Frame = {
    title: "Frame",
    description: "Any frame of the wire protocol (discriminated on `type`).",
    oneOf: schema.oneOf,
  };
  // The root lists the types nothing else refers to (Frame, AgentConfig, the storage
  // rows), so that every named type is emitted: json-schema-to-typescript only declares
  // what it reaches from the root.
  const text = JSON.stringify(defs);
  const names = Object.keys(defs).filter((name) => !text.includes(`"#/$defs/${name}"`));
  return {
    title: "TetherProtocol",
    description:
      "Not a frame: the index that makes the generator emit every type. Frames: `Frame`; " +
      "storage rows: `TaskRow`, `ProjectRow`…; agent configurations: `AgentConfig`.",
    type: /** @type {const} */ ("object"),
    properties: Object.fromEntries(names.sort().map((name) => [name, { $ref: `#/$defs/${name}` }])),
    additionalProperties: false,
    $defs: defs,
  };
}

/** @returns {Promise<string>} the TypeScript declarations for the current schema */
export async function generate() {
  return compile(prepare(daemonSchema()), "TetherProtocol", {
    bannerComment: BANNER,
    additionalProperties: false, // frames decode by their declared fields only
    strictIndexSignatures: true,
    format: true,
  });
}

async function main() {
  const check = process.argv.includes("--check");
  const text = await generate();
  const shown = relative(process.cwd(), TARGET);
  if (!check) {
    writeFileSync(TARGET, text);
    console.log(`wrote ${shown}`);
    return 0;
  }
  const dir = mkdtempSync(join(tmpdir(), "tether-types-"));
  try {
    const fresh = join(dir, "protocol.d.ts");
    writeFileSync(fresh, text);
    let committed = "";
    try {
      committed = readFileSync(TARGET, "utf8");
    } catch {
      console.error(`check-types: ${shown} is missing; run \`npm run gen-types\` and commit it`);
      return 1;
    }
    if (committed === readFileSync(fresh, "utf8")) {
      console.log(`check-types: ${shown} matches \`daemon schema\``);
      return 0;
    }
    const a = committed.split("\n");
    const b = text.split("\n");
    let line = 0;
    while (line < a.length && line < b.length && a[line] === b[line]) line++;
    console.error(
      `check-types: ${shown} is stale: the protocol's schema changed.\n` +
        `  first difference at line ${line + 1}:\n` +
        `    committed: ${a[line] ?? "(end of file)"}\n` +
        `    generated: ${b[line] ?? "(end of file)"}\n` +
        `Run \`npm run gen-types\` in packaging/electron/example and commit the result.`,
    );
    return 1;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().then(
    (code) => process.exit(code),
    (e) => {
      console.error(`gen-types: ${e instanceof Error ? e.message : e}`);
      process.exit(1);
    },
  );
}

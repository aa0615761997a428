// The generated types against the schema they come from: every frame and row is an
// interface with every property, required exactly when the schema requires it (or
// when it is a frame's `type`, which is always on the wire).

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { REPO_ROOT, daemonCommand } from "../src/daemon.js";

const TYPES = new URL("../../types/protocol.d.ts", import.meta.url);

test("protocol.d.ts declares every property of every definition of `daemon schema`", () => {
  const [program, ...args] = daemonCommand();
  const schema = JSON.parse(execFileSync(program, [...args, "schema"], { encoding: "utf8", cwd: REPO_ROOT }));
  const text = readFileSync(TYPES, "utf8");
  /** @type {string[]} */
  const problems = [];
  let checked = 0;
  for (const [name, def] of Object.entries(schema.$defs)) {
    if (!def.properties) continue;
    const body = text.match(new RegExp(`export interface ${name} \\{(.*?)\\n\\}`, "s"))?.[1];
    if (body === undefined) {
      problems.push(`no interface ${name}`);
      continue;
    }
    for (const prop of Object.keys(def.properties)) {
      const required = prop === "type" || (def.required ?? []).includes(prop);
      const decl = `${prop}${required ? "" : "?"}:`;
      if (!new RegExp(`\\n  ${decl.replace("?", "\\?")}\\s`).test(body)) problems.push(`${name}.${prop} should be declared "${decl}"`);
      checked++;
    }
  }
  assert.deepEqual(problems, []);
  assert.ok(checked > 100, `only ${checked} properties checked`);
  assert.match(text, /export type Frame =\n(\s+\| \w+\n)+/);
});

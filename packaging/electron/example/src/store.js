// A small in-memory store that answers the daemon's `tool_call`s the way the app's
// database must (shared/spec storage.md; the executable reference is the Python
// reference client's SqliteStore). Replace it with the app's own database layer.
//
// - select: filters per table; a null filter value is ignored; an unknown filter key
//   is `bad_request` (a typo must not return everything). Rows in insertion order,
//   unless tasks' orderBy says dueDate (nulls last), priority (high → low) or createdAt.
// - get: {row} or {row: null}.
// - insert: the store makes id, createdAt (and notes' updatedAt) and fills defaults;
//   an unknown column or a missing required one is `bad_request`. A repeated
//   idempotency_key inserts nothing and returns the row it made the first time.
// - update: data {id, updates}; `not_found` for a missing id. delete: {deleted: true}.
// - coreMemory: what the user asked the assistant to remember, one row per `key`
//   (columns id, key, value, createdAt, updatedAt; filter `key`). Announced in
//   device_hello's `capabilities.tables`, it is read at the start of every chat and
//   written (select, then insert or update) by the chat's `update_core_memory` tool.
// - vector_upsert {data: {id, projectId?, content}, vector} → {ok: true} (replaces the
//   entry of that id); vector_search {vector, limit?, filters?: {projectId}} →
//   {results: [{id, content, score}]}, best cosine similarity first. These name no
//   table. The daemon sends them only to a client that announced `vector: true`.
//   VectorIndex below is a brute-force in-memory index: fine for an example and a few
//   thousand notes; an app would keep the vectors in its database (sqlite-vec, …).

import { randomUUID } from "node:crypto";

/** @typedef {import("../../types/protocol.js").ToolCall} ToolCall */
/** @typedef {import("../../types/protocol.js").ToolResult} ToolResult */
/** @typedef {Record<string, unknown>} Row */
/** @typedef {{id: string, content: string, score: number}} VectorHit */
/** @typedef {{rows: Row[]} | {row: Row | null} | {deleted: true} | {ok: true} | {results: VectorHit[]}} Result */

/**
 * @typedef {object} TableSpec
 * @property {string} noun            singular, for messages
 * @property {string[]} columns       every column, client-generated ones included
 * @property {string[]} required      on insert
 * @property {Row} defaults           filled on insert when absent
 * @property {string[]} filters       keys `select` understands
 */

const AI = { isAiSuggested: 0, isApproved: 1 };

/** @type {Record<string, TableSpec>} */
export const TABLES = {
  tasks: {
    noun: "task",
    columns: ["id", "projectId", "title", "description", "status", "priority", "assignee", "dueDate",
      "isAiSuggested", "isApproved", "createdAt"],
    required: ["title"],
    defaults: { status: "todo", priority: "medium", ...AI },
    filters: ["projectId", "status", "search", "orderBy", "dueDateFrom", "dueDateTo"],
  },
  projects: {
    noun: "project",
    columns: ["id", "clientId", "name", "status", "aiSummary", "isAiSuggested", "isApproved", "createdAt"],
    required: ["name"],
    defaults: { status: "active", ...AI },
    filters: ["clientId", "includeArchived"],
  },
  timelines: {
    noun: "timeline",
    columns: ["id", "projectId", "title", "date", "isAiSuggested", "isApproved", "createdAt"],
    required: ["projectId", "title", "date"],
    defaults: { ...AI },
    filters: ["projectId"],
  },
  notes: {
    noun: "note",
    columns: ["id", "projectId", "title", "content", "isAiSuggested", "isApproved", "createdAt", "updatedAt"],
    required: ["title"],
    defaults: { ...AI },
    filters: ["projectId"],
  },
  taskComments: {
    noun: "task comment",
    columns: ["id", "taskId", "author", "content", "createdAt"],
    required: ["taskId", "content"],
    defaults: {},
    filters: ["taskId"],
  },
  clients: {
    noun: "client",
    columns: ["id", "parentId", "name", "industry", "createdAt"],
    required: ["name"],
    defaults: {},
    filters: ["parentId"],
  },
  coreMemory: {
    noun: "core memory entry",
    columns: ["id", "key", "value", "createdAt", "updatedAt"],
    required: ["key", "value"],
    defaults: {},
    filters: ["key"],
  },
};

const CLIENT_GENERATED = new Set(["id", "createdAt", "updatedAt"]);
/** @type {Record<string, number>} */
const PRIORITY_RANK = { high: 0, medium: 1, low: 2 };

/** A failure the daemon hears as `tool_result {ok: false, error: {code, message}}`. */
export class StoreError extends Error {
  /** @param {"bad_request" | "not_found" | "conflict" | "internal"} code @param {string} message */
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

/** @param {string} message */
const bad = (message) => new StoreError("bad_request", message);

/** @param {unknown} value @returns {value is Record<string, unknown>} */
const isObject = (value) => typeof value === "object" && value !== null && !Array.isArray(value);

export class MemoryStore {
  /** @param {{now?: () => number}} [options] */
  constructor({ now = Date.now } = {}) {
    this.now = now;
    /** @type {Map<string, Map<string, Row>>} table -> id -> row, in insertion order */
    this.tables = new Map(Object.keys(TABLES).map((name) => [name, new Map()]));
    /** @type {Map<string, {table: string, id: string}>} */
    this.idempotency = new Map();
    /** @type {ToolCall[]} every call served, for the example's log and the tests */
    this.calls = [];
    this.vectors = new VectorIndex();
  }

  /** The table names this store holds (announced in device_hello's capabilities). */
  get tableNames() {
    return Object.keys(TABLES);
  }

  /**
   * Answer one tool_call with its tool_result frame (never throws).
   * @param {ToolCall} call
   * @returns {ToolResult}
   */
  answer(call) {
    this.calls.push(call);
    try {
      return { type: "tool_result", id: call.id, ok: true, ...this.handle(call) };
    } catch (e) {
      const code = e instanceof StoreError ? e.code : "internal";
      const message = e instanceof Error ? e.message : String(e);
      return { type: "tool_result", id: call.id, ok: false, error: { code, message } };
    }
  }

  /**
   * @param {Pick<ToolCall, "action" | "table" | "data" | "filters" | "limit" | "idempotency_key" | "vector">} call
   * @returns {Result}
   */
  handle({ action, table, data, filters, limit, vector, idempotency_key: key }) {
    // storage.md's vector actions name no table (a table argument is ignored).
    if (action === "vector_upsert") return this.vectors.upsert(data, vector);
    if (action === "vector_search") return { results: this.vectors.search(vector, filters, limit) };
    const spec = TABLES[table ?? ""];
    const rows = this.tables.get(table ?? "");
    if (!spec || !rows || !table) {
      throw bad(`unknown table ${JSON.stringify(table)}; allowed: ${this.tableNames.join(", ")}`);
    }
    switch (action) {
      case "select":
        return { rows: this.#select(table, spec, rows, filters ?? {}, limit) };
      case "get":
        return { row: rows.get(this.#id(spec, data)) ?? null };
      case "insert":
        return { row: this.#insert(table, spec, rows, data, key) };
      case "update":
        return { row: this.#update(spec, rows, data) };
      case "delete": {
        const id = this.#id(spec, data);
        if (!rows.delete(id)) throw new StoreError("not_found", `no ${spec.noun} ${id}`);
        return { deleted: true };
      }
      default:
        throw bad(`unknown action ${JSON.stringify(action)}; allowed: select, get, insert, update, delete, vector_upsert, vector_search`);
    }
  }

  /**
   * @param {string} table @param {TableSpec} spec @param {Map<string, Row>} rows
   * @param {Record<string, unknown>} filters @param {number | null | undefined} limit
   */
  #select(table, spec, rows, filters, limit) {
    if (!isObject(filters)) throw bad(`filters must be an object`);
    const active = Object.entries(filters).filter(([, value]) => value !== null && value !== undefined);
    for (const [key] of active) {
      if (!spec.filters.includes(key)) {
        throw bad(`unknown filter ${JSON.stringify(key)} for ${table}; allowed: ${spec.filters.join(", ")}`);
      }
    }
    const f = Object.fromEntries(active);
    let out = [...rows.values()].filter((row) => {
      for (const [key, value] of active) {
        if (key === "orderBy" || key === "includeArchived") continue;
        if (key === "search") {
          const needle = String(value).toLowerCase();
          const hay = `${row.title ?? ""}\n${row.description ?? ""}`.toLowerCase();
          if (!hay.includes(needle)) return false;
        } else if (key === "dueDateFrom") {
          if (typeof row.dueDate !== "number" || row.dueDate < Number(value)) return false;
        } else if (key === "dueDateTo") {
          if (typeof row.dueDate !== "number" || row.dueDate > Number(value)) return false;
        } else if (row[key] !== value) {
          return false;
        }
      }
      if (table === "projects" && !f.includeArchived && row.status === "archived") return false;
      return true;
    });
    if (f.orderBy === "dueDate") {
      out.sort((a, b) => (Number(a.dueDate ?? Infinity) - Number(b.dueDate ?? Infinity)) || 0);
    } else if (f.orderBy === "priority") {
      out.sort((a, b) => (PRIORITY_RANK[String(a.priority)] ?? 3) - (PRIORITY_RANK[String(b.priority)] ?? 3));
    } else if (f.orderBy === "createdAt") {
      out.sort((a, b) => Number(a.createdAt) - Number(b.createdAt));
    } else if (f.orderBy !== undefined) {
      throw bad(`orderBy must be dueDate, priority or createdAt, got ${JSON.stringify(f.orderBy)}`);
    }
    if (limit !== null && limit !== undefined) {
      if (!Number.isInteger(limit) || limit < 0) throw bad(`limit must be an integer >= 0, got ${limit}`);
      out = out.slice(0, limit);
    }
    return out.map((row) => ({ ...row }));
  }

  /** @param {TableSpec} spec @param {unknown} data @returns {string} */
  #id(spec, data) {
    if (!isObject(data) || typeof data.id !== "string" || !data.id) {
      throw bad(`${spec.noun}: data.id must be a non-empty string`);
    }
    return data.id;
  }

  /**
   * @param {string} table @param {TableSpec} spec @param {Map<string, Row>} rows
   * @param {unknown} data @param {string | null | undefined} key
   */
  #insert(table, spec, rows, data, key) {
    if (!isObject(data)) throw bad(`insert into ${table} needs data: {column: value}`);
    for (const column of Object.keys(data)) {
      if (CLIENT_GENERATED.has(column)) throw bad(`${column} is made by the app, not sent in an insert`);
      if (!spec.columns.includes(column)) throw bad(`unknown column ${JSON.stringify(column)} for ${table}`);
    }
    for (const column of spec.required) {
      if (data[column] === null || data[column] === undefined || data[column] === "") {
        throw bad(`insert into ${table} needs ${column}`);
      }
    }
    if (key !== null && key !== undefined) {
      const seen = this.idempotency.get(key);
      if (seen) {
        if (seen.table !== table) throw bad(`idempotency_key ${key} was already used for ${seen.table}`);
        const existing = rows.get(seen.id);
        if (!existing) throw new StoreError("conflict", `idempotency_key ${key}: its ${spec.noun} was deleted`);
        return { ...existing };
      }
    }
    const now = this.now();
    /** @type {Row} */
    const row = Object.fromEntries(spec.columns.map((column) => [column, null]));
    Object.assign(row, spec.defaults);
    for (const [column, value] of Object.entries(data)) if (value !== null && value !== undefined) row[column] = value;
    row.id = randomUUID();
    row.createdAt = now;
    if (spec.columns.includes("updatedAt")) row.updatedAt = now;
    rows.set(/** @type {string} */ (row.id), row);
    if (key) this.idempotency.set(key, { table, id: /** @type {string} */ (row.id) });
    return { ...row };
  }

  /** @param {TableSpec} spec @param {Map<string, Row>} rows @param {unknown} data */
  #update(spec, rows, data) {
    const id = this.#id(spec, data);
    const updates = /** @type {Record<string, unknown>} */ (data).updates;
    if (!isObject(updates) || Object.keys(updates).length === 0) {
      throw bad(`update of ${spec.noun} ${id} needs data.updates with at least one column`);
    }
    for (const column of Object.keys(updates)) {
      if (CLIENT_GENERATED.has(column)) throw bad(`${column} cannot be updated`);
      if (!spec.columns.includes(column)) throw bad(`unknown column ${JSON.stringify(column)} for ${spec.noun}`);
      if (spec.required.includes(column) && (updates[column] === null || updates[column] === "")) {
        throw bad(`${column} of a ${spec.noun} cannot be empty`);
      }
    }
    const row = rows.get(id);
    if (!row) throw new StoreError("not_found", `no ${spec.noun} ${id}`);
    Object.assign(row, updates);
    if (spec.columns.includes("updatedAt")) row.updatedAt = this.now();
    return { ...row };
  }

  /**
   * Seed the store (what the app's database would already hold).
   * @param {string} table @param {Row} data @returns {Row}
   */
  add(table, data) {
    const result = this.handle({ action: "insert", table, data });
    return /** @type {{row: Row}} */ (result).row;
  }

  /** @param {string} table @returns {Row[]} */
  rows(table) {
    return [...(this.tables.get(table)?.values() ?? [])].map((row) => ({ ...row }));
  }
}

/** @param {unknown} vector @returns {number[]} */
function checkVector(vector) {
  if (!Array.isArray(vector) || vector.length === 0) throw bad("vector must be a non-empty list of numbers");
  for (const x of vector) {
    if (typeof x !== "number" || !Number.isFinite(x)) throw bad(`vector must hold finite numbers, got ${JSON.stringify(x)}`);
  }
  return vector;
}

/** @param {number[]} v */
const norm = (v) => Math.sqrt(v.reduce((sum, x) => sum + x * x, 0));

/**
 * The notes' vectors, in memory, searched by brute-force cosine similarity: every
 * search compares the query with every stored vector. Enough for an example (and a
 * few thousand notes); a real app keeps them in its database and uses a vector index.
 */
export class VectorIndex {
  constructor() {
    /** @type {Map<string, {projectId: string | null, content: string, vector: number[], norm: number}>} */
    this.entries = new Map();
  }

  /**
   * vector_upsert: data {id, projectId?, content} and its vector; replaces that id's entry.
   * @param {unknown} data @param {unknown} vector @returns {{ok: true}}
   */
  upsert(data, vector) {
    if (!isObject(data) || typeof data.id !== "string" || !data.id) {
      throw bad("vector_upsert: data.id must be a non-empty string");
    }
    if (typeof data.content !== "string") throw bad("vector_upsert: data.content must be a string");
    const projectId = data.projectId ?? null;
    if (projectId !== null && typeof projectId !== "string") throw bad("vector_upsert: data.projectId must be a string");
    const v = checkVector(vector);
    this.entries.set(data.id, { projectId, content: data.content, vector: [...v], norm: norm(v) });
    return { ok: true };
  }

  /**
   * vector_search: the `limit` entries most similar to `vector`, best first (ties by id).
   * @param {unknown} vector @param {unknown} filters @param {unknown} limit
   * @returns {VectorHit[]}
   */
  search(vector, filters, limit) {
    const q = checkVector(vector);
    if (filters !== null && filters !== undefined && !isObject(filters)) throw bad("filters for vector_search must be an object");
    /** @type {string | null} */
    let projectId = null;
    for (const [key, value] of Object.entries(filters ?? {})) {
      if (key !== "projectId") throw bad(`unknown filter ${JSON.stringify(key)} for vector_search; allowed: projectId`);
      if (value !== null && value !== undefined && typeof value !== "string") {
        throw bad("filter projectId for vector_search must be a string");
      }
      projectId = value ?? null;
    }
    if (limit !== null && limit !== undefined && (!Number.isInteger(limit) || Number(limit) < 0)) {
      throw bad(`limit must be an integer >= 0, got ${limit}`);
    }
    const qNorm = norm(q);
    /** @type {VectorHit[]} */
    const hits = [];
    for (const [id, entry] of this.entries) {
      if (projectId !== null && entry.projectId !== projectId) continue;
      if (entry.vector.length !== q.length) {
        throw bad(`vector has ${q.length} dimensions but the stored vector ${id} has ${entry.vector.length}`);
      }
      const dot = entry.vector.reduce((sum, x, i) => sum + x * q[i], 0);
      hits.push({ id, content: entry.content, score: qNorm && entry.norm ? dot / (qNorm * entry.norm) : 0 });
    }
    hits.sort((a, b) => b.score - a.score || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    return limit === null || limit === undefined ? hits : hits.slice(0, Number(limit));
  }
}

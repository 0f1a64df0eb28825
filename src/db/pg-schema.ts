/**
 * The PostgreSQL schema: the same tables, columns and indexes as schema.ts (the
 * SQLite/D1 schema), in the pg dialect. Migrations are generated from this file
 * with drizzle-kit (`npm run db:generate:pg`, drizzle.pg.config.ts) into
 * migrations-pg/ and committed.
 *
 * Times are milliseconds in `bigint` columns read as JavaScript numbers (every
 * value is far below 2^53); seq and ids likewise.
 */
import { sql } from 'drizzle-orm';
import { bigint, bigserial, boolean, customType, doublePrecision, index, pgTable, primaryKey, text, uniqueIndex } from 'drizzle-orm/pg-core';

const bytea = customType<{ data: Buffer; driverData: Buffer }>({
  dataType: () => 'bytea',
});

const ms = (name: string) => bigint(name, { mode: 'number' });

export const tokens = pgTable(
  'tokens',
  {
    id: text('id').primaryKey(),
    name: text('name').notNull(),
    hash: text('hash').notNull(),
    legacySalt: text('legacy_salt'),
    role: text('role').notNull(),
    /** JSON array of scopes */
    scopes: text('scopes').notNull(),
    createdAt: ms('created_at').notNull(),
    expiresAt: ms('expires_at'),
    lastUsedAt: ms('last_used_at'),
    revokedAt: ms('revoked_at'),
    createdBy: text('created_by'),
    source: text('source').notNull().default('native'),
    workerId: text('worker_id'),
  },
  (t) => [uniqueIndex('tokens_name_uq').on(t.name), uniqueIndex('tokens_hash_uq').on(t.hash)],
);

/**
 * The audit chain. `entry` holds the canonical JSON text of the entry (hashed
 * into the chain); the query columns are stored generated columns computed from
 * it, so they can never disagree with what was hashed. PostgreSQL refuses to
 * turn the JSON escape \u0000 into text (an entry may carry one: a refused path
 * with a NUL byte), so the columns read the entry with each \u0000 as \ufffd:
 * one six-character escape for another, the text stays valid JSON.
 */
const ENTRY_JSON = sql.raw(`(replace(entry, '\\u0000', '\\ufffd')::json)`);

export const auditLog = pgTable(
  'audit_log',
  {
    seq: ms('seq').primaryKey(),
    entry: text('entry').notNull(),
    prevHash: text('prev_hash').notNull(),
    hash: text('hash').notNull(),
    ts: ms('ts').generatedAlwaysAs(sql`((${ENTRY_JSON} ->> 'ts')::bigint)`),
    action: text('action').generatedAlwaysAs(sql`(${ENTRY_JSON} ->> 'action')`),
    actor: text('actor').generatedAlwaysAs(sql`(${ENTRY_JSON} -> 'actor' ->> 'name')`),
  },
  (t) => [index('audit_ts_idx').on(t.ts), index('audit_action_idx').on(t.action)],
);

export const auditCheckpoints = pgTable(
  'audit_checkpoints',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    kind: text('kind').notNull(),
    size: ms('size').notNull(),
    headHash: text('head_hash').notNull(),
    time: ms('time').notNull(),
    jws: text('jws').notNull(),
    note: text('note'),
  },
  // One periodic checkpoint per tree size, whichever server made it first (two
  // servers' timers can race to sign the same tip).
  (t) => [index('audit_checkpoints_size_idx').on(t.size), uniqueIndex('audit_checkpoints_periodic_uq').on(t.size).where(sql`kind = 'periodic'`)],
);

/** The Merkle tree as tlog-tiles of height 8 (see schema.ts). */
export const auditTiles = pgTable(
  'audit_tiles',
  {
    level: ms('level').notNull(),
    idx: ms('idx').notNull(),
    hashes: bytea('hashes').notNull(),
  },
  (t) => [primaryKey({ columns: [t.level, t.idx] })],
);

export const auditWitnessCosignatures = pgTable(
  'audit_witness_cosignatures',
  {
    witnessKey: text('witness_key').notNull(),
    origin: text('origin').notNull(),
    size: ms('size').notNull(),
    rootHash: text('root_hash').notNull(),
    timestamp: ms('timestamp').notNull(),
    signature: text('signature').notNull(),
    receivedAt: ms('received_at').notNull(),
  },
  (t) => [primaryKey({ columns: [t.witnessKey, t.origin, t.size] })],
);

export const sessions = pgTable(
  'sessions',
  {
    id: text('id').primaryKey(),
    name: text('name'),
    workspace: text('workspace').notNull(),
    prd: text('prd').notNull(),
    sandbox: boolean('sandbox').notNull(),
    budgetUsd: doublePrecision('budget_usd'),
    costUsd: doublePrecision('cost_usd').notNull().default(0),
    status: text('status').notNull(),
    reason: text('reason'),
    exitCode: ms('exit_code'),
    createdBy: text('created_by').notNull(),
    createdAt: ms('created_at').notNull(),
    startedAt: ms('started_at'),
    endedAt: ms('ended_at'),
    workerId: text('worker_id'),
    leaseId: text('lease_id'),
    leaseExpiresAt: ms('lease_expires_at'),
    stopRequested: boolean('stop_requested').notNull().default(false),
    lastEventSeq: ms('last_event_seq').notNull().default(0),
    logBytes: ms('log_bytes').notNull().default(0),
    logLines: ms('log_lines').notNull().default(0),
    containerId: text('container_id'),
    baseBranch: text('base_branch'),
    agentBranch: text('agent_branch'),
    policy: text('policy'),
    policySha256: text('policy_sha256'),
    result: text('result'),
    resultPatch: text('result_patch'),
  },
  (t) => [index('sessions_status_idx').on(t.status, t.createdAt)],
);

export const sessionLogs = pgTable(
  'session_logs',
  {
    sessionId: text('session_id').notNull(),
    line: ms('line').notNull(),
    stream: text('stream').notNull(),
    text: text('text').notNull(),
    ts: ms('ts').notNull(),
  },
  (t) => [primaryKey({ columns: [t.sessionId, t.line] })],
);

export const events = pgTable(
  'events',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    type: text('type').notNull(),
    sessionId: text('session_id'),
    data: text('data').notNull(),
    ts: ms('ts').notNull(),
  },
  (t) => [index('events_ts_idx').on(t.ts), index('events_session_idx').on(t.sessionId, t.id)],
);

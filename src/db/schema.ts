/**
 * Drizzle schema. Migrations are generated from this file with drizzle-kit
 * (`npm run db:generate`) into migrations/ and committed.
 */
import { sql } from 'drizzle-orm';
import { blob, index, integer, primaryKey, real, sqliteTable, text, uniqueIndex } from 'drizzle-orm/sqlite-core';

export const tokens = sqliteTable(
  'tokens',
  {
    id: text('id').primaryKey(),
    name: text('name').notNull(),
    /** hex SHA-256 of the plaintext (or, for a not-yet-used salted legacy import, sha256(salt+token)) */
    hash: text('hash').notNull(),
    /** legacy salt (Loki Mode's salted hashes); cleared once the token is used and re-hashed */
    legacySalt: text('legacy_salt'),
    role: text('role').notNull(),
    /** JSON array of scopes */
    scopes: text('scopes').notNull(),
    createdAt: integer('created_at').notNull(),
    expiresAt: integer('expires_at'),
    lastUsedAt: integer('last_used_at'),
    revokedAt: integer('revoked_at'),
    createdBy: text('created_by'),
    source: text('source').notNull().default('native'),
    /** A `worker` token's worker id: the protocol refuses it under any other id. */
    workerId: text('worker_id'),
  },
  (t) => [uniqueIndex('tokens_name_uq').on(t.name), uniqueIndex('tokens_hash_uq').on(t.hash)],
);

/**
 * The audit chain. `entry` holds the canonical JSON bytes of the entry (the
 * single source of truth, hashed into the chain); the query columns are virtual
 * columns generated from it, so they can never disagree with what was hashed.
 */
export const auditLog = sqliteTable(
  'audit_log',
  {
    seq: integer('seq').primaryKey(),
    entry: text('entry').notNull(),
    prevHash: text('prev_hash').notNull(),
    hash: text('hash').notNull(),
    ts: integer('ts').generatedAlwaysAs(sql`json_extract(entry, '$.ts')`, { mode: 'virtual' }),
    action: text('action').generatedAlwaysAs(sql`json_extract(entry, '$.action')`, { mode: 'virtual' }),
    actor: text('actor').generatedAlwaysAs(sql`json_extract(entry, '$.actor.name')`, { mode: 'virtual' }),
  },
  (t) => [index('audit_ts_idx').on(t.ts), index('audit_action_idx').on(t.action)],
);

export const auditCheckpoints = sqliteTable('audit_checkpoints', {
  id: integer('id').primaryKey({ autoIncrement: true }),
  kind: text('kind').notNull(),
  size: integer('size').notNull(),
  headHash: text('head_hash').notNull(),
  time: integer('time').notNull(),
  jws: text('jws').notNull(),
  /** The same checkpoint as a C2SP signed note (origin, tree size, base64 Merkle root); null where no note key signed it. */
  note: text('note'),
});

/**
 * The audit log's RFC 6962 Merkle tree as C2SP tlog-tiles of height 8: row
 * (level, idx) holds the tile's hashes concatenated (32 bytes each, up to 256).
 * Leaf i is the canonical entry text of seq i+1. Full tiles never change; the
 * rightmost tile of each level is rewritten as it grows, in the same
 * transaction as the entries. Tiles survive a prune (entries do not).
 */
export const auditTiles = sqliteTable(
  'audit_tiles',
  {
    level: integer('level').notNull(),
    idx: integer('idx').notNull(),
    hashes: blob('hashes', { mode: 'buffer' }).notNull(),
  },
  (t) => [primaryKey({ columns: [t.level, t.idx] })],
);

/**
 * Witness cosignatures (c2sp.org/tlog-cosignature/v1) on the audit log's C2SP
 * checkpoint notes, as returned by each witness in LOKI_AUDIT_WITNESSES
 * (src/audit/witness-client.ts). One row per witness key, origin and tree size;
 * `signature` is the note signature line to add to that checkpoint's note.
 */
export const auditWitnessCosignatures = sqliteTable(
  'audit_witness_cosignatures',
  {
    /** The witness's verifier key (`name+keyid+base64`, type 0x04). */
    witnessKey: text('witness_key').notNull(),
    origin: text('origin').notNull(),
    size: integer('size').notNull(),
    /** base64 root hash of the cosigned tree. */
    rootHash: text('root_hash').notNull(),
    /** The cosignature's own timestamp (POSIX seconds). */
    timestamp: integer('timestamp').notNull(),
    /** `— <name> <base64>` (no newline). */
    signature: text('signature').notNull(),
    /** When the server received it (ms). */
    receivedAt: integer('received_at').notNull(),
  },
  (t) => [primaryKey({ columns: [t.witnessKey, t.origin, t.size] })],
);

export const sessions = sqliteTable(
  'sessions',
  {
    id: text('id').primaryKey(),
    name: text('name'),
    workspace: text('workspace').notNull(),
    prd: text('prd').notNull(),
    sandbox: integer('sandbox', { mode: 'boolean' }).notNull(),
    budgetUsd: real('budget_usd'),
    costUsd: real('cost_usd').notNull().default(0),
    status: text('status').notNull(),
    reason: text('reason'),
    exitCode: integer('exit_code'),
    createdBy: text('created_by').notNull(),
    createdAt: integer('created_at').notNull(),
    startedAt: integer('started_at'),
    endedAt: integer('ended_at'),
    workerId: text('worker_id'),
    leaseId: text('lease_id'),
    leaseExpiresAt: integer('lease_expires_at'),
    stopRequested: integer('stop_requested', { mode: 'boolean' }).notNull().default(false),
    lastEventSeq: integer('last_event_seq').notNull().default(0),
    logBytes: integer('log_bytes').notNull().default(0),
    logLines: integer('log_lines').notNull().default(0),
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

export const sessionLogs = sqliteTable(
  'session_logs',
  {
    sessionId: text('session_id').notNull(),
    line: integer('line').notNull(),
    stream: text('stream').notNull(),
    text: text('text').notNull(),
    ts: integer('ts').notNull(),
  },
  (t) => [primaryKey({ columns: [t.sessionId, t.line] })],
);

export const events = sqliteTable(
  'events',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    type: text('type').notNull(),
    sessionId: text('session_id'),
    data: text('data').notNull(),
    ts: integer('ts').notNull(),
  },
  (t) => [index('events_ts_idx').on(t.ts), index('events_session_idx').on(t.sessionId, t.id)],
);

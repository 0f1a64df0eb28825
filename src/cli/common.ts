import os from 'node:os';
import { createSqliteStore, migrate, openSqlite, type SqliteDb, tightenDbFiles } from '../db/sqlite';
import type { Store } from '../db/store';
import type { Config, DatabaseConfig } from '../env';
import type { AuditLog } from '../audit/log';
import { createNodeAudit, createPgNodeAudit } from '../audit/node-audit';
import { describeDatabaseUrl, openPostgresBackend } from '../db/pg';
import { configOrExit } from '../node';

/** A one-line CLI error and exit (2: usage or operational error). */
export function fail(message: string, code = 2): never {
  process.stderr.write(`loki: ${message}\n`);
  process.exit(code);
}

export interface LocalContext {
  config: Config;
  db: SqliteDb;
  store: Store;
  audit: AuditLog;
  close(): Promise<void>;
}

/**
 * Open the database directly (no server needed), migrated, with the audit log.
 * `createKeys: false` (verification) never creates a signing key; `syncTree:
 * false` leaves the audit Merkle tree as it is (no backfill write).
 */
export async function openLocal(opts: { signer?: boolean; createKeys?: boolean; syncTree?: boolean } = {}): Promise<LocalContext> {
  const config = configOrExit();
  process.umask(0o077);
  if (config.database) return openLocalPg(config, config.database, opts);
  let db: SqliteDb;
  try {
    db = openSqlite(config.dbPath);
    migrate(db);
    tightenDbFiles(config.dbPath);
  } catch (err) {
    fail(`cannot open the database ${config.dbPath}: ${(err as Error).message}`);
  }
  const store = createSqliteStore(db);
  const nodeAudit = await createNodeAudit(config, db, { signer: opts.signer, createKeys: opts.createKeys, syncTree: opts.syncTree });
  const audit = nodeAudit.audit;
  return {
    config,
    db,
    store,
    audit,
    async close() {
      await audit.drain();
      await nodeAudit.syslog?.close();
      db.close();
    },
  };
}

/** `LOKI_DATABASE_URL`: the same on PostgreSQL (`db`, the SQLite handle, throws). */
async function openLocalPg(config: Config, database: DatabaseConfig, opts: { signer?: boolean; createKeys?: boolean; syncTree?: boolean }): Promise<LocalContext> {
  let backend: Awaited<ReturnType<typeof openPostgresBackend>>;
  try {
    backend = await openPostgresBackend(database, { applicationName: 'loki-cli' });
  } catch (err) {
    fail(`cannot open the database ${describeDatabaseUrl(database.url)}: ${(err as Error).message}`);
  }
  const nodeAudit = await createPgNodeAudit(config, backend.auditStorage, { signer: opts.signer, createKeys: opts.createKeys, syncTree: opts.syncTree });
  return {
    config,
    get db(): SqliteDb {
      return fail('this command reads the SQLite database; LOKI_DATABASE_URL selects PostgreSQL');
    },
    store: backend.store,
    audit: nodeAudit.audit,
    async close() {
      await nodeAudit.audit.drain();
      await nodeAudit.syslog?.close();
      await backend.close();
    },
  };
}

/** Record an action taken from the CLI (fail closed: throws when it cannot be written). */
export function recordCli(
  ctx: LocalContext,
  action: string,
  opts: { resource?: { type: string; id: string | null }; details?: Record<string, unknown>; success?: boolean; error?: string | null } = {},
) {
  return ctx.audit.append({
    ts: Date.now(),
    action,
    resource: opts.resource ?? null,
    actor: cliActor(),
    outcome: { status: null, success: opts.success ?? true, error: opts.error ?? null },
    details: { ...opts.details, via: 'cli' },
  });
}

/** Actor for actions taken from the CLI on this machine. */
export function cliActor() {
  return { type: 'local' as const, id: null, name: `cli:${os.userInfo().username}` };
}

/**
 * Text from the outside world (request paths, user agents, token names) made safe
 * for a terminal: control characters, which could move the cursor or retitle the
 * window, are shown as \u escapes.
 */
export function terminalSafe(text: string): string {
  return text.replace(/[\p{Cc}\u2028\u2029\u202a-\u202e\u2066-\u2069]/gu, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

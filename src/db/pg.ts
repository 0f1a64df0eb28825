/**
 * PostgreSQL (`LOKI_DATABASE_URL=postgres://…`): the connection pool, the
 * migrations from migrations-pg/ (serialised across processes by an advisory
 * lock), and `openPostgresBackend`, which returns the store, the audit storage
 * and a close for any process (server, CLI, tests, benchmarks).
 *
 * The pool reconnects by itself: a connection that failed is discarded, a lost
 * server makes queries fail (the HTTP layer answers 503) until it returns.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import type { AuditStorage } from '../audit/storage';
import type { DatabaseConfig } from '../env';
import { createPgAuditStorage } from './pg-audit';
import { createPgStore } from './pg-store';
import type { Store } from './store';

export const PG_MIGRATIONS_DIR = fileURLToPath(new URL('../../migrations-pg', import.meta.url));

/** The migrations' advisory lock key (the audit's is LOCK_AUDIT in pg-audit.ts). */
export const LOCK_MIGRATE = 0x6c6f6b69_01; // 'loki' 01

const INT8 = 20;
const NUMERIC_INT8 = (v: string) => Number(v);

export interface PgPoolOptions {
  /** Idle-connection errors (a restarted server): logged, never thrown (the pool replaces the connection). */
  onError?: (err: Error) => void;
  /** How long a request waits for a connection before failing (default 5 s). */
  connectTimeoutMs?: number;
  applicationName?: string;
}

/** A pool with LOKI_DATABASE_POOL_SIZE connections and LOKI_DATABASE_STATEMENT_TIMEOUT_MS. */
export function openPgPool(cfg: DatabaseConfig, opts: PgPoolOptions = {}): pg.Pool {
  const pool = new pg.Pool({
    connectionString: cfg.url,
    max: cfg.poolSize,
    statement_timeout: cfg.statementTimeoutMs === 0 ? undefined : cfg.statementTimeoutMs,
    connectionTimeoutMillis: opts.connectTimeoutMs ?? 5_000,
    idleTimeoutMillis: 30_000,
    application_name: opts.applicationName ?? 'loki',
    // bigint columns hold milliseconds and sequence numbers, all below 2^53.
    types: {
      getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
        oid === INT8 && format !== 'binary' ? NUMERIC_INT8 : pg.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser,
    },
  });
  // Without listeners a connection's error (the server restarted or cut it) would
  // crash the process: the pool's for idle connections, each client's for one
  // checked out (its next query then fails, and the caller discards it).
  pool.on('error', (err) => opts.onError?.(err));
  pool.on('connect', (client) => {
    client.on('error', (err) => opts.onError?.(err));
  });
  return pool;
}

interface JournalEntry {
  idx: number;
  tag: string;
}

/**
 * Apply pending migrations; returns the tags applied. Holds a session advisory
 * lock throughout, so concurrent migrators (servers starting together) run one
 * after another: the second finds everything applied. Each migration is one
 * transaction with its bookkeeping row.
 */
export async function migratePg(pool: pg.Pool, dir = PG_MIGRATIONS_DIR): Promise<string[]> {
  const journal = JSON.parse(readFileSync(path.join(dir, 'meta', '_journal.json'), 'utf8')) as { entries: JournalEntry[] };
  const client = await pool.connect();
  let broken = false;
  try {
    await client.query('SELECT pg_advisory_lock($1)', [LOCK_MIGRATE]);
    try {
      await client.query('CREATE TABLE IF NOT EXISTS _migrations (tag text PRIMARY KEY, sha256 text NOT NULL, applied_at bigint NOT NULL)');
      const applied: string[] = [];
      for (const e of [...journal.entries].sort((a, b) => a.idx - b.idx)) {
        const done = await client.query('SELECT 1 FROM _migrations WHERE tag = $1', [e.tag]);
        if (done.rowCount) continue;
        const sqlText = readFileSync(path.join(dir, `${e.tag}.sql`), 'utf8');
        await client.query('BEGIN');
        try {
          for (const stmt of sqlText.split('--> statement-breakpoint')) if (stmt.trim()) await client.query(stmt);
          await client.query('INSERT INTO _migrations (tag, sha256, applied_at) VALUES ($1, $2, $3)', [
            e.tag,
            createHash('sha256').update(sqlText).digest('hex'),
            Date.now(),
          ]);
          await client.query('COMMIT');
        } catch (err) {
          await client.query('ROLLBACK').catch(() => {});
          throw err;
        }
        applied.push(e.tag);
      }
      return applied;
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [LOCK_MIGRATE]).catch(() => {
        broken = true;
      });
    }
  } catch (err) {
    broken = true;
    throw err;
  } finally {
    client.release(broken);
  }
}

/** The URL without its password, for logs and messages. */
export function describeDatabaseUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.username ? `${decodeURIComponent(u.username)}@` : ''}${u.host}${u.pathname}`;
  } catch {
    return 'postgres://(unparsable URL)';
  }
}

export interface PostgresBackend {
  pool: pg.Pool;
  store: Store;
  auditStorage: AuditStorage;
  /** Migrations applied when opened (empty with `migrate: false` or when up to date). */
  applied: string[];
  close(): Promise<void>;
}

/**
 * Open the pool, migrate (default), and build the store and audit storage.
 * Reused by the server, the CLI, tests and benchmarks.
 */
export async function openPostgresBackend(cfg: DatabaseConfig, opts: PgPoolOptions & { migrate?: boolean } = {}): Promise<PostgresBackend> {
  const pool = openPgPool(cfg, opts);
  let applied: string[] = [];
  try {
    if (opts.migrate !== false) applied = await migratePg(pool);
  } catch (err) {
    await pool.end().catch(() => {});
    throw err;
  }
  let closed: Promise<void> | null = null;
  return {
    pool,
    store: createPgStore(pool),
    auditStorage: createPgAuditStorage(pool),
    applied,
    close() {
      closed ??= pool.end();
      return closed;
    },
  };
}

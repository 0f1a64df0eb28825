/**
 * A D1 binding over an in-memory better-sqlite3 database, for unit tests of the
 * D1 code paths. Every call yields to the event loop first, so concurrent
 * callers interleave the way they do against a real D1; a batch runs as one
 * transaction, and errors carry D1's message format.
 */
import Database from 'better-sqlite3';
import type { D1Database, D1PreparedStatement, D1Result } from '../../src/db/d1';
import { migrate } from '../../src/db/sqlite';

export interface FakeD1 extends D1Database {
  sqlite: Database.Database;
  /** Batches that failed, by error message. */
  failures: string[];
  /** Replace the next batches' behaviour (e.g. to inject errors); return undefined to run normally. */
  beforeBatch: ((sqls: string[]) => Error | undefined) | null;
}

const tick = () => new Promise<void>((r) => setTimeout(r, 0));

function d1Error(err: unknown): Error {
  const e = err as { message?: string; code?: string };
  return new Error(`D1_ERROR: ${e.message ?? String(err)}: SQLITE_CONSTRAINT (extended: ${e.code ?? 'SQLITE_ERROR'})`);
}

export function createFakeD1(): FakeD1 {
  const sqlite = new Database(':memory:');
  migrate(sqlite);
  const statement = (sql: string, args: unknown[] = []): D1PreparedStatement & { sql: string; args: unknown[] } => ({
    sql,
    args,
    bind: (...values: unknown[]) => statement(sql, values),
    async first<T>() {
      await tick();
      return ((sqlite.prepare(sql).get(...args) as T | undefined) ?? null) as T | null;
    },
    async all<T>(): Promise<D1Result<T>> {
      await tick();
      return { results: sqlite.prepare(sql).all(...args) as T[], success: true, meta: {} };
    },
    async run<T>(): Promise<D1Result<T>> {
      await tick();
      const r = sqlite.prepare(sql).run(...args);
      return { results: [], success: true, meta: { changes: r.changes, last_row_id: Number(r.lastInsertRowid) } };
    },
  });
  const fake: FakeD1 = {
    sqlite,
    failures: [],
    beforeBatch: null,
    prepare: (sql) => statement(sql),
    async batch<T>(statements: D1PreparedStatement[]) {
      await tick();
      const list = statements as (D1PreparedStatement & { sql: string; args: unknown[] })[];
      const injected = fake.beforeBatch?.(list.map((s) => s.sql));
      if (injected) {
        fake.failures.push(injected.message);
        throw injected;
      }
      try {
        return sqlite.transaction(() =>
          list.map((s): D1Result<T> => {
            const r = sqlite.prepare(s.sql).run(...s.args);
            return { results: [], success: true, meta: { changes: r.changes } };
          }),
        )();
      } catch (err) {
        const e = d1Error(err);
        fake.failures.push(e.message);
        throw e;
      }
    },
  };
  return fake;
}

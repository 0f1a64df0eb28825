import path from 'node:path';
import type { AuditInput } from '../../src/audit/chain';
import { AuditLog } from '../../src/audit/log';
import { createParallelChecker } from '../../src/audit/parallel-verify';
import { createFileSigner } from '../../src/audit/signer';
import { migrate, openSqlite, type SqliteDb } from '../../src/db/sqlite';
import { createSqliteAuditStorage, sha256Hex } from '../../src/db/sqlite-audit';
import { createNodeAudit, type NodeAuditOptions } from '../../src/audit/node-audit';
import { loadConfig } from '../../src/env';
import { tempHome } from './server';

export function sampleEntry(i: number): AuditInput {
  return {
    ts: 1_790_000_000_000 + i * 1000,
    action: i % 7 === 0 ? 'token.create' : 'http.request',
    resource: { type: 'token', id: `tok_${i}` },
    actor: { type: 'token', id: `tok_${i % 5}`, name: `user-${i % 5}` },
    client: { ip: '127.0.0.1', user_agent: 'vitest' },
    request: { id: `req_${i}`, method: 'GET', path: `/api/status?i=${i}` },
    outcome: { status: 200, success: true, error: null },
    details: { i, unicode: 'ünïcödé ✓', nested: { b: [1, 2, null], a: true } },
  };
}

export interface TestAudit {
  dir: string;
  dbPath: string;
  keyPath: string;
  db: SqliteDb;
  audit: AuditLog;
  /** The same log verified by the sequential checker (single thread). */
  sequential: AuditLog;
  close(): void;
}

export async function makeAuditLog(opts: { entries?: number; checkpointEvery?: number; dir?: string } = {}): Promise<TestAudit> {
  const dir = opts.dir ?? tempHome('loki-audit-');
  const dbPath = path.join(dir, 'dashboard', 'loki.db');
  const keyPath = path.join(dir, 'dashboard', 'audit-signing-key');
  const db = openSqlite(dbPath);
  migrate(db);
  const signer = await createFileSigner(keyPath);
  const storage = createSqliteAuditStorage(db);
  const audit = new AuditLog({
    storage,
    enabled: true,
    signer,
    checkpointEvery: opts.checkpointEvery ?? 1000,
    verification: { rangeChecker: createParallelChecker(dbPath, { threads: 2, minPerThread: 100 }) },
  });
  const sequential = new AuditLog({ storage, enabled: true, signer, verification: { sha256: sha256Hex } });
  const n = opts.entries ?? 0;
  const pending: Promise<unknown>[] = [];
  for (let i = 1; i <= n; i++) pending.push(audit.append(sampleEntry(i)));
  await Promise.all(pending);
  await audit.drain();
  return { dir, dbPath, keyPath, db, audit, sequential, close: () => db.close() };
}

/** The audit log refuses every write (as a full disk would) while `fn` runs. */
export async function withAuditFailing<T>(audit: AuditLog, fn: () => Promise<T>): Promise<T> {
  const append = audit.append;
  audit.append = () => Promise.reject(new Error('SQLITE_FULL: database or disk is full'));
  try {
    return await fn();
  } finally {
    audit.append = append;
  }
}

/** A LOKI_HOME's audit log opened as the server opens it (after the server stopped or died). */
export async function openHomeAudit(home: string, opts: NodeAuditOptions = {}) {
  const config = loadConfig({ LOKI_HOME: home }, { home, cwd: home });
  const db = openSqlite(config.dbPath);
  migrate(db);
  const node = await createNodeAudit(config, db, opts);
  return {
    db,
    audit: node.audit,
    async close() {
      await node.close();
      db.close();
    },
  };
}

/** Of the request ids a client saw acknowledged, those with no entry in the log. */
export function missingRequestIds(db: SqliteDb, acked: string[]): string[] {
  const ids = new Set((db.prepare("SELECT json_extract(entry, '$.request.id') AS id FROM audit_log").all() as { id: string }[]).map((r) => r.id));
  return acked.filter((id) => !ids.has(id));
}

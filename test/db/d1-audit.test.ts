import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import type { AuditInput } from '../../src/audit/chain';
import { verifyStorage } from '../../src/audit/log';
import { createD1AuditStorage, isSeqConflict, webCryptoRangeChecker } from '../../src/db/d1-audit';
import { migrate } from '../../src/db/sqlite';
import { createSqliteAuditStorage } from '../../src/db/sqlite-audit';
import { createFakeD1 } from '../helpers/fake-d1';

const input = (i: number, action = 'http.request'): AuditInput => ({
  ts: 1_700_000_000_000 + i,
  action,
  resource: null,
  actor: { type: 'token', id: `tok_${i % 3}`, name: `actor-${i % 3}` },
  client: { ip: '203.0.113.7', user_agent: 'test' },
  request: { id: `req_${i}`, method: 'GET', path: `/api/status?i=${i}` },
  outcome: { status: 200, success: true, error: null },
  details: { z: i, a: { nested: [i, 'x'] } },
});

const verify = (storage: ReturnType<typeof createD1AuditStorage>) =>
  verifyStorage(storage, { signer: null, external: null, rangeChecker: webCryptoRangeChecker(storage) });

describe('D1 audit storage', () => {
  it('links and hashes entries exactly like the SQLite storage', async () => {
    const d1 = createD1AuditStorage(createFakeD1());
    const sqliteDb = new Database(':memory:');
    migrate(sqliteDb);
    const sqlite = createSqliteAuditStorage(sqliteDb);
    const inputs = Array.from({ length: 7 }, (_, i) => input(i));
    expect(await d1.appendBatch(inputs.slice(0, 3))).toEqual(await sqlite.appendBatch(inputs.slice(0, 3)));
    for (const x of inputs.slice(3)) expect(await d1.appendBatch([x])).toEqual(await sqlite.appendBatch([x]));
    expect(await d1.range(1, 7)).toEqual(await sqlite.range(1, 7));
    expect(await d1.tip()).toEqual(await sqlite.tip());
    expect(await d1.bounds()).toEqual({ first: 1, last: 7, count: 7 });
  });

  it('keeps one linear chain when two isolates append concurrently', async () => {
    const db = createFakeD1();
    // Two storages = two isolates: they do not share the in-isolate turn, only the primary key.
    const a = createD1AuditStorage(db, { backoffMs: () => Math.random() * 2 });
    const b = createD1AuditStorage(db, { backoffMs: () => Math.random() * 2 });
    const appends = Array.from({ length: 60 }, (_, i) => (i % 2 ? a : b).appendBatch([input(i)]));
    const tips = (await Promise.all(appends)).flat();
    expect(new Set(tips.map((t) => t.seq)).size).toBe(60);
    expect(await a.bounds()).toEqual({ first: 1, last: 60, count: 60 });
    expect(db.failures.length).toBeGreaterThan(0); // the conflict path really ran
    expect(db.failures.every((m) => isSeqConflict(new Error(m)))).toBe(true);
    expect(await verify(a)).toMatchObject({ valid: true, entries_checked: 60, first_invalid_seq: null });
  });

  it('takes turns inside one isolate, so a burst does not collide', async () => {
    const db = createFakeD1();
    const storage = createD1AuditStorage(db);
    await Promise.all(Array.from({ length: 30 }, (_, i) => storage.appendBatch([input(i)])));
    expect(db.failures).toEqual([]);
    expect(await verify(storage)).toMatchObject({ valid: true, entries_checked: 30 });
  });

  it('gives up at its deadline when the seq stays taken', async () => {
    const db = createFakeD1();
    db.beforeBatch = () => new Error('D1_ERROR: UNIQUE constraint failed: audit_log.seq: SQLITE_CONSTRAINT');
    const storage = createD1AuditStorage(db, { appendTimeoutMs: 60, backoffMs: () => 5 });
    const started = Date.now();
    await expect(storage.appendBatch([input(1)])).rejects.toThrow(/UNIQUE constraint failed/);
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(db.failures.length).toBeGreaterThan(1);
  });

  it('does not retry other errors', async () => {
    const db = createFakeD1();
    db.beforeBatch = () => new Error('D1_ERROR: no such table: audit_log: SQLITE_ERROR');
    const storage = createD1AuditStorage(db);
    await expect(storage.appendBatch([input(1)])).rejects.toThrow(/no such table/);
    expect(db.failures).toHaveLength(1);
  });

  it('lets the next writer in when a turn holder never finishes (lease)', async () => {
    const db = createFakeD1();
    const storage = createD1AuditStorage(db, { turnLeaseMs: 30 });
    let stall = true;
    const original = db.batch.bind(db);
    db.batch = async (statements) => {
      if (stall) {
        stall = false;
        return new Promise(() => {}); // a request cancelled mid-append: never settles
      }
      return original(statements);
    };
    void storage.appendBatch([input(0)]);
    await new Promise((r) => setTimeout(r, 5));
    await expect(storage.appendBatch([input(1)])).resolves.toEqual([{ seq: 1, hash: expect.stringMatching(/^[0-9a-f]{64}$/) }]);
  });

  it('finds a tampered entry with the Web Crypto range checker', async () => {
    const db = createFakeD1();
    const storage = createD1AuditStorage(db);
    await storage.appendBatch(Array.from({ length: 5 }, (_, i) => input(i)));
    db.sqlite.prepare("UPDATE audit_log SET entry = replace(entry, 'actor-0', 'actor-9') WHERE seq = 4").run();
    expect(await verify(storage)).toMatchObject({ valid: false, first_invalid_seq: 4, reason: 'hash_mismatch' });
  });

  it('filters and orders queries like the SQLite storage', async () => {
    const storage = createD1AuditStorage(createFakeD1());
    await storage.appendBatch(Array.from({ length: 6 }, (_, i) => input(i, i % 2 ? 'auth.failure' : 'http.request')));
    const failures = await storage.query({ afterSeq: 0, limit: 10, action: 'auth.failure' });
    expect(failures.map((r) => r.seq)).toEqual([2, 4, 6]);
    const latest = await storage.query({ afterSeq: 0, limit: 2, order: 'desc' });
    expect(latest.map((r) => r.seq)).toEqual([6, 5]);
    expect((await storage.query({ afterSeq: 0, limit: 10, actor: 'actor-1' })).map((r) => r.seq)).toEqual([2, 5]);
  });
});

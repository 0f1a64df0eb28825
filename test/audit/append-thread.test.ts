/**
 * The request hot path's audit pieces (issue 14): the SQLite writer thread
 * (appends committed on their own connection, pipelined batches in order, a
 * refused commit rejected, not acknowledged), AuditLog pipelining over such a
 * storage, and `AuditLog.tip()` (this process's commits at once, another
 * process's within TIP_TTL_MS).
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { AuditInput } from '../../src/audit/chain';
import { AuditLog, TIP_TTL_MS } from '../../src/audit/log';
import type { AuditStorage, Tip } from '../../src/audit/storage';
import { migrate, openSqlite } from '../../src/db/sqlite';
import { createSqliteAuditStorage, sha256Hex } from '../../src/db/sqlite-audit';
import { withAppendThread } from '../../src/db/sqlite-audit-thread';
import { sampleEntry } from '../helpers/audit';
import { tempHome } from '../helpers/server';

function openFile() {
  const file = path.join(tempHome('loki-thread-'), 'loki.db');
  const db = openSqlite(file);
  migrate(db);
  return { file, db };
}

describe('the SQLite audit writer thread', () => {
  it('commits on its own connection: every batch is on the file when it resolves, in call order, one chain', async () => {
    const { file, db } = openFile();
    const storage = createSqliteAuditStorage(db);
    const threaded = withAppendThread(storage, file);
    try {
      await threaded.ready;
      expect(threaded.pipelined).toBe(true);
      // 20 batches handed over without waiting: they settle in call order with consecutive positions.
      const calls = Array.from({ length: 20 }, (_, i) => threaded.appendBatch([sampleEntry(2 * i + 1), sampleEntry(2 * i + 2)]));
      const settled: number[] = [];
      for (const [i, p] of calls.entries()) void p.then(() => settled.push(i));
      const tips = await Promise.all(calls);
      expect(settled).toEqual(Array.from({ length: 20 }, (_, i) => i));
      expect(tips.flat().map((t) => t.seq)).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
      // Visible on this (the caller's) connection as soon as the call resolved.
      expect(await storage.tip()).toEqual(tips.at(-1)!.at(-1));
      const rows = db.prepare("SELECT seq, json_extract(entry, '$.request.id') AS id FROM audit_log ORDER BY seq").all() as { seq: number; id: string }[];
      expect(rows.map((r) => r.id)).toEqual(Array.from({ length: 40 }, (_, i) => `req_${i + 1}`));
      const log = new AuditLog({ storage, enabled: true, verification: { sha256: sha256Hex } });
      expect(await log.verify()).toMatchObject({ valid: true, entries_checked: 40 });
    } finally {
      await threaded.close();
      db.close();
    }
  });

  it('a commit the database refuses is rejected with its error, nothing is stored; later batches commit', async () => {
    const { file, db } = openFile();
    const threaded = withAppendThread(createSqliteAuditStorage(db), file);
    try {
      await threaded.appendBatch([sampleEntry(1)]);
      db.exec("CREATE TRIGGER refuse BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END");
      await expect(threaded.appendBatch([sampleEntry(2), sampleEntry(3)])).rejects.toThrow('database or disk is full');
      expect(db.prepare('SELECT count(*) AS n FROM audit_log').get()).toEqual({ n: 1 });
      db.exec('DROP TRIGGER refuse');
      expect((await threaded.appendBatch([sampleEntry(4)])).map((t) => t.seq)).toEqual([2]);
    } finally {
      await threaded.close();
      db.close();
    }
  });

  it('after close, appends are refused (never silently dropped)', async () => {
    const { file, db } = openFile();
    const threaded = withAppendThread(createSqliteAuditStorage(db), file);
    await threaded.ready;
    await threaded.close();
    await expect(threaded.appendBatch([sampleEntry(1)])).rejects.toThrow('the audit writer thread is closed');
    db.close();
  });
});

/** A pipelined storage whose batches settle only when the test says so. */
function heldStorage() {
  const calls: { inputs: AuditInput[]; resolve: (t: Tip[]) => void; reject: (e: unknown) => void }[] = [];
  let seq = 0;
  const storage = {
    pipelined: true,
    appendBatch: (inputs: AuditInput[]) => new Promise<Tip[]>((resolve, reject) => calls.push({ inputs, resolve, reject })),
    tip: async () => ({ seq, hash: 'h' }),
  } as unknown as AuditStorage;
  const settle = (i: number) => {
    const c = calls[i]!;
    c.resolve(c.inputs.map(() => ({ seq: ++seq, hash: `h${seq}` })));
  };
  return { storage, calls, settle };
}

const tick = () => new Promise((r) => setImmediate(r));

describe('AuditLog over a pipelined storage', () => {
  it('hands over the next batch before the previous one settled; each request waits for its own batch; drain waits for all', async () => {
    const { storage, calls, settle } = heldStorage();
    const log = new AuditLog({ storage, enabled: true, verification: { sha256: sha256Hex } });
    const first = log.append(sampleEntry(1));
    await tick();
    await tick();
    expect(calls).toHaveLength(1);
    const second = log.append(sampleEntry(2));
    await tick();
    await tick();
    // The second batch went out while the first is still being committed.
    expect(calls).toHaveLength(2);
    let firstDone = false;
    let secondDone = false;
    void first.then(() => (firstDone = true));
    void second.then(() => (secondDone = true));
    let drained = false;
    const drain = log.drain().then(() => (drained = true));
    expect(log.stats().queued).toBe(2);
    settle(0);
    await tick();
    expect([firstDone, secondDone, drained]).toEqual([true, false, false]);
    settle(1);
    await drain;
    expect([firstDone, secondDone, drained]).toEqual([true, true, true]);
    expect(await second).toEqual({ seq: 2, hash: 'h2' });
    expect(log.stats()).toMatchObject({ queued: 0, committed: 2 });
  });

  it('a failed batch rejects its own requests only', async () => {
    const { storage, calls, settle } = heldStorage();
    const log = new AuditLog({ storage, enabled: true, verification: { sha256: sha256Hex } });
    const first = log.append(sampleEntry(1));
    await tick();
    await tick();
    const second = log.append(sampleEntry(2));
    await tick();
    await tick();
    calls[0]!.reject(new Error('disk full'));
    settle(1);
    await expect(first).rejects.toThrow('the audit log cannot be written');
    expect(await second).toEqual({ seq: 1, hash: 'h1' });
    expect(log.stats()).toMatchObject({ committed: 1, write_failures: 1 });
  });
});

describe('AuditLog.tip()', () => {
  it('this process’s commits show at once; another process’s appends within TIP_TTL_MS, not before', async () => {
    const { file, db } = openFile();
    const other = openSqlite(file);
    let t = 10_000;
    const here = new AuditLog({ storage: createSqliteAuditStorage(db), enabled: true, verification: { sha256: sha256Hex }, monotonic: () => t });
    const there = new AuditLog({ storage: createSqliteAuditStorage(other), enabled: true, verification: { sha256: sha256Hex } });
    try {
      expect((await here.tip()).seq).toBe(0);
      const mine = await here.append(sampleEntry(1));
      expect(await here.tip()).toEqual(mine);
      const theirs = await there.append(sampleEntry(2));
      expect(theirs.seq).toBe(2);
      t += TIP_TTL_MS - 1;
      expect(await here.tip()).toEqual(mine);
      t += 1;
      expect(await here.tip()).toEqual(theirs);
      // The storage is the authority: a tail deleted elsewhere shows after the TTL too.
      other.prepare('DELETE FROM audit_log WHERE seq = 2').run();
      t += TIP_TTL_MS;
      expect(await here.tip()).toEqual(mine);
    } finally {
      db.close();
      other.close();
    }
  });
});

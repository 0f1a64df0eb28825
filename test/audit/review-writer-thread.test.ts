/**
 * Review of the SQLite audit writer thread (src/db/sqlite-audit-thread.ts): a
 * thread that fails is replaced for the next batch; the old thread's late `exit`
 * must settle only its own batches, never the replacement's (which that thread
 * commits: rejecting them answers 503 for entries that are on disk).
 */
import path from 'node:path';
import type { Worker as NodeWorker } from 'node:worker_threads';
import { describe, expect, it, vi } from 'vitest';
import { migrate, openSqlite } from '../../src/db/sqlite';
import { createSqliteAuditStorage } from '../../src/db/sqlite-audit';
import { withAppendThread } from '../../src/db/sqlite-audit-thread';
import { sampleEntry } from '../helpers/audit';
import { tempHome } from '../helpers/server';

const threads = vi.hoisted(() => [] as NodeWorker[]);
vi.mock('node:worker_threads', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:worker_threads')>();
  class RecordedWorker extends real.Worker {
    constructor(...args: ConstructorParameters<typeof real.Worker>) {
      super(...args);
      threads.push(this);
    }
  }
  return { ...real, Worker: RecordedWorker };
});

describe('the audit writer thread, replaced after a failure', () => {
  it("the failed thread's late exit does not reject the batches of the thread that replaced it", async () => {
    const file = path.join(tempHome('loki-thread-review-'), 'loki.db');
    const db = openSqlite(file);
    migrate(db);
    const threaded = withAppendThread(createSqliteAuditStorage(db), file);
    try {
      await threaded.ready;
      expect((await threaded.appendBatch([sampleEntry(1)])).map((t) => t.seq)).toEqual([1]);
      const first = threads.at(-1)!;
      // What Node does for an uncaught exception in a thread: 'error' first, 'exit' a moment later.
      first.emit('error', new Error('uncaught in the writer thread'));
      // A batch in between goes to a new thread.
      const next = threaded.appendBatch([sampleEntry(2)]);
      const outcome = next.then(
        (tips) => ({ tips }),
        (err: Error) => ({ error: err.message }),
      );
      expect(threads.length).toBe(2);
      await first.terminate();
      // The new thread commits the batch: the caller must be told so.
      expect(await outcome).toEqual({ tips: [{ seq: 2, hash: expect.any(String) }] });
      expect(db.prepare('SELECT count(*) AS n FROM audit_log').get()).toEqual({ n: 2 });
    } finally {
      await threaded.close();
      db.close();
    }
  });
});

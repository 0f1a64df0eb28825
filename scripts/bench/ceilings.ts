/**
 * What this machine allows, measured in the same run as the figures they bound,
 * so a missed absolute target can be read as "the code" or "the machine":
 *  - durable commits: a bare better-sqlite3 database with the audit log's own
 *    pragmas (WAL, synchronous=FULL) committing transactions of 64 rows of the
 *    same size as the audit entries (64 writers give at most 64 entries a batch);
 *  - hashing: the two SHA-256 a full verification needs per entry (chain link and
 *    RFC 6962 leaf), over the stored entries, on every core at once.
 */
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import Database from 'better-sqlite3';

export function durableCommitCeiling(dir: string, entryText: string, seconds = 3): { entries_per_sec: number; commits_per_sec: number } {
  const db = new Database(path.join(dir, 'ceiling.db'));
  try {
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = FULL');
    db.exec('CREATE TABLE t (seq INTEGER PRIMARY KEY, entry TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL)');
    const ins = db.prepare('INSERT INTO t VALUES (?, ?, ?, ?)');
    const hash = 'a'.repeat(64);
    let seq = 0;
    const tx = db.transaction(() => {
      for (let i = 0; i < 64; i++) ins.run(++seq, entryText, hash, hash);
    });
    const t0 = performance.now();
    let commits = 0;
    while (performance.now() - t0 < seconds * 1000) {
      tx.immediate();
      commits++;
    }
    const s = (performance.now() - t0) / 1000;
    return { entries_per_sec: Math.round((commits * 64) / s), commits_per_sec: Math.round(commits / s) };
  } finally {
    db.close();
  }
}

export async function hashCeiling(entries: string[], threads = availableParallelism()): Promise<{ entries_per_sec: number; threads: number }> {
  const per = Math.ceil(entries.length / threads);
  const results = await Promise.all(
    Array.from(
      { length: threads },
      (_, i) =>
        new Promise<{ entries: number; ms: number }>((resolve, reject) => {
          const w = new Worker(new URL('./hash-worker.js', import.meta.url), { workerData: entries.slice(i * per, (i + 1) * per), execArgv: [] });
          w.once('message', resolve);
          w.once('error', reject);
        }),
    ),
  );
  // All threads ran at once: the total rate is the sum of each thread's own rate.
  return { entries_per_sec: Math.round(results.reduce((sum, r) => sum + r.entries / (r.ms / 1000), 0)), threads };
}

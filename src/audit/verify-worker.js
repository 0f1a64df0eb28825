// Worker thread of the parallel audit verifier: checks one seq range of the
// chain read-only and posts the result. Plain JavaScript (see check-run.js).
import { createHash, hash } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { checkRun } from './check-run.js';

const { dbPath, from, to, expectedPrev } = workerData;
const CHUNK = 5000;
const db = new Database(dbPath, { readonly: true, fileMustExist: true });
try {
  const stmt = db.prepare('SELECT seq, entry, prev_hash, hash FROM audit_log WHERE seq BETWEEN ? AND ? ORDER BY seq').raw(true);
  // Chunks through .all(): much faster than a row-by-row iterate().
  function* rows() {
    for (let start = from; start <= to; start += CHUNK) {
      for (const r of stmt.all(start, Math.min(to, start + CHUNK - 1))) yield { seq: r[0], entry: r[1], prevHash: r[2], hash: r[3] };
    }
  }
  // crypto.hash (one-shot, Node ≥ 20.12) is about twice as fast as createHash here.
  const sha256 = typeof hash === 'function' ? (s) => hash('sha256', s, 'hex') : (s) => createHash('sha256').update(s).digest('hex');
  parentPort.postMessage(checkRun(rows(), from, expectedPrev, sha256));
} finally {
  db.close();
}

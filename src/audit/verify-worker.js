// Worker thread of the parallel audit verifier: checks one seq range of the
// chain read-only and posts the result. Plain JavaScript (see check-run.js).
// With `tree`, it also checks each entry's RFC 6962 leaf hash against the stored
// level-0 tile, and each full level-0 tile whose first leaf is in the range
// against its hash in the level-1 tile (reason tree_mismatch).
import { createHash, hash } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { checkRun } from './check-run.js';

const { dbPath, from, to, expectedPrev, tree } = workerData;
const CHUNK = 4096;
const WIDTH = 256;
const db = new Database(dbPath, { readonly: true, fileMustExist: true });
try {
  const stmt = db.prepare('SELECT seq, entry, prev_hash, hash FROM audit_log WHERE seq BETWEEN ? AND ? ORDER BY seq').raw(true);
  const tileStmt = db.prepare('SELECT idx, hashes FROM audit_tiles WHERE level = ? AND idx BETWEEN ? AND ? ORDER BY idx').raw(true);
  // crypto.hash (one-shot, Node ≥ 20.12) is about twice as fast as createHash here.
  const sha256 = typeof hash === 'function' ? (s) => hash('sha256', s, 'hex') : (s) => createHash('sha256').update(s).digest('hex');
  const digest = typeof hash === 'function' ? (d) => hash('sha256', d, 'buffer') : (d) => createHash('sha256').update(d).digest();
  const NODE = Buffer.alloc(65);
  NODE[0] = 1;
  const node = (l, r) => {
    l.copy(NODE, 1);
    r.copy(NODE, 33);
    return digest(NODE);
  };
  const tileRoot = (data) => {
    let level = [];
    for (let i = 0; i < data.length; i += 32) level.push(data.subarray(i, i + 32));
    while (level.length > 1) {
      const up = [];
      for (let i = 0; i < level.length; i += 2) up.push(node(level[i], level[i + 1]));
      level = up;
    }
    return level[0];
  };

  // A tile row that is not a blob (text written into the column) is compared as its bytes: it fails.
  const asBlob = ([idx, v]) => [idx, Buffer.isBuffer(v) ? v : Buffer.from(String(v))];

  /** Leaves of `rows` and the full tiles starting in [start, end] against the stored tiles; the first bad seq or null. */
  const checkTree = (rows, start, end) => {
    const last = Math.min(end, tree.size);
    if (last < start) return null;
    const t0 = Math.floor((start - 1) / WIDTH);
    const t1 = Math.floor((last - 1) / WIDTH);
    const tiles = new Map(tileStmt.all(0, t0, t1).map(asBlob));
    for (const r of rows) {
      if (r.seq > last) break;
      const i = r.seq - 1;
      const data = tiles.get(Math.floor(i / WIDTH));
      const off = (i % WIDTH) * 32;
      // U+0000 is the single byte 0x00 in UTF-8: the leaf prefix rides in the string.
      if (!data || data.length < off + 32 || !digest(`\u0000${r.entry}`).equals(data.subarray(off, off + 32))) return r.seq;
    }
    const firstFull = Math.ceil((start - 1) / WIDTH);
    const lastFull = Math.min(Math.floor((last - 1) / WIDTH), Math.floor(tree.size / WIDTH) - 1);
    if (lastFull < firstFull) return null;
    const parents = new Map(tileStmt.all(1, Math.floor(firstFull / WIDTH), Math.floor(lastFull / WIDTH)).map(asBlob));
    for (let n = firstFull; n <= lastFull; n++) {
      const data = tiles.get(n);
      const parent = parents.get(Math.floor(n / WIDTH));
      const off = (n % WIDTH) * 32;
      if (!data || data.length !== WIDTH * 32 || !parent || parent.length < off + 32 || !tileRoot(data).equals(parent.subarray(off, off + 32))) {
        return n * WIDTH + 1;
      }
    }
    return null;
  };

  let prev = expectedPrev;
  let count = 0;
  let firstPrev = null;
  let result = null;
  for (let start = from; start <= to && !result; start += CHUNK) {
    const end = Math.min(to, start + CHUNK - 1);
    const rows = stmt.all(start, end).map((r) => ({ seq: r[0], entry: r[1], prevHash: r[2], hash: r[3] }));
    if (start === from && rows.length > 0) firstPrev = rows[0].prevHash;
    const r = checkRun(rows, start, prev, sha256);
    const bad = tree ? checkTree(rows, start, end) : null;
    if (bad !== null && (!r.failure || bad < r.failure.seq)) {
      const before = rows.filter((x) => x.seq < bad);
      result = { failure: { seq: bad, reason: 'tree_mismatch' }, count: count + before.length, lastHash: before.length ? before[before.length - 1].hash : prev, lastSeq: bad - 1 };
      break;
    }
    count += r.count;
    if (r.failure || r.lastSeq !== end) {
      result = { failure: r.failure, count, lastHash: r.lastHash, lastSeq: r.lastSeq };
      break;
    }
    prev = r.lastHash ?? prev;
  }
  parentPort.postMessage({ ...(result ?? { failure: null, count, lastHash: prev, lastSeq: to }), firstPrev });
} finally {
  db.close();
}

// The row check of the audit chain, in plain JavaScript so that the Node
// verifier's worker threads can load it without a TypeScript loader. It is the
// single implementation: chain.ts re-exports it with types (check-run.d.ts).

/**
 * Check a contiguous run of rows ordered by seq. `expectedPrev` null: take the
 * first row's prev_hash on trust (the caller checks that boundary).
 * @param {Iterable<{seq:number, entry:string, prevHash:string, hash:string}>} rows
 * @param {number} expectedStart
 * @param {string|null} expectedPrev
 * @param {(s: string) => string} sha256
 */
export function checkRun(rows, expectedStart, expectedPrev, sha256) {
  let expectSeq = expectedStart;
  let prev = expectedPrev;
  let count = 0;
  let firstPrev = null;
  const done = (failure) => ({ failure, count, lastHash: prev, lastSeq: expectSeq - 1, firstPrev });
  for (const r of rows) {
    if (count === 0) firstPrev = r.prevHash;
    if (r.seq !== expectSeq) return done({ seq: expectSeq, reason: r.seq > expectSeq ? 'missing_entry' : 'seq_mismatch' });
    if (prev !== null && r.prevHash !== prev) return done({ seq: r.seq, reason: 'chain_broken' });
    if (sha256(r.prevHash + r.entry) !== r.hash) return done({ seq: r.seq, reason: 'hash_mismatch' });
    // The entry text starts with {"seq":N, so a row cannot hold another row's entry.
    if (!r.entry.startsWith(`{"seq":${r.seq},`)) return done({ seq: r.seq, reason: 'seq_mismatch' });
    prev = r.hash;
    expectSeq++;
    count++;
  }
  return done(null);
}

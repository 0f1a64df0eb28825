/**
 * Parallel verification for SQLite: each stored hash can be checked against its
 * own stored prev_hash independently, so seq ranges are verified on separate
 * threads and only the boundaries between ranges are linked here. The same
 * threads check the Merkle tree's leaves and level-0 tiles of their range.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { RangeFailure } from './chain';
import type { RangeChecker } from './log';

interface RunResult {
  failure: RangeFailure | null;
  count: number;
  lastHash: string | null;
  lastSeq: number;
  firstPrev: string | null;
}

function runRange(dbPath: string, from: number, to: number, expectedPrev: string | null, tree: { size: number } | undefined): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const w = new Worker(new URL('./verify-worker.js', import.meta.url), {
      workerData: { dbPath, from, to, expectedPrev, tree: tree ?? null },
      // Plain JavaScript: the thread needs none of the parent's loaders (a TypeScript loader costs it a start-up).
      execArgv: [],
    });
    w.once('message', (m: RunResult) => resolve(m));
    w.once('error', reject);
    w.once('exit', (code) => {
      if (code !== 0) reject(new Error(`verifier thread exited with ${code}`));
    });
  });
}

export function createParallelChecker(dbPath: string, opts: { threads?: number; minPerThread?: number } = {}): RangeChecker {
  const threads = Math.max(1, opts.threads ?? availableParallelism());
  const minPer = opts.minPerThread ?? 50_000;
  return async (from, to, expectedPrev, tree) => {
    const total = to - from + 1;
    const n = Math.max(1, Math.min(threads, Math.floor(total / minPer)));
    const size = Math.ceil(total / n);
    const ranges: [number, number][] = [];
    for (let s = from; s <= to; s += size) ranges.push([s, Math.min(to, s + size - 1)]);
    const results = await Promise.all(ranges.map(([a, b], i) => runRange(dbPath, a, b, i === 0 ? expectedPrev : null, tree)));
    let count = 0;
    let prevHash: string | null = expectedPrev;
    for (let i = 0; i < results.length; i++) {
      const r = results[i]!;
      const [a, b] = ranges[i]!;
      if (i > 0 && r.count > 0 && r.firstPrev !== prevHash) return { failure: { seq: a, reason: 'chain_broken' }, count, lastHash: prevHash };
      count += r.count;
      if (r.failure) return { failure: r.failure, count, lastHash: r.lastHash };
      if (r.lastSeq !== b) return { failure: { seq: r.lastSeq + 1, reason: 'missing_entry' }, count, lastHash: r.lastHash };
      prevHash = r.lastHash;
    }
    return { failure: null, count, lastHash: prevHash };
  };
}

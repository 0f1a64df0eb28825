/**
 * D1 audit storage. D1 has no interactive transactions, so an append is an
 * optimistic insert: read the tip, link and hash the batch (Web Crypto), insert
 * every row in one `batch` (D1 runs a batch as one SQL transaction: all rows or
 * none). A concurrent writer that took the same seq first makes the batch fail
 * on the `seq` primary key; then the tip is read again and the batch re-linked,
 * until a deadline. Correctness rests on that primary key alone: the chain
 * stays linear across isolates without any lock.
 *
 * Writers in one isolate also take turns (see `takeTurn`), for latency only:
 * optimistic retries alone collapse under a burst (twenty concurrent appends
 * read the same tip, one wins, nineteen retry, and so on).
 */
import { canonicalEntry, type ChainRow, GENESIS_HASH } from '../audit/chain';
import { type RangeChecker, sequentialChecker } from '../audit/log';
import type { AuditStorage, StoredCheckpoint, Tip } from '../audit/storage';
import { sha256Hex } from '../auth/tokens';
import { auditQuerySql } from './audit-sql';
import type { D1Database } from './d1';

export interface D1AuditOptions {
  /** How long one append may take, waiting and retries included, before it fails (the HTTP layer answers 503). */
  appendTimeoutMs?: number;
  /** How long a writer may hold this isolate's turn before the others presume it cancelled. */
  turnLeaseMs?: number;
  /** Wait before re-linking after a conflict with another isolate; jittered so colliding writers spread out. */
  backoffMs?: (attempt: number) => number;
}

interface RowShape {
  seq: number;
  entry: string;
  prev_hash: string;
  hash: string;
}

const CHECKPOINT_COLUMNS = 'id, kind, size, head_hash AS headHash, time, jws';
const toRow = (r: RowShape): ChainRow => ({ seq: r.seq, entry: r.entry, prevHash: r.prev_hash, hash: r.hash });
const defaultBackoff = (attempt: number) => Math.random() * Math.min(100, 2 * 2 ** attempt);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** True when a D1 error is the `seq` primary key taken by another writer. */
export function isSeqConflict(err: unknown): boolean {
  const text = (e: unknown) => String((e as { message?: unknown })?.message ?? e);
  const msg = `${text(err)} ${text((err as { cause?: unknown })?.cause ?? '')}`;
  return /UNIQUE constraint failed: audit_log\.seq|SQLITE_CONSTRAINT_PRIMARYKEY/i.test(msg);
}

export function createD1AuditStorage(db: D1Database, opts: D1AuditOptions = {}): AuditStorage {
  const appendTimeoutMs = opts.appendTimeoutMs ?? 5_000;
  const turnLeaseMs = opts.turnLeaseMs ?? 2_000;
  const backoff = opts.backoffMs ?? defaultBackoff;

  // This isolate's turn: plain data, never a promise. On Workers a request must
  // not await a promise that another request settles (if that request is
  // cancelled, the waiter hangs), so waiting writers poll on their own timers,
  // and a turn is a lease, so a writer cancelled mid-append blocks no one for long.
  let turnHeldUntil = 0;
  let turnOwner: object | null = null;
  const takeTurn = async (deadline: number): Promise<() => void> => {
    while (Date.now() < turnHeldUntil) {
      if (Date.now() >= deadline) throw new Error('audit append timed out waiting for its turn');
      await sleep(1 + Math.random() * 3);
    }
    const me = {};
    turnOwner = me;
    turnHeldUntil = Date.now() + turnLeaseMs;
    return () => {
      if (turnOwner !== me) return;
      turnOwner = null;
      turnHeldUntil = 0;
    };
  };

  const latestCheckpoint = async (kind?: string): Promise<StoredCheckpoint | null> => {
    const stmt = kind
      ? db.prepare(`SELECT ${CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE kind = ? ORDER BY size DESC, id DESC LIMIT 1`).bind(kind)
      : db.prepare(`SELECT ${CHECKPOINT_COLUMNS} FROM audit_checkpoints ORDER BY size DESC, id DESC LIMIT 1`);
    return stmt.first<StoredCheckpoint>();
  };

  const currentTip = async (): Promise<Tip> => {
    const r = await db.prepare('SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1').first<Tip>();
    if (r) return { seq: r.seq, hash: r.hash };
    // After a prune the table can be empty: continue from the latest prune cut.
    const cp = await latestCheckpoint('prune');
    return cp ? { seq: cp.size, hash: cp.headHash } : { seq: 0, hash: GENESIS_HASH };
  };

  return {
    async appendBatch(inputs) {
      if (inputs.length === 0) return [];
      const deadline = Date.now() + appendTimeoutMs;
      for (let attempt = 1; ; attempt++) {
        const release = await takeTurn(deadline);
        try {
          let tip = await currentTip();
          const out: Tip[] = [];
          const statements = [];
          for (const input of inputs) {
            const seq = tip.seq + 1;
            const entry = canonicalEntry(seq, input);
            const hash = await sha256Hex(tip.hash + entry);
            statements.push(db.prepare('INSERT INTO audit_log (seq, entry, prev_hash, hash) VALUES (?, ?, ?, ?)').bind(seq, entry, tip.hash, hash));
            tip = { seq, hash };
            out.push(tip);
          }
          await db.batch(statements);
          return out;
        } catch (err) {
          if (!isSeqConflict(err) || Date.now() >= deadline) throw err;
        } finally {
          release();
        }
        // Another isolate (or a writer whose lease ran out) took the seq: let it finish.
        await sleep(backoff(attempt));
      }
    },
    tip: currentTip,
    async query(q) {
      const { sql, args } = auditQuerySql(q);
      const { results } = await db
        .prepare(sql)
        .bind(...args)
        .all<RowShape>();
      return results.map(toRow);
    },
    async range(from, to) {
      const { results } = await db
        .prepare('SELECT seq, entry, prev_hash, hash FROM audit_log WHERE seq BETWEEN ? AND ? ORDER BY seq')
        .bind(from, to)
        .all<RowShape>();
      return results.map(toRow);
    },
    async bounds() {
      const r = await db
        .prepare('SELECT min(seq) AS first, max(seq) AS last, count(*) AS count FROM audit_log')
        .first<{ first: number | null; last: number | null; count: number }>();
      return r ?? { first: null, last: null, count: 0 };
    },
    async insertCheckpoint(cp) {
      await db
        .prepare('INSERT INTO audit_checkpoints (kind, size, head_hash, time, jws) VALUES (?, ?, ?, ?, ?)')
        .bind(cp.kind, cp.size, cp.headHash, cp.time, cp.jws)
        .run();
    },
    latestCheckpoint,
    async checkpoints() {
      const { results } = await db.prepare(`SELECT ${CHECKPOINT_COLUMNS} FROM audit_checkpoints ORDER BY id`).all<StoredCheckpoint>();
      return results;
    },
    async deleteThrough(cutSeq) {
      const r = await db.prepare('DELETE FROM audit_log WHERE seq <= ?').bind(cutSeq).run();
      return Number(r.meta.changes ?? 0);
    },
    async lastSeqBefore(ts) {
      return db.prepare('SELECT seq, hash FROM audit_log WHERE ts < ? ORDER BY seq DESC LIMIT 1').bind(ts).first<Tip>();
    },
  };
}

/**
 * Chain verification with Web Crypto. `checkRun` hashes synchronously, and
 * `crypto.subtle.digest` is asynchronous, so each chunk's digests are computed
 * up front (in parallel) when it is read, and the shared row check looks them up.
 * Works over any AuditStorage; on Workers it replaces AuditLog's `sha256`.
 */
export function webCryptoRangeChecker(storage: AuditStorage): RangeChecker {
  return (from, to, expectedPrev) => {
    // Per call: concurrent verifications must not share digests.
    let digests = new Map<string, string>();
    const prehashed: AuditStorage = {
      ...storage,
      async range(a, b) {
        const rows = await storage.range(a, b);
        const next = new Map<string, string>();
        await Promise.all(
          rows.map(async (r) => {
            const text = r.prevHash + r.entry;
            next.set(text, await sha256Hex(text));
          }),
        );
        digests = next;
        return rows;
      },
    };
    const lookup = (text: string): string => {
      const d = digests.get(text);
      if (d === undefined) throw new Error('webCryptoRangeChecker: digest requested for a row that was not read');
      return d;
    };
    return sequentialChecker(prehashed, lookup)(from, to, expectedPrev);
  };
}

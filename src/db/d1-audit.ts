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
import { defaultHasher, type Hash } from '../audit/tlog/merkle';
import { utf8 } from '../audit/tlog/sha256';
import { appendLeaves } from '../audit/tlog/tiles';
import { sha256Hex } from '../auth/tokens';
import { auditQuerySql } from './audit-sql';
import { blobBytes, type EdgeRow, READ_TILE_SQL, TIP_AND_EDGE_SQL, TILE_RANGE_SQL, TileTreeCache, tipOf, treeEdge, treeStatusOf, UPSERT_TILE_SQL } from './audit-tiles';
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

const CHECKPOINT_COLUMNS = 'id, kind, size, head_hash AS headHash, time, jws, note';
/** Entries an append adds to a lagging tree (after an upgrade the tree catches up this much per append). */
const CATCH_UP = 2_000;
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

  /** Tip and tree edge from one statement: one consistent snapshot. */
  const readState = async () => {
    const { results } = await db.prepare(TIP_AND_EDGE_SQL).all<EdgeRow>();
    const tip = tipOf(results) ?? (await currentTip());
    return { tip, tree: treeEdge(results) };
  };

  const leafHashes = async (from: number, to: number): Promise<Hash[] | null> => {
    if (to < from) return [];
    const { results } = await db.prepare('SELECT seq, entry FROM audit_log WHERE seq BETWEEN ? AND ? ORDER BY seq').bind(from, to).all<{ seq: number; entry: string }>();
    if (results.length !== to - from + 1 || results[0]!.seq !== from) return null;
    return results.map((r) => defaultHasher.recordHash(utf8(r.entry)));
  };

  const readTile = async (level: number, n: number): Promise<Uint8Array | null> => {
    const r = await db.prepare(READ_TILE_SQL).bind(level, n).first<{ hashes: unknown }>();
    return r ? blobBytes(r.hashes) : null;
  };
  const cache = new TileTreeCache(1024);

  return {
    async appendBatch(inputs) {
      if (inputs.length === 0) return [];
      const deadline = Date.now() + appendTimeoutMs;
      for (let attempt = 1; ; attempt++) {
        const release = await takeTurn(deadline);
        try {
          const { tip: start, tree } = await readState();
          let tip = start;
          // The tree is written in the same batch as the entries, so the `seq`
          // primary key that orders the entries orders the tree's writes too.
          let leaves: Hash[] | null = null;
          if (tree.intact && tree.size <= tip.seq && tip.seq - tree.size <= CATCH_UP) leaves = await leafHashes(tree.size + 1, tip.seq);
          const out: Tip[] = [];
          const statements = [];
          for (const input of inputs) {
            const seq = tip.seq + 1;
            const entry = canonicalEntry(seq, input);
            const hash = await sha256Hex(tip.hash + entry);
            statements.push(db.prepare('INSERT INTO audit_log (seq, entry, prev_hash, hash) VALUES (?, ?, ?, ?)').bind(seq, entry, tip.hash, hash));
            leaves?.push(defaultHasher.recordHash(utf8(entry)));
            tip = { seq, hash };
            out.push(tip);
          }
          if (leaves) {
            for (const row of appendLeaves(tree.size, tree.edge, leaves).rows) statements.push(db.prepare(UPSERT_TILE_SQL).bind(row.level, row.n, row.data));
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
        .prepare('INSERT INTO audit_checkpoints (kind, size, head_hash, time, jws, note) VALUES (?, ?, ?, ?, ?, ?)')
        .bind(cp.kind, cp.size, cp.headHash, cp.time, cp.jws, cp.note ?? null)
        .run();
    },
    latestCheckpoint,
    async latestNote() {
      return db.prepare(`SELECT ${CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE note IS NOT NULL ORDER BY size DESC, id DESC LIMIT 1`).first<StoredCheckpoint>();
    },
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
    async treeStatus() {
      const { tip, tree } = await readState();
      const first = await db.prepare('SELECT min(seq) AS first FROM audit_log').first<{ first: number | null }>();
      return treeStatusOf(tree.size, tip.seq, first?.first ?? null, tree.intact);
    },
    readTile,
    async tileRange(level, fromN, toN) {
      const { results } = await db.prepare(TILE_RANGE_SQL).bind(level, fromN, toN).all<{ idx: number; hashes: unknown }>();
      return results.map((r) => ({ n: r.idx, data: blobBytes(r.hashes) }));
    },
    async readHashes(indexes) {
      return cache.readHashes(indexes, readTile);
    },
    async syncTree() {
      // D1 has no interactive transaction to guard a tree-only write with, so a
      // lagging tree catches up inside appends (which the seq key orders).
      return this.treeStatus();
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
  return (from, to, expectedPrev, tree) => {
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
    return sequentialChecker(prehashed, lookup)(from, to, expectedPrev, tree);
  };
}

/**
 * SQLite audit storage. An append batch is one IMMEDIATE transaction: it reads
 * the tip and the Merkle tree's edge, links and inserts every entry, adds their
 * leaves to the tree's tiles, and commits (fsync with synchronous=FULL).
 * IMMEDIATE takes the write lock up front, so several processes appending to
 * one file keep a single linear chain and a single tree.
 */
import * as crypto from 'node:crypto';
import { createHash } from 'node:crypto';
import { canonicalEntry, type ChainRow, GENESIS_HASH } from '../audit/chain';
import { nodeTreeHasher } from '../audit/node-tlog';
import type { AuditStorage, StoredCheckpoint, Tip, TreeStatus } from '../audit/storage';
import type { Hash } from '../audit/tlog/merkle';
import { appendLeaves } from '../audit/tlog/tiles';
import { auditQuerySql } from './audit-sql';
import { blobBytes, type EdgeRow, READ_TILE_SQL, TIP_AND_EDGE_SQL, TILE_RANGE_SQL, TileTreeCache, tipOf, treeEdge, treeStatusOf, UPSERT_TILE_SQL } from './audit-tiles';
import type { SqliteDb } from './sqlite';

// crypto.hash (one-shot, Node ≥ 20.12) is about twice as fast as createHash.
const oneShot = (crypto as unknown as { hash?: (alg: string, data: string, enc: 'hex') => string }).hash;

export function sha256Hex(s: string): string {
  return oneShot ? oneShot('sha256', s, 'hex') : createHash('sha256').update(s).digest('hex');
}

type RawRow = [number, string, string, string];
const toRow = (r: RawRow): ChainRow => ({ seq: r[0], entry: r[1], prevHash: r[2], hash: r[3] });

/** Entries the append path adds to a lagging tree itself; a larger gap is left to syncTree (run at open). */
const INLINE_CATCH_UP = 10_000;
/** Entries per transaction when syncTree backfills. */
const SYNC_CHUNK = 20_000;

const CP_COLUMNS = 'id, kind, size, head_hash AS headHash, time, jws, note';

export function createSqliteAuditStorage(db: SqliteDb): AuditStorage {
  const tipStmt = db.prepare('SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1');
  const insertStmt = db.prepare('INSERT INTO audit_log (seq, entry, prev_hash, hash) VALUES (?, ?, ?, ?)');
  const rangeStmt = db.prepare('SELECT seq, entry, prev_hash, hash FROM audit_log WHERE seq BETWEEN ? AND ? ORDER BY seq').raw(true);
  const entriesStmt = db.prepare('SELECT seq, entry FROM audit_log WHERE seq BETWEEN ? AND ? ORDER BY seq').raw(true);
  const boundsStmt = db.prepare('SELECT min(seq) AS first, max(seq) AS last, count(*) AS count FROM audit_log');
  const firstStmt = db.prepare('SELECT min(seq) AS first FROM audit_log').pluck();
  const cpInsert = db.prepare('INSERT INTO audit_checkpoints (kind, size, head_hash, time, jws, note) VALUES (?, ?, ?, ?, ?, ?)');
  const cpLatest = db.prepare(`SELECT ${CP_COLUMNS} FROM audit_checkpoints ORDER BY size DESC, id DESC LIMIT 1`);
  const cpLatestKind = db.prepare(`SELECT ${CP_COLUMNS} FROM audit_checkpoints WHERE kind = ? ORDER BY size DESC, id DESC LIMIT 1`);
  const cpAll = db.prepare(`SELECT ${CP_COLUMNS} FROM audit_checkpoints ORDER BY id`);
  const cpLatestNote = db.prepare(`SELECT ${CP_COLUMNS} FROM audit_checkpoints WHERE note IS NOT NULL ORDER BY size DESC, id DESC LIMIT 1`);
  const lastBefore = db.prepare('SELECT seq, hash FROM audit_log WHERE ts < ? ORDER BY seq DESC LIMIT 1');
  const edgeStmt = db.prepare(TIP_AND_EDGE_SQL);
  const upsertTile = db.prepare(UPSERT_TILE_SQL);
  const readTileStmt = db.prepare(READ_TILE_SQL).pluck();
  const tileRangeStmt = db.prepare(TILE_RANGE_SQL);
  const cache = new TileTreeCache(8192, nodeTreeHasher);

  const currentTip = (): Tip => {
    const r = tipStmt.get() as { seq: number; hash: string } | undefined;
    if (r) return { seq: r.seq, hash: r.hash };
    // After a prune the table can be empty: continue from the latest prune cut.
    const cp = cpLatestKind.get('prune') as StoredCheckpoint | undefined;
    return cp ? { seq: cp.size, hash: cp.headHash } : { seq: 0, hash: GENESIS_HASH };
  };

  /** Tip and tree edge, read together (inside the caller's transaction). */
  const readState = () => {
    const rows = edgeStmt.all() as EdgeRow[];
    const tip = tipOf(rows) ?? currentTip();
    return { tip, tree: treeEdge(rows) };
  };

  /** Leaf hashes of stored entries [from, to], or null when any is missing (pruned). */
  const leavesOf = (from: number, to: number): Hash[] | null => {
    if (to < from) return [];
    const rows = entriesStmt.all(from, to) as [number, string][];
    if (rows.length !== to - from + 1 || rows[0]![0] !== from) return null;
    return rows.map((r) => nodeTreeHasher.leafOfText(r[1]));
  };

  const writeTiles = (size: number, edge: Map<number, Uint8Array>, leaves: Hash[]) => {
    if (leaves.length === 0) return;
    for (const row of appendLeaves(size, edge, leaves, nodeTreeHasher).rows) upsertTile.run(row.level, row.n, row.data);
  };

  const appendTx = db.transaction((inputs: Parameters<AuditStorage['appendBatch']>[0]) => {
    const { tip: start, tree } = readState();
    let tip = start;
    // The tree follows the log: extend it only when it holds exactly the entries
    // before the new ones (after a small catch-up, if it lags).
    let leaves: Hash[] | null = null;
    if (tree.intact && tree.size <= tip.seq && tip.seq - tree.size <= INLINE_CATCH_UP) leaves = leavesOf(tree.size + 1, tip.seq);
    const out: Tip[] = [];
    for (const input of inputs) {
      const seq = tip.seq + 1;
      const entry = canonicalEntry(seq, input);
      const hash = sha256Hex(tip.hash + entry);
      insertStmt.run(seq, entry, tip.hash, hash);
      leaves?.push(nodeTreeHasher.leafOfText(entry));
      tip = { seq, hash };
      out.push(tip);
    }
    if (leaves) writeTiles(tree.size, tree.edge, leaves);
    return out;
  });

  const treeStatus = (): TreeStatus => {
    const { tip, tree } = readState();
    return treeStatusOf(tree.size, tip.seq, firstStmt.get() as number | null, tree.intact);
  };

  /** One bounded backfill step; returns the status after it. */
  const syncStep = db.transaction((): TreeStatus => {
    const { tip, tree } = readState();
    const status = treeStatusOf(tree.size, tip.seq, firstStmt.get() as number | null, tree.intact);
    if (status.state !== 'behind') return status;
    const to = Math.min(tip.seq, tree.size + SYNC_CHUNK);
    const leaves = leavesOf(tree.size + 1, to);
    if (!leaves) return { ...status, state: 'unavailable' };
    writeTiles(tree.size, tree.edge, leaves);
    return treeStatusOf(to, tip.seq, tree.size + 1, true);
  });

  const readTile = async (level: number, n: number): Promise<Uint8Array | null> => {
    const v = readTileStmt.get(level, n);
    return v === undefined ? null : blobBytes(v);
  };

  return {
    async appendBatch(inputs) {
      return appendTx.immediate(inputs);
    },
    async tip() {
      return currentTip();
    },
    async query(q) {
      const { sql, args } = auditQuerySql(q);
      return (db.prepare(sql).raw(true).all(...args) as RawRow[]).map(toRow);
    },
    async range(from, to) {
      return (rangeStmt.all(from, to) as RawRow[]).map(toRow);
    },
    async bounds() {
      const r = boundsStmt.get() as { first: number | null; last: number | null; count: number };
      return r;
    },
    async insertCheckpoint(cp) {
      cpInsert.run(cp.kind, cp.size, cp.headHash, cp.time, cp.jws, cp.note ?? null);
    },
    async latestCheckpoint(kind) {
      return ((kind ? cpLatestKind.get(kind) : cpLatest.get()) as StoredCheckpoint | undefined) ?? null;
    },
    async checkpoints() {
      return cpAll.all() as StoredCheckpoint[];
    },
    async latestNote() {
      return (cpLatestNote.get() as StoredCheckpoint | undefined) ?? null;
    },
    async deleteThrough(cutSeq) {
      return db.prepare('DELETE FROM audit_log WHERE seq <= ?').run(cutSeq).changes;
    },
    async lastSeqBefore(ts) {
      return (lastBefore.get(ts) as Tip | undefined) ?? null;
    },
    async treeStatus() {
      return db.transaction(treeStatus)();
    },
    readTile,
    async tileRange(level, fromN, toN) {
      return (tileRangeStmt.all(level, fromN, toN) as { idx: number; hashes: unknown }[]).map((r) => ({ n: r.idx, data: blobBytes(r.hashes) }));
    },
    async readHashes(indexes) {
      return cache.readHashes(indexes, readTile);
    },
    async syncTree() {
      for (;;) {
        const s = syncStep.immediate();
        if (s.state !== 'behind') return s;
      }
    },
  };
}

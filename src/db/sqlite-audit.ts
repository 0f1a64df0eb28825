/**
 * SQLite audit storage. An append batch is one IMMEDIATE transaction: it reads
 * the tip, links and inserts every entry, and commits (fsync with
 * synchronous=FULL). IMMEDIATE takes the write lock up front, so several
 * processes appending to one file keep a single linear chain.
 */
import * as crypto from 'node:crypto';
import { createHash } from 'node:crypto';
import { canonicalEntry, type ChainRow, GENESIS_HASH } from '../audit/chain';
import type { AuditStorage, StoredCheckpoint, Tip } from '../audit/storage';
import { auditQuerySql } from './audit-sql';
import type { SqliteDb } from './sqlite';

// crypto.hash (one-shot, Node ≥ 20.12) is about twice as fast as createHash.
const oneShot = (crypto as unknown as { hash?: (alg: string, data: string, enc: 'hex') => string }).hash;

export function sha256Hex(s: string): string {
  return oneShot ? oneShot('sha256', s, 'hex') : createHash('sha256').update(s).digest('hex');
}

type RawRow = [number, string, string, string];
const toRow = (r: RawRow): ChainRow => ({ seq: r[0], entry: r[1], prevHash: r[2], hash: r[3] });

export function createSqliteAuditStorage(db: SqliteDb): AuditStorage {
  const tipStmt = db.prepare('SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1');
  const insertStmt = db.prepare('INSERT INTO audit_log (seq, entry, prev_hash, hash) VALUES (?, ?, ?, ?)');
  const rangeStmt = db.prepare('SELECT seq, entry, prev_hash, hash FROM audit_log WHERE seq BETWEEN ? AND ? ORDER BY seq').raw(true);
  const boundsStmt = db.prepare('SELECT min(seq) AS first, max(seq) AS last, count(*) AS count FROM audit_log');
  const cpInsert = db.prepare('INSERT INTO audit_checkpoints (kind, size, head_hash, time, jws) VALUES (?, ?, ?, ?, ?)');
  const cpLatest = db.prepare('SELECT id, kind, size, head_hash AS headHash, time, jws FROM audit_checkpoints ORDER BY size DESC, id DESC LIMIT 1');
  const cpLatestKind = db.prepare(
    'SELECT id, kind, size, head_hash AS headHash, time, jws FROM audit_checkpoints WHERE kind = ? ORDER BY size DESC, id DESC LIMIT 1',
  );
  const cpAll = db.prepare('SELECT id, kind, size, head_hash AS headHash, time, jws FROM audit_checkpoints ORDER BY id');
  const lastBefore = db.prepare('SELECT seq, hash FROM audit_log WHERE ts < ? ORDER BY seq DESC LIMIT 1');

  const currentTip = (): Tip => {
    const r = tipStmt.get() as { seq: number; hash: string } | undefined;
    if (r) return { seq: r.seq, hash: r.hash };
    // After a prune the table can be empty: continue from the latest prune cut.
    const cp = cpLatestKind.get('prune') as StoredCheckpoint | undefined;
    return cp ? { seq: cp.size, hash: cp.headHash } : { seq: 0, hash: GENESIS_HASH };
  };

  const appendTx = db.transaction((inputs: Parameters<AuditStorage['appendBatch']>[0]) => {
    let tip = currentTip();
    const out: Tip[] = [];
    for (const input of inputs) {
      const seq = tip.seq + 1;
      const entry = canonicalEntry(seq, input);
      const hash = sha256Hex(tip.hash + entry);
      insertStmt.run(seq, entry, tip.hash, hash);
      tip = { seq, hash };
      out.push(tip);
    }
    return out;
  });

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
      cpInsert.run(cp.kind, cp.size, cp.headHash, cp.time, cp.jws);
    },
    async latestCheckpoint(kind) {
      return ((kind ? cpLatestKind.get(kind) : cpLatest.get()) as StoredCheckpoint | undefined) ?? null;
    },
    async checkpoints() {
      return cpAll.all() as StoredCheckpoint[];
    },
    async deleteThrough(cutSeq) {
      return db.prepare('DELETE FROM audit_log WHERE seq <= ?').run(cutSeq).changes;
    },
    async lastSeqBefore(ts) {
      return (lastBefore.get(ts) as Tip | undefined) ?? null;
    },
  };
}

/**
 * PostgreSQL audit storage: one chain and one Merkle tree for any number of
 * processes. An append batch (one group commit of one process) is one
 * transaction that takes the audit advisory lock (pg_advisory_xact_lock, held to
 * COMMIT), reads the tip and the tree's edge, inserts the linked entries,
 * upserts their tiles and commits with synchronous_commit=on: the batch's
 * appends resolve only once the commit is durable. Batches of different
 * processes therefore follow one another; seq stays gapless.
 *
 * A failed transaction destroys its connection (never returned to the pool), so
 * nothing of a lost server lingers; the next append opens a new one.
 */
import type pg from 'pg';
import { canonicalEntry, type ChainRow, GENESIS_HASH } from '../audit/chain';
import { nodeTreeHasher } from '../audit/node-tlog';
import type { AuditStorage, StoredCheckpoint, Tip, TreeStatus } from '../audit/storage';
import type { Hash } from '../audit/tlog/merkle';
import { appendLeaves } from '../audit/tlog/tiles';
import { auditQuerySql } from './audit-sql';
import { blobBytes, type EdgeRow, TILE_LEVELS, TileTreeCache, tipOf, treeEdge, treeStatusOf } from './audit-tiles';
import { sha256Hex } from './sqlite-audit';

/** Entries the append path adds to a lagging tree itself; a larger gap is left to syncTree. */
const INLINE_CATCH_UP = 10_000;
/** Entries per transaction when syncTree backfills. */
const SYNC_CHUNK = 20_000;

/** The advisory lock key every append transaction holds (pg_advisory_xact_lock). */
export const LOCK_AUDIT = 0x6c6f6b69_02; // 'loki' 02

const CP_COLUMNS = 'id, kind, size, head_hash AS "headHash", time, jws, note';

/** The tip, the last tile of each level, and the oldest stored seq: one statement, one snapshot. */
const TIP_AND_EDGE_PG = `WITH levels(l) AS (VALUES ${Array.from({ length: TILE_LEVELS }, (_, l) => `(${l})`).join(', ')}),
tip AS (SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1)
SELECT levels.l AS level, t.idx AS idx, t.hashes AS hashes,
  (SELECT seq FROM tip) AS tip_seq, (SELECT hash FROM tip) AS tip_hash,
  (SELECT min(seq) FROM audit_log) AS first_seq
FROM levels LEFT JOIN audit_tiles t ON t.level = levels.l AND t.idx = (SELECT max(idx) FROM audit_tiles WHERE level = levels.l)
ORDER BY levels.l`;

type StateRow = EdgeRow & { first_seq: number | null };

interface RowShape {
  seq: number;
  entry: string;
  prev_hash: string;
  hash: string;
}
const toRow = (r: RowShape): ChainRow => ({ seq: r.seq, entry: r.entry, prevHash: r.prev_hash, hash: r.hash });

/** `?` placeholders (audit-sql.ts) as `$1, $2, …`. */
function numbered(sqlText: string): string {
  let i = 0;
  return sqlText.replace(/\?/g, () => `$${++i}`);
}

type Queryable = Pick<pg.PoolClient, 'query'>;

/**
 * Run `fn` in one transaction holding the audit lock. Any error rolls back and
 * destroys the connection (it may be the one a restarted server cut).
 */
async function locked<T>(pool: pg.Pool, fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await client.query('SET LOCAL synchronous_commit = on');
    await client.query('SELECT pg_advisory_xact_lock($1)', [LOCK_AUDIT]);
    const out = await fn(client);
    await client.query('COMMIT');
    client.release();
    return out;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    client.release(err instanceof Error ? err : true);
    throw err;
  }
}

export function createPgAuditStorage(pool: pg.Pool): AuditStorage {
  const cache = new TileTreeCache(8192, nodeTreeHasher);

  const latestCheckpoint = async (kind?: string, q: Queryable = pool): Promise<StoredCheckpoint | null> => {
    const r = kind
      ? await q.query(`SELECT ${CP_COLUMNS} FROM audit_checkpoints WHERE kind = $1 ORDER BY size DESC, id DESC LIMIT 1`, [kind])
      : await q.query(`SELECT ${CP_COLUMNS} FROM audit_checkpoints ORDER BY size DESC, id DESC LIMIT 1`);
    return (r.rows[0] as StoredCheckpoint | undefined) ?? null;
  };

  /** After a prune the table can be empty: continue from the latest prune cut. */
  const emptyTip = async (q: Queryable): Promise<Tip> => {
    const cp = await latestCheckpoint('prune', q);
    return cp ? { seq: cp.size, hash: cp.headHash } : { seq: 0, hash: GENESIS_HASH };
  };

  const readState = async (q: Queryable) => {
    const { rows } = await q.query<StateRow>(TIP_AND_EDGE_PG);
    const tip = tipOf(rows) ?? (await emptyTip(q));
    return { tip, tree: treeEdge(rows), firstSeq: rows[0]?.first_seq ?? null };
  };

  /** Leaf hashes of stored entries [from, to], or null when any is missing (pruned). */
  const leavesOf = async (q: Queryable, from: number, to: number): Promise<Hash[] | null> => {
    if (to < from) return [];
    const { rows } = await q.query<{ seq: number; entry: string }>('SELECT seq, entry FROM audit_log WHERE seq BETWEEN $1 AND $2 ORDER BY seq', [from, to]);
    if (rows.length !== to - from + 1 || rows[0]!.seq !== from) return null;
    return rows.map((r) => nodeTreeHasher.leafOfText(r.entry));
  };

  const writeTiles = async (q: Queryable, size: number, edge: Map<number, Uint8Array>, leaves: Hash[]) => {
    if (leaves.length === 0) return;
    const rows = appendLeaves(size, edge, leaves, nodeTreeHasher).rows;
    await q.query(
      `INSERT INTO audit_tiles (level, idx, hashes) SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bytea[])
       ON CONFLICT (level, idx) DO UPDATE SET hashes = excluded.hashes`,
      [rows.map((r) => r.level), rows.map((r) => r.n), rows.map((r) => Buffer.from(r.data.buffer, r.data.byteOffset, r.data.byteLength))],
    );
  };

  const readTile = async (level: number, n: number): Promise<Uint8Array | null> => {
    const { rows } = await pool.query<{ hashes: Buffer }>('SELECT hashes FROM audit_tiles WHERE level = $1 AND idx = $2', [level, n]);
    return rows[0] ? blobBytes(rows[0].hashes) : null;
  };

  return {
    async appendBatch(inputs) {
      if (inputs.length === 0) return [];
      return locked(pool, async (c) => {
        const { tip: start, tree } = await readState(c);
        let tip = start;
        let leaves: Hash[] | null = null;
        if (tree.intact && tree.size <= tip.seq && tip.seq - tree.size <= INLINE_CATCH_UP) leaves = await leavesOf(c, tree.size + 1, tip.seq);
        const out: Tip[] = [];
        const seqs: number[] = [];
        const entries: string[] = [];
        const prevs: string[] = [];
        const hashes: string[] = [];
        for (const input of inputs) {
          const seq = tip.seq + 1;
          const entry = canonicalEntry(seq, input);
          const hash = sha256Hex(tip.hash + entry);
          seqs.push(seq);
          entries.push(entry);
          prevs.push(tip.hash);
          hashes.push(hash);
          leaves?.push(nodeTreeHasher.leafOfText(entry));
          tip = { seq, hash };
          out.push(tip);
        }
        await c.query('INSERT INTO audit_log (seq, entry, prev_hash, hash) SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[])', [
          seqs,
          entries,
          prevs,
          hashes,
        ]);
        if (leaves) await writeTiles(c, tree.size, tree.edge, leaves);
        return out;
      });
    },
    async tip() {
      const { rows } = await pool.query<Tip>('SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1');
      return rows[0] ? { seq: rows[0].seq, hash: rows[0].hash } : emptyTip(pool);
    },
    async query(q) {
      const { sql, args } = auditQuerySql(q);
      const { rows } = await pool.query<RowShape>(numbered(sql), args);
      return rows.map(toRow);
    },
    async range(from, to) {
      const { rows } = await pool.query<RowShape>('SELECT seq, entry, prev_hash, hash FROM audit_log WHERE seq BETWEEN $1 AND $2 ORDER BY seq', [from, to]);
      return rows.map(toRow);
    },
    async bounds() {
      const { rows } = await pool.query<{ first: number | null; last: number | null; count: number }>(
        'SELECT min(seq) AS first, max(seq) AS last, count(*) AS count FROM audit_log',
      );
      return rows[0] ?? { first: null, last: null, count: 0 };
    },
    async insertCheckpoint(cp) {
      // A periodic checkpoint of a size another server already signed is not stored twice.
      await pool.query(
        `INSERT INTO audit_checkpoints (kind, size, head_hash, time, jws, note) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (size) WHERE kind = 'periodic' DO NOTHING`,
        [cp.kind, cp.size, cp.headHash, cp.time, cp.jws, cp.note ?? null],
      );
    },
    latestCheckpoint: (kind) => latestCheckpoint(kind),
    async latestNote() {
      const { rows } = await pool.query(`SELECT ${CP_COLUMNS} FROM audit_checkpoints WHERE note IS NOT NULL ORDER BY size DESC, id DESC LIMIT 1`);
      return (rows[0] as StoredCheckpoint | undefined) ?? null;
    },
    async checkpoints() {
      const { rows } = await pool.query(`SELECT ${CP_COLUMNS} FROM audit_checkpoints ORDER BY id`);
      return rows as StoredCheckpoint[];
    },
    async deleteThrough(cutSeq) {
      const r = await pool.query('DELETE FROM audit_log WHERE seq <= $1', [cutSeq]);
      return r.rowCount ?? 0;
    },
    async lastSeqBefore(ts) {
      const { rows } = await pool.query<Tip>('SELECT seq, hash FROM audit_log WHERE ts < $1 ORDER BY seq DESC LIMIT 1', [ts]);
      return rows[0] ?? null;
    },
    async treeStatus(): Promise<TreeStatus> {
      const { tip, tree, firstSeq } = await readState(pool);
      return treeStatusOf(tree.size, tip.seq, firstSeq, tree.intact);
    },
    readTile,
    async tileRange(level, fromN, toN) {
      const { rows } = await pool.query<{ idx: number; hashes: Buffer }>(
        'SELECT idx, hashes FROM audit_tiles WHERE level = $1 AND idx BETWEEN $2 AND $3 ORDER BY idx',
        [level, fromN, toN],
      );
      return rows.map((r) => ({ n: r.idx, data: blobBytes(r.hashes) }));
    },
    async readHashes(indexes) {
      return cache.readHashes(indexes, readTile);
    },
    async syncTree() {
      for (;;) {
        const s = await locked(pool, async (c): Promise<TreeStatus> => {
          const { tip, tree, firstSeq } = await readState(c);
          const status = treeStatusOf(tree.size, tip.seq, firstSeq, tree.intact);
          if (status.state !== 'behind') return status;
          const to = Math.min(tip.seq, tree.size + SYNC_CHUNK);
          const leaves = await leavesOf(c, tree.size + 1, to);
          if (!leaves) return { ...status, state: 'unavailable' };
          await writeTiles(c, tree.size, tree.edge, leaves);
          return treeStatusOf(to, tip.seq, tree.size + 1, true);
        });
        if (s.state !== 'behind') return s;
      }
    },
  };
}

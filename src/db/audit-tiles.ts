/**
 * The audit Merkle tree's storage, shared by the SQLite and D1 audit storages:
 * the `audit_tiles` table (tlog-tiles of height 8, one row per tile, the
 * rightmost tile of each level rewritten as it grows), the statements that read
 * the tree's edge together with the log's tip, and a cached hash reader for
 * proofs. Runtime-free.
 */
import type { TreeStatus } from '../audit/storage';
import { defaultHasher, HASH_SIZE, type Hash, type TreeHasher } from '../audit/tlog/merkle';
import { TILE_HEIGHT, TILE_WIDTH, tileExtent, tileForIndex, tileHash } from '../audit/tlog/tiles';

/** Levels read at the edge: 256^6 = 2^48 leaves. */
export const TILE_LEVELS = 6;

/** Upsert one tile row (full tiles are written once; the edge tile of a level is rewritten as it widens). */
export const UPSERT_TILE_SQL =
  'INSERT INTO audit_tiles (level, idx, hashes) VALUES (?, ?, ?) ON CONFLICT (level, idx) DO UPDATE SET hashes = excluded.hashes';
export const READ_TILE_SQL = 'SELECT hashes FROM audit_tiles WHERE level = ? AND idx = ?';
export const TILE_RANGE_SQL = 'SELECT idx, hashes FROM audit_tiles WHERE level = ? AND idx BETWEEN ? AND ? ORDER BY idx';

/**
 * One statement, so one consistent snapshot (D1 runs each statement atomically):
 * the last tile of every level (idx null where a level has none) and, on every
 * row, the tip. No compound SELECT (D1 limits their terms); the VALUES list is
 * not one, and each level's last tile is a primary-key lookup.
 */
export const TIP_AND_EDGE_SQL = `WITH levels(l) AS (VALUES ${Array.from({ length: TILE_LEVELS }, (_, l) => `(${l})`).join(', ')})
SELECT levels.l AS level, t.idx AS idx, t.hashes AS hashes,
  (SELECT seq FROM audit_log ORDER BY seq DESC LIMIT 1) AS tip_seq,
  (SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1) AS tip_hash
FROM levels LEFT JOIN audit_tiles t ON t.level = levels.l AND t.idx = (SELECT max(idx) FROM audit_tiles WHERE level = levels.l)`;

export interface EdgeRow {
  level: number;
  idx: number | null;
  hashes: unknown;
  tip_seq: number | null;
  tip_hash: string | null;
}

/** The tip from TIP_AND_EDGE_SQL's rows (null for an empty table). */
export function tipOf(rows: EdgeRow[]): { seq: number; hash: string } | null {
  const r = rows[0];
  return r && r.tip_seq !== null && r.tip_hash !== null ? { seq: r.tip_seq, hash: r.tip_hash } : null;
}

/** Blob values as bytes, whatever the driver returns (Buffer, ArrayBuffer, number array). */
export function blobBytes(v: unknown): Uint8Array {
  if (v instanceof Uint8Array) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  if (Array.isArray(v)) return Uint8Array.from(v as number[]);
  // Not a blob (someone wrote text into the column): its bytes, which then fail every check.
  return new TextEncoder().encode(String(v));
}

export interface TreeEdge {
  /** Leaves in the stored tree. */
  size: number;
  /** The partial tile of each level at `size` (what appendLeaves continues). */
  edge: Map<number, Uint8Array>;
  /** False when the stored edge does not fit the size (a damaged or edited tile store): the tree is left alone. */
  intact: boolean;
}

/** The tree's size and edge from the last tile of each level (rows with level ≥ 0 from TIP_AND_EDGE_SQL). */
export function treeEdge(rows: EdgeRow[]): TreeEdge {
  const last = new Map<number, { idx: number; data: Uint8Array }>();
  for (const r of rows) if (r.level >= 0 && r.idx !== null) last.set(r.level, { idx: r.idx, data: blobBytes(r.hashes) });
  const l0 = last.get(0);
  const size = l0 ? l0.idx * TILE_WIDTH + l0.data.length / HASH_SIZE : 0;
  const edge = new Map<number, Uint8Array>();
  let intact = !l0 || (l0.data.length % HASH_SIZE === 0 && l0.data.length > 0);
  for (let level = 0; level < TILE_LEVELS; level++) {
    const { full, partial } = tileExtent(size, level);
    const t = last.get(level);
    if (partial > 0) {
      if (!t || t.idx !== full || t.data.length !== partial * HASH_SIZE) intact = false;
      else edge.set(level, t.data);
    } else if (full > 0) {
      // No partial tile at this level: the last stored one is the full one before the edge.
      if (!t || t.idx !== full - 1 || t.data.length !== TILE_WIDTH * HASH_SIZE) intact = false;
    } else if (t) intact = false; // a tile above the tree's height
  }
  return { size, edge, intact };
}

/** Where the tree stands: see TreeStatus. `firstSeq`: the oldest entry still stored (null: none). */
export function treeStatusOf(size: number, logSize: number, firstSeq: number | null, intact = true): TreeStatus {
  let state: TreeStatus['state'];
  if (!intact) state = 'damaged';
  else if (size === logSize) state = 'complete';
  else if (size > logSize) state = 'ahead';
  else state = firstSeq !== null && firstSeq <= size + 1 ? 'behind' : 'unavailable';
  return { size, logSize, state };
}

/** Intra-tile levels below this are hashed from the tile's data when asked (at most 2^4 - 1 hashes); those at and above it are cached. */
const CACHED_FROM = 4;
/** Tile data kept to save re-reads (8 KB each). */
const SEEN_MAX = 512;

/**
 * Subtree hashes inside tiles, for proofs. A tile's data at a given width never
 * changes (tiles only grow), so for each (level, n, width) the hashes of its
 * subtrees of 16 or more leaves are kept (31 hashes, ~1 KB, for a full tile) in a
 * bounded LRU; smaller subtrees are hashed from the data on demand. A random
 * proof then costs a few hashes per tile once the tile has been seen.
 */
export class TileTreeCache {
  /** Per (level, n, width): the subtree hashes of 2^CACHED_FROM.. leaves, level by level, in one buffer. */
  private readonly upper = new Map<string, { buf: Uint8Array; offsets: number[] }>();
  constructor(
    private readonly max = 4096,
    private readonly hasher: TreeHasher = defaultHasher,
  ) {}

  private upperLevels(level: number, n: number, data: Uint8Array): { buf: Uint8Array; offsets: number[] } {
    const key = `${level}/${n}/${data.length}`;
    const hit = this.upper.get(key);
    if (hit) {
      this.upper.delete(key);
      this.upper.set(key, hit);
      return hit;
    }
    const span = 2 ** CACHED_FROM;
    let row: Hash[] = [];
    for (let i = 0; (i + 1) * span * HASH_SIZE <= data.length; i++) row.push(tileHash(data.subarray(i * span * HASH_SIZE, (i + 1) * span * HASH_SIZE), this.hasher));
    const rows: Hash[][] = [];
    while (row.length > 0) {
      rows.push(row);
      const up: Hash[] = [];
      for (let i = 0; i + 1 < row.length; i += 2) up.push(this.hasher.nodeHash(row[i]!, row[i + 1]!));
      row = up;
    }
    const offsets: number[] = [];
    let total = 0;
    for (const r of rows) {
      offsets.push(total);
      total += r.length;
    }
    const buf = new Uint8Array(total * HASH_SIZE);
    for (const [k, r] of rows.entries()) for (const [i, h] of r.entries()) buf.set(h, (offsets[k]! + i) * HASH_SIZE);
    const entry = { buf, offsets };
    this.upper.set(key, entry);
    if (this.upper.size > this.max) this.upper.delete(this.upper.keys().next().value as string);
    return entry;
  }

  /** The hash of the tile's 2^k hashes starting at hash index `first` (a multiple of 2^k). */
  subtree(level: number, n: number, data: Uint8Array, k: number, first: number): Hash {
    if (k < CACHED_FROM) return tileHash(data.subarray(first * HASH_SIZE, (first + 2 ** k) * HASH_SIZE), this.hasher);
    const { buf, offsets } = this.upperLevels(level, n, data);
    const at = (offsets[k - CACHED_FROM]! + first / 2 ** k) * HASH_SIZE;
    return buf.slice(at, at + HASH_SIZE);
  }

  /** The widest data seen for a tile: a tile's first W hashes never change, so any prefix read earlier stays right. */
  private readonly seen = new Map<string, Uint8Array>();

  /** Hashes by stored-hash index, given a way to read tiles (fetched up front, so D1 works too). */
  async readHashes(indexes: number[], readTile: (level: number, n: number) => Promise<Uint8Array | null>): Promise<Hash[]> {
    const tiles = new Map<string, Uint8Array | null>();
    const spots = indexes.map((x) => tileForIndex(TILE_HEIGHT, x));
    // What is needed of each tile, and whether a copy seen before already holds it.
    const need = new Map<string, number>();
    for (const { tile, end } of spots) {
      const k = `${tile.L}/${tile.N}`;
      need.set(k, Math.max(need.get(k) ?? 0, end));
    }
    await Promise.all(
      [...need].map(async ([k, end]) => {
        const have = this.seen.get(k);
        if (have && have.length >= end) {
          tiles.set(k, have);
          return;
        }
        const [level, n] = k.split('/').map(Number) as [number, number];
        const data = await readTile(level, n);
        tiles.set(k, data);
        if (data) {
          this.seen.delete(k);
          this.seen.set(k, data);
          if (this.seen.size > SEEN_MAX) this.seen.delete(this.seen.keys().next().value as string);
        }
      }),
    );
    return spots.map(({ tile, start, end }, i) => {
      const data = tiles.get(`${tile.L}/${tile.N}`);
      if (!data || data.length < end) throw new Error(`tlog: the hash at stored index ${indexes[i]} is not in the stored tiles`);
      const span = (end - start) / HASH_SIZE;
      return this.subtree(tile.L, tile.N, data, Math.log2(span), start / HASH_SIZE);
    });
  }
}

/**
 * C2SP tlog-tiles: tile coordinates and paths (height 8), tile data from
 * stored hashes (a port of Go's sumdb/tlog tile.go), entry bundles, and the
 * incremental tile builder the storages use when the log grows. Runtime-free.
 *
 * A tile at level L, index N and width W holds W consecutive hashes of tree
 * level 8·L starting at N·256; a full tile holds 256 (8,192 bytes). Paths:
 *   tile/<L>/<N>[.p/<W>]        hash tiles (L 0..63, no leading zeroes)
 *   tile/entries/<N>[.p/<W>]    entry bundles
 * N is written in 3-digit groups, all but the last prefixed with `x`:
 * 1234067 → x001/x234/067.
 */
import {
  defaultHasher,
  HASH_SIZE,
  type Hash,
  type HashReader,
  storedHashIndex,
  splitStoredHashIndex,
  type SyncHashReader,
  subTreeIndex,
  type TreeHasher,
} from './merkle';

export const TILE_HEIGHT = 8;
export const TILE_WIDTH = 256;
/** Level of entry bundles in a Tile (Go's `data` tiles are level -1 too). */
export const ENTRIES_LEVEL = -1;

export interface Tile {
  /** Height (8 for tlog-tiles; Go allows 1..30). */
  H: number;
  /** Level: 0..63, or -1 for an entry bundle. */
  L: number;
  /** Index within the level. */
  N: number;
  /** Width: 1..2^H, 2^H is a full tile. */
  W: number;
}

export class TilePathError extends Error {
  constructor(readonly path: string) {
    super(`malformed tile path ${JSON.stringify(path)}`);
    this.name = 'TilePathError';
  }
}

const POW2 = Array.from({ length: 64 }, (_, i) => 2 ** i);
const pow2 = (l: number) => POW2[l]!;
const shr = (n: number, k: number) => Math.floor(n / POW2[k]!);

/** The tile of height h and least width storing the given hash index, and that hash's byte range in it. */
export function tileForIndex(h: number, index: number): { tile: Tile; start: number; end: number } {
  if (h <= 0) throw new Error(`tileForIndex: invalid height ${h}`);
  let [level, n] = splitStoredHashIndex(index);
  const L = Math.floor(level / h);
  level -= L * h; // now level within tile
  const N = shr(n * pow2(level), h);
  n -= (N * pow2(h)) / pow2(level); // now n within tile at level
  const W = (n + 1) * pow2(level);
  return { tile: { H: h, L, N, W }, start: n * pow2(level) * HASH_SIZE, end: (n + 1) * pow2(level) * HASH_SIZE };
}

/** The subtree hash of the 2^k hashes in data (Go's tileHash; bottom-up, one pair at a time). */
export function tileHash(data: Uint8Array, hasher: TreeHasher = defaultHasher): Hash {
  const count = data.length / HASH_SIZE;
  if (count < 1 || !Number.isInteger(Math.log2(count))) throw new Error('bad math in tileHash');
  let level: Hash[] = [];
  for (let i = 0; i < count; i++) level.push(data.subarray(i * HASH_SIZE, (i + 1) * HASH_SIZE));
  while (level.length > 1) {
    const up: Hash[] = [];
    for (let i = 0; i < level.length; i += 2) up.push(hasher.nodeHash(level[i]!, level[i + 1]!));
    level = up;
  }
  return level[0]!.slice();
}

/** The hash at a stored hash index, from the data of the tile holding it (or a wider one). */
export function hashFromTile(t: Tile, data: Uint8Array, index: number, hasher: TreeHasher = defaultHasher): Hash {
  if (t.H < 1 || t.H > 30 || t.L < 0 || t.L >= 64 || t.W < 1 || t.W > pow2(t.H)) throw new Error(`invalid tile ${tilePath(t)}`);
  if (data.length < t.W * HASH_SIZE) throw new Error(`data len ${data.length} too short for tile ${tilePath(t)}`);
  const { tile: t1, start, end } = tileForIndex(t.H, index);
  if (t.L !== t1.L || t.N !== t1.N || t.W < t1.W) throw new Error(`index ${index} is in ${tilePath(t1)} not ${tilePath(t)}`);
  return tileHash(data.subarray(start, end), hasher);
}

/** The tiles to publish when the tree grows from oldTreeSize to newTreeSize (Go's NewTiles). */
export function newTiles(h: number, oldTreeSize: number, newTreeSize: number): Tile[] {
  if (h <= 0) throw new Error(`NewTiles: invalid height ${h}`);
  const tiles: Tile[] = [];
  for (let level = 0; shr(newTreeSize, h * level) > 0; level++) {
    const oldN = shr(oldTreeSize, h * level);
    const newN = shr(newTreeSize, h * level);
    for (let n = shr(oldN, h); n < shr(newN, h); n++) tiles.push({ H: h, L: level, N: n, W: pow2(h) });
    const n = shr(newN, h);
    const maxW = newN - n * pow2(h);
    let minW = 1;
    if (oldN > n * pow2(h)) minW = oldN - n * pow2(h);
    for (let w = minW; w <= maxW; w++) tiles.push({ H: h, L: level, N: n, W: w });
  }
  return tiles;
}

/** The stored hash indexes a tile's data consists of. */
export function tileIndexes(t: Tile): number[] {
  const size = t.W === 0 ? pow2(t.H) : t.W;
  const start = t.N * pow2(t.H);
  const out = new Array<number>(size);
  for (let i = 0; i < size; i++) out[i] = storedHashIndex(t.H * t.L, start + i);
  return out;
}

function joinHashes(hashes: Hash[], want: number): Uint8Array {
  if (hashes.length !== want) throw new Error(`tlog: ReadHashes(${want} indexes) = ${hashes.length} hashes`);
  const out = new Uint8Array(want * HASH_SIZE);
  for (let i = 0; i < want; i++) out.set(hashes[i]!, i * HASH_SIZE);
  return out;
}

/** A tile's data from stored hashes (Go's ReadTileData). */
export async function readTileData(t: Tile, r: HashReader): Promise<Uint8Array> {
  const indexes = tileIndexes(t);
  return joinHashes(await r(indexes), indexes.length);
}

export function readTileDataSync(t: Tile, r: SyncHashReader): Uint8Array {
  const indexes = tileIndexes(t);
  return joinHashes(r(indexes), indexes.length);
}

function formatN(n: number): string {
  let s = String(n % 1000).padStart(3, '0');
  while (n >= 1000) {
    n = Math.floor(n / 1000);
    s = `x${String(n % 1000).padStart(3, '0')}/${s}`;
  }
  return s;
}

/**
 * The C2SP tlog-tiles path of a height-8 tile: `tile/<L>/<N>[.p/<W>]`, or
 * `tile/entries/<N>[.p/<W>]` for an entry bundle (L = -1).
 */
export function tilePath(t: Tile): string {
  const level = t.L === ENTRIES_LEVEL ? 'entries' : String(t.L);
  const partial = t.W !== pow2(t.H) ? `.p/${t.W}` : '';
  return `tile/${level}/${formatN(t.N)}${partial}`;
}

/** Go's Tile.Path, with the height: `tile/<H>/<L|data>/<N>[.p/<W>]`. */
export function goTilePath(t: Tile): string {
  const level = t.L === ENTRIES_LEVEL ? 'data' : String(t.L);
  const partial = t.W !== pow2(t.H) ? `.p/${t.W}` : '';
  return `tile/${t.H}/${level}/${formatN(t.N)}${partial}`;
}

const LEVEL = /^(?:0|[1-9][0-9]?)$/;
const WIDTH = /^[1-9][0-9]{0,2}$/;

/** Parse a C2SP tlog-tiles path (height 8); anything not in canonical form is refused. */
export function parseTilePath(path: string): Tile {
  const f = path.split('/');
  if (f.length < 3 || f[0] !== 'tile') throw new TilePathError(path);
  let L: number;
  if (f[1] === 'entries') L = ENTRIES_LEVEL;
  else if (LEVEL.test(f[1]!) && Number(f[1]) <= 63) L = Number(f[1]);
  else throw new TilePathError(path);
  let parts = f.slice(2);
  let W = TILE_WIDTH;
  const dotP = parts.length >= 2 ? parts[parts.length - 2]! : '';
  if (dotP.endsWith('.p')) {
    const w = parts[parts.length - 1]!;
    if (!WIDTH.test(w) || Number(w) >= TILE_WIDTH) throw new TilePathError(path);
    W = Number(w);
    parts = [...parts.slice(0, -2), dotP.slice(0, -2)];
  }
  let N = 0;
  for (const [i, s] of parts.entries()) {
    const last = i === parts.length - 1;
    if (!(last ? /^[0-9]{3}$/ : /^x[0-9]{3}$/).test(s)) throw new TilePathError(path);
    N = N * 1000 + Number(last ? s : s.slice(1));
  }
  if (!Number.isSafeInteger(N)) throw new TilePathError(path);
  const t: Tile = { H: TILE_HEIGHT, L, N, W };
  if (tilePath(t) !== path) throw new TilePathError(path);
  return t;
}

/**
 * The widths of the tiles a tree of `size` leaves has at each level: the full
 * tiles below `full` and a partial one of `partial` (0: none).
 */
export function tileExtent(size: number, level: number): { full: number; partial: number } {
  const atLevel = Math.floor(size / TILE_WIDTH ** level);
  return { full: Math.floor(atLevel / TILE_WIDTH), partial: atLevel % TILE_WIDTH };
}

/**
 * Whether the tree of `size` leaves has the given tile: full tiles below the
 * partial edge, and the partial tile at most as wide as the edge.
 */
export function tileInTree(t: Tile, size: number): boolean {
  const level = t.L === ENTRIES_LEVEL ? 0 : t.L;
  const { full, partial } = tileExtent(size, level);
  if (t.N < full) return t.W === TILE_WIDTH;
  return t.N === full && t.W < TILE_WIDTH && t.W <= partial;
}

export class EntryBundleError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'EntryBundleError';
  }
}

/** An entry bundle: each entry as a big-endian uint16 length and its bytes. */
export function formatEntryBundle(entries: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const [i, e] of entries.entries()) {
    if (e.length > 0xffff) throw new EntryBundleError(`entry ${i} is ${e.length} bytes, more than an entry bundle can hold (65535)`);
    n += 2 + e.length;
  }
  const out = new Uint8Array(n);
  let o = 0;
  for (const e of entries) {
    out[o] = e.length >> 8;
    out[o + 1] = e.length & 0xff;
    out.set(e, o + 2);
    o += 2 + e.length;
  }
  return out;
}

export function parseEntryBundle(data: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  let o = 0;
  while (o < data.length) {
    if (o + 2 > data.length) throw new EntryBundleError(`truncated length prefix at byte ${o}`);
    const len = (data[o]! << 8) | data[o + 1]!;
    if (o + 2 + len > data.length) throw new EntryBundleError(`entry ${out.length} runs past the end of the bundle`);
    out.push(data.subarray(o + 2, o + 2 + len));
    o += 2 + len;
  }
  return out;
}

/** One stored tile row: the hashes of tile (level, n), W = data.length / 32. */
export interface TileRow {
  level: number;
  n: number;
  data: Uint8Array;
}

/**
 * The tiles a tree of `size` leaves is still filling: at each level, the
 * partial (rightmost) tile's coordinates and current width. The storages read
 * exactly these before an append.
 */
export function edgeTiles(size: number): { level: number; n: number; width: number }[] {
  const out: { level: number; n: number; width: number }[] = [];
  for (let level = 0; level === 0 || Math.floor(size / TILE_WIDTH ** level) > 0; level++) {
    const { full, partial } = tileExtent(size, level);
    out.push({ level, n: full, width: partial });
  }
  return out;
}

/**
 * Appends leaf hashes to a tiled tree of `size` leaves. `edge` gives the data of
 * the partial tiles (see edgeTiles; missing = empty). Returns the new size and
 * every tile row that changed (full tiles once, partial tiles with their new
 * width), to be written in the same transaction as the entries.
 */
export function appendLeaves(size: number, edge: Map<number, Uint8Array>, leafHashes: Hash[], hasher: TreeHasher = defaultHasher): { size: number; rows: TileRow[] } {
  const levels: { n: number; buf: Uint8Array; w: number; dirty: boolean }[] = [];
  const rows = new Map<string, TileRow>();
  const level = (l: number) => {
    let s = levels[l];
    if (!s) {
      const { full, partial } = tileExtent(size, l);
      const buf = new Uint8Array(TILE_WIDTH * HASH_SIZE);
      const have = edge.get(l);
      if (partial > 0) {
        if (!have || have.length < partial * HASH_SIZE) throw new Error(`tile ${l}/${full} is missing or shorter than ${partial} hashes`);
        buf.set(have.subarray(0, partial * HASH_SIZE));
      }
      s = { n: full, buf, w: partial, dirty: false };
      levels[l] = s;
    }
    return s;
  };
  const push = (l: number, h: Hash) => {
    const s = level(l);
    s.buf.set(h, s.w * HASH_SIZE);
    s.w++;
    s.dirty = true;
    if (s.w === TILE_WIDTH) {
      rows.set(`${l}/${s.n}`, { level: l, n: s.n, data: s.buf.slice() });
      const root = tileHash(s.buf, hasher);
      s.n++;
      s.w = 0;
      s.dirty = false;
      push(l + 1, root);
    }
  };
  for (const h of leafHashes) push(0, h);
  for (const [l, s] of levels.entries()) {
    if (s?.dirty && s.w > 0) rows.set(`${l}/${s.n}`, { level: l, n: s.n, data: s.buf.slice(0, s.w * HASH_SIZE) });
  }
  return { size: size + leafHashes.length, rows: [...rows.values()] };
}

/**
 * A HashReader over stored tiles: `readTile(level, n)` returns the stored data
 * of tile (level, n) (possibly wider than needed) or null. Any stored hash of a
 * tree whose tiles are stored can be read (hashes between tile levels are
 * recomputed, as in Go's HashFromTile).
 */
export function tileHashReader(readTile: (level: number, n: number) => Uint8Array | null, hasher: TreeHasher = defaultHasher): SyncHashReader {
  return (indexes) =>
    indexes.map((x) => {
      const { tile, start, end } = tileForIndex(TILE_HEIGHT, x);
      const data = readTile(tile.L, tile.N);
      if (!data || data.length < end) throw new Error(`tlog: tile ${tilePath(tile)} is not stored`);
      return tileHash(data.subarray(start, end), hasher);
    });
}

/** The tiles (level, n) a set of stored hash indexes lives in, for storages that fetch ahead (D1). */
export function tilesForIndexes(indexes: number[]): { level: number; n: number }[] {
  const seen = new Map<string, { level: number; n: number }>();
  for (const x of indexes) {
    const { tile } = tileForIndex(TILE_HEIGHT, x);
    seen.set(`${tile.L}/${tile.N}`, { level: tile.L, n: tile.N });
  }
  return [...seen.values()];
}

/** The stored hash indexes of the tree hash of `size`, for planning reads. */
export function rootIndexes(size: number): number[] {
  return size === 0 ? [] : subTreeIndex(0, size);
}

/**
 * Audit export: JSONL with a header (origin, public key), every entry as stored
 * (seq, entry text, prev_hash, hash) and every checkpoint. `verifyExport` checks
 * such a file offline with the same verifier as the live log.
 */
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import type { JWK } from 'jose';
import { TILE_LEVELS, TileTreeCache, treeEdge, treeStatusOf } from '../db/audit-tiles';
import type { ChainRow, VerifyResult } from './chain';
import { type CheckpointSigner, sequentialChecker, verifyStorage } from './log';
import { nodeTreeHasher } from './node-tlog';
import { checkpointVerifier } from './signer';
import type { AuditStorage, StoredCheckpoint, Tip } from './storage';
import { NoteError, noteVerifier } from './tlog/note';
import { fromBase64 } from './tlog/sha256';
import type { NoteVerifier } from './tlog/note';
import type { ExternalCheckpoint } from './verify';

export interface ExportHeader {
  type: 'header';
  format: 'loki-audit-export/1';
  origin: string | null;
  public_jwk: JWK | null;
  /** The C2SP note verifier key (`name+id+key`) of the checkpoint notes, when the log has one. */
  note_vkey?: string | null;
  exported_at: string;
}

/** One stored tile of the Merkle tree. */
export interface ExportTile {
  level: number;
  n: number;
  data: Uint8Array;
}

export class ExportFormatError extends Error {}

/** An in-memory, read-only AuditStorage over parsed export lines. */
export function memoryStorage(rows: ChainRow[], checkpoints: StoredCheckpoint[], tiles: ExportTile[] = []): AuditStorage {
  const sorted = [...rows].sort((a, b) => a.seq - b.seq);
  const tileMap = new Map(tiles.map((t) => [`${t.level}/${t.n}`, t.data]));
  const readTile = async (level: number, n: number) => tileMap.get(`${level}/${n}`) ?? null;
  const cache = new TileTreeCache(256, nodeTreeHasher);
  const lastTiles = () => {
    const last = new Map<number, ExportTile>();
    for (const t of tiles) if (t.level < TILE_LEVELS && (!last.get(t.level) || last.get(t.level)!.n < t.n)) last.set(t.level, t);
    return [...last.values()].map((t) => ({ level: t.level, idx: t.n, hashes: t.data, tip_seq: null, tip_hash: null }));
  };
  const readOnly = async (): Promise<never> => {
    throw new Error('export storage is read-only');
  };
  return {
    appendBatch: readOnly,
    insertCheckpoint: readOnly,
    deleteThrough: readOnly,
    async tip(): Promise<Tip> {
      const last = sorted[sorted.length - 1];
      return last ? { seq: last.seq, hash: last.hash } : { seq: 0, hash: '' };
    },
    async query() {
      return sorted;
    },
    async range(from, to) {
      // Keep the export's own order so a reordered file is detected.
      return rows.filter((r) => r.seq >= from && r.seq <= to);
    },
    async bounds() {
      return { first: sorted[0]?.seq ?? null, last: sorted[sorted.length - 1]?.seq ?? null, count: rows.length };
    },
    async latestCheckpoint(kind) {
      const list = checkpoints.filter((c) => !kind || c.kind === kind).sort((a, b) => a.size - b.size);
      return list[list.length - 1] ?? null;
    },
    async checkpoints() {
      return checkpoints;
    },
    async latestNote() {
      const list = checkpoints.filter((c) => c.note).sort((a, b) => a.size - b.size);
      return list[list.length - 1] ?? null;
    },
    async lastSeqBefore() {
      return null;
    },
    async treeStatus() {
      const edge = treeEdge(lastTiles());
      const last = sorted[sorted.length - 1];
      const cut = checkpoints.filter((c) => c.kind === 'prune').sort((a, b) => a.size - b.size).pop();
      return treeStatusOf(edge.size, last?.seq ?? cut?.size ?? 0, sorted[0]?.seq ?? null, edge.intact);
    },
    readTile,
    async tileRange(level, fromN, toN) {
      return tiles.filter((t) => t.level === level && t.n >= fromN && t.n <= toN).sort((a, b) => a.n - b.n);
    },
    async readHashes(indexes) {
      return cache.readHashes(indexes, readTile);
    },
    async syncTree() {
      return this.treeStatus();
    },
  };
}

export async function readExport(file: string): Promise<{ header: ExportHeader; rows: ChainRow[]; checkpoints: StoredCheckpoint[]; tiles: ExportTile[] }> {
  const rl = createInterface({ input: createReadStream(file, { encoding: 'utf8' }), crlfDelay: Number.POSITIVE_INFINITY });
  let header: ExportHeader | null = null;
  const rows: ChainRow[] = [];
  const checkpoints: StoredCheckpoint[] = [];
  const tiles: ExportTile[] = [];
  let lineNo = 0;
  for await (const line of rl) {
    lineNo++;
    if (line.trim() === '') continue;
    let obj: Record<string, unknown>;
    try {
      obj = JSON.parse(line) as Record<string, unknown>;
    } catch {
      throw new ExportFormatError(`line ${lineNo} is not valid JSON (truncated or corrupt export)`);
    }
    if (obj.type === 'header') header = obj as unknown as ExportHeader;
    else if (obj.type === 'entry') {
      if (typeof obj.seq !== 'number' || typeof obj.entry !== 'string' || typeof obj.prev_hash !== 'string' || typeof obj.hash !== 'string') {
        throw new ExportFormatError(`line ${lineNo}: entry is missing seq, entry, prev_hash or hash`);
      }
      rows.push({ seq: obj.seq, entry: obj.entry, prevHash: obj.prev_hash, hash: obj.hash });
    } else if (obj.type === 'checkpoint') {
      if (typeof obj.size !== 'number' || typeof obj.head_hash !== 'string' || typeof obj.jws !== 'string') {
        throw new ExportFormatError(`line ${lineNo}: checkpoint is missing size, head_hash or jws`);
      }
      checkpoints.push({
        id: checkpoints.length + 1,
        kind: String(obj.kind ?? 'periodic'),
        size: obj.size,
        headHash: obj.head_hash,
        time: Number(obj.time ?? 0),
        jws: obj.jws,
        note: typeof obj.note === 'string' ? obj.note : null,
      });
    } else if (obj.type === 'tile') {
      const data = typeof obj.hashes === 'string' ? fromBase64(obj.hashes) : null;
      if (!Number.isSafeInteger(obj.level) || !Number.isSafeInteger(obj.n) || !data) throw new ExportFormatError(`line ${lineNo}: tile is missing level, n or base64 hashes`);
      tiles.push({ level: obj.level as number, n: obj.n as number, data });
    } else throw new ExportFormatError(`line ${lineNo}: unknown record type ${JSON.stringify(obj.type)}`);
  }
  if (header?.format !== 'loki-audit-export/1') throw new ExportFormatError('not a Loki audit export (no header line)');
  return { header, rows, checkpoints, tiles };
}

export async function verifyExport(
  file: string,
  opts: { external?: string | ExternalCheckpoint | null; publicJwk?: JWK | null; noteKey?: string | null; sha256: (s: string) => string },
): Promise<VerifyResult> {
  const { header, rows, checkpoints, tiles } = await readExport(file);
  const jwk = opts.publicJwk ?? header.public_jwk;
  let signer: CheckpointSigner | null = null;
  if (jwk) {
    const verify = await checkpointVerifier(jwk);
    signer = {
      origin: header.origin ?? '',
      verify,
      sign: async () => {
        throw new Error('read-only');
      },
      publicJwk: async () => jwk as Record<string, unknown>,
    };
  }
  const vkey = opts.noteKey ?? header.note_vkey ?? null;
  let verifier: NoteVerifier | null = null;
  if (vkey) {
    try {
      verifier = await noteVerifier(vkey);
    } catch (err) {
      if (err instanceof NoteError) throw new ExportFormatError(`the note verifier key is not valid (${err.message})`);
      throw err;
    }
  }
  const storage = memoryStorage(rows, checkpoints, tiles);
  return verifyStorage(storage, {
    signer,
    tlog: verifier ? { verifier } : null,
    // An export made before notes existed has no genesis checkpoint to require.
    requireGenesis: Boolean(verifier) && checkpoints.some((c) => c.note),
    external: opts.external ?? null,
    hasher: nodeTreeHasher,
    rangeChecker: sequentialChecker(storage, opts.sha256, nodeTreeHasher),
  });
}

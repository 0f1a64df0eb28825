/**
 * Audit export: JSONL with a header (origin, public key), every entry as stored
 * (seq, entry text, prev_hash, hash) and every checkpoint. `verifyExport` checks
 * such a file offline with the same verifier as the live log.
 */
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import type { JWK } from 'jose';
import type { ChainRow, VerifyResult } from './chain';
import { type CheckpointSigner, sequentialChecker, verifyStorage } from './log';
import { checkpointVerifier } from './signer';
import type { AuditStorage, StoredCheckpoint, Tip } from './storage';

export interface ExportHeader {
  type: 'header';
  format: 'loki-audit-export/1';
  origin: string | null;
  public_jwk: JWK | null;
  exported_at: string;
}

export class ExportFormatError extends Error {}

/** An in-memory, read-only AuditStorage over parsed export lines. */
export function memoryStorage(rows: ChainRow[], checkpoints: StoredCheckpoint[]): AuditStorage {
  const sorted = [...rows].sort((a, b) => a.seq - b.seq);
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
    async lastSeqBefore() {
      return null;
    },
  };
}

export async function readExport(file: string): Promise<{ header: ExportHeader; rows: ChainRow[]; checkpoints: StoredCheckpoint[] }> {
  const rl = createInterface({ input: createReadStream(file, { encoding: 'utf8' }), crlfDelay: Number.POSITIVE_INFINITY });
  let header: ExportHeader | null = null;
  const rows: ChainRow[] = [];
  const checkpoints: StoredCheckpoint[] = [];
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
      });
    } else throw new ExportFormatError(`line ${lineNo}: unknown record type ${JSON.stringify(obj.type)}`);
  }
  if (header?.format !== 'loki-audit-export/1') throw new ExportFormatError('not a Loki audit export (no header line)');
  return { header, rows, checkpoints };
}

export async function verifyExport(
  file: string,
  opts: { external?: string | null; publicJwk?: JWK | null; sha256: (s: string) => string },
): Promise<VerifyResult> {
  const { header, rows, checkpoints } = await readExport(file);
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
  const storage = memoryStorage(rows, checkpoints);
  return verifyStorage(storage, { signer, external: opts.external ?? null, rangeChecker: sequentialChecker(storage, opts.sha256) });
}

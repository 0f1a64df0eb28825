/**
 * C2SP tlog-proof (c2sp.org/tlog-proof@v1): an offline-verifiable proof that an
 * entry is in a transparency log. Runtime-free.
 *
 *   c2sp.org/tlog-proof@v1
 *   extra <base64>               (optional; here: the entry itself, see below)
 *   index <zero-based index>
 *   <base64 hash>                (inclusion proof, the leaf's sibling first)
 *   …
 *                                (empty line)
 *   <checkpoint note, verbatim, with its signatures>
 *
 * The extra data is unauthenticated by the format. This log puts the entry's
 * canonical text there, so a proof is self-contained: a verifier hashes it as
 * the leaf and the inclusion proof then authenticates it against the signed
 * checkpoint. A verifier given the entry separately uses that instead.
 */
import { checkRecord, defaultHasher, HASH_SIZE, type Hash, TlogError, type TreeHasher } from './merkle';
import { type Checkpoint, type Note, NoteError, type NoteVerifier, openCheckpoint } from './note';
import { bytesEqual, fromBase64, toBase64 } from './sha256';

export const TLOG_PROOF_HEADER = 'c2sp.org/tlog-proof@v1';

export interface TlogProof {
  /** Opaque extra data (null when the line is absent). */
  extra: Uint8Array | null;
  /** Zero-based index of the entry in the log. */
  index: number;
  /** The inclusion proof, leaf's sibling first, up to the root's child. */
  proof: Hash[];
  /** The signed checkpoint note, verbatim. */
  checkpoint: string;
}

export class ProofFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProofFormatError';
  }
}

export function formatTlogProof(p: TlogProof): string {
  if (!Number.isSafeInteger(p.index) || p.index < 0) throw new ProofFormatError(`invalid index ${p.index}`);
  for (const h of p.proof) if (h.length !== HASH_SIZE) throw new ProofFormatError('proof hashes must be 32 bytes');
  if (!p.checkpoint.endsWith('\n')) throw new ProofFormatError('the checkpoint note must end in a newline');
  let s = `${TLOG_PROOF_HEADER}\n`;
  if (p.extra !== null) s += `extra ${toBase64(p.extra)}\n`;
  s += `index ${p.index}\n`;
  for (const h of p.proof) s += `${toBase64(h)}\n`;
  return `${s}\n${p.checkpoint}`;
}

/** Parse a .tlog-proof file; throws ProofFormatError naming the line at fault. */
export function parseTlogProof(text: string): TlogProof {
  const lines = text.split('\n');
  let i = 0;
  const bad = (why: string) => new ProofFormatError(`line ${i + 1}: ${why}`);
  if (lines[i] !== TLOG_PROOF_HEADER) throw bad(`expected ${JSON.stringify(TLOG_PROOF_HEADER)}`);
  i++;
  let extra: Uint8Array | null = null;
  if (lines[i]?.startsWith('extra ')) {
    extra = fromBase64(lines[i]!.slice('extra '.length));
    if (!extra) throw bad('the extra data is not base64');
    i++;
  }
  const m = /^index (0|[1-9][0-9]*)$/.exec(lines[i] ?? '');
  if (!m || !Number.isSafeInteger(Number(m[1]))) throw bad('expected "index N" (a decimal without leading zeroes)');
  const index = Number(m[1]);
  i++;
  const proof: Hash[] = [];
  for (; i < lines.length && lines[i] !== ''; i++) {
    const h = fromBase64(lines[i]!);
    if (!h || h.length !== HASH_SIZE) throw bad('an inclusion proof line is not a base64 SHA-256 hash');
    proof.push(h);
  }
  if (i >= lines.length) throw bad('missing the empty line before the checkpoint');
  if (proof.length > 64) throw bad('more than 64 proof hashes');
  i++;
  const checkpoint = lines.slice(i).join('\n');
  if (checkpoint === '') throw bad('missing the checkpoint');
  return { extra, index, proof, checkpoint };
}

export type ProofFailure = 'bad_checkpoint' | 'wrong_origin' | 'index_out_of_range' | 'inclusion_failed' | 'no_entry';

export class ProofVerifyError extends Error {
  constructor(
    readonly reason: ProofFailure,
    message: string,
  ) {
    super(message);
    this.name = 'ProofVerifyError';
  }
}

export interface VerifiedProof {
  checkpoint: Checkpoint & { extensions: string[] };
  note: Note;
  index: number;
  entry: Uint8Array;
  leafHash: Hash;
}

/**
 * Verify a tlog-proof offline: the checkpoint is signed by a trusted key (and
 * has the expected origin, when given), and the entry (given, else the extra
 * data) is the leaf at `index` of that checkpoint's tree. Throws ProofVerifyError.
 */
export async function verifyTlogProof(
  p: TlogProof,
  opts: { verifiers: NoteVerifier[]; origin?: string; entry?: Uint8Array | null; hasher?: TreeHasher },
): Promise<VerifiedProof> {
  const hasher = opts.hasher ?? defaultHasher;
  let opened: Awaited<ReturnType<typeof openCheckpoint>>;
  try {
    opened = await openCheckpoint(p.checkpoint, opts.verifiers);
  } catch (err) {
    if (err instanceof NoteError) throw new ProofVerifyError('bad_checkpoint', `checkpoint: ${err.message}`);
    throw err;
  }
  const { checkpoint, note } = opened;
  if (opts.origin !== undefined && checkpoint.origin !== opts.origin) {
    throw new ProofVerifyError('wrong_origin', `checkpoint origin ${JSON.stringify(checkpoint.origin)} is not ${JSON.stringify(opts.origin)}`);
  }
  if (p.index >= checkpoint.size) throw new ProofVerifyError('index_out_of_range', `index ${p.index} is not below the checkpoint's tree size ${checkpoint.size}`);
  const entry = opts.entry ?? p.extra;
  if (!entry) throw new ProofVerifyError('no_entry', 'no entry to check: the proof carries none and none was given');
  const leafHash = hasher.recordHash(entry);
  try {
    checkRecord(p.proof, checkpoint.size, checkpoint.rootHash, p.index, leafHash, hasher);
  } catch (err) {
    if (err instanceof TlogError) {
      const which = opts.entry && p.extra && !bytesEqual(opts.entry, p.extra) ? ' (the given entry differs from the one in the proof)' : '';
      throw new ProofVerifyError('inclusion_failed', `the entry is not at index ${p.index} of the tree of size ${checkpoint.size}${which}`);
    }
    throw err;
  }
  return { checkpoint, note, index: p.index, entry, leafHash };
}

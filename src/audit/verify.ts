/**
 * verifyLogIntegrity: everything the audit log can be checked against, in one
 * pass. Runtime-free; the row scan is injected (parallel worker threads on
 * Node, a sequential scan elsewhere).
 *
 *  1. the hash chain, row by row (hash_mismatch, missing_entry, chain_broken,
 *     seq_mismatch), from genesis or from the signed prune cut;
 *  2. the Merkle tree: every stored leaf hash against its entry, every full tile
 *     against its parent's hash (tree_mismatch), a tree with more leaves than
 *     the log has entries (truncated: the tail was deleted, the tiles kept);
 *  3. every stored checkpoint: the JWS and the C2SP note signature
 *     (bad_checkpoint_signature), its size against the log (truncated), its head
 *     hash against the row and its root against the tree (checkpoint_mismatch),
 *     and each note against the next larger one (checkpoint_inconsistent: no
 *     consistency proof between them);
 *  4. a log with a note key but no genesis checkpoint (genesis_checkpoint_missing);
 *  5. a checkpoint the auditor saved (JWS or note), and witness cosignatures on
 *     it or on the latest note (witness_cosignature_missing, bad_witness_cosignature).
 *
 * What none of this can detect without something kept outside the database
 * (a saved checkpoint, syslog, a witness) is written in docs/audit-verification.md.
 */
import { type CheckpointBody, type ChainRow, checkRun, GENESIS_HASH, type RangeFailure, type VerifyResult } from './chain';
import type { CheckpointSigner, RangeChecker } from './log';
import type { AuditStorage, StoredCheckpoint, TreeStatus } from './storage';
import { checkTree, defaultHasher, EMPTY_TREE_ROOT, type Hash, proveTree, TlogError, type TreeHasher, treeHash } from './tlog/merkle';
import { NoteError, type NoteVerifier, openNote, parseCheckpoint } from './tlog/note';
import { bytesEqual, toBase64, utf8 } from './tlog/sha256';
import { TILE_WIDTH, tileHash } from './tlog/tiles';

const HASH = 32;

/** The log's note key, for verifying checkpoint notes. */
export interface TlogVerification {
  verifier: NoteVerifier;
}

export interface ExternalCheckpoint {
  /** A JWS checkpoint saved earlier. */
  jws?: string | null;
  /** A C2SP checkpoint note saved earlier (may carry witness cosignatures). */
  note?: string | null;
}

export interface VerifyOptions {
  signer: CheckpointSigner | null;
  tlog?: TlogVerification | null;
  /** A checkpoint saved outside the database: a JWS or note string, or both. */
  external: string | ExternalCheckpoint | null;
  /** Witness cosignature verifiers (type 0x04): each must have cosigned the saved note, else the latest stored note. */
  witnesses?: NoteVerifier[];
  /** Report a log that has a note key but no genesis checkpoint (default: when `tlog` is given). */
  requireGenesis?: boolean;
  rangeChecker: RangeChecker;
  hasher?: TreeHasher;
  /** The note to check witness cosignatures on, for a stored checkpoint (default: its note column). */
  cosignedNote?: (cp: StoredCheckpoint) => Promise<string | null>;
}

const CHUNK = 5000;

/** Whether text is a C2SP signed note rather than a JWS. */
export function looksLikeNote(text: string): boolean {
  return text.includes('\n\n\u2014 ');
}

/**
 * Leaves of rows against the level-0 tiles, and each full level-0 tile whose
 * first leaf is in [from, to] against its hash in level 1. Returns the first
 * failing seq (tree_mismatch) or null. Used by the sequential checker; the
 * Node worker threads do the same in plain JavaScript (verify-worker.js).
 */
export async function checkTreeRun(
  storage: AuditStorage,
  rows: ChainRow[],
  from: number,
  to: number,
  treeSize: number,
  hasher: TreeHasher,
): Promise<RangeFailure | null> {
  const last = Math.min(to, treeSize);
  if (last < from) return null;
  const t0 = Math.floor((from - 1) / TILE_WIDTH);
  const t1 = Math.floor((last - 1) / TILE_WIDTH);
  const tiles = new Map((await storage.tileRange(0, t0, t1)).map((t) => [t.n, t.data]));
  for (const r of rows) {
    if (r.seq > last) break;
    const i = r.seq - 1;
    const data = tiles.get(Math.floor(i / TILE_WIDTH));
    const off = (i % TILE_WIDTH) * HASH;
    if (!data || data.length < off + HASH || !bytesEqual(data.subarray(off, off + HASH), hasher.recordHash(utf8(r.entry)))) {
      return { seq: r.seq, reason: 'tree_mismatch' };
    }
  }
  // Full tiles starting in this range: their root against level 1.
  const firstFull = Math.ceil((from - 1) / TILE_WIDTH);
  const lastFull = Math.min(Math.floor((last - 1) / TILE_WIDTH), Math.floor(treeSize / TILE_WIDTH) - 1);
  if (lastFull >= firstFull) {
    const parents = new Map((await storage.tileRange(1, Math.floor(firstFull / TILE_WIDTH), Math.floor(lastFull / TILE_WIDTH))).map((t) => [t.n, t.data]));
    for (let n = firstFull; n <= lastFull; n++) {
      const data = tiles.get(n);
      const parent = parents.get(Math.floor(n / TILE_WIDTH));
      const off = (n % TILE_WIDTH) * HASH;
      if (!data || data.length !== TILE_WIDTH * HASH || !parent || parent.length < off + HASH || !bytesEqual(tileHash(data, hasher), parent.subarray(off, off + HASH))) {
        return { seq: n * TILE_WIDTH + 1, reason: 'tree_mismatch' };
      }
    }
  }
  return null;
}

/** A sequential checker over storage.range (chain, and the tree when `tree` is given); Node swaps in a parallel one. */
export function sequentialChecker(storage: AuditStorage, sha256: (s: string) => string, hasher: TreeHasher = defaultHasher): RangeChecker {
  return async (from, to, expectedPrev, tree) => {
    let prev = expectedPrev;
    let count = 0;
    for (let start = from; start <= to; start += CHUNK) {
      const end = Math.min(to, start + CHUNK - 1);
      const rows = await storage.range(start, end);
      const r = checkRun(rows, start, prev, sha256);
      const t = tree && tree.size >= start ? await checkTreeRun(storage, rows, start, end, tree.size, hasher) : null;
      if (t && (!r.failure || t.seq < r.failure.seq)) {
        return { failure: t, count: count + (t.seq - start), lastHash: t.seq > start ? (rows[t.seq - start - 1]?.hash ?? prev) : prev };
      }
      count += r.count;
      if (r.failure) return { failure: r.failure, count, lastHash: r.lastHash };
      if (r.lastSeq !== end) return { failure: { seq: r.lastSeq + 1, reason: 'missing_entry' }, count, lastHash: r.lastHash };
      prev = r.lastHash ?? prev;
    }
    return { failure: null, count, lastHash: prev };
  };
}

/**
 * Full tiles the row scan does not cover against their parents: level-0 tiles
 * whose first leaf is before `scanFrom` (pruned entries), and every level ≥ 1.
 */
async function checkUpperTiles(storage: AuditStorage, treeSize: number, scanFrom: number, hasher: TreeHasher): Promise<RangeFailure | null> {
  for (let level = 0; TILE_WIDTH ** (level + 1) <= treeSize; level++) {
    const fullTiles = Math.floor(treeSize / TILE_WIDTH ** (level + 1));
    // Level 0: only tiles whose first leaf the scan did not start on.
    const upTo = level === 0 ? Math.min(fullTiles, Math.ceil((scanFrom - 1) / TILE_WIDTH)) : fullTiles;
    const span = TILE_WIDTH ** (level + 1);
    for (let n0 = 0; n0 < upTo; n0 += 4096) {
      const n1 = Math.min(upTo, n0 + 4096) - 1;
      const tiles = new Map((await storage.tileRange(level, n0, n1)).map((t) => [t.n, t.data]));
      const parents = new Map((await storage.tileRange(level + 1, Math.floor(n0 / TILE_WIDTH), Math.floor(n1 / TILE_WIDTH))).map((t) => [t.n, t.data]));
      for (let n = n0; n <= n1; n++) {
        const data = tiles.get(n);
        const parent = parents.get(Math.floor(n / TILE_WIDTH));
        const off = (n % TILE_WIDTH) * HASH;
        if (!data || data.length !== TILE_WIDTH * HASH || !parent || parent.length < off + HASH || !bytesEqual(tileHash(data, hasher), parent.subarray(off, off + HASH))) {
          return { seq: n * span + 1, reason: 'tree_mismatch' };
        }
      }
    }
  }
  return null;
}

/** The tree's root at `size` from the stored tiles (RFC 6962's empty root for 0). */
export async function treeRootAt(storage: AuditStorage, size: number, hasher: TreeHasher = defaultHasher): Promise<Hash> {
  if (size === 0) return EMPTY_TREE_ROOT;
  return treeHash(size, (idx) => storage.readHashes(idx), hasher);
}

type CpView = NonNullable<VerifyResult['checkpoint']>;

interface NoteCp {
  id: number | null;
  kind: string;
  size: number;
  root: Hash;
  text: string;
  note: string;
  external: boolean;
}

export async function verifyStorage(storage: AuditStorage, opts: VerifyOptions): Promise<VerifyResult> {
  const hasher = opts.hasher ?? defaultHasher;
  const [bounds, checkpoints, tree] = await Promise.all([storage.bounds(), storage.checkpoints(), storage.treeStatus()]);
  const external: ExternalCheckpoint = typeof opts.external === 'string' ? (looksLikeNote(opts.external) ? { note: opts.external } : { jws: opts.external }) : (opts.external ?? {});
  let treeView: VerifyResult['tree'] = { size: tree.size, root: null, state: tree.state };
  const fail = (seq: number | null, reason: string, checked: number, lastHash: string, cp: VerifyResult['checkpoint'] = null): VerifyResult => ({
    valid: false,
    entries_checked: checked,
    first_invalid_seq: seq,
    reason,
    last_hash: lastHash,
    checkpoint: cp,
    tree: treeView,
  });

  // 1. Where the chain starts: genesis, or the prune checkpoint at the cut (its
  //    signature is checked with the others below).
  const first = bounds.first;
  const last = bounds.last ?? 0;
  let startPrev = GENESIS_HASH;
  let startSeq = 1;
  if (first !== null && first > 1) {
    const cut = checkpoints.filter((c) => c.kind === 'prune' && c.size === first - 1).pop();
    if (!cut) return fail(first, 'prune_checkpoint_missing', 0, '');
    startPrev = cut.headHash;
    startSeq = first;
  } else if (first === null) {
    const cut = checkpoints.filter((c) => c.kind === 'prune').pop();
    if (cut) {
      startPrev = cut.headHash;
      startSeq = cut.size + 1;
    }
  }
  const tipSeq = first === null ? startSeq - 1 : last;
  // The tree is checked as far as it reaches into the log (a lagging tree after an upgrade is checked, not required).
  const treeChecked = tree.state === 'complete' || tree.state === 'behind' || tree.state === 'ahead' ? Math.min(tree.size, tipSeq) : 0;

  // 2. Every link and leaf (on worker threads where the runtime has them) while
  //    3. every stored checkpoint's signatures are checked here.
  const scan =
    first !== null
      ? opts.rangeChecker(startSeq, last, startPrev, treeChecked >= startSeq ? { size: treeChecked } : undefined)
      : Promise.resolve({ failure: null, count: 0, lastHash: startPrev });
  const signatures = checkSignatures(checkpoints, external, opts);
  const [r, sig] = await Promise.all([scan, signatures]);
  if (sig.kind === 'bad') return fail(sig.at, 'bad_checkpoint_signature', 0, '');
  const { verified, externalBody, notes } = sig;
  const checked = r.count;
  if (r.failure) return fail(r.failure.seq, r.failure.reason, checked, r.lastHash ?? '');
  const lastHash = r.lastHash ?? startPrev;

  // 4. The tree against the log: damaged, longer than the log, or inconsistent above the scanned tiles.
  if (tree.state === 'damaged') return fail(null, 'tree_mismatch', checked, lastHash);
  if (tree.state === 'ahead') return fail(tipSeq + 1, 'truncated', checked, lastHash);
  if (treeChecked > 0) {
    const up = await checkUpperTiles(storage, treeChecked, startSeq, hasher);
    if (up) return fail(up.seq, up.reason, checked, lastHash);
  }
  const treeOk = treeChecked > 0 && treeChecked === tree.size;
  if (treeOk) treeView = { ...treeView, root: toBase64(await treeRootAt(storage, tree.size, hasher)) };

  // 5. JWS checkpoints against the rows: truncation and rewritten history.
  const latest = verified.reduce<(typeof verified)[number] | null>((a, c) => (!a || c.size > a.size ? c : a), null);
  const cpView = (c: typeof latest): CpView | null =>
    c ? { ...c.body, jws: c.jws, verified: Boolean(opts.signer), ...(c.note ? { note: c.note } : {}) } : null;
  const extView = (size: number, note: string | null): CpView => externalBody ?? { origin: '', size, head_hash: '', time: 0, kind: 'external', verified: true, note };
  const toCheck = [
    ...verified.map((c) => ({ size: c.size, head: c.headHash as string | null, ext: false })),
    ...(externalBody ? [{ size: externalBody.size, head: externalBody.head_hash as string | null, ext: true }] : []),
  ];
  for (const c of toCheck.sort((a, b) => a.size - b.size)) {
    const view = c.ext ? externalBody : cpView(latest);
    if (c.size > tipSeq) return fail(tipSeq + 1, 'truncated', checked, lastHash, view);
    if (c.size < startSeq) continue; // pruned away: covered by the prune checkpoint's signature
    if (c.size === 0) continue;
    const row = (await storage.range(c.size, c.size))[0];
    if (!row || row.hash !== c.head) return fail(c.size, 'checkpoint_mismatch', checked, lastHash, view);
  }

  // 6. Notes against the tree, and each note against the one before it.
  const rootCache = new Map<number, Hash>();
  const rootAt = async (size: number) => {
    let h = rootCache.get(size);
    if (!h) {
      h = await treeRootAt(storage, size, hasher);
      rootCache.set(size, h);
    }
    return h;
  };
  const extNote = notes.find((n) => n.external) ?? null;
  for (const n of [...notes].sort((a, b) => a.size - b.size)) {
    const view = n.external ? extView(n.size, n.note) : (cpView(verified.find((v) => v.id === n.id) ?? null) ?? extView(n.size, n.note));
    if (n.size > tipSeq) return fail(tipSeq + 1, 'truncated', checked, lastHash, view);
    if (n.size > tree.size || (!treeOk && n.size > treeChecked)) {
      // A note over entries the tree does not (yet) hold: nothing to compare its root with.
      if (tree.state === 'behind') continue;
      return fail(n.size, 'checkpoint_mismatch', checked, lastHash, view);
    }
    if (!bytesEqual(await rootAt(n.size), n.root)) return fail(Math.max(1, n.size), 'checkpoint_mismatch', checked, lastHash, view);
  }
  // Each note against the one before it (by tree size): a consistency proof from
  // the stored tree. (Notes are not required to be stored in size order: a
  // periodic checkpoint and one from another process may land in either order.)
  const bySize = notes.filter((n) => !n.external && n.size > 0 && n.size <= tree.size).sort((a, b) => a.size - b.size);
  for (let i = 1; i < bySize.length; i++) {
    const a = bySize[i - 1]!;
    const b = bySize[i]!;
    if (a.size === b.size) continue;
    try {
      const proof = await proveTree(b.size, a.size, (idx) => storage.readHashes(idx), hasher);
      checkTree(proof, b.size, b.root, a.size, a.root, hasher);
    } catch (err) {
      if (err instanceof TlogError) return fail(a.size, 'checkpoint_inconsistent', checked, lastHash, cpView(verified.find((v) => v.id === b.id) ?? null));
      throw err;
    }
  }

  // 7. A note key without a genesis checkpoint: the log was emptied or replaced.
  if ((opts.requireGenesis ?? Boolean(opts.tlog)) && !checkpoints.some((c) => c.kind === 'genesis')) {
    return fail(null, 'genesis_checkpoint_missing', checked, lastHash, cpView(latest));
  }

  // 8. Witness cosignatures: on the saved note when one is given, else on the
  //    newest stored note every witness cosigned (cosignatures arrive in the
  //    background, so the very latest note may not carry them yet). The result's
  //    checkpoint is that note: compare its size with the witness's own latest.
  let witnessed: NoteCp | null = null;
  if (opts.witnesses && opts.witnesses.length > 0) {
    const candidates = extNote ? [extNote] : notes.filter((n) => !n.external).sort((a, b) => b.size - a.size || (b.id ?? 0) - (a.id ?? 0));
    for (const n of candidates) {
      let text: string | null = n.note;
      if (!n.external && opts.cosignedNote) {
        const cp = checkpoints.find((c) => c.id === n.id);
        if (cp) text = (await opts.cosignedNote(cp)) ?? text;
      }
      const w = await checkCosignatures(text, opts.witnesses);
      if (w === 'bad_witness_cosignature') return fail(n.size, w, checked, lastHash, n.external ? extView(n.size, n.note) : cpView(verified.find((v) => v.id === n.id) ?? null));
      if (w === null) {
        witnessed = { ...n, note: text };
        break;
      }
    }
    if (!witnessed) return fail(null, 'witness_cosignature_missing', checked, lastHash, extNote ? extView(extNote.size, extNote.note) : cpView(latest));
  }

  const witnessedCp = witnessed && !witnessed.external ? cpView(verified.find((v) => v.id === witnessed!.id) ?? null) : null;
  if (witnessedCp) witnessedCp.note = witnessed!.note;
  const extCp = externalBody ?? (extNote ? extView(extNote.size, extNote.note) : null);
  return {
    valid: true,
    entries_checked: checked,
    first_invalid_seq: null,
    reason: null,
    last_hash: lastHash,
    checkpoint: extCp ?? witnessedCp ?? cpView(latest),
    tree: treeView,
  };
}

/** null when every witness cosigned the note validly; else the reason. */
async function checkCosignatures(text: string, witnesses: NoteVerifier[]): Promise<'witness_cosignature_missing' | 'bad_witness_cosignature' | null> {
  for (const w of witnesses) {
    try {
      const n = await openNote(text, [w]);
      if (!n.sigs.some((s) => s.name === w.name && s.keyId === w.keyId)) return 'witness_cosignature_missing';
    } catch (err) {
      if (err instanceof NoteError) return err.code === 'unverified_note' ? 'witness_cosignature_missing' : 'bad_witness_cosignature';
      throw err;
    }
  }
  return null;
}

interface SignatureCheck {
  kind: 'ok';
  verified: (StoredCheckpoint & { body: CheckpointBody })[];
  externalBody: (CheckpointBody & { jws?: string; verified: boolean; note?: string | null }) | null;
  notes: NoteCp[];
}

/** Every JWS and note signature, and that each note says what its row says (size). */
async function checkSignatures(checkpoints: StoredCheckpoint[], external: ExternalCheckpoint, opts: VerifyOptions): Promise<SignatureCheck | { kind: 'bad'; at: number | null }> {
  const verified: SignatureCheck['verified'] = [];
  const notes: NoteCp[] = [];
  const openLogNote = async (text: string) => {
    if (!opts.tlog) return null;
    try {
      const n = await openNote(text, [opts.tlog.verifier]);
      const c = parseCheckpoint(n.text);
      return { text: n.text, size: c.size, root: c.rootHash };
    } catch (err) {
      if (err instanceof NoteError) return null;
      throw err;
    }
  };
  for (const cp of checkpoints) {
    const body = opts.signer ? await opts.signer.verify(cp.jws) : null;
    if (opts.signer && (!body || body.size !== cp.size || body.head_hash !== cp.headHash)) return { kind: 'bad', at: cp.size };
    verified.push({ ...cp, body: body ?? { origin: '', size: cp.size, head_hash: cp.headHash, time: cp.time, kind: cp.kind } });
    if (cp.note && opts.tlog) {
      const n = await openLogNote(cp.note);
      if (!n || n.size !== cp.size) return { kind: 'bad', at: cp.size };
      notes.push({ id: cp.id, kind: cp.kind, size: n.size, root: n.root, text: n.text, note: cp.note, external: false });
    }
  }
  let externalBody: SignatureCheck['externalBody'] = null;
  if (external.jws) {
    const body = opts.signer ? await opts.signer.verify(external.jws) : null;
    if (!body) return { kind: 'bad', at: null };
    externalBody = { ...body, jws: external.jws, verified: true };
  }
  if (external.note) {
    const n = await openLogNote(external.note);
    if (!n) return { kind: 'bad', at: null };
    notes.push({ id: null, kind: 'external', size: n.size, root: n.root, text: n.text, note: external.note, external: true });
    if (externalBody) externalBody.note = external.note;
  }
  return { kind: 'ok', verified, externalBody, notes };
}

export type { TreeStatus };

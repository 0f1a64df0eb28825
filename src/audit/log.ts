/**
 * The audit log service: group commit over an AuditStorage, signed checkpoints
 * (a JWS, and a C2SP signed note of the Merkle tree), forwarding of committed
 * entries, and verification. Runtime-free; storage, signers, forwarder and the
 * parallel row checker are passed in.
 *
 * Fail closed: `append` resolves only after the entry's transaction committed;
 * when the storage fails it rejects, and the HTTP layer answers 503.
 */
import type { AuditEntry, AuditInput, CheckpointBody, ChainRow, RangeFailure, VerifyResult } from './chain';
import type { AuditQuery, AuditStorage, StoredCheckpoint, Tip } from './storage';
import { defaultHasher, type Hash, type TreeHasher } from './tlog/merkle';
import { formatCheckpoint, type NoteSigner, type NoteVerifier, signNote } from './tlog/note';
import { type ExternalCheckpoint, sequentialChecker, treeRootAt, verifyStorage } from './verify';

export { sequentialChecker, verifyStorage } from './verify';

export interface CheckpointSigner {
  origin: string;
  sign(body: CheckpointBody): Promise<string>;
  /** Returns the body when the JWS is valid for this key, else null. */
  verify(jws: string): Promise<CheckpointBody | null>;
  publicJwk(): Promise<Record<string, unknown>>;
}

/** The C2SP side of checkpoints: the log's origin line and its Ed25519 note key. */
export interface TlogSigner {
  origin: string;
  signer: NoteSigner;
  verifier: NoteVerifier;
  /** The verifier key string (`name+id+key`) auditors save. */
  vkey: string;
}

/** What is announced for each checkpoint (syslog): the JWS body, the JWS itself and the note text. */
export type CheckpointEvent = CheckpointBody & { jws?: string; note: string | null };

export type CheckpointKind = 'periodic' | 'shutdown' | 'manual' | 'prune' | 'genesis';

export interface CommittedEntry {
  seq: number;
  hash: string;
  input: AuditInput;
}

/**
 * Scans rows [from, to] and returns the first failure (rows check links inside
 * the range only). With `tree`, also each row's leaf against the stored tiles
 * (for seq ≤ tree.size) and each full level-0 tile starting in the range
 * against its parent (tree_mismatch).
 */
export type RangeChecker = (
  from: number,
  to: number,
  expectedPrev: string,
  tree?: { size: number },
) => Promise<{ failure: RangeFailure | null; count: number; lastHash: string | null }>;

export interface AuditLogOptions {
  storage: AuditStorage;
  enabled: boolean;
  signer?: CheckpointSigner | null;
  /** The note key: with it every checkpoint is also stored (and announced) as a C2SP signed note. */
  tlog?: TlogSigner | null;
  onCommitted?: (entries: CommittedEntry[]) => void;
  onCheckpoint?: (cp: CheckpointEvent) => void;
  onError?: (err: unknown) => void;
  checkpointEvery?: number;
  maxBatch?: number;
  now?: () => number;
  /** Verification: a parallel/async `rangeChecker`, or a synchronous `sha256` for the sequential one. */
  verification: { rangeChecker: RangeChecker } | { sha256: (s: string) => string };
  /** Tree hashing (Node injects node:crypto; default: the plain TypeScript SHA-256). */
  hasher?: TreeHasher;
  /** How long `tip()` uses a tip read from the storage (default TIP_TTL_MS; 0: read every time). */
  tipTtlMs?: number;
  /** The monotonic clock (ms) for that (default performance.now). */
  monotonic?: () => number;
}

/**
 * `AuditLog.tip()` reads the storage at most once per this many ms: entries this
 * process commits show at once, another process's (the CLI, a second server on
 * PostgreSQL) within it.
 */
export const TIP_TTL_MS = 1_000;

interface Pending {
  input: AuditInput;
  resolve: (t: Tip) => void;
  reject: (e: unknown) => void;
}

export class AuditUnavailableError extends Error {}

/** Metrics hooks (src/metrics.ts): every group commit, committed or failed, with the storage's time for it. */
export type AuditBatchObserver = (batch: { entries: CommittedEntry[] | null; size: number; seconds: number }) => void;

const clock = (): number => (typeof performance !== 'undefined' ? performance.now() : Date.now());

export class AuditLog {
  readonly enabled: boolean;
  private queue: Pending[] = [];
  private flushing: Promise<void> | null = null;
  /** Batches handed to a pipelined storage and not yet settled. */
  private readonly inFlight = new Set<Promise<void>>();
  private inFlightEntries = 0;
  private timer: ReturnType<typeof setInterval> | null = null;
  private committedSinceStart = 0;
  private failures = 0;
  private readonly every: number;
  private readonly maxBatch: number;
  private readonly now: () => number;
  private readonly batchObservers = new Set<AuditBatchObserver>();
  private knownTip: Tip | null = null;
  private tipReadAt = 0;
  /** Bumped by every commit here: a storage read that started before one does not replace its tip. */
  private commits = 0;

  constructor(private readonly opts: AuditLogOptions) {
    this.enabled = opts.enabled;
    this.every = opts.checkpointEvery ?? 1000;
    this.maxBatch = opts.maxBatch ?? 512;
    this.now = opts.now ?? Date.now;
  }

  get storage(): AuditStorage {
    return this.opts.storage;
  }

  get signer(): CheckpointSigner | null {
    return this.opts.signer ?? null;
  }

  get tlog(): TlogSigner | null {
    return this.opts.tlog ?? null;
  }

  get hasher(): TreeHasher {
    return this.opts.hasher ?? defaultHasher;
  }

  private seenTreeSize = 0;
  private readonly roots = new Map<number, Hash>();

  /**
   * The stored tree's size, read again only when `atLeast` is past the largest
   * size seen (stored leaves are never taken back), so proof requests for sizes
   * already seen cost no tree-edge query.
   */
  async treeSizeFor(atLeast: number): Promise<number> {
    if (atLeast > this.seenTreeSize) this.seenTreeSize = Math.max(this.seenTreeSize, (await this.opts.storage.treeStatus()).size);
    return this.seenTreeSize;
  }

  /** The root of the stored tree at `size`; a root never changes once its leaves are stored, so the last 1,024 are kept. */
  async rootAt(size: number): Promise<Hash> {
    const hit = this.roots.get(size);
    if (hit) return hit;
    const root = await treeRootAt(this.opts.storage, size, this.hasher);
    this.roots.set(size, root);
    if (this.roots.size > 1024) this.roots.delete(this.roots.keys().next().value as number);
    return root;
  }

  /**
   * The log's tip (for `/api/status`): the storage is read at most once per
   * `tipTtlMs`; in between, the newest of that read and this process's own commits.
   */
  async tip(): Promise<Tip> {
    const ttl = this.opts.tipTtlMs ?? TIP_TTL_MS;
    const t = (this.opts.monotonic ?? clock)();
    if (this.knownTip && t - this.tipReadAt < ttl) return this.knownTip;
    const before = this.commits;
    const read = await this.opts.storage.tip();
    // The storage is the authority (a tail deleted elsewhere shows too), unless a commit here is newer.
    if (before === this.commits || !this.knownTip || read.seq > this.knownTip.seq) this.knownTip = read;
    this.tipReadAt = t;
    return this.knownTip;
  }

  stats() {
    return { queued: this.queue.length + this.inFlightEntries, committed: this.committedSinceStart, write_failures: this.failures };
  }

  /** Observe each group commit (`entries` null when it failed); returns the unsubscribe. */
  observeBatches(o: AuditBatchObserver): () => void {
    this.batchObservers.add(o);
    return () => {
      this.batchObservers.delete(o);
    };
  }

  private notifyBatch(entries: CommittedEntry[] | null, size: number, seconds: number): void {
    if (this.batchObservers.size === 0) return;
    for (const o of this.batchObservers) {
      try {
        o({ entries, size, seconds });
      } catch (err) {
        this.opts.onError?.(err);
      }
    }
  }

  /** Append one entry; resolves once it is durably committed. */
  append(input: AuditInput): Promise<Tip> {
    if (!this.enabled) return Promise.resolve({ seq: 0, hash: '' });
    return new Promise<Tip>((resolve, reject) => {
      this.queue.push({ input, resolve, reject });
      if (!this.flushing) this.flushing = this.flushLoop();
    });
  }

  private async flushLoop(): Promise<void> {
    // Yield once (to the end of this event-loop turn) so that entries from
    // concurrent requests join the same batch.
    await new Promise<void>((r) => (typeof setImmediate === 'function' ? setImmediate(r) : setTimeout(r, 0)));
    try {
      while (this.queue.length > 0) {
        const batch = this.queue.splice(0, this.maxBatch);
        if (!this.opts.storage.pipelined) {
          await this.commitBatch(batch);
          continue;
        }
        // A pipelined storage commits batches in the order given while this loop
        // hands it the next: track the batch, do not wait for it here.
        this.inFlightEntries += batch.length;
        const done = this.commitBatch(batch).finally(() => {
          this.inFlight.delete(done);
          this.inFlightEntries -= batch.length;
        });
        this.inFlight.add(done);
      }
    } finally {
      this.flushing = null;
      if (this.queue.length > 0) this.flushing = this.flushLoop();
    }
  }

  /** Commit one batch; each request's promise settles with its outcome (never rejects itself). */
  private async commitBatch(batch: Pending[]): Promise<void> {
    let tips: Tip[];
    const started = clock();
    try {
      tips = await this.opts.storage.appendBatch(batch.map((p) => p.input));
    } catch (err) {
      this.failures++;
      this.notifyBatch(null, batch.length, (clock() - started) / 1000);
      this.opts.onError?.(err);
      const e = new AuditUnavailableError('the audit log cannot be written');
      for (const p of batch) p.reject(e);
      return;
    }
    const seconds = (clock() - started) / 1000;
    this.committedSinceStart += tips.length;
    const last = tips.at(-1);
    if (last && (!this.knownTip || last.seq > this.knownTip.seq)) this.knownTip = last;
    this.commits++;
    for (const [i, p] of batch.entries()) p.resolve(tips[i]!);
    try {
      const committed = batch.map((p, i) => ({ seq: tips[i]!.seq, hash: tips[i]!.hash, input: p.input }));
      this.notifyBatch(committed, committed.length, seconds);
      this.opts.onCommitted?.(committed);
    } catch (err) {
      this.opts.onError?.(err);
    }
    // A signed checkpoint at every multiple of `checkpointEvery` (whichever process wrote it).
    const due = this.opts.signer ? tips.filter((t) => t.seq % this.every === 0).pop() : undefined;
    if (due) await this.checkpoint('periodic', due).catch((err) => this.opts.onError?.(err));
  }

  /** Also checkpoint on a timer (when anything new was committed since the last one). */
  startCheckpointTimer(intervalMs = 60_000): void {
    if (!this.opts.signer || !this.enabled || this.timer) return;
    this.timer = setInterval(() => {
      void this.checkpoint('periodic').catch((err) => this.opts.onError?.(err));
    }, intervalMs);
    (this.timer as { unref?: () => void }).unref?.();
  }

  /** Wait for everything queued to be committed. */
  async drain(): Promise<void> {
    while (this.flushing || this.inFlight.size > 0) {
      if (this.flushing) await this.flushing;
      else await Promise.all(this.inFlight);
    }
  }

  /**
   * The C2SP checkpoint note of the tree at `size` (origin, size, base64 root),
   * signed with the note key; null without a note key or when the stored tree
   * does not cover `size` (not yet backfilled, or pruned before it existed).
   */
  async signNoteAt(size: number): Promise<string | null> {
    const tlog = this.opts.tlog;
    if (!tlog) return null;
    // Only a tree that is the log's (or a prefix of it, while a backfill runs):
    // never one with leaves the log no longer has.
    const tree = await this.opts.storage.treeStatus();
    if ((tree.state !== 'complete' && tree.state !== 'behind') || tree.size < size) return null;
    const rootHash = await treeRootAt(this.opts.storage, size, this.hasher);
    return signNote(formatCheckpoint({ origin: tlog.origin, size, rootHash }), [tlog.signer]);
  }

  /**
   * Sign and store a checkpoint of the current tip (skipped when nothing is
   * new): the JWS and, with a note key, the C2SP note, in one row.
   */
  async checkpoint(kind: CheckpointKind, at?: Tip): Promise<StoredCheckpoint | null> {
    const signer = this.opts.signer;
    if (!signer) return null;
    const tip = at ?? (await this.opts.storage.tip());
    const latest = await this.opts.storage.latestCheckpoint();
    const forced = kind === 'prune' || kind === 'manual' || kind === 'genesis';
    // A checkpoint due at a multiple of `checkpointEvery` is written unless that very
    // size is already signed: another server's timer may have signed a larger size
    // in the moment between this batch's commit and now, and the multiple still gets its own.
    const done = latest !== null && (at ? latest.size === at.seq : latest.size >= tip.seq);
    if (!forced && done) return latest;
    if (tip.seq === 0 && kind !== 'manual' && kind !== 'genesis') return null;
    const body: CheckpointBody = { origin: signer.origin, size: tip.seq, head_hash: tip.hash, time: this.now(), kind };
    const jws = await signer.sign(body);
    const note = await this.signNoteAt(tip.seq);
    const cp = { kind, size: body.size, headHash: body.head_hash, time: body.time, jws, note };
    await this.opts.storage.insertCheckpoint(cp);
    this.opts.onCheckpoint?.({ ...body, jws, note });
    return { id: 0, ...cp };
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.drain();
    if (this.enabled && this.opts.signer) await this.checkpoint('shutdown').catch((e) => this.opts.onError?.(e));
  }

  query(q: AuditQuery): Promise<ChainRow[]> {
    return this.opts.storage.query(q);
  }

  /**
   * verifyLogIntegrity: walk the chain and the Merkle tree, check every signed
   * checkpoint (JWS and note) against them and against each other and, when
   * given, a checkpoint the auditor saved and witness cosignatures (verify.ts).
   */
  async verify(
    opts: {
      external?: string | ExternalCheckpoint | null;
      witnesses?: NoteVerifier[];
      cosignedNote?: (cp: StoredCheckpoint) => Promise<string | null>;
      /** The note verifier to trust instead of this log's own key (an auditor's saved key); null: do not check notes. */
      noteVerifier?: NoteVerifier | null;
    } = {},
  ): Promise<VerifyResult> {
    const verifier = opts.noteVerifier !== undefined ? opts.noteVerifier : (this.opts.tlog?.verifier ?? null);
    return verifyStorage(this.opts.storage, {
      signer: this.opts.signer ?? null,
      tlog: verifier ? { verifier } : null,
      external: opts.external ?? null,
      witnesses: opts.witnesses,
      cosignedNote: opts.cosignedNote,
      hasher: this.hasher,
      rangeChecker:
        'rangeChecker' in this.opts.verification
          ? this.opts.verification.rangeChecker
          : sequentialChecker(this.opts.storage, this.opts.verification.sha256, this.hasher),
    });
  }
}

export function entryFromRow(row: ChainRow): AuditEntry & { hash: string; prev_hash: string } {
  const e = JSON.parse(row.entry) as AuditEntry;
  return { ...e, hash: row.hash, prev_hash: row.prevHash };
}

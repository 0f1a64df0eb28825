/**
 * The audit log service: group commit over an AuditStorage, signed checkpoints,
 * forwarding of committed entries, and verification. Runtime-free; storage,
 * signer, forwarder and the parallel row checker are passed in.
 *
 * Fail closed: `append` resolves only after the entry's transaction committed;
 * when the storage fails it rejects, and the HTTP layer answers 503.
 */
import {
  type AuditEntry,
  type AuditInput,
  type CheckpointBody,
  type ChainRow,
  checkRun,
  GENESIS_HASH,
  type RangeFailure,
  type VerifyResult,
} from './chain';
import type { AuditQuery, AuditStorage, StoredCheckpoint, Tip } from './storage';

export interface CheckpointSigner {
  origin: string;
  sign(body: CheckpointBody): Promise<string>;
  /** Returns the body when the JWS is valid for this key, else null. */
  verify(jws: string): Promise<CheckpointBody | null>;
  publicJwk(): Promise<Record<string, unknown>>;
}

export interface CommittedEntry {
  seq: number;
  hash: string;
  input: AuditInput;
}

/** Scans rows [from, to] and returns the first failure (rows check links inside the range only). */
export type RangeChecker = (
  from: number,
  to: number,
  expectedPrev: string,
) => Promise<{ failure: RangeFailure | null; count: number; lastHash: string | null }>;

export interface AuditLogOptions {
  storage: AuditStorage;
  enabled: boolean;
  signer?: CheckpointSigner | null;
  onCommitted?: (entries: CommittedEntry[]) => void;
  onCheckpoint?: (cp: CheckpointBody) => void;
  onError?: (err: unknown) => void;
  checkpointEvery?: number;
  maxBatch?: number;
  now?: () => number;
  /** Verification: a parallel/async `rangeChecker`, or a synchronous `sha256` for the sequential one. */
  verification: { rangeChecker: RangeChecker } | { sha256: (s: string) => string };
}

interface Pending {
  input: AuditInput;
  resolve: (t: Tip) => void;
  reject: (e: unknown) => void;
}

export class AuditUnavailableError extends Error {}

export class AuditLog {
  readonly enabled: boolean;
  private queue: Pending[] = [];
  private flushing: Promise<void> | null = null;
  private timer: ReturnType<typeof setInterval> | null = null;
  private committedSinceStart = 0;
  private failures = 0;
  private readonly every: number;
  private readonly maxBatch: number;
  private readonly now: () => number;

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

  stats() {
    return { queued: this.queue.length, committed: this.committedSinceStart, write_failures: this.failures };
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
        let tips: Tip[];
        try {
          tips = await this.opts.storage.appendBatch(batch.map((p) => p.input));
        } catch (err) {
          this.failures++;
          this.opts.onError?.(err);
          const e = new AuditUnavailableError('the audit log cannot be written');
          for (const p of batch) p.reject(e);
          continue;
        }
        this.committedSinceStart += tips.length;
        for (const [i, p] of batch.entries()) p.resolve(tips[i]!);
        try {
          this.opts.onCommitted?.(batch.map((p, i) => ({ seq: tips[i]!.seq, hash: tips[i]!.hash, input: p.input })));
        } catch (err) {
          this.opts.onError?.(err);
        }
        // A signed checkpoint at every multiple of `checkpointEvery` (whichever process wrote it).
        const due = this.opts.signer ? tips.filter((t) => t.seq % this.every === 0).pop() : undefined;
        if (due) await this.checkpoint('periodic', due).catch((err) => this.opts.onError?.(err));
      }
    } finally {
      this.flushing = null;
      if (this.queue.length > 0) this.flushing = this.flushLoop();
    }
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
    while (this.flushing) await this.flushing;
  }

  /** Sign and store a checkpoint of the current tip (skipped when nothing is new). */
  async checkpoint(kind: 'periodic' | 'shutdown' | 'manual' | 'prune', at?: Tip): Promise<StoredCheckpoint | null> {
    const signer = this.opts.signer;
    if (!signer) return null;
    const tip = at ?? (await this.opts.storage.tip());
    const latest = await this.opts.storage.latestCheckpoint();
    if (kind !== 'prune' && kind !== 'manual' && latest && latest.size >= tip.seq) return latest;
    if (tip.seq === 0 && kind !== 'manual') return null;
    const body: CheckpointBody = { origin: signer.origin, size: tip.seq, head_hash: tip.hash, time: this.now(), kind };
    const jws = await signer.sign(body);
    const cp = { kind, size: body.size, headHash: body.head_hash, time: body.time, jws };
    await this.opts.storage.insertCheckpoint(cp);
    this.opts.onCheckpoint?.(body);
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
   * verifyLogIntegrity: walk the chain and check every link, the signed
   * checkpoints, truncation against the latest checkpoint and, when given, a
   * checkpoint the auditor saved earlier.
   */
  async verify(opts: { external?: string | null } = {}): Promise<VerifyResult> {
    return verifyStorage(this.opts.storage, {
      signer: this.opts.signer ?? null,
      external: opts.external ?? null,
      rangeChecker: 'rangeChecker' in this.opts.verification ? this.opts.verification.rangeChecker : sequentialChecker(this.opts.storage, this.opts.verification.sha256),
    });
  }
}

export function entryFromRow(row: ChainRow): AuditEntry & { hash: string; prev_hash: string } {
  const e = JSON.parse(row.entry) as AuditEntry;
  return { ...e, hash: row.hash, prev_hash: row.prevHash };
}

const CHUNK = 5000;

/** A sequential checker over storage.range; Node swaps in a parallel one. */
export function sequentialChecker(storage: AuditStorage, sha256: (s: string) => string): RangeChecker {
  return async (from, to, expectedPrev) => {
    let prev = expectedPrev;
    let count = 0;
    for (let start = from; start <= to; start += CHUNK) {
      const end = Math.min(to, start + CHUNK - 1);
      const rows = await storage.range(start, end);
      const r = checkRun(rows, start, prev, sha256);
      count += r.count;
      if (r.failure) return { failure: r.failure, count, lastHash: r.lastHash };
      if (r.lastSeq !== end) return { failure: { seq: r.lastSeq + 1, reason: 'missing_entry' }, count, lastHash: r.lastHash };
      prev = r.lastHash ?? prev;
    }
    return { failure: null, count, lastHash: prev };
  };
}

export async function verifyStorage(
  storage: AuditStorage,
  opts: { signer: CheckpointSigner | null; external: string | null; rangeChecker: RangeChecker },
): Promise<VerifyResult> {
  const bounds = await storage.bounds();
  const checkpoints = await storage.checkpoints();
  const fail = (seq: number | null, reason: string, checked: number, lastHash: string, cp: VerifyResult['checkpoint'] = null): VerifyResult => ({
    valid: false,
    entries_checked: checked,
    first_invalid_seq: seq,
    reason,
    last_hash: lastHash,
    checkpoint: cp,
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

  // 2. Every link (on worker threads where the runtime has them) while 3. every
  //    stored checkpoint's signature is checked here.
  const scan = first !== null ? opts.rangeChecker(startSeq, last, startPrev) : Promise.resolve({ failure: null, count: 0, lastHash: startPrev });
  const signatures = (async () => {
    const verified: (StoredCheckpoint & { body: CheckpointBody })[] = [];
    for (const cp of checkpoints) {
      const body = opts.signer ? await opts.signer.verify(cp.jws) : null;
      if (opts.signer && (!body || body.size !== cp.size || body.head_hash !== cp.headHash)) return { kind: 'bad' as const, at: cp.size };
      verified.push({ ...cp, body: body ?? { origin: '', size: cp.size, head_hash: cp.headHash, time: cp.time, kind: cp.kind } });
    }
    let external: (CheckpointBody & { jws: string; verified: boolean }) | null = null;
    if (opts.external) {
      const body = opts.signer ? await opts.signer.verify(opts.external) : null;
      if (!body) return { kind: 'bad' as const, at: null };
      external = { ...body, jws: opts.external, verified: true };
    }
    return { kind: 'ok' as const, verified, external };
  })();
  const [r, sig] = await Promise.all([scan, signatures]);
  if (sig.kind === 'bad') return fail(sig.at, 'bad_checkpoint_signature', 0, '');
  const { verified, external } = sig;
  const checked = r.count;
  if (r.failure) return fail(r.failure.seq, r.failure.reason, checked, r.lastHash ?? '');
  const lastHash = r.lastHash ?? startPrev;
  const tipSeq = first === null ? startSeq - 1 : last;

  // 4. Checkpoints against the rows: truncation and rewritten history.
  const latest = verified.reduce<(typeof verified)[number] | null>((a, c) => (!a || c.size > a.size ? c : a), null);
  const cpView = (c: typeof latest) => (c ? { ...c.body, jws: c.jws, verified: Boolean(opts.signer) } : null);
  const toCheck = [...verified.map((c) => ({ size: c.size, head: c.headHash, ext: false })), ...(external ? [{ size: external.size, head: external.head_hash, ext: true }] : [])];
  for (const c of toCheck.sort((a, b) => a.size - b.size)) {
    if (c.size > tipSeq) return fail(tipSeq + 1, 'truncated', checked, lastHash, external && c.ext ? external : cpView(latest));
    if (c.size < startSeq) continue; // pruned away: covered by the prune checkpoint's signature
    const row = (await storage.range(c.size, c.size))[0];
    if (!row || row.hash !== c.head) return fail(c.size, 'checkpoint_mismatch', checked, lastHash, external && c.ext ? external : cpView(latest));
  }
  return {
    valid: true,
    entries_checked: checked,
    first_invalid_seq: null,
    reason: null,
    last_hash: lastHash,
    checkpoint: external ?? cpView(latest),
  };
}

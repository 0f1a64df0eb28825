/**
 * Retention that keeps proof: delete the oldest audit entries behind a signed
 * `prune` checkpoint at the cut, so what remains still verifies from that hash.
 * Used by `loki enterprise audit prune --before DATE` and by the server's
 * `LOKI_AUDIT_RETENTION_DAYS` timer. Runtime-free.
 *
 * Order (each step is safe to interrupt):
 *   1. drain the writer, 2. verify the whole log (refuse if it does not verify:
 *   a prune must never launder tampering), 3. find the cut (the newest entry
 *   older than `before`), 4. sign the `prune` checkpoint at the cut, 5. delete
 *   through it, 6. record `audit.prune` in the chain.
 */
import type { AuditLog } from './log';
import type { Tip } from './storage';

export const DAY_MS = 86_400_000;

export type PruneOutcome =
  | { status: 'pruned'; cut: Tip; deleted: number }
  | { status: 'nothing' }
  /** `invalid`: the log does not verify; `newest`: the cut would remove the head the next entry links to. */
  | { status: 'refused'; why: 'invalid' | 'newest'; reason: string | null; firstInvalidSeq: number | null };

export interface PruneOptions {
  /**
   * When every entry is older than `before`: `refuse` (the CLI: the operator asked
   * for something that would leave no head) or `keep-head` (the timer: prune all
   * but the newest entry).
   */
  newest: 'refuse' | 'keep-head';
  /** Appends the `audit.prune` entry (the caller picks the actor); fail closed: a rejection propagates. */
  record: (details: Record<string, unknown>) => Promise<unknown>;
}

/** Prune entries older than `before` (epoch ms) behind a signed cut. */
export async function pruneAudit(audit: AuditLog, before: number, opts: PruneOptions): Promise<PruneOutcome> {
  await audit.drain();
  const pre = await audit.verify();
  if (!pre.valid) return { status: 'refused', why: 'invalid', reason: pre.reason, firstInvalidSeq: pre.first_invalid_seq };
  let cut = await audit.storage.lastSeqBefore(before);
  if (!cut) return { status: 'nothing' };
  const tip = await audit.storage.tip();
  if (cut.seq >= tip.seq) {
    if (opts.newest === 'refuse') return { status: 'refused', why: 'newest', reason: null, firstInvalidSeq: null };
    const row = tip.seq > 1 ? (await audit.storage.range(tip.seq - 1, tip.seq - 1))[0] : undefined;
    if (!row) return { status: 'nothing' };
    cut = { seq: row.seq, hash: row.hash };
  }
  // Sign the cut first: if the deletion is interrupted, the log still verifies.
  await audit.checkpoint('prune', cut);
  const deleted = await audit.storage.deleteThrough(cut.seq);
  await opts.record({ before: new Date(before).toISOString(), cut_seq: cut.seq, cut_hash: cut.hash, deleted });
  return { status: 'pruned', cut, deleted };
}

/** The retention cut for `days` at `now`. */
export function retentionCutoff(now: number, days: number): number {
  return now - days * DAY_MS;
}

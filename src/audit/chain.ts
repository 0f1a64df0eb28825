/**
 * The audit chain's canonical encoding and the pure checks on it. Runtime-free.
 *
 * entry text = JSON with keys in this fixed order, no whitespace, strings escaped
 * as by JSON.stringify, `details` with object keys sorted recursively:
 *   seq, ts, action, resource, actor, client, request, outcome, details
 * hash = lowercase hex SHA-256 of the UTF-8 bytes of (prev_hash ‖ entry text),
 * where prev_hash is the previous entry's hash in hex (64 zeros for seq 1).
 */
export const GENESIS_HASH = '0'.repeat(64);

export interface AuditActor {
  type: 'token' | 'oidc' | 'local' | 'system' | 'anonymous';
  id: string | null;
  name: string | null;
}

export interface AuditInput {
  ts: number;
  action: string;
  resource?: { type: string; id: string | null } | null;
  actor: AuditActor;
  client?: { ip: string | null; user_agent: string | null } | null;
  request?: { id: string | null; method: string | null; path: string | null } | null;
  outcome: { status: number | null; success: boolean; error: string | null };
  details?: Record<string, unknown> | null;
}

export interface AuditEntry extends AuditInput {
  seq: number;
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(value as Record<string, unknown>).sort()) {
      const v = (value as Record<string, unknown>)[k];
      if (v !== undefined) out[k] = sortKeys(v);
    }
    return out;
  }
  if (typeof value === 'number' && !Number.isFinite(value)) return null;
  return value;
}

/**
 * A lone UTF-16 surrogate (a JSON body may spell one: `"\ud800"`) as JSON.stringify
 * writes it: `\udXXX` not preceded by an escaping backslash. PostgreSQL's json
 * refuses it, so it is stored as U+FFFD on every store.
 */
const LONE_SURROGATE = /(?<!\\)((?:\\\\)*)\\ud[89a-f][0-9a-f]{2}/g;

/** The canonical bytes (as a string) of an entry. */
export function canonicalEntry(seq: number, e: AuditInput): string {
  const json = canonicalJson(seq, e);
  return json.includes('\\ud') ? json.replace(LONE_SURROGATE, '$1\\ufffd') : json;
}

function canonicalJson(seq: number, e: AuditInput): string {
  return JSON.stringify({
    seq,
    ts: e.ts,
    action: e.action,
    resource: e.resource ? { type: e.resource.type, id: e.resource.id } : null,
    actor: { type: e.actor.type, id: e.actor.id, name: e.actor.name },
    client: e.client ? { ip: e.client.ip, user_agent: e.client.user_agent } : null,
    request: e.request ? { id: e.request.id, method: e.request.method, path: e.request.path } : null,
    outcome: { status: e.outcome.status, success: e.outcome.success, error: e.outcome.error },
    details: e.details ? sortKeys(e.details) : null,
  });
}

export interface ChainRow {
  seq: number;
  entry: string;
  prevHash: string;
  hash: string;
}

export type VerifyReason =
  | 'hash_mismatch'
  | 'chain_broken'
  | 'missing_entry'
  | 'seq_mismatch'
  | 'malformed_entry'
  | 'truncated'
  | 'checkpoint_mismatch'
  | 'bad_checkpoint_signature'
  | 'prune_checkpoint_missing'
  /** A stored Merkle tree hash disagrees with the entries (or a full tile with its parent). */
  | 'tree_mismatch'
  /** No consistency proof between two checkpoint notes of consecutive sizes (the stored tree is damaged). */
  | 'checkpoint_inconsistent'
  /** The log has a note key but no genesis checkpoint: it was emptied or replaced. */
  | 'genesis_checkpoint_missing'
  /** `--witness-key`: the checkpoint lacks a cosignature by that witness. */
  | 'witness_cosignature_missing'
  /** `--witness-key`: that witness's cosignature on the checkpoint does not verify. */
  | 'bad_witness_cosignature';

export interface RangeFailure {
  seq: number;
  reason: VerifyReason;
}

export { checkRun } from './check-run';

export interface CheckpointBody {
  origin: string;
  size: number;
  head_hash: string;
  time: number;
  kind?: string;
}

export interface VerifyResult {
  valid: boolean;
  entries_checked: number;
  first_invalid_seq: number | null;
  reason: VerifyReason | string | null;
  last_hash: string;
  checkpoint: (CheckpointBody & { jws?: string; verified?: boolean; note?: string | null }) | null;
  /** The Merkle tree: leaves stored, its base64 root when it was verified in full, and its state against the log. */
  tree?: { size: number; root: string | null; state: string } | null;
}

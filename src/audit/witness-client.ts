/**
 * The log side of c2sp.org/tlog-witness: push each new checkpoint note of the
 * audit log to every witness in LOKI_AUDIT_WITNESSES, in the background, and
 * keep the cosignatures they return. Runtime-free (fetch); the consistency
 * proofs and the cosignature store are passed in.
 *
 * Per witness there is one worker and one target: the newest checkpoint handed
 * to `onCheckpoint`. A newer checkpoint replaces an older one still waiting
 * (the witness only needs the latest), so a slow or absent witness costs one
 * pending note, never a queue, and never delays an append.
 *
 * A push sends `old <size>` (the size the witness last acknowledged: the last
 * cosignature stored for it, else 0), the consistency proof from that size, and
 * the note. On 409 the witness says which size it holds; the push is repeated
 * from that size (a few times at most). A witness that holds a larger tree than
 * the checkpoint, or answers 403, 404, 413 or 422, is recorded as an error and
 * not retried until the next checkpoint: the log cannot talk it round. Network
 * errors, 5xx and 429 are retried with exponential backoff.
 *
 * Every cosignature line is verified with the witness's configured key before
 * it is stored; lines by other keys are ignored, as the spec says.
 */
import type { Hash } from './tlog/merkle';
import { NoteError, type NoteVerifier, noteVerifier, parseCheckpoint, verifyCosignature } from './tlog/note';
import { toBase64 } from './tlog/sha256';
import { formatAddCheckpoint, TLOG_SIZE_CONTENT_TYPE } from './witness';

export interface WitnessEndpoint {
  /** Submission prefix: `<url>/add-checkpoint` is posted to. */
  url: string;
  /** The witness's cosignature verifier key (type 0x04). */
  vkey: string;
}

export interface CosignatureRecord {
  witnessKey: string;
  origin: string;
  size: number;
  /** base64 root hash of the cosigned tree. */
  rootHash: string;
  /** The cosignature's timestamp (POSIX seconds). */
  timestamp: number;
  /** The note signature line, `— <name> <base64>`, without the newline. */
  signature: string;
  /** When it was received (ms). */
  receivedAt: number;
}

export interface CosignatureStore {
  /** The stored cosignature with the largest size for this witness key and origin (any origin when omitted). */
  latest(witnessKey: string, origin?: string): CosignatureRecord | null | Promise<CosignatureRecord | null>;
  save(rec: CosignatureRecord): void | Promise<void>;
}

export interface WitnessStatus {
  url: string;
  verifier_key: string;
  /** The largest tree size this witness cosigned (stored), or null. */
  last_cosigned_size: number | null;
  /** That cosignature's own timestamp (ISO 8601), or null. */
  last_cosigned_at: string | null;
  /** The size the witness told us it holds (from a cosignature or a 409), or null before it answered. */
  witness_size: number | null;
  /** A checkpoint waiting to be cosigned (retrying or in flight), or null. */
  pending_size: number | null;
  last_attempt_at: string | null;
  last_error: string | null;
  last_error_at: string | null;
  consecutive_failures: number;
}

export interface WitnessPusherOptions {
  witnesses: WitnessEndpoint[];
  /** The consistency proof from `oldSize` to `newSize` of the log's tree (both ≥ 1). */
  proof: (oldSize: number, newSize: number) => Promise<Hash[]>;
  store: CosignatureStore;
  logger?: { info(msg: string, f?: Record<string, unknown>): void; warn(msg: string, f?: Record<string, unknown>): void };
  fetch?: typeof fetch;
  /** ms (default Date.now). */
  now?: () => number;
  /** Backoff for retryable failures: first delay and cap, ms (default 1 s, 5 min). */
  backoff?: { initialMs: number; maxMs: number };
  /** Per request (default 10 s). */
  timeoutMs?: number;
}

export interface WitnessPusher {
  /** Hand over a new signed checkpoint note; returns at once. Older or malformed notes are ignored. */
  onCheckpoint(note: string): void;
  status(): WitnessStatus[];
  /** Resolves when no witness has a push in flight or waiting for a retry (tests, shutdown). */
  idle(): Promise<void>;
  close(): Promise<void>;
}

interface Target {
  note: string;
  body: string;
  origin: string;
  size: number;
  root: string;
}

interface Worker {
  ep: WitnessEndpoint;
  verifier: Promise<NoteVerifier>;
  /** The size the witness holds, per origin, as far as we know. */
  acked: Map<string, number>;
  /** The newest stored cosignature by this witness. */
  cosigned: { origin: string; size: number; timestamp: number } | null;
  target: Target | null;
  running: Promise<void> | null;
  timer: ReturnType<typeof setTimeout> | null;
  failures: number;
  lastAttempt: number | null;
  lastError: string | null;
  lastErrorAt: number | null;
  loaded: Promise<void>;
}

type PushOutcome = { kind: 'ok' } | { kind: 'retry'; error: string } | { kind: 'stop'; error: string };

/** At most this many 409 rounds per push (the witness moving on between them is not worth chasing further). */
const MAX_CONFLICT_ROUNDS = 3;

function parseNote(note: string): Target | null {
  const split = note.lastIndexOf('\n\n');
  if (split < 0) return null;
  const body = note.slice(0, split + 1);
  try {
    const cp = parseCheckpoint(body);
    return { note, body, origin: cp.origin, size: cp.size, root: toBase64(cp.rootHash) };
  } catch (err) {
    if (err instanceof NoteError) return null;
    throw err;
  }
}

const firstLine = (s: string) => s.split('\n', 1)[0]!.slice(0, 200);

export function createWitnessPusher(opts: WitnessPusherOptions): WitnessPusher {
  const doFetch = opts.fetch ?? fetch;
  const now = opts.now ?? Date.now;
  const backoff = opts.backoff ?? { initialMs: 1_000, maxMs: 300_000 };
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const aborter = new AbortController();
  let closed = false;

  const workers: Worker[] = opts.witnesses.map((ep) => {
    const w: Worker = {
      ep,
      verifier: noteVerifier(ep.vkey),
      acked: new Map(),
      cosigned: null,
      target: null,
      running: null,
      timer: null,
      failures: 0,
      lastAttempt: null,
      lastError: null,
      lastErrorAt: null,
      loaded: Promise.resolve(),
    };
    w.verifier.catch(() => {}); // reported by the first push
    w.loaded = (async () => {
      const last = await opts.store.latest(ep.vkey);
      if (last) {
        w.acked.set(last.origin, last.size);
        w.cosigned = { origin: last.origin, size: last.size, timestamp: last.timestamp };
      }
    })().catch((err) => {
      w.lastError = `cannot read stored cosignatures: ${String(err)}`;
      w.lastErrorAt = now();
    });
    return w;
  });

  const fail = (w: Worker, error: string) => {
    w.failures++;
    w.lastError = error;
    w.lastErrorAt = now();
    opts.logger?.warn('witness push failed', { witness: w.ep.url, error, failures: w.failures, size: w.target?.size ?? null });
  };

  async function pushOnce(w: Worker, t: Target): Promise<PushOutcome> {
    let verifier: NoteVerifier;
    try {
      verifier = await w.verifier;
    } catch (err) {
      return { kind: 'stop', error: `the witness key is not a cosignature verifier key: ${(err as Error).message}` };
    }
    let old = w.acked.get(t.origin) ?? 0;
    for (let round = 0; round < MAX_CONFLICT_ROUNDS; round++) {
      if (old > t.size) {
        return { kind: 'stop', error: `the witness holds size ${old} of ${t.origin}, beyond this checkpoint (size ${t.size}): the log is behind what was cosigned` };
      }
      let proof: Hash[];
      try {
        proof = old === 0 ? [] : await opts.proof(old, t.size);
      } catch (err) {
        return { kind: 'retry', error: `cannot build the consistency proof from ${old} to ${t.size}: ${(err as Error).message}` };
      }
      const body = formatAddCheckpoint(old, proof, t.note);
      w.lastAttempt = now();
      let res: Response;
      let text: string;
      try {
        res = await doFetch(`${w.ep.url}/add-checkpoint`, {
          method: 'POST',
          headers: { 'Content-Type': 'text/plain; charset=utf-8' },
          body,
          signal: AbortSignal.any([aborter.signal, AbortSignal.timeout(timeoutMs)]),
        });
        text = await res.text();
      } catch (err) {
        const e = err as Error & { cause?: { code?: string } };
        const why = e.name === 'TimeoutError' ? `no answer in ${timeoutMs} ms` : (e.cause?.code ?? e.message);
        return { kind: 'retry', error: `cannot reach the witness: ${why}` };
      }
      if (res.status === 200) {
        let found: { line: string; timestamp: number } | null = null;
        for (const line of text.split('\n')) {
          if (!line.startsWith(`— ${verifier.name} `)) continue;
          try {
            found = { line, timestamp: await verifyCosignature(t.body, line, verifier) };
            break;
          } catch (err) {
            if (!(err instanceof NoteError)) throw err;
          }
        }
        w.acked.set(t.origin, t.size);
        if (!found) return { kind: 'stop', error: `the witness answered 200 without a valid cosignature by ${verifier.name}+${verifier.keyId.toString(16).padStart(8, '0')}` };
        await opts.store.save({
          witnessKey: w.ep.vkey,
          origin: t.origin,
          size: t.size,
          rootHash: t.root,
          timestamp: found.timestamp,
          signature: found.line,
          receivedAt: now(),
        });
        w.cosigned = { origin: t.origin, size: t.size, timestamp: found.timestamp };
        return { kind: 'ok' };
      }
      if (res.status === 409) {
        const m = /^(0|[1-9][0-9]*)\n?$/.exec(text);
        const type = res.headers.get('Content-Type') ?? '';
        if (!m || !type.startsWith(TLOG_SIZE_CONTENT_TYPE)) return { kind: 'retry', error: `409 without a tree size (${type}): ${firstLine(text)}` };
        const size = Number(m[1]);
        if (!Number.isSafeInteger(size)) return { kind: 'retry', error: '409 with an out-of-range tree size' };
        w.acked.set(t.origin, size);
        old = size;
        continue;
      }
      const why = `HTTP ${res.status}: ${firstLine(text)}`;
      if (res.status >= 500 || res.status === 429 || res.status === 408) return { kind: 'retry', error: why };
      return { kind: 'stop', error: why };
    }
    return { kind: 'retry', error: `the witness's size kept changing (${MAX_CONFLICT_ROUNDS} conflicts in a row)` };
  }

  async function run(w: Worker): Promise<void> {
    await w.loaded;
    for (;;) {
      const t = w.target;
      if (!t || closed) return;
      if (w.cosigned?.origin === t.origin && w.cosigned.size === t.size) {
        w.target = null; // already cosigned (e.g. the same note seen twice)
        return;
      }
      const r = await pushOnce(w, t).catch((err): PushOutcome => ({ kind: 'retry', error: String(err) }));
      if (closed) return;
      if (r.kind === 'ok') {
        w.failures = 0;
        w.lastError = null;
        w.lastErrorAt = null;
        opts.logger?.info('witness cosigned', { witness: w.ep.url, origin: t.origin, size: t.size });
        if (w.target === t) w.target = null;
        continue;
      }
      fail(w, r.error);
      if (w.target !== t) continue; // a newer checkpoint arrived meanwhile: push that instead
      if (r.kind === 'stop') {
        w.target = null;
        return;
      }
      const delay = Math.min(backoff.maxMs, backoff.initialMs * 2 ** Math.min(30, w.failures - 1));
      w.timer = setTimeout(() => {
        w.timer = null;
        kick(w);
      }, delay);
      (w.timer as { unref?: () => void }).unref?.();
      return;
    }
  }

  function kick(w: Worker): void {
    if (closed || w.running || w.timer) return;
    w.running = run(w).finally(() => {
      w.running = null;
    });
  }

  return {
    onCheckpoint(note) {
      if (closed) return;
      const t = parseNote(note);
      if (!t) {
        opts.logger?.warn('witness push: not a checkpoint note; ignored');
        return;
      }
      for (const w of workers) {
        // Only a larger tree is news: a smaller one is an older checkpoint (a prune
        // cut, a late delivery); a log that really went back is refused by the
        // witness (409 with its larger size) on the next push.
        const pending = w.target?.origin === t.origin ? w.target.size : -1;
        const cosigned = w.cosigned?.origin === t.origin ? w.cosigned.size : -1;
        if (t.size <= Math.max(pending, cosigned)) continue;
        w.target = t;
        if (w.timer) {
          clearTimeout(w.timer);
          w.timer = null;
        }
        kick(w);
      }
    },
    status() {
      const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());
      return workers.map((w) => ({
        url: w.ep.url,
        verifier_key: w.ep.vkey,
        last_cosigned_size: w.cosigned?.size ?? null,
        last_cosigned_at: w.cosigned ? iso(w.cosigned.timestamp * 1000) : null,
        witness_size: w.target ? (w.acked.get(w.target.origin) ?? null) : w.acked.size > 0 ? Math.max(...w.acked.values()) : null,
        pending_size: w.target?.size ?? null,
        last_attempt_at: iso(w.lastAttempt),
        last_error: w.lastError,
        last_error_at: iso(w.lastErrorAt),
        consecutive_failures: w.failures,
      }));
    },
    async idle() {
      for (;;) {
        const busy = workers.filter((w) => w.running || w.timer);
        if (busy.length === 0) return;
        await Promise.all(busy.map((w) => w.running ?? new Promise((r) => setTimeout(r, 20))));
      }
    },
    async close() {
      closed = true;
      aborter.abort();
      for (const w of workers) {
        if (w.timer) clearTimeout(w.timer);
        w.timer = null;
      }
      await Promise.all(workers.map((w) => w.running?.catch(() => {})));
    },
  };
}

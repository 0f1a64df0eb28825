/**
 * Session counts by state (`GET /api/status`, `/metrics`) without a GROUP BY
 * query per request. The store's `counts()` result is kept for at most `ttlMs`
 * (default 1 s) and dropped by every write through this store that can change a
 * session's state (insert, claim, update, transition, expireLeases): in this
 * process the counts are exact right after a change. Changes made by another
 * process on the same database (a second server on PostgreSQL, the CLI on the
 * SQLite file) show within `ttlMs`.
 */
import type { SessionStore, Store } from './store';

export const SESSION_COUNTS_TTL_MS = 1_000;

export interface CountsCacheOptions {
  ttlMs?: number;
  now?: () => number;
}

export function withCountsCache(store: Store, opts: CountsCacheOptions = {}): Store {
  const inner = store.sessions;
  const ttl = opts.ttlMs ?? SESSION_COUNTS_TTL_MS;
  const now = opts.now ?? Date.now;
  let cached: { value: Record<string, number>; at: number } | null = null;
  // Bumped by every write: a read that started before a write does not fill the cache.
  let generation = 0;
  const invalidate = () => {
    generation++;
    cached = null;
  };
  /** A write that may change a session's state: the cache is dropped before and after it. */
  const writes =
    <A extends unknown[], R>(fn: (...args: A) => Promise<R>) =>
    async (...args: A): Promise<R> => {
      invalidate();
      try {
        return await fn(...args);
      } finally {
        invalidate();
      }
    };
  const sessions: SessionStore = {
    ...inner,
    async counts() {
      const t = now();
      // A wall clock stepped back (t before the read) does not stretch the TTL.
      if (cached && t >= cached.at && t - cached.at < ttl) return { ...cached.value };
      const g = generation;
      const value = await inner.counts();
      if (g === generation) cached = { value, at: t };
      return { ...value };
    },
    insert: writes((s) => inner.insert(s)),
    claim: writes((workerId, leaseId, at, leaseUntil) => inner.claim(workerId, leaseId, at, leaseUntil)),
    update: writes((id, leaseId, patch) => inner.update(id, leaseId, patch)),
    transition: writes((id, cond, patch) => inner.transition(id, cond, patch)),
    expireLeases: writes((at) => inner.expireLeases(at)),
  };
  return { ...store, sessions };
}

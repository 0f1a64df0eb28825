/**
 * A short-lived cache in front of the token store's hash lookup, so a busy
 * server does not hit the database for every request. Entries live at most
 * `ttlMs` (default 500 ms): a revocation made by another process (the CLI) takes
 * effect within that time; any write through this store (revoke, re-hash)
 * clears the cache, so a revocation through the API takes effect at once.
 */
import type { TokenRecord, TokenStore } from '../db/store';

export function cachedTokenStore(inner: TokenStore, opts: { ttlMs?: number; now?: () => number; maxEntries?: number } = {}): TokenStore {
  const ttl = opts.ttlMs ?? 500;
  const now = opts.now ?? Date.now;
  const max = opts.maxEntries ?? 10_000;
  const cache = new Map<string, { row: TokenRecord | null; at: number }>();
  const clear = () => cache.clear();
  return {
    ...inner,
    async findByHash(hash) {
      const hit = cache.get(hash);
      const t = now();
      if (hit && t - hit.at < ttl) return hit.row;
      const row = await inner.findByHash(hash);
      // Unknown hashes are not cached: guessing must not fill memory.
      if (row) {
        if (cache.size >= max) cache.clear();
        cache.set(hash, { row, at: t });
      }
      return row;
    },
    async revoke(id, at) {
      clear();
      const ok = await inner.revoke(id, at);
      clear();
      return ok;
    },
    async rehash(id, newHash) {
      clear();
      await inner.rehash(id, newHash);
    },
    async insert(t) {
      await inner.insert(t);
    },
    get: (idOrName) => inner.get(idOrName),
    list: (all) => inner.list(all),
    listLegacySalted: () => inner.listLegacySalted(),
    touch: (id, at) => inner.touch(id, at),
  };
}

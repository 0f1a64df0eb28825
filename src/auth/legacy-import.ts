/** Import Loki Mode tokens into the token table, keeping their hashes (plaintexts are unknown). */
import { type TokenStore, UniqueViolation } from '../db/store';
import { parseLegacyTokensFile } from './legacy-tokens';
import { randomId } from './tokens';

function toMs(v: unknown): number | null {
  if (v === null || v === undefined) return null;
  if (typeof v === 'number') return v;
  if (v instanceof Date) return v.getTime();
  const ms = Date.parse(String(v));
  return Number.isFinite(ms) ? ms : null;
}

export async function importLegacyTokens(store: TokenStore, file: string, now: number) {
  const parsed = parseLegacyTokensFile(file);
  const imported: { id: string; name: string; role: string; revoked: boolean }[] = [];
  const skipped: { name: string; reason: string }[] = [];
  for (const t of parsed) {
    const existing = await store.get(t.name);
    if (existing) {
      skipped.push({ name: t.name, reason: existing.hash === t.hash ? 'already imported' : 'a token with that name exists' });
      continue;
    }
    const id = randomId('tok_', 8);
    try {
      await store.insert({
        id,
        name: t.name,
        hash: t.hash,
        legacySalt: t.salt ?? null,
        role: t.role,
        scopes: t.scopes,
        createdAt: toMs(t.createdAt) ?? now,
        expiresAt: toMs(t.expiresAt),
        lastUsedAt: null,
        revokedAt: t.revoked ? now : null,
        createdBy: `import:loki-mode:${t.legacyId}`,
        source: 'legacy',
        workerId: null,
      });
      imported.push({ id, name: t.name, role: t.role, revoked: t.revoked });
    } catch (err) {
      if (err instanceof UniqueViolation) skipped.push({ name: t.name, reason: 'duplicate name or hash' });
      else throw err;
    }
  }
  return { imported, skipped };
}

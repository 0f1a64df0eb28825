import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type LegacyToken,
  LegacyTokensError,
  legacyTokenHash,
  legacyTokenMatches,
  parseLegacyTokensFile,
} from '../../src/auth/legacy-tokens';

const SINGLE = resolve(import.meta.dirname, '../../../shared/fixtures/loki-mode-legacy/single');
const TOKENS_JSON = join(SINGLE, 'tokens.json');
const PLAIN = JSON.parse(readFileSync(join(SINGLE, 'tokens.plain.json'), 'utf8')) as Record<
  string,
  { token: string; id: string; role: string | null; revoked?: boolean }
>;

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'loki-legacy-tokens-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

let n = 0;
async function writeTokens(content: unknown): Promise<string> {
  const path = join(dir, `tokens-${n++}.json`);
  await writeFile(path, typeof content === 'string' ? content : JSON.stringify(content));
  return path;
}

const base = {
  id: 'abc123def456',
  name: 'bot',
  hash: 'a'.repeat(64),
  salt: 'ff'.repeat(16),
  scopes: ['read'],
  created_at: '2026-01-01T00:00:00.000000+00:00',
  expires_at: null,
  last_used: null,
  revoked: false,
  role: 'viewer',
};
const fileWith = (entry: Record<string, unknown>, key = 'abc123def456') => ({ version: '1.0', tokens: { [key]: entry } });

describe('parseLegacyTokensFile on the Loki Mode fixture', () => {
  const tokens = parseLegacyTokensFile(TOKENS_JSON);
  const byName = new Map(tokens.map((t) => [t.name, t]));

  it('reads all six tokens with their roles and scopes', () => {
    expect(tokens.map((t) => [t.name, t.role, t.scopes, t.revoked])).toEqual([
      ['admin-bot', 'admin', ['*'], false],
      ['ops', 'operator', ['control', 'read', 'write'], false],
      ['dash-viewer', 'viewer', ['read'], false],
      ['compliance', 'auditor', ['read', 'audit'], false],
      ['old-ci', 'operator', ['control', 'read', 'write'], true],
      // created with scopes and no role: the smallest role covering them, narrowed to them
      ['legacy-scopes', 'operator', ['read', 'control'], false],
    ]);
  });

  it('keeps ids, salts, dates and revocation', () => {
    const ops = byName.get('ops')!;
    expect(ops).toMatchObject({
      legacyId: '795cd56ba6ef',
      hash: '795cd56ba6ef6523ada473323bda3352f326a9b2df17a33064437000a0a43670',
      salt: '76eac71a57590e900a9f49e485258f3b',
      revokedAt: null,
      lastUsedAt: null,
    });
    expect(ops.createdAt.toISOString()).toBe('2026-11-24T05:22:49.150Z');
    expect(ops.expiresAt?.toISOString()).toBe('2026-12-24T05:22:49.150Z');
    expect(byName.get('admin-bot')!.expiresAt).toBeNull();
    expect(byName.get('old-ci')!.revokedAt?.toISOString()).toBe('2026-11-24T05:22:49.153Z');
  });

  it('every known plaintext matches its own entry and no other', () => {
    for (const [name, known] of Object.entries(PLAIN)) {
      const own = byName.get(name)!;
      expect(own.legacyId).toBe(known.id);
      expect(own.role).toBe(known.role ?? 'operator');
      expect(own.revoked).toBe(known.revoked === true);
      for (const t of tokens) expect(legacyTokenMatches(t, known.token), `${name} vs ${t.name}`).toBe(t === own);
    }
  });

  it('wrong plaintexts do not match', () => {
    const admin = byName.get('admin-bot')!;
    const good = PLAIN['admin-bot']!.token;
    const flipped = good.slice(0, -1) + (good.endsWith('A') ? 'B' : 'A');
    for (const wrong of [flipped, good.slice(0, -1), `${good}x`, good.toUpperCase(), '', 'loki_', admin.hash, `${admin.salt}${good}`]) {
      expect(legacyTokenMatches(admin, wrong), wrong).toBe(false);
    }
  });
});

describe('legacyTokenMatches', () => {
  const plaintext = `loki_${'A'.repeat(43)}`;

  it('accepts unsalted sha256(token) entries', async () => {
    const hash = legacyTokenHash(null, plaintext);
    const path = await writeTokens(fileWith({ ...base, hash, salt: undefined }));
    const [t] = parseLegacyTokensFile(path) as [LegacyToken];
    expect(t.salt).toBeNull();
    expect(legacyTokenMatches(t, plaintext)).toBe(true);
    expect(legacyTokenMatches(t, `loki_${'B'.repeat(43)}`)).toBe(false);
  });

  it('treats an empty salt like Loki Mode did (no salt)', async () => {
    const path = await writeTokens(fileWith({ ...base, hash: legacyTokenHash(null, plaintext), salt: '' }));
    const [t] = parseLegacyTokensFile(path) as [LegacyToken];
    expect(t.salt).toBeNull();
    expect(legacyTokenMatches(t, plaintext)).toBe(true);
  });

  it('refuses a plaintext that is not in the legacy shape even if it hashes right', () => {
    const odd = 'loki_short';
    expect(legacyTokenMatches({ hash: legacyTokenHash(null, odd), salt: null }, odd)).toBe(false);
  });
});

describe('parseLegacyTokensFile on bad files', () => {
  const cases: Array<[string, unknown, RegExp]> = [
    ['not JSON', '{"version": "1.0", ', /not valid JSON/],
    ['wrong version', { version: '2.0', tokens: {} }, /version: unsupported version/],
    ['no tokens', { version: '1.0' }, /tokens:/],
    ['bad hash', fileWith({ ...base, hash: 'xyz' }), /tokens\.abc123def456\.hash: must be 64 hex characters/],
    ['no scopes', fileWith({ ...base, scopes: [] }), /scopes: must list at least one scope/],
    ['unknown scope', fileWith({ ...base, role: null, scopes: ['read', 'deploy'] }), /token "abc123def456": unknown scope "deploy"/],
    ['unknown role', fileWith({ ...base, role: 'root' }), /unknown role "root"/],
    ['scopes wider than role', fileWith({ ...base, role: 'viewer', scopes: ['control'] }), /wider than role viewer/],
    ['control characters in name', fileWith({ ...base, name: 'a\u0007b' }), /control characters/],
    ['bad date', fileWith({ ...base, expires_at: 'next week' }), /expires_at is not an ISO 8601 date/],
    ['impossible date', fileWith({ ...base, created_at: '2026-02-30T00:00:00' }), /created_at is not an ISO 8601 date/],
    ['id mismatch', fileWith({ ...base, id: 'other' }), /does not match its key/],
    [
      'duplicate name',
      { version: '1.0', tokens: { a: { ...base, id: 'a' }, b: { ...base, id: 'b', hash: 'b'.repeat(64) } } },
      /token "b": duplicate name "bot"/,
    ],
  ];
  for (const [what, content, message] of cases) {
    it(what, async () => {
      const path = await writeTokens(content);
      let err: unknown;
      try {
        parseLegacyTokensFile(path);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(LegacyTokensError);
      expect((err as Error).message).toMatch(message);
      expect((err as Error).message.startsWith(path)).toBe(true);
    });
  }

  it('a missing file', () => {
    expect(() => parseLegacyTokensFile(join(dir, 'nope.json'))).toThrow(LegacyTokensError);
  });

  it('a naive timestamp is read as UTC', async () => {
    const path = await writeTokens(fileWith({ ...base, created_at: '2026-03-01T12:00:00' }));
    expect(parseLegacyTokensFile(path)[0]!.createdAt.toISOString()).toBe('2026-03-01T12:00:00.000Z');
  });

  it('offsets are applied', async () => {
    const path = await writeTokens(fileWith({ ...base, created_at: '2026-03-01T12:00:00.5-05:30' }));
    expect(parseLegacyTokensFile(path)[0]!.createdAt.toISOString()).toBe('2026-03-01T17:30:00.500Z');
  });

  it('scope-only tokens get the smallest covering role', async () => {
    const cases: Array<[string[], string]> = [
      [['read'], 'viewer'],
      [['audit'], 'auditor'],
      [['write'], 'operator'],
      [['audit', 'write'], 'admin'],
      [['*'], 'admin'],
    ];
    for (const [scopes, role] of cases) {
      const path = await writeTokens(fileWith({ ...base, role: undefined, scopes }));
      expect(parseLegacyTokensFile(path)[0]).toMatchObject({ role, scopes });
    }
  });
});

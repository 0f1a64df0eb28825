/**
 * Reading Loki Mode's `~/.loki/dashboard/tokens.json` (version "1.0", written by
 * `dashboard/auth.py`) so its tokens keep working after import.
 *
 * Loki Mode stored `hash = sha256_hex(salt + token)` with a per-token random
 * `salt` (older files: no salt, `sha256_hex(token)`), the scopes it enforced, and
 * an optional `role`. Tokens created with `--scopes` and no role get the smallest
 * role whose scopes cover them, narrowed to exactly those scopes, so an import
 * never widens what a token could do.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { isRole, isScope, narrowScopes, type Role, type Scope, smallestRoleFor } from './roles';
import { tokenShape, validateTokenName } from './tokens';

export interface LegacyToken {
  /** Loki Mode's token id (the first 12 hex characters of its hash). */
  legacyId: string;
  name: string;
  /** Lowercase hex SHA-256 of `salt + token` (or of `token` when unsalted). */
  hash: string;
  salt: string | null;
  role: Role;
  scopes: Scope[];
  createdAt: Date;
  expiresAt: Date | null;
  revoked: boolean;
  revokedAt: Date | null;
  lastUsedAt: Date | null;
}

export class LegacyTokensError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LegacyTokensError';
  }
}

/** Loki Mode roles; `worker` is ours and never appears in a legacy file. */
const LEGACY_ROLES: readonly Role[] = ['admin', 'operator', 'viewer', 'auditor'];

const nullableString = z.string().nullable().optional();

const entrySchema = z.looseObject({
  id: z.string().min(1).max(128).optional(),
  name: z.string(),
  hash: z.string().regex(/^[0-9a-fA-F]{64}$/, 'must be 64 hex characters'),
  salt: nullableString,
  scopes: z.array(z.string()).min(1, 'must list at least one scope'),
  created_at: z.string(),
  expires_at: nullableString,
  last_used: nullableString,
  revoked: z.boolean().optional(),
  revoked_at: nullableString,
  role: nullableString,
});

const fileSchema = z.looseObject({
  version: z.literal('1.0', { error: 'unsupported version (expected "1.0")' }),
  tokens: z.record(z.string(), entrySchema),
});

type Entry = z.infer<typeof entrySchema>;

/**
 * Python `datetime.isoformat()` output (`2026-11-24T05:22:49.149973+00:00`).
 * A value without an offset is naive in Python; Loki Mode only wrote UTC, so it is read as UTC.
 */
const ISO = /^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?(Z|[+-]\d{2}:?\d{2})?$/;

function parsePythonDate(value: string): Date | null {
  const m = ISO.exec(value);
  if (!m) return null;
  const [, y, mo, d, h, mi, s = '0', frac = '0', tz] = m;
  const wall = Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s), Math.floor(Number(`0.${frac}`) * 1000));
  const check = new Date(wall);
  // Reject impossible dates (2026-02-30, 25:00) rather than let Date roll them over.
  if (check.getUTCMonth() !== Number(mo) - 1 || check.getUTCDate() !== Number(d) || check.getUTCHours() !== Number(h)) return null;
  let offsetMinutes = 0;
  if (tz && tz !== 'Z') {
    const digits = tz.slice(1).replace(':', '');
    offsetMinutes = (tz[0] === '-' ? -1 : 1) * (Number(digits.slice(0, 2)) * 60 + Number(digits.slice(2)));
  }
  return new Date(wall - offsetMinutes * 60_000);
}

function convert(key: string, e: Entry): LegacyToken {
  const where = `token ${JSON.stringify(key)}`;
  const fail = (msg: string): never => {
    throw new LegacyTokensError(`${where}: ${msg}`);
  };
  const legacyId = e.id ?? key;
  if (legacyId !== key) fail(`id ${JSON.stringify(e.id)} does not match its key`);

  const named = validateTokenName(e.name);
  if ('error' in named) fail(named.error);
  const name = (named as { name: string }).name;

  const scopes: Scope[] = [];
  for (const s of e.scopes) {
    if (!isScope(s) || s === 'sandbox') fail(`unknown scope ${JSON.stringify(s)}`);
    scopes.push(s as Scope);
  }
  let role: Role;
  if (e.role != null) {
    if (!isRole(e.role) || !LEGACY_ROLES.includes(e.role)) fail(`unknown role ${JSON.stringify(e.role)}`);
    role = e.role as Role;
  } else {
    role = smallestRoleFor(scopes);
  }
  const narrowed = narrowScopes(role, scopes);
  if ('error' in narrowed) fail(narrowed.error);

  const date = (field: string, v: string | null | undefined): Date | null => {
    if (v == null) return null;
    return parsePythonDate(v) ?? fail(`${field} is not an ISO 8601 date: ${JSON.stringify(v)}`);
  };

  return {
    legacyId,
    name,
    hash: e.hash.toLowerCase(),
    salt: e.salt ? e.salt : null, // Loki Mode hashed with "" when there was no salt
    role,
    scopes: (narrowed as { scopes: Scope[] }).scopes,
    createdAt: date('created_at', e.created_at)!,
    expiresAt: date('expires_at', e.expires_at),
    revoked: e.revoked === true,
    revokedAt: date('revoked_at', e.revoked_at),
    lastUsedAt: date('last_used', e.last_used),
  };
}

/** Parse and validate a Loki Mode `tokens.json`. Throws `LegacyTokensError` naming the file and the bad field. */
export function parseLegacyTokensFile(path: string): LegacyToken[] {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    const why = err instanceof SyntaxError ? `not valid JSON (${err.message})` : (err as Error).message;
    throw new LegacyTokensError(`${path}: ${why}`);
  }
  const parsed = fileSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const at = issue.path.length > 0 ? issue.path.map(String).join('.') : '(root)';
    throw new LegacyTokensError(`${path}: ${at}: ${issue.message}`);
  }

  const out: LegacyToken[] = [];
  const names = new Set<string>();
  const hashes = new Set<string>();
  for (const [key, entry] of Object.entries(parsed.data.tokens)) {
    let t: LegacyToken;
    try {
      t = convert(key, entry);
    } catch (err) {
      if (err instanceof LegacyTokensError) throw new LegacyTokensError(`${path}: ${err.message}`);
      throw err;
    }
    if (names.has(t.name)) throw new LegacyTokensError(`${path}: token ${JSON.stringify(key)}: duplicate name ${JSON.stringify(t.name)}`);
    if (hashes.has(t.hash)) throw new LegacyTokensError(`${path}: token ${JSON.stringify(key)}: duplicate hash`);
    names.add(t.name);
    hashes.add(t.hash);
    out.push(t);
  }
  return out;
}

/** The stored hash of a legacy token: `sha256_hex(salt + token)`, or `sha256_hex(token)` when unsalted. */
export function legacyTokenHash(salt: string | null, plaintext: string): string {
  return createHash('sha256')
    .update((salt ?? '') + plaintext, 'utf8')
    .digest('hex');
}

/**
 * Whether `plaintext` is the token `t` was made from. Checks the Loki Mode shape
 * (`loki_` + 43 base64url characters) first, then compares hashes in constant time.
 * Says nothing about revocation or expiry.
 */
export function legacyTokenMatches(t: Pick<LegacyToken, 'hash' | 'salt'>, plaintext: string): boolean {
  if (tokenShape(plaintext) !== 'legacy') return false;
  const expected = Buffer.from(t.hash, 'hex');
  const actual = Buffer.from(legacyTokenHash(t.salt, plaintext), 'hex');
  return expected.length === actual.length && timingSafeEqual(expected, actual);
}

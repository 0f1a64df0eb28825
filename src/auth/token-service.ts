/**
 * Token administration shared by the API and the CLI: validation, creation
 * (plaintext returned once), listing without secrets, revocation by id or name.
 */
import { WORKER_ID_PATTERN } from '../sessions/api';
import { type TokenRecord, type TokenStore, UniqueViolation } from '../db/store';
import { isRole, narrowScopes, type Role, ROLES } from './roles';
import { generateToken, MAX_EXPIRES_DAYS, randomId, sha256Hex, validateTokenName } from './tokens';

export class TokenInputError extends Error {
  constructor(
    message: string,
    readonly kind: 'invalid' | 'conflict' | 'not_found' = 'invalid',
  ) {
    super(message);
  }
}

export interface CreateTokenInput {
  name: unknown;
  role?: unknown;
  scopes?: unknown;
  expiresDays?: unknown;
  /** Required for the `worker` role: the only worker id the token may claim under. */
  workerId?: unknown;
  createdBy: string | null;
}

/** Public view of a token: never the hash, never the plaintext. */
export function publicToken(t: TokenRecord) {
  return {
    id: t.id,
    name: t.name,
    role: t.role,
    scopes: t.scopes,
    created_at: new Date(t.createdAt).toISOString(),
    expires_at: t.expiresAt === null ? null : new Date(t.expiresAt).toISOString(),
    last_used_at: t.lastUsedAt === null ? null : new Date(t.lastUsedAt).toISOString(),
    revoked_at: t.revokedAt === null ? null : new Date(t.revokedAt).toISOString(),
    created_by: t.createdBy,
    source: t.source,
    worker_id: t.workerId,
    status: t.revokedAt !== null ? 'revoked' : t.expiresAt !== null && t.expiresAt <= Date.now() ? 'expired' : 'active',
  };
}

export function parseExpiresDays(v: unknown): number | null {
  if (v === undefined || v === null) return null;
  const n = typeof v === 'string' && /^\d+$/.test(v.trim()) ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > MAX_EXPIRES_DAYS) {
    throw new TokenInputError(`expires_days must be a whole number of days from 1 to ${MAX_EXPIRES_DAYS} (got ${JSON.stringify(v)})`);
  }
  return n;
}

export async function createToken(store: TokenStore, input: CreateTokenInput, now: number) {
  const named = validateTokenName(input.name);
  if ('error' in named) throw new TokenInputError(named.error);
  const role: Role = input.role === undefined || input.role === null ? 'viewer' : (input.role as Role);
  if (!isRole(role)) throw new TokenInputError(`role must be one of ${ROLES.join(', ')} (got ${JSON.stringify(input.role)})`);
  if (input.scopes !== undefined && input.scopes !== null && (!Array.isArray(input.scopes) || input.scopes.some((s) => typeof s !== 'string'))) {
    throw new TokenInputError('scopes must be a list of scope names');
  }
  const narrowed = narrowScopes(role, input.scopes as string[] | undefined);
  if ('error' in narrowed) throw new TokenInputError(narrowed.error);
  const days = parseExpiresDays(input.expiresDays);
  let workerId: string | null = null;
  if (role === 'worker') {
    if (typeof input.workerId !== 'string' || !WORKER_ID_PATTERN.test(input.workerId)) {
      throw new TokenInputError(
        input.workerId === undefined || input.workerId === null
          ? 'a worker token must be bound to a worker id (worker_id, --worker-id): the protocol refuses it under any other id'
          : `worker_id must be 1-64 letters, digits, ".", "_" or "-" (got ${JSON.stringify(input.workerId)})`,
      );
    }
    workerId = input.workerId;
  } else if (input.workerId !== undefined && input.workerId !== null) {
    throw new TokenInputError('worker_id is only for tokens of the worker role');
  }
  const plaintext = generateToken();
  const record: TokenRecord = {
    id: randomId('tok_', 8),
    name: named.name,
    hash: await sha256Hex(plaintext),
    legacySalt: null,
    role,
    scopes: narrowed.scopes,
    createdAt: now,
    expiresAt: days === null ? null : now + days * 86_400_000,
    lastUsedAt: null,
    revokedAt: null,
    createdBy: input.createdBy,
    source: 'native',
    workerId,
  };
  try {
    await store.insert(record);
  } catch (err) {
    if (err instanceof UniqueViolation) throw new TokenInputError(`a token named "${named.name}" already exists`, 'conflict');
    throw err;
  }
  return { record, plaintext };
}

export async function revokeToken(store: TokenStore, idOrName: string, now: number): Promise<TokenRecord> {
  const t = await store.get(idOrName);
  if (!t) throw new TokenInputError(`no token with id or name "${idOrName}"`, 'not_found');
  if (t.revokedAt !== null) throw new TokenInputError(`token "${t.name}" is already revoked`, 'conflict');
  await store.revoke(t.id, now);
  return { ...t, revokedAt: now };
}

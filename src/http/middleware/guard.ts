import type { MiddlewareHandler } from 'hono';
import { type AuthFailure, type Authenticator, parseBearer } from '../../auth/authenticate';
import { hasScope, ROLE_RANK, ROLE_SCOPES, ROLES, type Scope } from '../../auth/roles';
import { isLoopbackHost } from '../../env';
import type { AppContext, AppEnv, Identity } from '../context';
import { ErrorCode } from '../errors';
import { errorResponse } from '../respond';
import { neededScope, type RouteSpec } from '../scopes';
import type { FailureLimiter } from './rate-limit';
import { requestHeader } from '../headers';

export const WWW_INVALID = 'Bearer realm="loki", error="invalid_token"';
export const wwwInsufficient = (scope: string) => `Bearer realm="loki", error="insufficient_scope", scope="${scope}"`;

/** What a person reads on a 403: the roles that grant the scope ("admin role required", "auditor or admin role required"). */
export function roleRequiredText(scope: Scope): string {
  const roles = ROLES.filter((r) => hasScope(ROLE_SCOPES[r], scope)).sort((a, b) => (a === 'admin' ? 1 : b === 'admin' ? -1 : ROLE_RANK[a] - ROLE_RANK[b]));
  const list = roles.length > 1 ? `${roles.slice(0, -1).join(', ')} or ${roles.at(-1)}` : (roles[0] ?? 'admin');
  return `${list} role required`;
}

/**
 * One answer for every refused credential (malformed, unknown, revoked, expired, a
 * rejected identity token): a caller must not learn which tokens exist. The reason
 * goes to the audit entry only (`details.reason`).
 */
const INVALID_TEXT = 'the bearer token is not valid';
const FAILURE_TEXT: Record<AuthFailure, string> = {
  missing: 'a bearer token is required',
  malformed: INVALID_TEXT,
  unknown: INVALID_TEXT,
  revoked: INVALID_TEXT,
  expired: INVALID_TEXT,
  oidc_rejected: INVALID_TEXT,
  oidc_unavailable: 'the identity provider cannot be reached',
};

export interface GuardOptions {
  authRequired: boolean;
  authenticator: Authenticator;
  limiter: FailureLimiter;
  clientAddress: (c: AppContext) => string | null;
  /** Extra credential sources (e.g. the WebSocket subprotocol); returns the token or null. */
  extraCredential?: (c: AppContext) => string | null;
}

/** Resolve who is calling; null identity + failure when the credential is refused. */
export async function resolveIdentity(
  c: AppContext,
  opts: GuardOptions,
): Promise<{ identity: Identity } | { failure: AuthFailure; status: 401 | 403 | 429; retryAfter?: number }> {
  const addr = opts.clientAddress(c) ?? 'unknown';
  if (!opts.authRequired) {
    if (addr !== 'unknown' && isLoopbackHost(addr.replace(/^::ffff:/, ''))) {
      return {
        identity: { actor: { type: 'local', id: null, name: 'local' }, role: 'admin', scopes: ['*'], expiresAt: null, tokenId: null, via: 'loopback' },
      };
    }
    return { failure: 'missing', status: 403 };
  }
  // The credential is checked first: a valid one is never refused because of earlier
  // junk from the same address. Only failures count, and only they are held back.
  const header = requestHeader(c, 'authorization');
  let token = parseBearer(header);
  if (token === null && header === undefined) token = opts.extraCredential?.(c) ?? null;
  const result = token === null ? { failure: (header === undefined ? 'missing' : 'malformed') as AuthFailure } : await opts.authenticator.authenticate(token);
  if (!('failure' in result)) return { identity: result };
  const retry = opts.limiter.retryAfter(addr);
  if (retry > 0) return { failure: result.failure, status: 429, retryAfter: retry };
  opts.limiter.fail(addr);
  return { failure: result.failure, status: 401 };
}

/** Per-route guard: authenticate (or trust loopback when auth is off) and check the route's scope. */
export function guard(spec: RouteSpec, opts: GuardOptions): MiddlewareHandler<AppEnv> {
  const needed = neededScope(spec.scope);
  return async (c, next) => {
    if (needed === null) return next();
    const r = await resolveIdentity(c, opts);
    if ('failure' in r) {
      c.set('auditAction', 'auth.failure');
      c.set('auditDetails', { ...c.get('auditDetails'), reason: r.status === 429 ? 'rate_limited' : r.failure });
      if (r.status === 429) {
        return errorResponse(c, 429, ErrorCode.rateLimited, 'too many failed authentications; try again later', {
          'Retry-After': String(r.retryAfter ?? 60),
        });
      }
      if (r.status === 403) {
        return errorResponse(c, 403, ErrorCode.forbidden, 'authentication is off: only loopback callers are served');
      }
      return errorResponse(c, 401, ErrorCode.invalidToken, FAILURE_TEXT[r.failure], { 'WWW-Authenticate': WWW_INVALID });
    }
    c.set('identity', r.identity);
    if (!hasScope(r.identity.scopes, needed)) {
      c.set('auditAction', 'scope.denied');
      c.set('auditDetails', { ...c.get('auditDetails'), needed_scope: needed });
      return errorResponse(c, 403, ErrorCode.insufficientScope, roleRequiredText(needed), {
        'WWW-Authenticate': wwwInsufficient(needed),
      });
    }
    return next();
  };
}

import type { MiddlewareHandler } from 'hono';
import type { AppEnv } from '../context';
import { ErrorCode } from '../errors';
import { errorResponse } from '../respond';

export interface CorsOptions {
  /** Exact origins allowed, with credentials. */
  origins: readonly string[];
  /** `*`: any origin may read, never with credentials (development only). */
  wildcard: boolean;
  allowMethods?: readonly string[];
  allowHeaders?: readonly string[];
  maxAgeSeconds?: number;
}

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * CORS allowlist. A disallowed origin gets no Access-Control-Allow-Origin, its
 * preflight gets 403, and a state-changing request from it (which a browser may
 * send without a preflight) is refused too. `Vary: Origin` always.
 */
export function corsAllowlist(opts: CorsOptions): MiddlewareHandler<AppEnv> {
  const listed = new Set(opts.origins);
  const methods = (opts.allowMethods ?? ['GET', 'POST', 'DELETE', 'OPTIONS']).join(', ');
  const headers = (opts.allowHeaders ?? ['Authorization', 'Content-Type', 'Last-Event-ID', 'X-Request-Id']).join(', ');
  return async (c, next) => {
    const origin = c.req.header('origin');
    const isListed = origin !== undefined && listed.has(origin);
    const allowed = origin !== undefined && (isListed || opts.wildcard);
    const isPreflight = c.req.method === 'OPTIONS' && c.req.header('access-control-request-method') !== undefined;

    if (isPreflight) {
      c.header('Vary', 'Origin', { append: true });
      if (!allowed) return errorResponse(c, 403, ErrorCode.forbiddenOrigin, 'origin is not in the CORS allowlist');
      c.header('Access-Control-Allow-Origin', isListed ? origin : '*');
      if (isListed) c.header('Access-Control-Allow-Credentials', 'true');
      c.header('Access-Control-Allow-Methods', methods);
      c.header('Access-Control-Allow-Headers', headers);
      c.header('Access-Control-Max-Age', String(opts.maxAgeSeconds ?? 600));
      return c.body(null, 204);
    }
    if (origin !== undefined && !allowed && !SAFE_METHODS.has(c.req.method)) {
      c.header('Vary', 'Origin', { append: true });
      return errorResponse(c, 403, ErrorCode.forbiddenOrigin, 'origin is not in the CORS allowlist');
    }
    c.header('Vary', 'Origin', { append: true });
    if (allowed) {
      c.header('Access-Control-Allow-Origin', isListed ? origin : '*');
      if (isListed) c.header('Access-Control-Allow-Credentials', 'true');
      c.header('Access-Control-Expose-Headers', 'X-Request-Id, WWW-Authenticate, Retry-After');
    }
    await next();
  };
}

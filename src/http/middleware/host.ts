import type { MiddlewareHandler } from 'hono';
import type { AppEnv } from '../context';
import { ErrorCode } from '../errors';
import { errorResponse } from '../respond';

/**
 * DNS-rebinding guard while bound to loopback: the Host header must name
 * localhost, 127.0.0.1 or [::1] with our port.
 */
export function hostAllowlist(opts: { port: number; enabled: boolean }): MiddlewareHandler<AppEnv> {
  const allowed = new Set([`localhost:${opts.port}`, `127.0.0.1:${opts.port}`, `[::1]:${opts.port}`]);
  return async (c, next) => {
    if (opts.enabled) {
      const host = (c.req.header('host') ?? '').toLowerCase();
      if (!allowed.has(host)) {
        return errorResponse(c, 403, ErrorCode.forbiddenHost, 'Host header is not an allowed loopback name for this server');
      }
    }
    await next();
  };
}

import type { MiddlewareHandler } from 'hono';
import { randomId } from '../../auth/tokens';
import type { AppEnv } from '../context';

const SAFE_ID = /^[A-Za-z0-9._-]{8,64}$/;

/** A request id on every request and response (`X-Request-Id`); a well-formed incoming one is kept. */
export function requestId(): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const incoming = c.req.header('x-request-id');
    const id = incoming && SAFE_ID.test(incoming) ? incoming : randomId('req_', 10);
    c.set('requestId', id);
    await next();
    c.res.headers.set('X-Request-Id', id);
  };
}

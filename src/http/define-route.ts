import type { Handler, Hono, Input, MiddlewareHandler } from 'hono';
import type { BlankInput } from 'hono/types';
import type { AppEnv } from './context';
import { auditIntent, type AuditIntentOptions } from './middleware/audit';
import { guard, type GuardOptions } from './middleware/guard';
import { describeGuard } from './openapi';
import { type Method, routeSpec } from './scopes';

type M<P extends string, I extends Input> = MiddlewareHandler<AppEnv, P, I>;
type H<P extends string, I extends Input> = Handler<AppEnv, P, I>;

/**
 * Registers a route. Typed like Hono's own `app.on`: each validator's output
 * (`validate()`) reaches the handler, so `c.req.valid('json')` is typed and
 * `c.req.param('id')` knows the path's parameters; no casts.
 */
export interface TypedRoute {
  <P extends string>(method: Method, path: P, handler: H<P, BlankInput>): void;
  <P extends string, I1 extends Input>(method: Method, path: P, m1: M<P, I1>, handler: H<P, I1>): void;
  <P extends string, I1 extends Input, I2 extends Input>(method: Method, path: P, m1: M<P, I1>, m2: M<P, I2>, handler: H<P, I1 & I2>): void;
  <P extends string, I1 extends Input, I2 extends Input, I3 extends Input>(
    method: Method,
    path: P,
    m1: M<P, I1>,
    m2: M<P, I2>,
    m3: M<P, I3>,
    handler: H<P, I1 & I2 & I3>,
  ): void;
}

/**
 * Register a route with the guard for the scope the route table gives it. A route
 * with an `intent` in the table gets its intent committed to the audit log after
 * the guard and the validators, right before the handler (`auditIntent`). The
 * guard carries the route's OpenAPI operation (scope, responses) for
 * `/api/openapi.json`.
 */
export function routeDefiner(app: Hono<AppEnv>, guardOpts: GuardOptions, intentOpts?: AuditIntentOptions): TypedRoute {
  return ((method: Method, path: string, ...handlers: MiddlewareHandler<AppEnv>[]) => {
    const spec = routeSpec(method, path);
    if (!spec) throw new Error(`route ${method} ${path} is missing from the scope table (src/http/scopes.ts)`);
    const chain = spec.intent && intentOpts ? [...handlers.slice(0, -1), auditIntent(spec.intent, intentOpts), ...handlers.slice(-1)] : handlers;
    app.on(method, path, describeGuard(guard(spec, guardOpts), spec), ...chain);
  }) as TypedRoute;
}

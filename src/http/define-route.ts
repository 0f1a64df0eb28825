import type { Handler, Hono, MiddlewareHandler } from 'hono';
import type { AppEnv } from './context';
import { auditIntent, type AuditIntentOptions } from './middleware/audit';
import { guard, type GuardOptions } from './middleware/guard';
import { type Method, routeSpec } from './scopes';

// biome-ignore lint/suspicious/noExplicitAny: handlers carry validator-specific input types
export type DefineRoute = (method: Method, path: string, ...handlers: (Handler<AppEnv, any, any> | MiddlewareHandler<AppEnv, any, any>)[]) => void;

/**
 * Register a route with the guard for the scope the route table gives it. A route
 * with an `intent` in the table gets its intent committed to the audit log after
 * the guard and the validators, right before the handler (`auditIntent`).
 */
export function routeDefiner(app: Hono<AppEnv>, guardOpts: GuardOptions, intentOpts?: AuditIntentOptions): DefineRoute {
  return (method, path, ...handlers) => {
    const spec = routeSpec(method, path);
    if (!spec) throw new Error(`route ${method} ${path} is missing from the scope table (src/http/scopes.ts)`);
    const chain = spec.intent && intentOpts ? [...handlers.slice(0, -1), auditIntent(spec.intent, intentOpts), ...handlers.slice(-1)] : handlers;
    // biome-ignore lint/suspicious/noExplicitAny: hono's overloads
    (app.on as any)(method, path, guard(spec, guardOpts), ...chain);
  };
}

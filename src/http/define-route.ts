import type { Handler, Hono, MiddlewareHandler } from 'hono';
import type { AppEnv } from './context';
import { guard, type GuardOptions } from './middleware/guard';
import { type Method, routeSpec } from './scopes';

// biome-ignore lint/suspicious/noExplicitAny: handlers carry validator-specific input types
export type DefineRoute = (method: Method, path: string, ...handlers: (Handler<AppEnv, any, any> | MiddlewareHandler<AppEnv, any, any>)[]) => void;

/** Register a route with the guard for the scope the route table gives it. */
export function routeDefiner(app: Hono<AppEnv>, guardOpts: GuardOptions): DefineRoute {
  return (method, path, ...handlers) => {
    const spec = routeSpec(method, path);
    if (!spec) throw new Error(`route ${method} ${path} is missing from the scope table (src/http/scopes.ts)`);
    // biome-ignore lint/suspicious/noExplicitAny: hono's overloads
    (app.on as any)(method, path, guard(spec, guardOpts), ...handlers);
  };
}

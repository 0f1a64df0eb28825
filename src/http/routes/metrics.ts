/**
 * `GET /metrics` (Prometheus text format, scope `read`) and the request counter
 * that feeds it. Runtime-free: the registry lives behind `MetricsPort` (Node:
 * src/metrics.ts, prom-client); without one (Workers) the route answers 501.
 *
 * Requests are counted by route pattern (`/api/sessions/:id`, never the raw
 * path), method and status, so the series stay bounded: a path no route
 * matched is `unmatched`, a method outside the usual ones `other`.
 */
import type { MiddlewareHandler } from 'hono';
import { matchedRoutes } from 'hono/route';
import type { AppEnv } from '../context';
import type { TypedRoute } from '../define-route';
import { ErrorCode } from '../errors';
import { errorResponse } from '../respond';
import { ROUTES } from '../scopes';
import type { AppDeps } from '../context';

export interface MetricsPort {
  /** One answered request: method, route pattern (or `unmatched`), status. */
  request(method: string, route: string, status: number): void;
  /** The exposition: body and its Content-Type. */
  render(): Promise<{ contentType: string; body: string }>;
}

const ROUTE_PATHS = new Set(ROUTES.map((r) => r.path));
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

/** The route pattern that answered (a path from the scope table), else `unmatched`. */
function routeLabel(c: Parameters<MiddlewareHandler<AppEnv>>[0]): string {
  const last = matchedRoutes(c).at(-1)?.path;
  return last !== undefined && ROUTE_PATHS.has(last) ? last : 'unmatched';
}

/** Outermost middleware: counts every answer the app gives (also the audit trail's 503 and the checks' 4xx). */
export function requestMetrics(port: MetricsPort): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    await next();
    const m = c.req.method;
    port.request(METHODS.has(m) ? m : 'other', routeLabel(c), c.res.status);
  };
}

export function metricsRoutes(route: TypedRoute, deps: AppDeps): void {
  route('GET', '/metrics', async (c) => {
    if (!deps.metrics) return errorResponse(c, 501, ErrorCode.notImplemented, 'metrics are served by the Node server only (not on Workers)');
    const { contentType, body } = await deps.metrics.render();
    return c.body(body, 200, { 'Content-Type': contentType, 'Cache-Control': 'no-store' });
  });
}

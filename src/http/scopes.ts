/**
 * Every route with its scope, in one table. Routes are registered through
 * `defineRoute`, which refuses a route missing from this table, and a test walks
 * the app's routes against it.
 */
import type { Scope } from '../auth/roles';

export type RouteScope = Scope | 'public' | 'admin';
export type Method = 'GET' | 'POST' | 'DELETE' | 'PUT' | 'PATCH';

export interface RouteSpec {
  method: Method;
  path: string;
  scope: RouteScope;
  /** Not written to the audit log (liveness probes). */
  unaudited?: boolean;
  /**
   * A state-changing route whose change must never happen unaudited: an
   * `<intent>.intent` entry is committed before the handler runs (503
   * `audit_unavailable` and no change when it cannot be), the outcome after.
   */
  intent?: string;
}

export const ROUTES: readonly RouteSpec[] = [
  { method: 'GET', path: '/health', scope: 'public', unaudited: true },
  { method: 'GET', path: '/api/enterprise/status', scope: 'public' },
  { method: 'GET', path: '/api/status', scope: 'read' },
  { method: 'GET', path: '/status', scope: 'read' },
  { method: 'GET', path: '/api/enterprise/tokens', scope: 'admin' },
  { method: 'POST', path: '/api/enterprise/tokens', scope: 'admin', intent: 'token.create' },
  { method: 'DELETE', path: '/api/enterprise/tokens/:id', scope: 'admin', intent: 'token.revoke' },
  { method: 'GET', path: '/api/enterprise/audit', scope: 'audit' },
  { method: 'GET', path: '/api/enterprise/audit/verify', scope: 'audit' },
  { method: 'GET', path: '/api/enterprise/audit/checkpoint', scope: 'audit' },
  { method: 'GET', path: '/api/enterprise/audit/tlog/checkpoint', scope: 'audit' },
  { method: 'GET', path: '/api/enterprise/audit/tlog/tile/*', scope: 'audit' },
  { method: 'GET', path: '/api/enterprise/audit/tlog/proof/inclusion', scope: 'audit' },
  { method: 'GET', path: '/api/enterprise/audit/tlog/proof/consistency', scope: 'audit' },
  { method: 'GET', path: '/api/sessions', scope: 'read' },
  { method: 'POST', path: '/api/sessions', scope: 'control', intent: 'session.start' },
  { method: 'GET', path: '/api/sessions/:id', scope: 'read' },
  { method: 'GET', path: '/api/sessions/:id/logs', scope: 'read' },
  { method: 'GET', path: '/api/sessions/:id/patch', scope: 'read' },
  { method: 'POST', path: '/api/sessions/:id/stop', scope: 'control', intent: 'session.stop' },
  { method: 'GET', path: '/api/events', scope: 'read' },
  { method: 'GET', path: '/ws', scope: 'read' },
  { method: 'POST', path: '/api/sandbox/jobs/claim', scope: 'sandbox' },
  { method: 'POST', path: '/api/sandbox/jobs/:id/events', scope: 'sandbox' },
  { method: 'GET', path: '/api/sandbox/jobs', scope: 'sandbox' },
  { method: 'GET', path: '/', scope: 'public' },
  { method: 'GET', path: '/assets/:file', scope: 'public' },
  { method: 'GET', path: '/metrics', scope: 'read' },
  { method: 'GET', path: '/api/openapi.json', scope: 'public' },
];

export function routeSpec(method: string, path: string): RouteSpec | undefined {
  return ROUTES.find((r) => r.method === method && r.path === path);
}

/** `admin` is the `*` scope: only admin tokens hold it. */
export function neededScope(scope: RouteScope): Scope | null {
  if (scope === 'public') return null;
  return scope === 'admin' ? '*' : scope;
}

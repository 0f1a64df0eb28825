/**
 * The route definer (src/http/define-route.ts): a route missing from the scope
 * table is refused when it is registered; a registered one runs behind the guard
 * for its scope, and its guard carries the OpenAPI operation with that scope.
 */
import { Hono } from 'hono';
import { uniqueSymbol } from 'hono-openapi';
import { describe, expect, it } from 'vitest';
import type { Authenticator } from '../../src/auth/authenticate';
import type { AppEnv } from '../../src/http/context';
import { routeDefiner } from '../../src/http/define-route';
import type { GuardOptions } from '../../src/http/middleware/guard';
import { FailureLimiter } from '../../src/http/middleware/rate-limit';

function setup() {
  const app = new Hono<AppEnv>();
  const opts: GuardOptions = {
    authRequired: true,
    // Never reached: the requests below carry no credential.
    authenticator: {} as Authenticator,
    limiter: new FailureLimiter(20, 60_000, Date.now),
    clientAddress: () => '192.0.2.1',
  };
  return { app, route: routeDefiner(app, opts) };
}

describe('routeDefiner', () => {
  it('refuses a route missing from the scope table, at registration', () => {
    const { app, route } = setup();
    expect(() => route('GET', '/api/not-in-the-table', (c) => c.text('x'))).toThrow(
      'route GET /api/not-in-the-table is missing from the scope table (src/http/scopes.ts)',
    );
    expect(() => route('POST', '/api/status', (c) => c.text('x'))).toThrow('route POST /api/status is missing from the scope table');
    expect(app.routes).toEqual([]);
  });

  it('puts the guard of the scope in front of the handler, and describes the route on that guard', async () => {
    const { app, route } = setup();
    route('GET', '/api/status', (c) => c.json({ ok: true }));
    route('GET', '/api/enterprise/status', (c) => c.json({ ok: true }));
    const refused = await app.request('/api/status');
    expect(refused.status).toBe(401);
    expect((await refused.json()).error.code).toBe('invalid_token');
    expect((await app.request('/api/enterprise/status')).status).toBe(200);
    const [guard] = app.routes.filter((r) => r.path === '/api/status');
    const op = (guard!.handler as unknown as Record<symbol, { spec: { security: unknown; responses: Record<string, unknown> } }>)[uniqueSymbol];
    expect(op?.spec.security).toEqual([{ bearer: ['read'] }]);
    expect(Object.keys(op?.spec.responses ?? {})).toContain('401');
  });
});

/**
 * createApp(deps) → Hono app. A pure factory: it imports nothing runtime-specific.
 * The Node entry (src/node.ts) and the Workers entry (src/worker-entry.ts) differ
 * only in the deps they pass.
 *
 * Middleware order: request id → security headers → audit trail (records the
 * outcome of everything below it, fail closed) → Host allowlist → CORS → path
 * safety → body limit → per-route guard (auth + scope) → handler.
 */
import { Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { Authenticator } from './auth/authenticate';
import { createOidcVerifier } from './auth/oidc';
import { cachedTokenStore } from './auth/token-cache';
import type { AppDeps, AppEnv } from './http/context';
import { routeDefiner } from './http/define-route';
import { ApiError, ErrorCode, isStoreUnavailable, loggableError } from './http/errors';
import { auditTrail } from './http/middleware/audit';
import { allowedOrigins, corsAllowlist } from './http/middleware/cors';
import { type GuardOptions, resolveIdentity } from './http/middleware/guard';
import { hostAllowlist } from './http/middleware/host';
import { pathSafety } from './http/middleware/paths';
import { FailureLimiter } from './http/middleware/rate-limit';
import { requestId } from './http/middleware/request-id';
import { securityHeaders } from './http/middleware/security-headers';
import { API_VERSION, openApiRoutes } from './http/openapi';
import { errorResponse } from './http/respond';
import { requestHeader } from './http/headers';
import { auditRoutes } from './http/routes/audit';
import { dashboardRoutes } from './http/routes/dashboard';
import { eventsRoutes } from './http/routes/events';
import { metricsRoutes, requestMetrics } from './http/routes/metrics';
import { sandboxRoutes } from './http/routes/sandbox';
import { sessionRoutes } from './http/routes/sessions';
import { systemRoutes } from './http/routes/system';
import { tokenRoutes } from './http/routes/tokens';
import { wsCredential, wsRoutes } from './http/routes/ws';

export interface LokiApp {
  app: Hono<AppEnv>;
  authenticator: Authenticator;
  guardOptions: GuardOptions;
}

export function createLokiApp(appDeps: AppDeps): LokiApp {
  // Token lookups go through a short-lived cache; routes share it so an API revocation clears it.
  const deps: AppDeps = { ...appDeps, store: { ...appDeps.store, tokens: cachedTokenStore(appDeps.store.tokens) } };
  const now = deps.now ?? Date.now;
  const app = new Hono<AppEnv>();
  const oidc =
    deps.oidc ??
    (deps.config.oidc
      ? createOidcVerifier({
          issuer: deps.config.oidc.issuer,
          clientId: deps.config.oidc.clientId,
          audience: deps.config.oidc.audience,
          rolesClaims: deps.config.oidc.rolesClaims,
          defaultRole: deps.config.oidc.defaultRole,
          roleMap: deps.config.oidc.roleMap,
          maxTokenLifetimeSec: deps.config.oidc.maxTokenLifetimeSec,
        })
      : null);
  const authenticator = new Authenticator(deps.store.tokens, { now, oidc, sha256: deps.sha256 });
  const guardOptions: GuardOptions = {
    authRequired: deps.config.enterpriseAuth || deps.config.oidc !== null,
    authenticator,
    limiter: new FailureLimiter(20, 60_000, now),
    clientAddress: deps.clientAddress,
    // The WebSocket handshake may carry its token as a subprotocol or ?token= (only on /ws).
    extraCredential: wsCredential,
  };

  // Prometheus request counter (Node): outermost, so it sees every final status.
  if (deps.metrics) app.use('*', requestMetrics(deps.metrics));
  // The edge: request id and headers, then the audit trail around the Host,
  // CORS and path checks and everything after them, in one middleware.
  app.use(
    '*',
    auditTrail({
      audit: deps.audit,
      clientAddress: deps.clientAddress,
      rawPath: deps.rawPath,
      now,
      onError: (err) => deps.logger.error('audit write failed', { err: String(err) }),
      reads: deps.config.auditReads,
      volume: deps.auditVolume ?? null,
      before: [requestId(deps.headers), securityHeaders(deps.headers)],
      checks: [
        hostAllowlist({ port: deps.config.port, enabled: deps.hostCheck }),
        corsAllowlist({ origins: allowedOrigins(deps.config), wildcard: deps.config.corsWildcard, headers: deps.headers }),
        pathSafety(deps.rawPath),
      ],
    }),
  );
  // Only methods with a body get the body limit (GET and HEAD skip the layer).
  app.on(
    ['POST', 'PUT', 'PATCH', 'DELETE'],
    '*',
    bodyLimit({
      maxSize: deps.config.bodyLimitBytes,
      // Connection: close, since the rest of the unread body would corrupt a kept-alive connection.
      onError: (c) =>
        errorResponse(c, 413, ErrorCode.payloadTooLarge, `request body exceeds ${deps.config.bodyLimitBytes} bytes`, { Connection: 'close' }),
    }),
  );

  const route = routeDefiner(app, guardOptions, {
    audit: deps.audit,
    clientAddress: deps.clientAddress,
    rawPath: deps.rawPath,
    now,
    onError: (err) => deps.logger.error('audit write failed', { err: String(err) }),
  });
  systemRoutes(app, route, deps);
  tokenRoutes(route, deps);
  auditRoutes(route, deps);
  sessionRoutes(route, deps);
  sandboxRoutes(route, deps);
  eventsRoutes(route, deps, authenticator);
  wsRoutes(app, route, deps, authenticator);
  dashboardRoutes(route, deps);
  metricsRoutes(route, deps);
  openApiRoutes(app, route, API_VERSION);

  app.notFound(async (c) => {
    // No route ran its guard: name the caller for the audit trail when it presents a credential
    // (an identified caller's failures are never summarised away). A bad one stays anonymous.
    if (!guardOptions.authRequired || requestHeader(c, 'authorization') !== undefined) {
      const r = await resolveIdentity(c, guardOptions);
      if ('identity' in r) c.set('identity', r.identity);
    }
    return errorResponse(c, 404, ErrorCode.notFound, `no route for ${c.req.method} ${c.req.path}`);
  });
  app.onError((err, c) => {
    if (err instanceof ApiError) return errorResponse(c, err.status, err.code, err.message, err.headers);
    // Malformed JSON bodies and similar client faults surface as HTTPException(400).
    const status = (err as { status?: number }).status;
    if (status === 400) return errorResponse(c, 400, ErrorCode.badRequest, 'malformed request');
    if (isStoreUnavailable(err)) {
      deps.logger.warn('the database is unavailable', { request_id: c.get('requestId'), err: loggableError(err) });
      return errorResponse(c, 503, ErrorCode.unavailable, 'the database is unavailable; try again shortly');
    }
    deps.logger.error('unhandled error', { request_id: c.get('requestId'), err: loggableError(err) });
    return errorResponse(c, 500, ErrorCode.internal, 'internal error');
  });
  return { app, authenticator, guardOptions };
}

export function createApp(deps: AppDeps): Hono<AppEnv> {
  return createLokiApp(deps).app;
}

/**
 * A server for the HTTP benchmarks, run in its own process so the load
 * generator does not share its event loop. Modes:
 *   bare  Hono with the same handlers as the dashboard's system routes, no middleware
 *   full  the real server (startServer) configured by the LOKI_* environment
 *   trivial  Hono with one route, `GET /api/status` → `{"ok":true}`, no middleware
 *            (the floor any Hono handler is measured against)
 * Prints `READY <port>` on stdout, exits on SIGTERM.
 */
import { serve } from '@hono/node-server';
import { Hono, type MiddlewareHandler } from 'hono';
import { configOrExit } from '../../src/node';
import { buildNodeRuntime, startServer } from '../../src/server';
import { systemRoutes } from '../../src/http/routes/system';
import type { AppEnv } from '../../src/http/context';
import type { TypedRoute } from '../../src/http/define-route';
import type { Method } from '../../src/http/scopes';
import { createLogger } from '../../src/util/logger';

const mode = process.argv[2];
const config = configOrExit();
const logger = createLogger({ quiet: true });

if (mode === 'trivial') {
  const app = new Hono();
  app.get('/api/status', (c) => c.json({ ok: true }));
  const server = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: config.port }, () => {
    process.stdout.write(`READY ${config.port}\n`);
  });
  process.on('SIGTERM', () => {
    server.close();
    process.exit(0);
  });
} else if (mode === 'bare') {
  const runtime = await buildNodeRuntime({ ...config, auditEnabled: false }, { logger });
  const app = new Hono<AppEnv>();
  // The same handlers, registered without the guard or any middleware.
  const route = ((method: Method, path: string, first: MiddlewareHandler<AppEnv>, ...rest: MiddlewareHandler<AppEnv>[]) => {
    app.on(method, path, first, ...rest);
  }) as TypedRoute;
  systemRoutes(app, route, runtime.deps);
  const server = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: config.port }, () => {
    process.stdout.write(`READY ${config.port}\n`);
  });
  process.on('SIGTERM', () => {
    server.close();
    void runtime.close().then(() => process.exit(0));
  });
} else if (mode === 'full') {
  const server = await startServer(config, { logger });
  process.stdout.write(`READY ${server.port}\n`);
  process.on('SIGTERM', () => {
    void server.stop(2000).then(() => process.exit(0));
  });
} else {
  process.stderr.write('usage: serve-target.ts trivial|bare|full\n');
  process.exit(2);
}

/**
 * Node runtime wiring: SQLite storage, the audit writer and signer, syslog,
 * static files, and the HTTP server. `startServer` is used by `loki dashboard`,
 * `npm start`, `npm run dev` and the tests (with a temporary LOKI_HOME).
 */
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createServer } from 'node:http';
import { createAdaptorServer, getRequestListener, upgradeWebSocket } from '@hono/node-server';
import { WebSocketServer } from 'ws';
import type { Context } from 'hono';
import { createLokiApp, type LokiApp } from './app';
import type { AuditLog } from './audit/log';
import { createNodeAudit } from './audit/node-audit';
import { sha256Hex } from './db/sqlite-audit';
import { openSqlite, migrate, createSqliteStore, tightenDbFiles, type SqliteDb } from './db/sqlite';
import type { Config } from './env';
import { EventHub } from './events/hub';
import { loadOperatorPolicy, type OperatorPolicy } from './sandbox/session-policy';
import { createNodeSessionValidator } from './sessions/node-validator';
import { SessionService } from './sessions/service';
import { selectWsProtocol } from './http/routes/ws';
import type { AppDeps, Logger } from './http/context';
import { createLogger } from './util/logger';
import { contextHeaders, type HeaderSink } from './http/headers';
import { VERSION } from './version';
import { errorBody } from './http/errors';
import { API_CSP } from './http/middleware/security-headers';
import { randomId } from './auth/tokens';

const PUBLIC_DIR = fileURLToPath(new URL('../public', import.meta.url));
const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
};

export function nodeClientAddress(c: Context): string | null {
  const incoming = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming;
  return incoming?.socket?.remoteAddress ?? null;
}

/** Common headers straight onto the ServerResponse; writeHead merges them under the handler's own. */
export const nodeHeaders: HeaderSink = (c, name, value, append) => {
  const out = (c.env as { outgoing?: ServerResponse } | undefined)?.outgoing;
  if (!out || out.headersSent || typeof out.setHeader !== 'function') {
    contextHeaders(c, name, value, append);
    return;
  }
  const prev = append ? out.getHeader(name) : undefined;
  out.setHeader(name, prev ? `${String(prev)}, ${value}` : value);
};

export function nodeRawPath(c: Context): string | null {
  const incoming = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming;
  return incoming?.url ?? null;
}

async function staticFile(rel: string): Promise<Response | null> {
  // `rel` comes from the route table (index.html or a name matched by a strict pattern).
  const file = path.join(PUBLIC_DIR, rel);
  if (!file.startsWith(PUBLIC_DIR + path.sep)) return null;
  try {
    const body = await readFile(file);
    return new Response(body, {
      headers: { 'Content-Type': CONTENT_TYPES[path.extname(file)] ?? 'application/octet-stream', 'Cache-Control': 'no-cache' },
    });
  } catch {
    return null;
  }
}

export interface NodeRuntime {
  db: SqliteDb;
  deps: AppDeps;
  loki: LokiApp;
  audit: AuditLog;
  events: EventHub;
  shutdown: AbortController;
  applied: string[];
  close(): Promise<void>;
}

/** Open the database, migrate, and build the app with its Node deps. */
export async function buildNodeRuntime(config: Config, opts: { logger?: Logger; operatorPolicy?: OperatorPolicy } = {}): Promise<NodeRuntime> {
  const logger = opts.logger ?? createLogger();
  // Decided once, at start-up: a malformed file stops the server (see `policyOrExit`).
  const operatorPolicy = opts.operatorPolicy ?? loadOperatorPolicy(config.policyFile, { allowHostSessions: config.allowHostSessions });
  const db = openSqlite(config.dbPath);
  const applied = migrate(db);
  tightenDbFiles(config.dbPath);
  const store = createSqliteStore(db);
  const nodeAudit = await createNodeAudit(config, db, { logger });
  const audit = nodeAudit.audit;
  audit.startCheckpointTimer(60_000);
  const events = new EventHub(store.events);
  events.startPolling(250);
  const pruneEvents = () =>
    events
      .prune(config.eventsMaxAgeMs, config.eventsMaxRows)
      .then((n) => {
        if (n > 0) logger.info('events pruned', { deleted: n });
      })
      .catch((err) => logger.error('events prune failed', { err: String(err) }));
  void pruneEvents();
  const pruneTimer = setInterval(pruneEvents, config.eventsPruneIntervalMs);
  pruneTimer.unref();
  const shutdown = new AbortController();
  const deps: AppDeps = {
    config,
    store,
    audit,
    events,
    logger,
    version: VERSION,
    startedAt: Date.now(),
    sha256: sha256Hex,
    clientAddress: nodeClientAddress,
    rawPath: nodeRawPath,
    headers: nodeHeaders,
    hostCheck: isLoopbackBind(config.host),
    staticFiles: staticFile,
    shutdownSignal: shutdown.signal,
    sessions: createNodeSessionValidator({
      roots: config.workspaceRoots,
      home: os.homedir(),
      operator: operatorPolicy,
      forceSandbox: config.sandboxMode,
      lokiHome: config.home,
      dockerSocket: config.dockerSocket,
    }),
    upgradeWebSocket,
    statusExtras: () => ({
      syslog: nodeAudit.syslog ? nodeAudit.syslog.stats() : null,
      policy: { source: operatorPolicy.source, host_sessions: operatorPolicy.hostSessions },
    }),
  };
  const loki = createLokiApp(deps);
  // Running sessions whose worker stopped heartbeating become `lost` (never re-run).
  const leases = new SessionService(deps);
  const sweepTimer = setInterval(
    () => void leases.sweepExpiredLeases().catch((err) => logger.error('lease sweep failed', { err: String(err) })),
    Math.max(250, Math.min(5_000, Math.floor(config.sandboxLeaseMs / 4))),
  );
  sweepTimer.unref();
  return {
    db,
    deps,
    loki,
    audit,
    events,
    shutdown,
    applied,
    async close() {
      shutdown.abort();
      clearInterval(pruneTimer);
      clearInterval(sweepTimer);
      events.stop();
      await nodeAudit.close();
      db.close();
    },
  };
}

function isLoopbackBind(host: string): boolean {
  return host === '127.0.0.1' || host === 'localhost' || host === '::1' || host.startsWith('127.');
}

function adapterError(err: unknown): Response {
  const msg = err instanceof Error ? err.message : '';
  const [status, code, message] = /backslash/i.test(msg)
    ? [400, 'invalid_path', 'invalid path: backslash in path']
    : /host/i.test(msg)
      ? [403, 'forbidden_host', 'Host header is not valid for this server']
      : [400, 'bad_request', 'malformed request'];
  return new Response(JSON.stringify(errorBody(code, message, randomId('req_', 10))), {
    status,
    headers: {
      'Content-Type': 'application/json',
      'Content-Security-Policy': API_CSP,
      'X-Content-Type-Options': 'nosniff',
      'Referrer-Policy': 'no-referrer',
      'Cache-Control': 'no-store',
    },
  });
}

export interface RunningServer {
  runtime: NodeRuntime;
  port: number;
  url: string;
  /** Stop accepting, end streams, let in-flight requests finish (until the deadline), close the database. */
  stop(deadlineMs?: number): Promise<void>;
}

export async function startServer(config: Config, opts: { logger?: Logger; operatorPolicy?: OperatorPolicy } = {}): Promise<RunningServer> {
  const runtime = await buildNodeRuntime(config, opts);
  const logger = runtime.deps.logger;
  if (runtime.applied.length) logger.info('migrations applied', { applied: runtime.applied });
  if (config.corsWildcard) {
    logger.warn('LOKI_DASHBOARD_CORS contains "*": any web origin may read API responses (development only)');
    await runtime.audit
      .append({
        ts: Date.now(),
        action: 'config.insecure',
        actor: { type: 'system', id: null, name: 'dashboard' },
        outcome: { status: null, success: true, error: null },
        details: { setting: 'LOKI_DASHBOARD_CORS', value: '*' },
      })
      .catch(() => {});
  }
  // Requests the adapter cannot turn into a Request (a raw backslash in the path,
  // a bad Host) never reach the app: answer them in the same JSON error shape.
  const listener = getRequestListener(runtime.loki.app.fetch, { hostname: config.host, errorHandler: adapterError });
  // WebSocket: the adapter hands upgrades to the app (GET /ws); `ws` does the handshake.
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: 64 * 1024,
    perMessageDeflate: false,
    handleProtocols: (offered) => selectWsProtocol(offered),
  });
  const server = createAdaptorServer({
    websocket: { server: wss },
    fetch: runtime.loki.app.fetch,
    hostname: config.host,
    createServer: ((opts: object) => createServer(opts, listener)) as never,
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  let stopping: Promise<void> | null = null;
  return {
    runtime,
    port: addr.port,
    url: `http://${host}:${addr.port}`,
    stop(deadlineMs = config.shutdownTimeoutMs) {
      stopping ??= (async () => {
        runtime.shutdown.abort();
        const closed = new Promise<void>((r) => server.close(() => r()));
        const closeIdle = () => (server as unknown as { closeIdleConnections?: () => void }).closeIdleConnections?.();
        closeIdle();
        // Streams end on the abort above; their kept-alive connections turn idle a moment later.
        const idleSweep = setInterval(closeIdle, 100);
        let timer: NodeJS.Timeout | undefined;
        const deadline = new Promise<'deadline'>((r) => {
          timer = setTimeout(() => r('deadline'), deadlineMs);
        });
        const outcome = await Promise.race([closed.then(() => 'closed' as const), deadline]);
        clearTimeout(timer);
        clearInterval(idleSweep);
        if (outcome === 'deadline') {
          logger.warn('shutdown deadline reached; closing remaining connections');
          (server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
        }
        await runtime.close();
      })();
      return stopping;
    },
  };
}

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
import { createServer as createHttpsServer } from 'node:https';
import { createAdaptorServer, getRequestListener, upgradeWebSocket } from '@hono/node-server';
import { WebSocketServer } from 'ws';
import type { Context } from 'hono';
import { createLokiApp, type LokiApp } from './app';
import type { AuditLog } from './audit/log';
import { createNodeAudit, createPgNodeAudit, type NodeAudit } from './audit/node-audit';
import { type PruneOutcome, pruneAudit, retentionCutoff } from './audit/retention';
import { AuditVolumeGuard } from './audit/suppress';
import { proveTree } from './audit/tlog/merkle';
import { createWitnessPusher, type WitnessPusher } from './audit/witness-client';
import { sha256Hex } from './db/sqlite-audit';
import { openSqlite, migrate, createSqliteStore, tightenDbFiles, type SqliteDb } from './db/sqlite';
import { openPostgresBackend, type PostgresBackend } from './db/pg';
import type { Store } from './db/store';
import { createSqliteCosignatureStore, watchCheckpointNotes } from './db/sqlite-witness';
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
import { createNodeMetrics } from './metrics';
import { loadTls } from './tls';
import { errorBody } from './http/errors';
import { API_CSP } from './http/middleware/security-headers';
import { randomId } from './auth/tokens';
import { EmbeddedWorker, EmbeddedWorkerError, type EmbeddedWorkerStatus, embeddedWorkerId, notRunning, probeDocker } from './embedded-worker';

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
  /** The SQLite handle (throws on PostgreSQL: use `pg`). */
  db: SqliteDb;
  /** `LOKI_DATABASE_URL`: the PostgreSQL pool, store and audit storage (null on SQLite). */
  pg: PostgresBackend | null;
  deps: AppDeps;
  loki: LokiApp;
  audit: AuditLog;
  /** Summaries of failed requests without an identity (`audit.suppressed`). */
  auditVolume: AuditVolumeGuard;
  /** `LOKI_AUDIT_RETENTION_DAYS`: one retention pass now (null when retention is off). */
  auditRetention: null | { run(): Promise<PruneOutcome | null> };
  /** `LOKI_AUDIT_WITNESSES`: the background pusher of checkpoint notes to the witnesses (null when none is configured). */
  witnessPusher: WitnessPusher | null;
  events: EventHub;
  shutdown: AbortController;
  applied: string[];
  /** What `/api/status` says about the embedded sandbox worker (`embedded_worker`); startServer updates it. */
  embeddedWorker: { status: () => EmbeddedWorkerStatus };
  close(): Promise<void>;
}

export interface NodeRuntimeOptions {
  logger?: Logger;
  operatorPolicy?: OperatorPolicy;
  /** The clock requests, audit summaries and retention use (tests inject one; default Date.now). */
  now?: () => number;
  /**
   * Run the embedded sandbox worker as `LOKI_EMBEDDED_WORKER` says (`loki dashboard`,
   * `npm start`, tests that ask for it). Other callers (benchmarks, tests) get none.
   */
  embeddedWorker?: boolean;
  /** Where the embedded worker's output lines go (default: stderr). */
  embeddedWorkerOutput?: (line: string) => void;
}

const SYSTEM_RETENTION = { type: 'system' as const, id: null, name: 'audit-retention' };

/**
 * `LOKI_AUDIT_RETENTION_DAYS`: prune with a signed cut on start and every
 * `LOKI_AUDIT_RETENTION_INTERVAL_S`. One pass at a time; a log that does not
 * verify is never pruned (logged and recorded as `audit.prune_refused`).
 */
function auditRetention(config: Config, audit: AuditLog, logger: Logger, now: () => number) {
  const days = config.auditRetentionDays;
  if (days === null || !audit.enabled) return null;
  let running: Promise<PruneOutcome | null> | null = null;
  const pass = async (): Promise<PruneOutcome | null> => {
    const before = retentionCutoff(now(), days);
    const r = await pruneAudit(audit, before, {
      newest: 'keep-head',
      record: (details) =>
        audit.append({
          ts: now(),
          action: 'audit.prune',
          actor: SYSTEM_RETENTION,
          outcome: { status: null, success: true, error: null },
          details: { ...details, via: 'retention', retention_days: days },
        }),
    });
    if (r.status === 'pruned') logger.info('audit retention pruned', { deleted: r.deleted, cut_seq: r.cut.seq, retention_days: days });
    if (r.status === 'refused') {
      logger.error('audit retention refused: the log does not verify', { reason: r.reason, first_invalid_seq: r.firstInvalidSeq });
      await audit.append({
        ts: now(),
        action: 'audit.prune_refused',
        actor: SYSTEM_RETENTION,
        outcome: { status: null, success: false, error: String(r.reason) },
        details: { reason: r.reason, first_invalid_seq: r.firstInvalidSeq, before: new Date(before).toISOString(), retention_days: days },
      });
    }
    return r;
  };
  const run = () => {
    running ??= pass()
      .catch((err) => {
        logger.error('audit retention failed', { err: String(err) });
        return null;
      })
      .finally(() => {
        running = null;
      });
    return running;
  };
  void run();
  const timer = setInterval(() => void run(), config.auditRetentionIntervalMs);
  timer.unref();
  return {
    run,
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}

/**
 * `LOKI_AUDIT_WITNESSES`: every new checkpoint note stored in the database (by
 * this server or a CLI process) goes to each witness in the background, with
 * the consistency proof from the size that witness last acknowledged; the
 * cosignatures land in audit_witness_cosignatures.
 */
function auditWitnessPush(config: Config, db: SqliteDb, audit: AuditLog, logger: Logger) {
  if (config.auditWitnesses.length === 0 || !audit.enabled) return null;
  const pusher = createWitnessPusher({
    witnesses: config.auditWitnesses,
    proof: (oldSize, newSize) => proveTree(newSize, oldSize, (idx) => audit.storage.readHashes(idx), audit.hasher),
    store: createSqliteCosignatureStore(db),
    logger,
  });
  const watcher = watchCheckpointNotes(db, (note) => pusher.onCheckpoint(note), {
    onError: (err) => logger.error('reading checkpoint notes for the witnesses failed', { err: String(err) }),
  });
  return {
    pusher,
    async stop() {
      watcher.stop();
      await pusher.close();
    },
  };
}

/** Open the database, migrate, and build the app with its Node deps. */
export async function buildNodeRuntime(config: Config, opts: NodeRuntimeOptions = {}): Promise<NodeRuntime> {
  const logger = opts.logger ?? createLogger();
  const now = opts.now ?? Date.now;
  // Decided once, at start-up: a malformed file stops the server (see `policyOrExit`).
  const operatorPolicy = opts.operatorPolicy ?? loadOperatorPolicy(config.policyFile, { allowHostSessions: config.allowHostSessions });
  // LOKI_DATABASE_URL: PostgreSQL, shared by every server; otherwise the SQLite file.
  let db: SqliteDb | null = null;
  let pgBackend: PostgresBackend | null = null;
  let applied: string[];
  let store: Store;
  let nodeAudit: NodeAudit;
  if (config.database) {
    pgBackend = await openPostgresBackend(config.database, {
      onError: (err) => logger.warn('database connection lost; the pool reconnects', { err: err.message }),
    });
    applied = pgBackend.applied;
    store = pgBackend.store;
    nodeAudit = await createPgNodeAudit(config, pgBackend.auditStorage, { logger });
  } else {
    db = openSqlite(config.dbPath);
    applied = migrate(db);
    tightenDbFiles(config.dbPath);
    store = createSqliteStore(db);
    nodeAudit = await createNodeAudit(config, db, { logger, appendThread: config.auditWriterThread });
  }
  const sqlite = db;
  const audit = nodeAudit.audit;
  audit.startCheckpointTimer(60_000);
  const auditVolume = new AuditVolumeGuard({
    append: (input) => audit.append(input),
    now,
    onError: (err, info) =>
      logger.error(info.lost ? 'audit.suppressed summaries lost' : 'audit.suppressed summaries not written yet; retrying', {
        err: String(err),
        summaries: info.summaries,
      }),
  });
  auditVolume.start(1_000);
  const retention = auditRetention(config, audit, logger, now);
  const witnessPush = sqlite ? auditWitnessPush(config, sqlite, audit, logger) : null;
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
  const notStarted = notRunning(
    'off',
    config.embeddedWorker === 'off'
      ? 'LOKI_EMBEDDED_WORKER=off'
      : opts.embeddedWorker
        ? 'starting'
        : 'this server process does not run one (`loki dashboard` and `npm start` do)',
  );
  const embeddedWorker = { status: (): EmbeddedWorkerStatus => notStarted };
  const deps: AppDeps = {
    config,
    store,
    audit,
    events,
    logger,
    version: VERSION,
    startedAt: Date.now(),
    now,
    auditVolume,
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
      audit_volume: auditVolume.stats(),
      witnesses: witnessPush ? witnessPush.pusher.status() : [],
      policy: { source: operatorPolicy.source, host_sessions: operatorPolicy.hostSessions },
      embedded_worker: embeddedWorker.status(),
    }),
  };
  // GET /metrics (Prometheus); Node only, the Workers bundle never loads prom-client.
  const metrics = createNodeMetrics({ audit, events, store, syslog: nodeAudit.syslog, now });
  deps.metrics = metrics;
  const loki = createLokiApp(deps);
  // Running sessions whose worker stopped heartbeating become `lost` (never re-run).
  const leases = new SessionService(deps);
  const sweepTimer = setInterval(
    () => void leases.sweepExpiredLeases().catch((err) => logger.error('lease sweep failed', { err: String(err) })),
    Math.max(250, Math.min(5_000, Math.floor(config.sandboxLeaseMs / 4))),
  );
  sweepTimer.unref();
  return {
    get db(): SqliteDb {
      if (!sqlite) throw new Error('runtime.db: this server runs on PostgreSQL (runtime.pg)');
      return sqlite;
    },
    pg: pgBackend,
    deps,
    loki,
    audit,
    auditVolume,
    auditRetention: retention ? { run: retention.run } : null,
    witnessPusher: witnessPush?.pusher ?? null,
    events,
    shutdown,
    applied,
    embeddedWorker,
    async close() {
      shutdown.abort();
      metrics.close();
      clearInterval(pruneTimer);
      clearInterval(sweepTimer);
      events.stop();
      await retention?.stop();
      await witnessPush?.stop();
      // The open minute's summaries go in before the shutdown checkpoint.
      await auditVolume.close();
      await nodeAudit.close();
      sqlite?.close();
      await pgBackend?.close();
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

/** The URL the embedded worker reaches this server at (a wildcard bind is reached on loopback). */
function selfUrl(config: Config, port: number, url: string): string {
  const scheme = config.tls ? 'https' : 'http';
  if (config.host === '0.0.0.0') return `${scheme}://127.0.0.1:${port}`;
  if (config.host === '::' || config.host === '[::]') return `${scheme}://[::1]:${port}`;
  return url;
}

export async function startServer(config: Config, opts: NodeRuntimeOptions = {}): Promise<RunningServer> {
  // LOKI_TLS_CERT / LOKI_TLS_KEY: read and checked before anything is opened (TlsSetupError: exit 2 in `loki dashboard`).
  const tls = config.tls ? loadTls(config.tls) : null;
  // LOKI_EMBEDDED_WORKER: the engine is asked before anything is opened, so `on`
  // without an engine stops here (EmbeddedWorkerError: exit 2 in `loki dashboard`).
  const wantWorker = opts.embeddedWorker === true && config.embeddedWorker !== 'off';
  const noDocker = wantWorker ? await probeDocker() : null;
  if (noDocker && config.embeddedWorker === 'on') throw new EmbeddedWorkerError(`LOKI_EMBEDDED_WORKER=on but ${noDocker}`);
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
    // HTTPS (and so WSS: the upgrade listener above is attached to this server) with LOKI_TLS_CERT.
    createServer: ((opts: object) => (tls ? createHttpsServer({ ...opts, cert: tls.cert, key: tls.key }, listener) : createServer(opts, listener))) as never,
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  const url = `${tls ? 'https' : 'http'}://${host}:${addr.port}`;
  if (!tls && !isLoopbackBind(config.host)) {
    logger.warn('plain HTTP on a non-loopback address: bearer tokens cross the network in clear (set LOKI_TLS_CERT and LOKI_TLS_KEY, or terminate TLS in front)', { host: config.host });
  }
  if (tls) {
    logger.info('serving HTTPS and WSS', { subject: tls.subject, alt_names: tls.altNames, expires: new Date(tls.validTo).toISOString() });
    if (tls.validTo < Date.now()) logger.warn('the TLS certificate has expired: clients will refuse the connection', { expires: new Date(tls.validTo).toISOString() });
  }
  let embedded: EmbeddedWorker | null = null;
  if (wantWorker && noDocker) {
    runtime.embeddedWorker.status = () => notRunning('unavailable', noDocker);
    logger.warn('no embedded sandbox worker', { reason: noDocker });
  } else if (wantWorker) {
    try {
      embedded = await EmbeddedWorker.start({
        config,
        tokens: runtime.deps.store.tokens,
        audit: runtime.audit,
        events: runtime.events,
        logger,
        serverUrl: selfUrl(config, addr.port, url),
        output: opts.embeddedWorkerOutput,
      });
      const running = embedded;
      runtime.embeddedWorker.status = () => running.status();
    } catch (err) {
      const reason = `the worker token could not be made: ${(err as Error).message}`;
      if (config.embeddedWorker === 'on') {
        await new Promise<void>((r) => server.close(() => r()));
        await runtime.close();
        throw new EmbeddedWorkerError(`LOKI_EMBEDDED_WORKER=on but ${reason}`);
      }
      runtime.embeddedWorker.status = () => notRunning('unavailable', reason, embeddedWorkerId(config));
      logger.error('no embedded sandbox worker', { reason });
    }
  }
  let stopping: Promise<void> | null = null;
  return {
    runtime,
    port: addr.port,
    url,
    stop(deadlineMs = config.shutdownTimeoutMs) {
      stopping ??= (async () => {
        // The worker first, while the server still answers: it reports its sessions
        // stopped over HTTP, then its token is revoked (the database is still open).
        await embedded?.stop().catch((err) => logger.error('stopping the embedded sandbox worker failed', { err: String(err) }));
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

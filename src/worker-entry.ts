/**
 * Workers entry (`wrangler dev` / `wrangler deploy`): the same app as the Node
 * server, with D1 storage, static files from the ASSETS binding and the caller's
 * address from CF-Connecting-IP. Imports nothing Node-only.
 *
 * What differs from Node, and why:
 * - Audit checkpoints are not signed: the Node signer keeps its Ed25519 key in a
 *   0600 file, and a Worker has no file system. The chain itself (hash links,
 *   `/api/enterprise/audit/verify`) works unchanged.
 * - Each audit entry is committed by the request that wrote it (see
 *   RequestScopedAuditLog) instead of Node's cross-request group commit.
 * - No event polling and no Host allowlist: there is no loopback bind to protect.
 * - Loopback trust is never granted (see `workersClientAddress`): with auth off a
 *   Worker serves only the public routes, so wrangler.toml turns auth on.
 */
import type { Context, ExecutionContext } from 'hono';
import { createLokiApp } from './app';
import type { AuditInput } from './audit/chain';
import { AuditLog, type AuditLogOptions, AuditUnavailableError } from './audit/log';
import type { Tip } from './audit/storage';
import { createD1Store, type D1Database } from './db/d1';
import { createD1AuditStorage, webCryptoRangeChecker } from './db/d1-audit';
import { ConfigError, isLoopbackHost, loadConfig } from './env';
import { EventHub } from './events/hub';
import type { AppDeps, Logger } from './http/context';
import { ErrorCode, errorBody } from './http/errors';
import { newRequestId } from './http/middleware/request-id';
import { API_CSP } from './http/middleware/security-headers';
import { redactString, redactValue } from './util/redact';
import { VERSION } from './version';

/** The static-assets binding (`[assets] binding = "ASSETS"`). */
interface AssetsFetcher {
  fetch(request: Request): Promise<Response>;
}

export interface WorkerBindings {
  DB: D1Database;
  ASSETS?: AssetsFetcher;
  /** `[vars]` and secrets: the LOKI_* settings, as strings. */
  [name: string]: unknown;
}

type FetchHandler = (request: Request, env: WorkerBindings, ctx: ExecutionContext) => Promise<Response>;

/**
 * AuditLog that commits each entry from the request that wrote it. The base
 * class batches entries of concurrent requests into one flush, run by whichever
 * request came first. On Workers, I/O and promise continuations belong to the
 * request that started them, and a request's leftover work may be cancelled
 * once its response is sent: another request's entry would then never settle.
 * Concurrent writers (in this isolate or others) are kept on one linear chain
 * by the storage instead: an optimistic insert on the `seq` primary key, and
 * turn-taking within the isolate (src/db/d1-audit.ts).
 */
class RequestScopedAuditLog extends AuditLog {
  private appended = 0;
  private appendFailures = 0;

  constructor(private readonly logOptions: AuditLogOptions) {
    super(logOptions);
  }

  override async append(input: AuditInput): Promise<Tip> {
    if (!this.enabled) return { seq: 0, hash: '' };
    let tip: Tip;
    try {
      [tip] = (await this.storage.appendBatch([input])) as [Tip];
    } catch (err) {
      this.appendFailures++;
      this.logOptions.onError?.(err);
      throw new AuditUnavailableError('the audit log cannot be written');
    }
    this.appended++;
    try {
      this.logOptions.onCommitted?.([{ seq: tip.seq, hash: tip.hash, input }]);
    } catch (err) {
      this.logOptions.onError?.(err);
    }
    return tip;
  }

  override stats() {
    return { queued: 0, committed: this.appended, write_failures: this.appendFailures };
  }
}

/** JSON lines on the console (Workers logs), redacted like the Node logger. */
const consoleLogger: Logger = (() => {
  const write = (level: string, msg: string, fields?: Record<string, unknown>) => {
    const line = JSON.stringify({ time: new Date().toISOString(), level, msg: redactString(msg), ...(fields ? redactValue(fields) : {}) });
    if (level === 'error') console.error(line);
    else if (level === 'warn') console.warn(line);
    else console.log(line);
  };
  return { info: (m, f) => write('info', m, f), warn: (m, f) => write('warn', m, f), error: (m, f) => write('error', m, f) };
})();

/**
 * The caller's address. Cloudflare's edge sets CF-Connecting-IP itself, and it is
 * never a loopback address there. `wrangler dev` copies the socket address into
 * it only when the request does not carry one, so locally the header is
 * caller-controlled: a loopback value is a spoof or local tooling, and is not
 * reported (null), so that it never earns the loopback trust the guard gives
 * when auth is off.
 */
function workersClientAddress(c: Context): string | null {
  const ip = c.req.header('cf-connecting-ip')?.trim() ?? '';
  if (ip === '' || isLoopbackHost(ip.replace(/^::ffff:/i, ''))) return null;
  return ip;
}

/** Static files from the assets binding; the dashboard route re-emits them with our headers. */
function assetsFiles(assets: AssetsFetcher): (path: string) => Promise<Response | null> {
  return async (path) => {
    const res = await assets.fetch(new Request(new URL(`/${path}`, 'https://assets.invalid')));
    return res.ok ? res : null;
  };
}

/** Only string bindings can be settings; D1, ASSETS and other objects are skipped. */
function stringVars(env: WorkerBindings): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (k.startsWith('LOKI_') && typeof v === 'string') out[k] = v;
  return out;
}

/** Build the app for this isolate. Synchronous on purpose: no promise is shared between requests. */
function buildHandler(env: WorkerBindings): FetchHandler {
  // A Worker has no home directory or working directory; these fill only
  // file-system fields of the config that no Workers code path reads.
  const config = loadConfig(stringVars(env), { home: '/nonexistent', cwd: '/nonexistent' });
  if (config.syslog) consoleLogger.warn('LOKI_AUDIT_SYSLOG_HOST is ignored on Workers: audit entries are not forwarded to syslog');
  if (!config.enterpriseAuth && !config.oidc) {
    consoleLogger.warn('auth is off: a Worker has no loopback callers to trust, so only the public routes answer');
  }
  const store = createD1Store(env.DB);
  const storage = createD1AuditStorage(env.DB);
  const audit = new RequestScopedAuditLog({
    storage,
    enabled: config.auditEnabled,
    signer: null,
    // Verification hashes with Web Crypto (asynchronous) through the range checker.
    verification: { rangeChecker: webCryptoRangeChecker(storage) },
    onError: (err) => consoleLogger.error('audit', { err: String(err) }),
  });
  const deps: AppDeps = {
    config,
    store,
    audit,
    events: new EventHub(store.events),
    logger: consoleLogger,
    version: VERSION,
    startedAt: Date.now(),
    clientAddress: workersClientAddress,
    hostCheck: false,
    ...(env.ASSETS ? { staticFiles: assetsFiles(env.ASSETS) } : {}),
  };
  const { app } = createLokiApp(deps);
  return async (request, bindings, ctx) => app.fetch(request, bindings, ctx);
}

/** A bad setting: the full line goes to the log, the client gets the contract's error shape. */
function configErrorResponse(err: ConfigError): Response {
  consoleLogger.error(`loki: ${err.message}`);
  const requestId = newRequestId();
  const body = errorBody(ErrorCode.internal, 'the worker is misconfigured; see its logs', requestId);
  return new Response(JSON.stringify(body), {
    status: 500,
    headers: {
      'Content-Type': 'application/json',
      'X-Request-Id': requestId,
      'Content-Security-Policy': API_CSP,
      'X-Content-Type-Options': 'nosniff',
      'Referrer-Policy': 'no-referrer',
      'Cache-Control': 'no-store',
    },
  });
}

let handler: FetchHandler | null = null;

export default {
  async fetch(request: Request, env: WorkerBindings, ctx: ExecutionContext): Promise<Response> {
    if (!handler) {
      try {
        handler = buildHandler(env);
      } catch (err) {
        if (err instanceof ConfigError) return configErrorResponse(err);
        throw err;
      }
    }
    return handler(request, env, ctx);
  },
};

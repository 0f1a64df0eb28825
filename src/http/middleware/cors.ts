import { type Config, parseOrigin } from '../../env';
import { contextHeaders, type HeaderSink, requestHeader } from '../headers';
import { ErrorCode } from '../errors';
import { errorResponse } from '../respond';
import type { Step } from './steps';

export interface CorsOptions {
  /** Exact origins allowed, with credentials. */
  origins: readonly string[];
  /** `*`: any origin may read, never with credentials (development only). */
  wildcard: boolean;
  allowMethods?: readonly string[];
  allowHeaders?: readonly string[];
  maxAgeSeconds?: number;
  /** Where the response headers go (default: the context). */
  headers?: HeaderSink;
}

/**
 * The server's own origins: `http://127.0.0.1:<port>`, `http://localhost:<port>`,
 * `http://[::1]:<port>` and `http://<configured host>:<port>` (`https://` with
 * LOKI_TLS_CERT). The dashboard page is served from one of them, so they are
 * always allowed, also when `LOKI_DASHBOARD_CORS` replaces the default allowlist.
 */
export function serverOrigins(host: string, port: number, scheme: 'http' | 'https' = 'http'): string[] {
  const h = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
  const out: string[] = [];
  for (const name of ['127.0.0.1', 'localhost', '[::1]', h]) {
    const o = parseOrigin(`${scheme}://${name}:${port}`);
    if (o && !out.includes(o)) out.push(o);
  }
  return out;
}

/** The origins allowed with credentials: the server's own, then `LOKI_DASHBOARD_CORS`. */
export function allowedOrigins(config: Pick<Config, 'host' | 'port' | 'corsOrigins'> & { tls?: Config['tls'] }): string[] {
  const out = serverOrigins(config.host, config.port, config.tls ? 'https' : 'http');
  for (const o of config.corsOrigins) if (!out.includes(o)) out.push(o);
  return out;
}

/** Whether a present Origin may use the API (the CORS rule, shared with the WebSocket handshake). */
export function originAllowed(origin: string, opts: Pick<CorsOptions, 'origins' | 'wildcard'>): boolean {
  return opts.wildcard || opts.origins.includes(origin);
}

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * CORS allowlist. A disallowed origin gets no Access-Control-Allow-Origin, its
 * preflight gets 403, and a state-changing request from it (which a browser may
 * send without a preflight) is refused too. `Vary: Origin` always.
 */
export function corsAllowlist(opts: CorsOptions): Step {
  const listed = new Set(opts.origins);
  const methods = (opts.allowMethods ?? ['GET', 'POST', 'DELETE', 'OPTIONS']).join(', ');
  const headers = (opts.allowHeaders ?? ['Authorization', 'Content-Type', 'Last-Event-ID', 'X-Request-Id']).join(', ');
  const set = opts.headers ?? contextHeaders;
  return (c) => {
    const origin = requestHeader(c, 'origin');
    const isListed = origin !== undefined && listed.has(origin);
    const allowed = origin !== undefined && (isListed || opts.wildcard);
    const isPreflight = c.req.method === 'OPTIONS' && requestHeader(c, 'access-control-request-method') !== undefined;

    if (isPreflight) {
      set(c, 'Vary', 'Origin', true);
      if (!allowed) return errorResponse(c, 403, ErrorCode.forbiddenOrigin, 'origin is not in the CORS allowlist');
      set(c, 'Access-Control-Allow-Origin', isListed ? origin : '*');
      if (isListed) set(c, 'Access-Control-Allow-Credentials', 'true');
      set(c, 'Access-Control-Allow-Methods', methods);
      set(c, 'Access-Control-Allow-Headers', headers);
      set(c, 'Access-Control-Max-Age', String(opts.maxAgeSeconds ?? 600));
      return c.body(null, 204);
    }
    if (origin !== undefined && !allowed && !SAFE_METHODS.has(c.req.method)) {
      set(c, 'Vary', 'Origin', true);
      return errorResponse(c, 403, ErrorCode.forbiddenOrigin, 'origin is not in the CORS allowlist');
    }
    set(c, 'Vary', 'Origin', true);
    if (allowed) {
      set(c, 'Access-Control-Allow-Origin', isListed ? origin : '*');
      if (isListed) set(c, 'Access-Control-Allow-Credentials', 'true');
      set(c, 'Access-Control-Expose-Headers', 'X-Request-Id, WWW-Authenticate, Retry-After');
    }
    return undefined;
  };
}

/**
 * GET /ws: the live events over a WebSocket.
 *
 * Credential: `Sec-WebSocket-Protocol: loki.v1, loki.bearer.<token>` (preferred;
 * a browser can send it, and it stays out of URLs and access logs), or
 * `?token=<token>` (Loki Mode compatibility; redacted from every log and audit
 * entry by the one redaction helper). The server selects `loki.v1` when offered,
 * so the token is not echoed back; a client that offers only
 * `loki.bearer.<token>` gets that protocol echoed, because a browser fails a
 * handshake whose response selects none of the offered protocols.
 *
 * Before the credential is even looked at: at most `wsAttemptsPerMinute`
 * attempts per address, and a present `Origin` must be in the CORS allowlist
 * (cross-site WebSocket hijacking). Then the route's `read` scope is checked by
 * the guard like any other route.
 *
 * Messages (JSON text frames):
 *   server → client  {"type":"connected","protocol","cursor"}
 *                    {"type":"event","event":{"id","type","session_id","data","ts"}}
 *                    {"type":"ping","ts"} / {"type":"pong","ts"}
 *                    {"type":"subscribed","types","session"} / {"type":"error","code","message"}
 *   client → server  {"type":"ping"} / {"type":"pong"}
 *                    {"type":"subscribe","types"?:[...],"session"?:id|null,"after"?:id}
 * The server pings every `wsPingIntervalMs` (a message and a protocol ping) and
 * drops a client that missed two in a row. Close codes: 1008 credential revoked
 * or expired, 1013 too many clients (or too slow), 1001 server shutting down.
 */
import type { Hono } from 'hono';
import type { WSContext } from 'hono/ws';
import type { Authenticator } from '../../auth/authenticate';
import type { EventRecord } from '../../db/store';
import { type CloseReason, LiveGroup, type LiveSink, type LiveStream, parseCursor, parseSession, parseTypes } from '../../events/live';
import type { AppContext, AppDeps, AppEnv } from '../context';
import type { TypedRoute } from '../define-route';
import { ErrorCode } from '../errors';
import { allowedOrigins, originAllowed } from '../middleware/cors';
import { FailureLimiter } from '../middleware/rate-limit';
import { errorResponse } from '../respond';
import { eventJson, type LiveContext, liveAuditDetails, openLiveStream, parseLiveQuery } from './events';

export const WS_PROTOCOL = 'loki.v1';
export const WS_BEARER_PREFIX = 'loki.bearer.';
const MAX_MESSAGE_CHARS = 4096;

export const WS_CLOSE = {
  revoked: 1008,
  tooMany: 1013,
  slow: 1013,
  shutdown: 1001,
  error: 1011,
  pingTimeout: 1001,
} as const;

/** The credential of a WebSocket handshake, for the guard: subprotocol first, then `?token=`. */
export function wsCredential(c: AppContext): string | null {
  if (c.req.path !== '/ws') return null;
  const offered = c.req.header('sec-websocket-protocol');
  if (offered) {
    for (const p of offered.split(',')) {
      const t = p.trim();
      if (t.startsWith(WS_BEARER_PREFIX) && t.length > WS_BEARER_PREFIX.length) return t.slice(WS_BEARER_PREFIX.length);
    }
  }
  const q = c.req.query('token');
  return q ? q : null;
}

/** Which offered subprotocol the server selects (false: none was offered that it speaks). */
export function selectWsProtocol(offered: Iterable<string>): string | false {
  let bearer: string | false = false;
  for (const p of offered) {
    if (p === WS_PROTOCOL) return WS_PROTOCOL;
    if (bearer === false && p.startsWith(WS_BEARER_PREFIX)) bearer = p;
  }
  return bearer;
}

interface RawSocket {
  bufferedAmount?: number;
  ping?: () => void;
  terminate?: () => void;
  on?: (event: 'pong', fn: () => void) => void;
}

export function wsRoutes(app: Hono<AppEnv>, route: TypedRoute, deps: AppDeps, authenticator: Authenticator): void {
  const now = deps.now ?? Date.now;
  const attempts = new FailureLimiter(deps.config.wsAttemptsPerMinute, 60_000, now);
  const pingEvery = deps.config.wsPingIntervalMs;
  const ctx: LiveContext = { deps, authenticator, group: new LiveGroup(deps.shutdownSignal), now };

  const origins = allowedOrigins(deps.config);
  // Runs before the route's guard: attempts are counted whether or not they authenticate.
  app.use('/ws', async (c, next) => {
    const addr = deps.clientAddress(c) ?? 'unknown';
    attempts.fail(addr);
    const wait = attempts.retryAfter(addr);
    if (wait > 0) {
      c.set('auditAction', 'ws.rate_limited');
      return errorResponse(c, 429, ErrorCode.rateLimited, 'too many WebSocket connection attempts; try again later', { 'Retry-After': String(wait) });
    }
    const origin = c.req.header('origin');
    if (origin !== undefined && !originAllowed(origin, { origins, wildcard: deps.config.corsWildcard })) {
      c.set('auditAction', 'ws.origin_refused');
      c.set('auditDetails', { origin: origin.slice(0, 256) });
      return errorResponse(c, 403, ErrorCode.forbiddenOrigin, 'origin is not in the CORS allowlist');
    }
    await next();
  });

  route('GET', '/ws', async (c) => {
    c.set('auditAction', 'events.websocket');
    const upgrade = deps.upgradeWebSocket;
    if (!upgrade) return errorResponse(c, 501, ErrorCode.notImplemented, 'WebSocket is not available on this runtime; use GET /api/events');
    if (c.req.header('upgrade')?.toLowerCase() !== 'websocket') {
      return errorResponse(c, 426, ErrorCode.upgradeRequired, 'this endpoint needs a WebSocket upgrade', { Upgrade: 'websocket' });
    }
    const q = parseLiveQuery(c, { lastEventId: false });
    if (typeof q === 'string') return errorResponse(c, 400, ErrorCode.validation, q);
    const identity = c.get('identity');
    if (!identity) return errorResponse(c, 500, ErrorCode.internal, 'no identity');
    c.set('auditDetails', liveAuditDetails(q));
    const after = q.after ?? (await deps.events.latestId());

    let live: LiveStream | null = null;
    let missed = 0;
    let lastPing = now();
    return upgrade(c, {
      onOpen(_evt, ws) {
        // The slot is taken only once the socket exists, so an aborted handshake holds none.
        const release = deps.events.admit('ws', deps.config.maxWsClients);
        if (!release) {
          ws.close(WS_CLOSE.tooMany, 'too many clients; try again later');
          return;
        }
        const raw = ws.raw as RawSocket | undefined;
        raw?.on?.('pong', () => {
          missed = 0;
        });
        const send = (msg: unknown) => {
          if (ws.readyState === 1) ws.send(JSON.stringify(msg));
        };
        const sink: LiveSink = {
          send(events) {
            for (const e of events) if (ws.readyState === 1) ws.send(eventMessage(e));
          },
          buffered: () => raw?.bufferedAmount ?? 0,
          tick(t) {
            if (t - lastPing < pingEvery) return;
            lastPing = t;
            if (missed >= 2) {
              live?.close('client');
              if (raw?.terminate) raw.terminate();
              else ws.close(WS_CLOSE.pingTimeout, 'ping timeout');
              return;
            }
            missed++;
            send({ type: 'ping', ts: t });
            raw?.ping?.();
          },
          closed(reason: CloseReason) {
            closeFor(ws, reason);
          },
        };
        live = openLiveStream(ctx, { identity, after, q, sink, release });
        send({ type: 'connected', protocol: ws.protocol || null, cursor: after });
        live.start();
      },
      onMessage(evt, ws) {
        missed = 0;
        if (!live || live.isClosed) return;
        const reply = handleMessage(evt.data, live);
        if (reply && ws.readyState === 1) ws.send(JSON.stringify(reply));
      },
      onClose() {
        live?.close('client');
      },
      onError() {
        live?.close('error');
      },
    });
  });
}

// A fanned-out batch hands the same records to every socket: serialise each once.
const messages = new WeakMap<EventRecord, string>();
function eventMessage(e: EventRecord): string {
  let m = messages.get(e);
  if (m === undefined) {
    m = JSON.stringify({ type: 'event', event: eventJson(e) });
    messages.set(e, m);
  }
  return m;
}

function closeFor(ws: WSContext, reason: CloseReason): void {
  if (reason === 'client' || ws.readyState > 1) return;
  if (reason === 'revoked') ws.close(WS_CLOSE.revoked, 'token revoked or expired');
  else if (reason === 'shutdown') ws.close(WS_CLOSE.shutdown, 'server shutting down');
  else if (reason === 'slow') ws.close(WS_CLOSE.slow, 'client too slow; reconnect with after');
  else ws.close(WS_CLOSE.error, 'stream error');
}

function handleMessage(data: unknown, live: LiveStream): Record<string, unknown> | null {
  const bad = (message: string) => ({ type: 'error', code: 'bad_message', message });
  if (typeof data !== 'string') return bad('messages are JSON text frames');
  if (data.length > MAX_MESSAGE_CHARS) return bad(`messages are at most ${MAX_MESSAGE_CHARS} characters`);
  let msg: unknown;
  try {
    msg = JSON.parse(data);
  } catch {
    return bad('malformed JSON');
  }
  if (!msg || typeof msg !== 'object') return bad('a message is a JSON object with a "type"');
  const m = msg as Record<string, unknown>;
  switch (m.type) {
    case 'ping':
      return { type: 'pong', ts: Date.now() };
    case 'pong':
      return null;
    case 'subscribe': {
      const types = parseTypes(m.types === undefined || m.types === null ? undefined : (m.types as string | string[]));
      if (types === 'invalid' || (m.types !== undefined && m.types !== null && typeof m.types !== 'string' && !Array.isArray(m.types))) {
        return bad('types must be a list of at most 32 event type names');
      }
      const session = m.session === undefined || m.session === null ? undefined : typeof m.session === 'string' ? parseSession(m.session) : 'invalid';
      if (session === 'invalid') return bad('session must be a session id or null');
      let after: number | undefined;
      if (m.after !== undefined && m.after !== null) {
        const a = parseCursor(String(m.after));
        if (a === 'invalid' || typeof m.after !== 'number') return bad('after must be a non-negative integer event id');
        after = a;
      }
      live.setFilter({ types, sessionId: session }, after);
      return { type: 'subscribed', types: types ?? null, session: session ?? null, cursor: live.cursor };
    }
    default:
      return bad('unknown message type (expected ping, pong or subscribe)');
  }
}

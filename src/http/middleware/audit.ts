import type { MiddlewareHandler } from 'hono';
import type { AuditInput } from '../../audit/chain';
import type { AuditLog } from '../../audit/log';
import type { AuditVolumeGuard } from '../../audit/suppress';
import { redactPath, redactValue } from '../../util/redact';
import type { AppContext, AppEnv } from '../context';
import { ErrorCode } from '../errors';
import { errorResponse } from '../respond';
import { runSteps, type Step } from './steps';
import { requestHeader } from '../headers';

const NOT_AUDITED = /^\/(?:health|assets\/[^/]*|favicon\.ico|)$/;

export interface AuditTrailOptions {
  audit: AuditLog;
  clientAddress: (c: AppContext) => string | null;
  rawPath?: ((c: AppContext) => string | null) | undefined;
  now: () => number;
  onError: (err: unknown) => void;
  /** Synchronous steps before it (request id, headers): not audited themselves. */
  before?: Step[];
  /** Synchronous checks inside it (Host, CORS, paths): their refusals are audited. */
  checks?: Step[];
  /** `LOKI_AUDIT_READS`: with `failures`, successful reads and the sandbox worker's polling are not recorded. */
  reads?: 'all' | 'failures';
  /**
   * Failed requests without an identity past the per-address limit are counted
   * into `audit.suppressed` summaries (the Node server). Absent: each one is
   * recorded (with its fields capped).
   */
  volume?: AuditVolumeGuard | null;
}

/** Caps on what a caller without an identity can make us store (characters, the `…` marker included). */
export const ANONYMOUS_PATH_MAX = 256;
export const ANONYMOUS_USER_AGENT_MAX = 128;
const PATH_MAX = 2048;
const USER_AGENT_MAX = 512;

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * With `LOKI_AUDIT_READS=failures`, what is left out: a successful request with a
 * safe method (GET, HEAD, OPTIONS), except reads of the audit log itself
 * (`audit.*`), and the worker's polling: a claim that found no job (204) and an
 * event post carrying only heartbeats. Writes and every failure are recorded.
 */
export function isQuietSuccess(c: AppContext, status: number): boolean {
  if (status >= 400) return false;
  const action = c.get('auditAction');
  if (SAFE_METHODS.has(c.req.method)) return !action?.startsWith('audit.');
  if (action === 'sandbox.claim') return status === 204;
  if (action === 'sandbox.events') {
    const events = (c.get('auditDetails') as { events?: unknown } | undefined)?.events;
    if (!events || typeof events !== 'object') return false;
    const types = Object.keys(events);
    return types.length > 0 && types.every((t) => t === 'heartbeat');
  }
  return false;
}

/**
 * Records every request (except liveness and static files) after its outcome is
 * known, and only then lets the response go: if the entry cannot be committed
 * the client gets 503 and no success is reported (fail closed).
 * The synchronous `before` steps and `checks` run in the same middleware, so the
 * whole edge of the app costs one dispatch.
 */
export function auditTrail(opts: AuditTrailOptions): MiddlewareHandler<AppEnv> {
  const before = opts.before ?? [];
  const checks = opts.checks ?? [];
  return async (c, next) => {
    const early = runSteps(c, before);
    if (early) return early;
    c.set('auditDetails', {});
    c.set('auditAction', null);
    c.set('auditResource', null);
    c.set('identity', null);
    c.set('errorCode', null);
    const refused = runSteps(c, checks);
    if (refused) c.res = refused;
    else await next();
    if (!opts.audit.enabled || NOT_AUDITED.test(c.req.path)) return;
    const status = c.res.status;
    if (opts.reads === 'failures' && isQuietSuccess(c, status)) return;
    // A failure without an identity: recorded up to the per-address limit, then counted in its summary.
    // (5xx are ours, not the caller's: always recorded.)
    if (opts.volume && c.get('identity') === null && status >= 400 && status < 500) {
      if (opts.volume.admit(opts.clientAddress(c), status) === 'suppress') return;
    }
    const input = requestEntry(c, opts);
    try {
      await opts.audit.append(input);
      opts.volume?.recorded(true);
    } catch (err) {
      opts.volume?.recorded(false);
      opts.onError(err);
      c.res = errorResponse(c, 503, ErrorCode.auditUnavailable, 'the audit log cannot be written; the request was not completed');
    }
  };
}

export type AuditIntentOptions = Pick<AuditTrailOptions, 'audit' | 'clientAddress' | 'rawPath' | 'now' | 'onError'>;

/**
 * Fail closed before the side effect: commit an `<action>.intent` entry (who, what,
 * from where; outcome status null) and only then run the handler. If it cannot be
 * committed the client gets 503 `audit_unavailable` and nothing is changed. The
 * audit trail then records the outcome as usual, so a change is never made without
 * an entry saying it was about to be.
 */
export function auditIntent(action: string, opts: AuditIntentOptions): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    if (!opts.audit.enabled) return next();
    const params = c.req.param() as Record<string, string>;
    // What was asked for (validated, redacted like every entry's details); never a secret: none is an input.
    const body = (c.req.valid as (t: 'json') => unknown)('json');
    const entry = requestEntry(c, opts);
    try {
      await opts.audit.append({
        ...entry,
        action: `${action}.intent`,
        details: body && typeof body === 'object' ? redactValue({ request: body }) : entry.details,
        resource: c.get('auditResource') ?? (params.id ? { type: action.split('.')[0]!, id: params.id } : null),
        outcome: { status: null, success: true, error: null },
      });
    } catch (err) {
      opts.onError(err);
      c.set('auditAction', action);
      c.set('auditDetails', { ...c.get('auditDetails'), intent_not_recorded: true });
      return errorResponse(c, 503, ErrorCode.auditUnavailable, 'the audit log cannot be written; the request was not completed');
    }
    return next();
  };
}

export function requestEntry(c: AppContext, opts: Pick<AuditTrailOptions, 'clientAddress' | 'rawPath' | 'now'>): AuditInput {
  const status = c.res.status;
  const identity = c.get('identity');
  // The raw path as received (Node); parsing the URL only where the runtime has none.
  const raw = opts.rawPath?.(c) ?? pathAndQuery(c.req.url);
  // Without an identity the caller chooses these freely: keep them short.
  const anonymous = identity === null;
  const pathMax = anonymous ? ANONYMOUS_PATH_MAX : PATH_MAX;
  const uaMax = anonymous ? ANONYMOUS_USER_AGENT_MAX : USER_AGENT_MAX;
  return {
    ts: opts.now(),
    action: c.get('auditAction') ?? 'http.request',
    resource: c.get('auditResource'),
    actor: identity?.actor ?? { type: 'anonymous', id: null, name: null },
    client: { ip: opts.clientAddress(c), user_agent: truncate(requestHeader(c, 'user-agent') ?? null, uaMax) },
    request: { id: c.get('requestId'), method: c.req.method, path: truncate(redactPath(raw), pathMax) },
    outcome: { status, success: status < 400, error: status >= 400 ? (c.get('errorCode') ?? `http_${status}`) : null },
    details: redactValue(c.get('auditDetails') ?? {}),
  };
}

function pathAndQuery(href: string): string {
  const url = new URL(href);
  return url.pathname + url.search;
}

/** At most `n` characters, the last being `…` when something was cut. */
function truncate(s: string | null, n: number): string | null {
  return s !== null && s.length > n ? `${s.slice(0, n - 1)}…` : s;
}

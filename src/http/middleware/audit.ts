import type { MiddlewareHandler } from 'hono';
import type { AuditInput } from '../../audit/chain';
import type { AuditLog } from '../../audit/log';
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
    const input = requestEntry(c, opts);
    try {
      await opts.audit.append(input);
    } catch (err) {
      opts.onError(err);
      c.res = errorResponse(c, 503, ErrorCode.auditUnavailable, 'the audit log cannot be written; the request was not completed');
    }
  };
}

export function requestEntry(c: AppContext, opts: Pick<AuditTrailOptions, 'clientAddress' | 'rawPath' | 'now'>): AuditInput {
  const status = c.res.status;
  const identity = c.get('identity');
  const url = new URL(c.req.url);
  const raw = opts.rawPath?.(c) ?? url.pathname + url.search;
  return {
    ts: opts.now(),
    action: c.get('auditAction') ?? 'http.request',
    resource: c.get('auditResource'),
    actor: identity?.actor ?? { type: 'anonymous', id: null, name: null },
    client: { ip: opts.clientAddress(c), user_agent: truncate(requestHeader(c, 'user-agent') ?? null, 512) },
    request: { id: c.get('requestId'), method: c.req.method, path: truncate(redactPath(raw), 2048) },
    outcome: { status, success: status < 400, error: status >= 400 ? (c.get('errorCode') ?? `http_${status}`) : null },
    details: redactValue(c.get('auditDetails') ?? {}),
  };
}

function truncate(s: string | null, n: number): string | null {
  return s !== null && s.length > n ? `${s.slice(0, n)}…` : s;
}

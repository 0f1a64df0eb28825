/**
 * The one error vocabulary of the API. Every error response has the shape
 * `{"error":{"code","message","request_id"}}`; codes are named constants.
 */
export const ErrorCode = {
  badRequest: 'bad_request',
  validation: 'validation_error',
  invalidPath: 'invalid_path',
  invalidToken: 'invalid_token',
  insufficientScope: 'insufficient_scope',
  forbidden: 'forbidden',
  policyViolation: 'policy_violation',
  forbiddenOrigin: 'forbidden_origin',
  forbiddenHost: 'forbidden_host',
  notFound: 'not_found',
  conflict: 'conflict',
  payloadTooLarge: 'payload_too_large',
  rateLimited: 'rate_limited',
  auditUnavailable: 'audit_unavailable',
  unavailable: 'service_unavailable',
  upgradeRequired: 'upgrade_required',
  notImplemented: 'not_implemented',
  internal: 'internal_error',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export type ErrorStatus = 400 | 401 | 403 | 404 | 405 | 409 | 413 | 426 | 429 | 500 | 501 | 503;

/** An error a handler throws to produce a specific JSON error response. */
export class ApiError extends Error {
  constructor(
    readonly status: ErrorStatus,
    readonly code: ErrorCode,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

export function errorBody(code: string, message: string, requestId: string) {
  return { error: { code, message, request_id: requestId } };
}

/** The errors of an error and its causes (drizzle wraps the driver's error as `cause`). */
function causes(err: unknown): unknown[] {
  const out: unknown[] = [];
  for (let e = err; e && out.length < 8; e = (e as { cause?: unknown }).cause) out.push(e);
  return out;
}

const CONNECTION_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', '57P01', '57P02', '57P03', '53300']);
const CONNECTION_MESSAGES = /Connection terminated|timeout exceeded when trying to connect|not queryable|database is locked|SQLITE_BUSY|SQLITE_IOERR/i;

/**
 * A store that cannot be reached or answer right now (PostgreSQL down or
 * restarting, a connection cut, a locked SQLite file): the request is refused
 * with 503, like an audit write that fails, never a 500.
 */
export function isStoreUnavailable(err: unknown): boolean {
  return causes(err).some((e) => {
    const code = String((e as { code?: unknown })?.code ?? '');
    // SQLSTATE class 08: connection exceptions.
    return CONNECTION_CODES.has(code) || /^08[0-9A-Z]{3}$/.test(code) || CONNECTION_MESSAGES.test(String((e as { message?: unknown })?.message ?? ''));
  });
}

/**
 * What may be logged of an unexpected error. A failed query's message carries
 * its SQL and parameters (token hashes, session data): only the driver's own
 * message and code are kept, never the query.
 */
export function loggableError(err: unknown): string {
  const chain = causes(err);
  const failedQuery = chain.some((e) => /^Failed query:/.test(String((e as { message?: unknown })?.message ?? '')));
  if (!failedQuery) return err instanceof Error ? (err.stack ?? err.message) : String(err);
  const driver = chain.filter((e) => !/^Failed query:/.test(String((e as { message?: unknown })?.message ?? '')));
  const parts = driver.map((e) => {
    const code = (e as { code?: unknown })?.code;
    return `${String((e as { message?: unknown })?.message ?? e)}${code ? ` (${String(code)})` : ''}`;
  });
  return `a database query failed${parts.length ? `: ${parts.join('; ')}` : ''} (query text and parameters not logged)`;
}

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

import type { AppContext } from './context';
import { type ErrorCode, type ErrorStatus, errorBody } from './errors';

/** Build the contract's JSON error response. */
export function errorResponse(
  c: AppContext,
  status: ErrorStatus,
  code: ErrorCode | string,
  message: string,
  headers: Record<string, string> = {},
): Response {
  const requestId = c.get('requestId') ?? '';
  c.set('errorCode', code);
  return c.json(errorBody(code, message, requestId), status, headers);
}

import type { AppContext } from '../context';
import { ErrorCode } from '../errors';
import { errorResponse } from '../respond';
import type { Step } from './steps';
import { requestHeader } from '../headers';

/**
 * DNS-rebinding guard while bound to loopback: the Host header must name
 * localhost, 127.0.0.1 or [::1] with our port.
 */
export function hostAllowlist(opts: { port: number; enabled: boolean }): Step {
  const allowed = new Set([`localhost:${opts.port}`, `127.0.0.1:${opts.port}`, `[::1]:${opts.port}`]);
  return (c: AppContext) => {
    if (!opts.enabled) return undefined;
    const host = (requestHeader(c, 'host') ?? '').toLowerCase();
    if (allowed.has(host)) return undefined;
    return errorResponse(c, 403, ErrorCode.forbiddenHost, 'Host header is not an allowed loopback name for this server');
  };
}

import { contextHeaders, type HeaderSink, requestHeader } from '../headers';
import type { Step } from './steps';

/** `req_` + 20 hex characters (randomUUID draws from a cached entropy pool: cheap per request). */
export function newRequestId(): string {
  // The first 20 hex digits of the UUID (8-4-4-4-12), without building the dash-free copy.
  const u = crypto.randomUUID();
  return `req_${u.slice(0, 8)}${u.slice(9, 13)}${u.slice(14, 18)}${u.slice(19, 23)}`;
}

const SAFE_ID = /^[A-Za-z0-9._-]{8,64}$/;

/** A request id on every request and response (`X-Request-Id`); a well-formed incoming one is kept. */
export function requestId(set: HeaderSink = contextHeaders): Step {
  return (c) => {
    const incoming = requestHeader(c, 'x-request-id');
    const id = incoming && SAFE_ID.test(incoming) ? incoming : newRequestId();
    c.set('requestId', id);
    set(c, 'X-Request-Id', id);
    return undefined;
  };
}

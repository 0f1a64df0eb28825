import type { Context } from 'hono';

/**
 * Where middleware puts the headers every response carries (request id,
 * security headers, CORS). The default sets them on the Hono context. The Node
 * runtime passes one that writes them straight onto the ServerResponse, which
 * merges them into whatever response the handler builds: that keeps Hono's fast
 * path for plain responses (no Headers object per request).
 */
export type HeaderSink = (c: Context, name: string, value: string, append?: boolean) => void;

export const contextHeaders: HeaderSink = (c, name, value, append) => {
  c.header(name, value, append ? { append: true } : undefined);
};

/**
 * A request header. On Node, read from the IncomingMessage's plain header object
 * (asking the Request for one header would build a whole Headers object per
 * request); elsewhere from the Request.
 */
export function requestHeader(c: Context, name: string): string | undefined {
  const raw = (c.env as { incoming?: { headers?: Record<string, string | string[] | undefined> } } | undefined)?.incoming?.headers;
  if (!raw) return c.req.header(name);
  const v = raw[name];
  return Array.isArray(v) ? v.join(', ') : v;
}

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

import type { MiddlewareHandler } from 'hono';
import type { AppEnv } from '../context';

export const API_CSP = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";
export const PAGE_CSP =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/** Security headers on every response (set after the handler, so errors get them too). */
export function securityHeaders(): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    await next();
    const h = c.res.headers;
    const isHtml = (h.get('content-type') ?? '').startsWith('text/html');
    h.set('Content-Security-Policy', isHtml ? PAGE_CSP : API_CSP);
    h.set('X-Content-Type-Options', 'nosniff');
    h.set('Referrer-Policy', 'no-referrer');
    h.set('X-Frame-Options', 'DENY');
    h.set('Cross-Origin-Opener-Policy', 'same-origin');
    h.set('Cross-Origin-Resource-Policy', 'same-origin');
    if (!h.has('Cache-Control')) h.set('Cache-Control', 'no-store');
  };
}

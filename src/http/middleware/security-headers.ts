import type { MiddlewareHandler } from 'hono';
import type { AppEnv } from '../context';

export const API_CSP = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";
export const PAGE_CSP =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const HEADERS: [string, string][] = [
  ['Content-Security-Policy', API_CSP],
  ['X-Content-Type-Options', 'nosniff'],
  ['Referrer-Policy', 'no-referrer'],
  ['X-Frame-Options', 'DENY'],
  ['Cross-Origin-Opener-Policy', 'same-origin'],
  ['Cross-Origin-Resource-Policy', 'same-origin'],
  ['Cache-Control', 'no-store'],
];

/**
 * Security headers on every response. Set on the context before the handler
 * runs, so every response built through it (including errors) carries them; the
 * dashboard page replaces the CSP and Cache-Control with its own.
 */
export function securityHeaders(): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    for (const [k, v] of HEADERS) c.header(k, v);
    await next();
  };
}

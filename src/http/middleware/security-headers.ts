import { contextHeaders, type HeaderSink } from '../headers';
import type { Step } from './steps';

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
export function securityHeaders(set: HeaderSink = contextHeaders): Step {
  return (c) => {
    for (const [k, v] of HEADERS) set(c, k, v);
    return undefined;
  };
}

import type { AppContext } from '../context';
import { ErrorCode } from '../errors';
import { errorResponse } from '../respond';
import type { Step } from './steps';

// Encoded forms of '.', '/', '\', NUL and '%' (double encoding), overlong UTF-8
// and IIS %u escapes. API paths never need any of them.
const ENCODED_DANGER = /%(?:2e|2f|5c|00|25|c0|c1|e0%80|u[0-9a-f]{4})/i;

/**
 * Why a raw request path is refused, or null when it is clean. Checks the path
 * exactly as received (before URL normalisation removes `..`).
 */
const PLAIN_PATH = /^(?:\/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)*\/?$/;

export function pathViolation(rawPath: string): string | null {
  const q = rawPath.indexOf('?');
  const path = q < 0 ? rawPath : rawPath.slice(0, q);
  // Fast path: plain segments that do not start with a dot cannot traverse.
  if (PLAIN_PATH.test(path)) return null;
  if (path.includes('\\')) return 'backslash in path';
  if (path.includes('\0')) return 'NUL in path';
  if (ENCODED_DANGER.test(path)) return 'encoded traversal characters in path';
  if (!path.startsWith('/')) return 'path is not absolute-form';
  if (path.includes('//')) return 'empty path segment';
  for (const seg of path.split('/')) {
    if (seg === '..' || seg === '.') return 'dot segment in path';
    let decoded = seg;
    for (let i = 0; i < 3; i++) {
      let next: string;
      try {
        next = decodeURIComponent(decoded);
      } catch {
        return 'malformed percent-encoding in path';
      }
      if (next === decoded) break;
      decoded = next;
    }
    if (decoded === '.' || decoded.startsWith('..') || /[/\\\0]/.test(decoded)) return 'traversal in path segment';
    if (/[\u0000-\u001f\u007f]/.test(decoded)) return 'control character in path';
  }
  return null;
}

/** 400 `invalid_path` for any traversal attempt in the request path. */
export function pathSafety(rawPath?: (c: AppContext) => string | null): Step {
  return (c) => {
    const why = pathViolation(rawPath?.(c) ?? rawPathOf(c.req.url));
    return why ? errorResponse(c, 400, ErrorCode.invalidPath, `invalid path: ${why}`) : undefined;
  };
}

function rawPathOf(url: string): string {
  const m = /^[a-z][a-z0-9+.-]*:\/\/[^/]*(\/[^?#]*)?/i.exec(url);
  return m?.[1] ?? '/';
}

import { realpathSync } from 'node:fs';
import path from 'node:path';

/** Error thrown when a path escapes its root or is malformed. `code` is the API error code. */
export class PathError extends Error {
  readonly code = 'invalid_path';
}

/**
 * Resolve `relative` inside `root`, following symlinks, and refuse anything whose
 * real location is not inside the real root. The one path-safety helper: every
 * file access that takes a user-supplied path goes through it.
 * `mustExist` (default true) requires the target to exist (realpath of the target);
 * otherwise the nearest existing parent is resolved and checked.
 */
export function resolveInside(root: string, relative: string, opts: { mustExist?: boolean } = {}): string {
  const mustExist = opts.mustExist ?? true;
  if (typeof relative !== 'string' || relative.length === 0) throw new PathError('path is empty');
  if (relative.includes('\0')) throw new PathError('path contains a NUL byte');
  const realRoot = realpathSync(root);
  const candidate = path.resolve(realRoot, relative);
  let real: string;
  if (mustExist) {
    try {
      real = realpathSync(candidate);
    } catch {
      throw new PathError(`path does not exist: ${relative}`);
    }
  } else {
    real = realpathOfNearestExisting(candidate);
  }
  if (!isInside(realRoot, real)) throw new PathError(`path escapes its root: ${relative}`);
  return real;
}

/** True when `child` equals `parent` or lies below it (both absolute, normalised). */
export function isInside(parent: string, child: string): boolean {
  const rel = path.relative(parent, child);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

function realpathOfNearestExisting(p: string): string {
  const rest: string[] = [];
  let cur = p;
  for (;;) {
    try {
      return path.join(realpathSync(cur), ...rest.reverse());
    } catch {
      const parent = path.dirname(cur);
      if (parent === cur) return p;
      rest.push(path.basename(cur));
      cur = parent;
    }
  }
}

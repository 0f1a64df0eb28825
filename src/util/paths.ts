import { closeSync, constants as fsConstants, fstatSync, openSync, readSync, realpathSync } from 'node:fs';
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

/**
 * Read a regular file without following a final symlink and without blocking on a
 * FIFO or device (O_NONBLOCK), refusing anything over `maxBytes`.
 */
export function readRegularFile(file: string, maxBytes: number, what: string): Buffer {
  const fd = openSync(file, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK);
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new PathError(`${what} is not a regular file`);
    if (st.size > maxBytes) throw new PathError(`${what} is larger than ${Math.round(maxBytes / 1024 / 1024)} MiB`);
    const buf = Buffer.alloc(st.size);
    let off = 0;
    while (off < st.size) {
      const n = readSync(fd, buf, off, st.size - off, off);
      if (n === 0) break;
      off += n;
    }
    return buf.subarray(0, off);
  } finally {
    closeSync(fd);
  }
}

/**
 * Token format (GitHub-style): `loki_` + 40 base62 characters from a CSPRNG + a
 * 6-character base62 CRC32 of everything before it. A malformed or
 * mis-checksummed token is refused before any database lookup. Tokens imported
 * from Loki Mode (`loki_` + 43 base64url characters, no checksum) stay valid.
 * Runtime-free (Web Crypto), so it runs on Node and on Workers.
 */
const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
export const TOKEN_PREFIX = 'loki_';
export const TOKEN_RANDOM_LENGTH = 40;
const CHECKSUM_LENGTH = 6;
const NEW_FORMAT = /^loki_[0-9A-Za-z]{46}$/;
const LEGACY_FORMAT = /^loki_[A-Za-z0-9_-]{43}$/;

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

export function crc32(input: string): number {
  let c = 0xffffffff;
  // Tokens are ASCII (checked before this is called): bytes are char codes.
  const ascii = /^[\x00-\x7f]*$/.test(input);
  const bytes = ascii ? null : new TextEncoder().encode(input);
  const n = bytes ? bytes.length : input.length;
  for (let i = 0; i < n; i++) c = CRC_TABLE[(c ^ (bytes ? bytes[i]! : input.charCodeAt(i))) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

export function base62(n: number, width: number): string {
  let out = '';
  let v = n;
  for (let i = 0; i < width; i++) {
    out = BASE62[v % 62] + out;
    v = Math.floor(v / 62);
  }
  return out;
}

function randomBase62(length: number): string {
  const out: string[] = [];
  const buf = new Uint8Array(length * 2);
  while (out.length < length) {
    crypto.getRandomValues(buf);
    for (const b of buf) {
      // rejection sampling: 248 = 62 * 4 keeps the distribution uniform
      if (b < 248 && out.length < length) out.push(BASE62[b % 62]!);
    }
  }
  return out.join('');
}

export function checksumOf(body: string): string {
  return base62(crc32(body), CHECKSUM_LENGTH);
}

/** A fresh token. The plaintext is returned to the caller once and never stored. */
export function generateToken(): string {
  const body = TOKEN_PREFIX + randomBase62(TOKEN_RANDOM_LENGTH);
  return body + checksumOf(body);
}

export type TokenShape = 'native' | 'legacy' | 'invalid';

/** Cheap, offline check of a presented token: prefix, length, alphabet, checksum. */
export function tokenShape(token: string): TokenShape {
  if (token.length > 200) return 'invalid';
  if (NEW_FORMAT.test(token)) {
    const body = token.slice(0, -CHECKSUM_LENGTH);
    return checksumOf(body) === token.slice(-CHECKSUM_LENGTH) ? 'native' : 'invalid';
  }
  if (LEGACY_FORMAT.test(token)) return 'legacy';
  return 'invalid';
}

export async function sha256Hex(input: string): Promise<string> {
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(input));
  return toHex(new Uint8Array(digest));
}

export function toHex(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += b.toString(16).padStart(2, '0');
  return s;
}

export function randomId(prefix: string, bytes = 8): string {
  const b = new Uint8Array(bytes);
  crypto.getRandomValues(b);
  return prefix + toHex(b);
}

/** Constant-time comparison of two equal-length hex strings. */
export function timingSafeEqualHex(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

/** Token names: 1–255 characters after trimming, no control characters. */
export function validateTokenName(raw: unknown): { name: string } | { error: string } {
  if (typeof raw !== 'string') return { error: 'name must be a string' };
  const name = raw.trim();
  if (name.length < 1 || name.length > 255) return { error: 'name must be 1 to 255 characters' };
  if (/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/.test(name)) return { error: 'name must not contain control characters' };
  return { name };
}

export const MAX_EXPIRES_DAYS = 3650;

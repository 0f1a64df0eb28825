import { describe, expect, it } from 'vitest';
import { expandScopes, hasScope, narrowScopes, ROLE_SCOPES, smallestRoleFor } from '../../src/auth/roles';
import { base62, checksumOf, crc32, generateToken, tokenShape, validateTokenName } from '../../src/auth/tokens';

describe('token format', () => {
  it('crc32 matches the standard check value', () => {
    expect(crc32('123456789')).toBe(0xcbf43926);
  });

  it('generates loki_ + 40 base62 + 6-char base62 CRC32 checksum', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 200; i++) {
      const t = generateToken();
      expect(t).toMatch(/^loki_[0-9A-Za-z]{46}$/);
      expect(t.slice(-6)).toBe(base62(crc32(t.slice(0, -6)), 6));
      expect(tokenShape(t)).toBe('native');
      seen.add(t);
    }
    expect(seen.size).toBe(200);
  });

  it('refuses a wrong prefix, length or checksum offline', () => {
    const t = generateToken();
    const flipped = t.slice(0, 10) + (t[10] === 'a' ? 'b' : 'a') + t.slice(11);
    expect(tokenShape(flipped)).toBe('invalid');
    expect(tokenShape(`loki-${t.slice(5)}`)).toBe('invalid');
    expect(tokenShape(t.slice(0, -1))).toBe('invalid');
    expect(tokenShape(`${t}x`)).toBe('invalid');
    expect(tokenShape('')).toBe('invalid');
    expect(tokenShape('loki_')).toBe('invalid');
    expect(checksumOf(t.slice(0, -6))).toBe(t.slice(-6));
  });

  it('accepts the legacy Loki Mode shape (loki_ + 43 base64url, no checksum)', () => {
    expect(tokenShape('loki__SXRbFOcNxMiirMhiaJrc6TwE0nlHUcPHHTDbnaR7jU')).toBe('legacy');
    expect(tokenShape('loki_RW8tg-EQdK1NYGvlr6z7rQ7qr97dwEae3093uAOXdDo')).toBe('legacy');
  });

  it.each([
    ['', 'name must be 1 to 255 characters'],
    ['   ', 'name must be 1 to 255 characters'],
    ['x'.repeat(256), 'name must be 1 to 255 characters'],
    ['bad\nname', 'name must not contain control characters'],
    ['bad\u0000name', 'name must not contain control characters'],
    ['bad\u001bname', 'name must not contain control characters'],
    ['bad\u2028name', 'name must not contain control characters'],
  ])('refuses the name %j', (name, error) => {
    expect(validateTokenName(name)).toEqual({ error });
  });

  it('trims names and keeps unicode', () => {
    expect(validateTokenName('  ci bot ✓ ')).toEqual({ name: 'ci bot ✓' });
    expect(validateTokenName('x'.repeat(255))).toEqual({ name: 'x'.repeat(255) });
  });
});

describe('roles and scopes (Loki Mode mapping)', () => {
  it('maps roles to scopes', () => {
    expect(ROLE_SCOPES).toEqual({
      admin: ['*'],
      operator: ['control', 'read', 'write'],
      viewer: ['read'],
      auditor: ['read', 'audit'],
      worker: ['sandbox'],
    });
  });

  it('implements the hierarchy: * ⇒ all; control ⇒ write ⇒ read', () => {
    expect([...expandScopes(['*'])].sort()).toEqual(['*', 'audit', 'control', 'read', 'sandbox', 'write']);
    expect([...expandScopes(['control'])].sort()).toEqual(['control', 'read', 'write']);
    expect([...expandScopes(['write'])].sort()).toEqual(['read', 'write']);
    expect(hasScope(['read'], 'write')).toBe(false);
    expect(hasScope(['audit'], 'read')).toBe(false);
    expect(hasScope(['sandbox'], 'read')).toBe(false);
  });

  it('narrows but never widens', () => {
    expect(narrowScopes('operator', ['read'])).toEqual({ scopes: ['read'] });
    expect(narrowScopes('admin', ['audit', 'read'])).toEqual({ scopes: ['audit', 'read'] });
    expect(narrowScopes('viewer', ['write'])).toEqual({ error: 'scope "write" is wider than role viewer allows' });
    expect(narrowScopes('operator', ['audit'])).toEqual({ error: 'scope "audit" is wider than role operator allows' });
    expect(narrowScopes('operator', ['*'])).toEqual({ error: 'scope "*" is wider than role operator allows' });
    expect(narrowScopes('viewer', ['root'])).toEqual({ error: 'unknown scope "root" (allowed: *, control, write, read, audit, sandbox)' });
    expect(narrowScopes('auditor', undefined)).toEqual({ scopes: ['read', 'audit'] });
  });

  it('finds the smallest role covering a bare scope list', () => {
    expect(smallestRoleFor(['read'])).toBe('viewer');
    expect(smallestRoleFor(['read', 'audit'])).toBe('auditor');
    expect(smallestRoleFor(['control'])).toBe('operator');
    expect(smallestRoleFor(['*'])).toBe('admin');
  });
});

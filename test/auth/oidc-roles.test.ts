/**
 * Issue 13: an identity provider's group names are not ours to trust. Admin comes
 * from claims only through the operator's explicit role map; an operator-set
 * maximum token lifetime. Real provider (`oidc-provider` on 127.0.0.1).
 */
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOidcVerifier, OidcError, type OidcErrorCode, type OidcVerifier } from '../../src/auth/oidc';
import { ConfigError, loadConfig } from '../../src/env';
import { startOidcProvider, type TestOidcProvider } from '../helpers/oidc-provider';

let idp: TestOidcProvider;
beforeAll(async () => {
  idp = await startOidcProvider();
});
afterAll(async () => {
  await idp?.close();
});

const nowSec = () => Math.floor(Date.now() / 1000);

async function refusal(v: OidcVerifier, token: string): Promise<OidcErrorCode> {
  try {
    await v.verify(token);
  } catch (err) {
    expect(err).toBeInstanceOf(OidcError);
    return (err as OidcError).code;
  }
  throw new Error('token was accepted');
}

describe('admin only through an explicit role map', () => {
  it('without a map, admin / Admin / /Admin / loki-admin in any claim grant nothing beyond the default role', async () => {
    const v = createOidcVerifier({ issuer: idp.issuer, clientId: idp.clientId });
    const tokens = [
      await idp.getToken({ roles: ['admin'] }),
      await idp.getToken({ roles: [], claims: { groups: ['/Admin'] } }),
      await idp.getToken({ roles: [], claims: { groups: 'ADMIN' } }),
      await idp.getToken({ roles: [], claims: { 'cognito:groups': ['Admin'] } }),
      await idp.getToken({ roles: [], claims: { realm_access: { roles: ['loki-admin'] } } }),
    ];
    for (const t of tokens) expect((await v.verify(t)).role).toBe('viewer');
    const auditorDefault = createOidcVerifier({ issuer: idp.issuer, clientId: idp.clientId, defaultRole: 'auditor' });
    expect((await auditorDefault.verify(tokens[1]!)).role).toBe('auditor');
  });

  it('without a map, viewer, operator and auditor still come from claims (highest wins)', async () => {
    const v = createOidcVerifier({ issuer: idp.issuer, clientId: idp.clientId });
    expect((await v.verify(await idp.getToken({ roles: ['admin', 'operator'] }))).role).toBe('operator');
    expect((await v.verify(await idp.getToken({ roles: [], claims: { groups: ['/Auditor'] } }))).role).toBe('auditor');
    expect((await v.verify(await idp.getToken({ roles: [], claims: { groups: ['loki-viewer', 'admin'] } }))).role).toBe('viewer');
  });

  it('with a map, only the mapped names grant admin', async () => {
    const v = createOidcVerifier({ issuer: idp.issuer, clientId: idp.clientId, roleMap: { '/Platform/Admins': 'admin', 'eng-leads': 'operator' } });
    expect((await v.verify(await idp.getToken({ roles: [], claims: { groups: ['/platform/admins'] } }))).role).toBe('admin');
    expect((await v.verify(await idp.getToken({ roles: [], claims: { groups: ['eng-leads'] } }))).role).toBe('operator');
    expect((await v.verify(await idp.getToken({ roles: ['admin'], claims: { groups: ['/Admin'] } }))).role).toBe('viewer');
  });
});

describe('maximum token lifetime', () => {
  it('accepts a token within it; refuses exp - iat above it, a token without iat, and one valid for longer from now', async () => {
    const v = createOidcVerifier({ issuer: idp.issuer, clientId: idp.clientId, maxTokenLifetimeSec: 3600 });
    // The provider issues 300 s tokens.
    expect((await v.verify(await idp.getToken({ roles: ['viewer'] }))).role).toBe('viewer');
    expect((await v.verify(await idp.getToken({ claims: { iat: nowSec(), exp: nowSec() + 3600 } }))).subject).toBe('user-0001');
    expect(await refusal(v, await idp.getToken({ claims: { iat: nowSec(), exp: nowSec() + 3601 } }))).toBe('too_long_lived');
    expect(await refusal(v, await idp.getToken({ claims: { iat: nowSec() - 86_400, exp: nowSec() + 60 } }))).toBe('too_long_lived');
    expect(await refusal(v, await idp.getToken({ claims: { iat: nowSec() + 7200, exp: nowSec() + 7300 } }))).toBe('too_long_lived');
    // Without the option, lifetime is not limited.
    const open = createOidcVerifier({ issuer: idp.issuer, clientId: idp.clientId });
    expect((await open.verify(await idp.getToken({ claims: { iat: nowSec(), exp: nowSec() + 86_400 } }))).subject).toBe('user-0001');
  });
});

describe('maximum token lifetime: a token without iat', () => {
  it('is refused (missing_claim) when a maximum is set, accepted without one', async () => {
    // The real provider always sets iat, so this one is signed by a key served through a stub fetch.
    const issuer = 'https://idp.example.test';
    const { publicKey, privateKey } = await generateKeyPair('ES256');
    const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' };
    const fetchStub: typeof fetch = async (input) => {
      const url = String(input instanceof Request ? input.url : input);
      if (url.endsWith('/.well-known/openid-configuration')) return Response.json({ issuer, jwks_uri: `${issuer}/jwks` });
      if (url === `${issuer}/jwks`) return Response.json({ keys: [jwk] });
      return new Response('not found', { status: 404 });
    };
    const token = await new SignJWT({ sub: 'svc', roles: ['operator'] })
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
      .setIssuer(issuer)
      .setAudience('loki')
      .setExpirationTime(nowSec() + 300)
      .sign(privateKey);
    const limited = createOidcVerifier({ issuer, clientId: 'loki', fetch: fetchStub, maxTokenLifetimeSec: 3600 });
    expect(await refusal(limited, token)).toBe('missing_claim');
    const open = createOidcVerifier({ issuer, clientId: 'loki', fetch: fetchStub });
    expect((await open.verify(token)).role).toBe('operator');
  });
});

describe('LOKI_OIDC_ROLE_MAP and LOKI_OIDC_MAX_TOKEN_LIFETIME (src/env.ts)', () => {
  const D = { home: '/home/u', cwd: '/home/u/project' };
  const base = { LOKI_OIDC_ISSUER: 'http://127.0.0.1:9', LOKI_OIDC_CLIENT_ID: 'loki' };
  it('parses CLAIM:ROLE pairs (the role after the last colon) and the lifetime in seconds', () => {
    const c = loadConfig({ ...base, LOKI_OIDC_ROLE_MAP: 'platform-admins:admin, /Eng/Leads:Operator,urn:group:audit:auditor', LOKI_OIDC_MAX_TOKEN_LIFETIME: '3600' }, D);
    expect(c.oidc?.roleMap).toEqual({ 'platform-admins': 'admin', '/Eng/Leads': 'operator', 'urn:group:audit': 'auditor' });
    expect(c.oidc?.maxTokenLifetimeSec).toBe(3600);
    const d = loadConfig(base, D);
    expect(d.oidc?.roleMap).toEqual({});
    expect(d.oidc?.maxTokenLifetimeSec).toBeNull();
  });
  it.each([
    ['admins', 'LOKI_OIDC_ROLE_MAP="admins" is invalid'],
    ['admins:root', 'LOKI_OIDC_ROLE_MAP="admins:root" is invalid'],
    ['bots:worker', 'LOKI_OIDC_ROLE_MAP="bots:worker" is invalid'],
    [':admin', 'LOKI_OIDC_ROLE_MAP=":admin" is invalid'],
  ])('refuses the map %s', (map, msg) => {
    expect(() => loadConfig({ ...base, LOKI_OIDC_ROLE_MAP: map }, D)).toThrow(ConfigError);
    expect(() => loadConfig({ ...base, LOKI_OIDC_ROLE_MAP: map }, D)).toThrow(msg);
  });
  it('refuses a lifetime that is not a whole number of seconds from 60', () => {
    expect(() => loadConfig({ ...base, LOKI_OIDC_MAX_TOKEN_LIFETIME: '1h' }, D)).toThrow('LOKI_OIDC_MAX_TOKEN_LIFETIME="1h" is invalid: expected an integer from 60 to 31536000');
  });
});

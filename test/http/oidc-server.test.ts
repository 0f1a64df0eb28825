import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOidcProvider, type TestOidcProvider } from '../helpers/oidc-provider';
import { startTestServer, type TestServer } from '../helpers/server';

const WWW_INVALID = 'Bearer realm="loki", error="invalid_token"';

describe('OIDC sign-in through the real server and a real provider', () => {
  let idp: TestOidcProvider;
  let s: TestServer;
  beforeAll(async () => {
    idp = await startOidcProvider({ clientId: 'loki-dashboard', subject: 'user-42', email: 'alice@example.com', roles: [] });
    s = await startTestServer({ LOKI_OIDC_ISSUER: idp.issuer, LOKI_OIDC_CLIENT_ID: 'loki-dashboard', LOKI_OIDC_ROLE_MAP: 'admin:admin' });
  });
  afterAll(async () => {
    await s?.stop();
    await idp?.close();
  });

  it('OIDC alone turns auth on', async () => {
    const r = await s.req('/api/enterprise/status');
    expect(await r.json()).toMatchObject({ auth_enabled: true, oidc_enabled: true });
    expect((await s.req('/api/status')).status).toBe(401);
  });

  it('a provider-issued token with no roles gets the default role (viewer)', async () => {
    const token = await idp.getToken({ roles: [] });
    expect((await s.req('/api/status', { token })).status).toBe(200);
    const denied = await s.req('/api/enterprise/tokens', { token });
    expect(denied.status).toBe(403);
    expect(denied.headers.get('www-authenticate')).toBe('Bearer realm="loki", error="insufficient_scope", scope="*"');
  });

  it('roles from claims: highest wins; the identity becomes the audit actor', async () => {
    const token = await idp.getToken({ roles: ['viewer', 'admin'] });
    const r = await s.req('/api/enterprise/tokens', { token });
    expect(r.status).toBe(200);
    await s.runtime.audit.drain();
    const rows = await s.runtime.audit.query({ afterSeq: 0, limit: 1000 });
    const mine = rows.map((x) => JSON.parse(x.entry)).filter((e) => e.request?.path === '/api/enterprise/tokens' && e.outcome.status === 200);
    expect(mine.at(-1).actor).toEqual({ type: 'oidc', id: 'user-42', name: 'alice@example.com' });
  });

  it.each([
    ['expired', { claims: { exp: Math.floor(Date.now() / 1000) - 3600, iat: Math.floor(Date.now() / 1000) - 7200 } }],
    ['wrong audience', { claims: { aud: 'someone-else' } }],
    ['wrong issuer', { claims: { iss: 'http://127.0.0.1:1/evil' } }],
    ['missing exp', { omitClaims: ['exp'] }],
  ])('refuses a %s token with 401', async (_, opts) => {
    const token = await idp.getToken({ roles: ['admin'], ...opts });
    const r = await s.req('/api/status', { token });
    expect(r.status).toBe(401);
    expect(r.headers.get('www-authenticate')).toBe(WWW_INVALID);
  });

  it('refuses alg none', async () => {
    const good = await idp.getToken({ roles: ['admin'] });
    const [, payload] = good.split('.');
    const header = Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url');
    const r = await s.req('/api/status', { token: `${header}.${payload}.` });
    expect(r.status).toBe(401);
  });

  it('keys are cached: many requests, one JWKS fetch', async () => {
    const token = await idp.getToken({ roles: ['viewer'] });
    const before = idp.jwksFetchCount();
    for (let i = 0; i < 30; i++) expect((await s.req('/api/status', { token })).status).toBe(200);
    expect(idp.jwksFetchCount()).toBe(before);
  });
});

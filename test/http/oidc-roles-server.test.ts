/** Issue 13: admin from OIDC claims only through LOKI_OIDC_ROLE_MAP; LOKI_OIDC_MAX_TOKEN_LIFETIME (real server, real provider). */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOidcProvider, type TestOidcProvider } from '../helpers/oidc-provider';
import { startTestServer, type TestServer } from '../helpers/server';

const nowSec = () => Math.floor(Date.now() / 1000);

describe('OIDC roles and token lifetime through the real server', () => {
  let idp: TestOidcProvider;
  let plain: TestServer;
  let mapped: TestServer;
  beforeAll(async () => {
    idp = await startOidcProvider({ clientId: 'loki-dashboard', roles: [] });
    plain = await startTestServer({ LOKI_OIDC_ISSUER: idp.issuer, LOKI_OIDC_CLIENT_ID: 'loki-dashboard' });
    mapped = await startTestServer({
      LOKI_OIDC_ISSUER: idp.issuer,
      LOKI_OIDC_CLIENT_ID: 'loki-dashboard',
      LOKI_OIDC_ROLE_MAP: 'platform-admins:admin',
      LOKI_OIDC_MAX_TOKEN_LIFETIME: '3600',
    });
  });
  afterAll(async () => {
    await plain?.stop();
    await mapped?.stop();
    await idp?.close();
  });

  it('without a role map, a group named admin or /Admin gets the default role: 403 on an admin route', async () => {
    for (const token of [await idp.getToken({ roles: ['admin'] }), await idp.getToken({ claims: { groups: ['/Admin'] } })]) {
      expect((await plain.req('/api/status', { token })).status).toBe(200);
      const r = await plain.req('/api/enterprise/tokens', { token });
      expect(r.status).toBe(403);
      expect(r.headers.get('www-authenticate')).toBe('Bearer realm="loki", error="insufficient_scope", scope="*"');
      expect((await r.json()).error.code).toBe('insufficient_scope');
    }
  });

  it('with LOKI_OIDC_ROLE_MAP=platform-admins:admin, the mapped group is admin and /Admin still is not', async () => {
    expect((await mapped.req('/api/enterprise/tokens', { token: await idp.getToken({ claims: { groups: ['platform-admins'] } }) })).status).toBe(200);
    expect((await mapped.req('/api/enterprise/tokens', { token: await idp.getToken({ roles: ['admin'], claims: { groups: ['/Admin'] } }) })).status).toBe(403);
  });

  it('a token living longer than LOKI_OIDC_MAX_TOKEN_LIFETIME is refused 401; the reason is in the audit entry', async () => {
    const long = await idp.getToken({ claims: { groups: ['platform-admins'], iat: nowSec(), exp: nowSec() + 7200 } });
    const r = await mapped.req('/api/status', { token: long, headers: { 'X-Request-Id': 'too-long-1' } });
    expect(r.status).toBe(401);
    expect(r.headers.get('www-authenticate')).toBe('Bearer realm="loki", error="invalid_token"');
    expect((await r.json()).error).toMatchObject({ code: 'invalid_token', message: 'the bearer token is not valid' });
    // The same token is fine where no maximum is set; a 300 s token is fine here.
    expect((await plain.req('/api/status', { token: long })).status).toBe(200);
    expect((await mapped.req('/api/status', { token: await idp.getToken() })).status).toBe(200);
    await mapped.runtime.audit.drain();
    const rows = (await mapped.runtime.audit.query({ afterSeq: 0, limit: 1000 })).map((x) => JSON.parse(x.entry));
    expect(rows.find((e) => e.request?.id === 'too-long-1')).toMatchObject({ action: 'auth.failure', outcome: { status: 401 }, details: { reason: 'oidc_rejected' } });
  });
});

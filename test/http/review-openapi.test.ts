/**
 * Review of `GET /api/openapi.json` and the routes it documents: the public route
 * obeys the Host and path checks and is audited (HEAD too); a HEAD request to a
 * guarded route still meets its guard; the document names no local file path and
 * no secret of this server.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawRequest } from '../helpers/raw-http';
import { startTestServer, type TestServer } from '../helpers/server';
import { makeToken } from '../helpers/tokens';

describe('openapi route and guards (review)', () => {
  let s: TestServer;
  let admin: string;
  beforeAll(async () => {
    s = await startTestServer({ LOKI_ENTERPRISE_AUTH: 'true' });
    admin = (await makeToken(s, 'root', 'admin')).token;
  });
  afterAll(async () => {
    await s?.stop();
  });

  async function entry(requestId: string) {
    await s.runtime.audit.drain();
    const rows = await s.runtime.audit.query({ afterSeq: 0, limit: 10_000 });
    return rows.map((r) => JSON.parse(r.entry)).find((e) => e.request?.id === requestId);
  }

  it('HEAD is answered and audited; a foreign Host is refused (403 forbidden_host) and audited', async () => {
    const head = await s.req('/api/openapi.json', { method: 'HEAD', headers: { 'X-Request-Id': 'review-head-1' } });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe('');
    expect(await entry('review-head-1')).toMatchObject({ request: { method: 'HEAD', path: '/api/openapi.json' }, outcome: { status: 200 } });
    const foreign = await rawRequest(s.port, '/api/openapi.json', { host: 'evil.example', headers: { 'X-Request-Id': 'review-host-1' } });
    expect(foreign.status).toBe(403);
    expect(JSON.parse(foreign.body).error.code).toBe('forbidden_host');
    expect(await entry('review-host-1')).toMatchObject({ outcome: { status: 403, error: 'forbidden_host' } });
  });

  it('path variants are not served as the document', async () => {
    expect((await rawRequest(s.port, '/api/openapi.json/')).status).toBe(404);
    expect((await rawRequest(s.port, '/api//openapi.json')).status).toBe(400);
    expect((await rawRequest(s.port, '/api/openapi.json', { method: 'POST' })).status).toBe(404);
  });

  it('HEAD on a guarded route meets its guard (401 without a token, 200 with one)', async () => {
    for (const p of ['/api/status', '/api/enterprise/tokens', '/api/enterprise/audit', '/api/sessions', '/metrics']) {
      const r = await s.req(p, { method: 'HEAD' });
      expect(r.status, p).toBe(401);
    }
    expect((await s.req('/api/enterprise/tokens', { method: 'HEAD', token: admin })).status).toBe(200);
  });

  it('the document names no local path, no token and no key of this server', async () => {
    const raw = await (await s.req('/api/openapi.json')).text();
    expect(raw).not.toContain(s.home);
    expect(raw).not.toContain(admin);
    expect(raw).not.toMatch(/\/tmp\/|\/home\/|\.db\b|BEGIN [A-Z ]*KEY/);
  });
});

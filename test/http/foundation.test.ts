import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawRequest } from '../helpers/raw-http';
import { startTestServer, type TestServer } from '../helpers/server';

const SECURITY_HEADERS = {
  'content-security-policy': "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
};

function expectSecurityHeaders(h: Headers | Record<string, string>) {
  const get = (k: string) => (h instanceof Headers ? h.get(k) : h[k]);
  for (const [k, v] of Object.entries(SECURITY_HEADERS)) expect(get(k)).toBe(v);
  expect(get('x-request-id')).toMatch(/^req_[0-9a-f]{20}$/);
}

describe('foundation endpoints and middleware (real server)', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer();
  });
  afterAll(async () => {
    await s.stop();
  });

  it('GET /health', async () => {
    const r = await s.req('/health');
    expect(r.status).toBe(200);
    expect(await r.json()).toEqual({ status: 'healthy', service: 'loki-dashboard' });
    expectSecurityHeaders(r.headers);
  });

  it('GET /api/enterprise/status', async () => {
    const r = await s.req('/api/enterprise/status');
    expect(r.status).toBe(200);
    expect(await r.json()).toEqual({ auth_enabled: false, oidc_enabled: false, audit_enabled: true, sandbox_enabled: false });
  });

  it('GET /api/status and its alias /status', async () => {
    for (const p of ['/api/status', '/status']) {
      const r = await s.req(p);
      expect(r.status).toBe(200);
      const body = await r.json();
      expect(body.version).toBe('0.1.0');
      expect(body.flags).toMatchObject({ auth_enabled: false, audit_enabled: true, sandbox_mode: false, branch_protection: true });
      expect(body.sessions).toEqual({ total: 0, by_status: {} });
      expect(body.audit.seq).toBeGreaterThan(0);
      expect(body.audit.head_hash).toMatch(/^[0-9a-f]{64}$/);
      expect(typeof body.uptime_seconds).toBe('number');
    }
  });

  it('404 in the contract error shape, with security headers', async () => {
    const r = await s.req('/api/nope');
    expect(r.status).toBe(404);
    const body = await r.json();
    expect(body).toEqual({ error: { code: 'not_found', message: 'no route for GET /api/nope', request_id: r.headers.get('x-request-id') } });
    expectSecurityHeaders(r.headers);
  });

  it('413 JSON for a body over the limit, and the server keeps serving', async () => {
    const r = await s.req('/api/enterprise/tokens', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ name: 'x'.repeat(1024 * 1024 + 10) }),
    });
    expect(r.status).toBe(413);
    expect((await r.json()).error.code).toBe('payload_too_large');
    expect((await s.req('/health')).status).toBe(200);
  });

  it('400 for malformed JSON, never 500', async () => {
    const r = await s.req('/api/enterprise/tokens', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"name":' });
    expect(r.status).toBe(400);
    expect((await r.json()).error.code).toMatch(/^(bad_request|validation_error)$/);
  });

  it('keeps an incoming well-formed X-Request-Id and replaces a bad one', async () => {
    const good = await s.req('/health', { headers: { 'X-Request-Id': 'trace-1234567' } });
    expect(good.headers.get('x-request-id')).toBe('trace-1234567');
    const bad = await s.req('/health', { headers: { 'X-Request-Id': '<script>' } });
    expect(bad.headers.get('x-request-id')).toMatch(/^req_/);
  });

  describe('CORS allowlist', () => {
    it('default allowlist follows the actual port', async () => {
      const origin = `http://127.0.0.1:${s.port}`;
      const r = await s.req('/api/status', { headers: { Origin: origin } });
      expect(r.headers.get('access-control-allow-origin')).toBe(origin);
      expect(r.headers.get('access-control-allow-credentials')).toBe('true');
      expect(r.headers.get('vary')).toContain('Origin');
      const l = await s.req('/api/status', { headers: { Origin: `http://localhost:${s.port}` } });
      expect(l.headers.get('access-control-allow-origin')).toBe(`http://localhost:${s.port}`);
    });

    it('a disallowed origin gets no ACAO; Vary: Origin always', async () => {
      const r = await s.req('/api/status', { headers: { Origin: 'http://evil.example' } });
      expect(r.status).toBe(200);
      expect(r.headers.get('access-control-allow-origin')).toBeNull();
      expect(r.headers.get('access-control-allow-credentials')).toBeNull();
      expect(r.headers.get('vary')).toContain('Origin');
      const none = await s.req('/api/status');
      expect(none.headers.get('vary')).toContain('Origin');
    });

    it('preflight: allowed → 204 with methods; disallowed → 403', async () => {
      const ok = await s.req('/api/sessions', {
        method: 'OPTIONS',
        headers: { Origin: `http://127.0.0.1:${s.port}`, 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'authorization' },
      });
      expect(ok.status).toBe(204);
      expect(ok.headers.get('access-control-allow-methods')).toBe('GET, POST, DELETE, OPTIONS');
      expect(ok.headers.get('access-control-allow-headers')).toContain('Authorization');
      const bad = await s.req('/api/sessions', { method: 'OPTIONS', headers: { Origin: 'http://evil.example', 'Access-Control-Request-Method': 'POST' } });
      expect(bad.status).toBe(403);
      expect((await bad.json()).error.code).toBe('forbidden_origin');
      expect(bad.headers.get('access-control-allow-origin')).toBeNull();
    });

    it('refuses a state-changing request from a disallowed origin (no preflight needed for text/plain)', async () => {
      const r = await s.req('/api/enterprise/tokens', { method: 'POST', headers: { Origin: 'http://evil.example', 'Content-Type': 'text/plain' }, body: '{"name":"x"}' });
      expect(r.status).toBe(403);
      expect((await r.json()).error.code).toBe('forbidden_origin');
    });
  });

  describe('Host allowlist (DNS rebinding)', () => {
    it.each(['localhost', '127.0.0.1', '[::1]'])('accepts %s with the port', async (h) => {
      const r = await rawRequest(s.port, '/api/status', { host: `${h}:${s.port}` });
      expect(r.status).toBe(200);
    });
    it.each(['evil.example', 'evil.example:PORT', 'localhost', '127.0.0.1:1', 'localhost.evil.example:PORT'])('refuses Host %s', async (h) => {
      const r = await rawRequest(s.port, '/api/status', { host: h.replace('PORT', String(s.port)) });
      expect(r.status).toBe(403);
      expect(JSON.parse(r.body).error.code).toBe('forbidden_host');
    });
  });
});

describe('wildcard CORS and uncaught errors', () => {
  it('`*` logs a warning and an audit entry at start-up; any origin may read without credentials', async () => {
    const s = await startTestServer({ LOKI_DASHBOARD_CORS: '*' });
    try {
      expect(s.logger.lines.some((l) => l.level === 'warn' && l.msg.includes('LOKI_DASHBOARD_CORS'))).toBe(true);
      const r = await s.req('/api/status', { headers: { Origin: 'http://any.example' } });
      expect(r.headers.get('access-control-allow-origin')).toBe('*');
      expect(r.headers.get('access-control-allow-credentials')).toBeNull();
      const first = (await s.runtime.audit.query({ afterSeq: 0, limit: 1 }))[0]!;
      expect(JSON.parse(first.entry).action).toBe('config.insecure');
    } finally {
      await s.stop();
    }
  });

  it('an uncaught error → 500 internal_error without a stack; the full error goes to the server log', async () => {
    const s = await startTestServer();
    try {
      s.runtime.deps.store.sessions.counts = async () => {
        throw new Error('disk on fire');
      };
      const r = await s.req('/api/status');
      expect(r.status).toBe(500);
      const text = await r.text();
      expect(JSON.parse(text)).toEqual({ error: { code: 'internal_error', message: 'internal error', request_id: r.headers.get('x-request-id') } });
      expect(text).not.toContain('disk on fire');
      const logged = s.logger.lines.find((l) => l.level === 'error');
      expect(String(logged?.fields?.err)).toContain('disk on fire');
      expect(String(logged?.fields?.err)).toContain('at ');
    } finally {
      await s.stop();
    }
  });
});

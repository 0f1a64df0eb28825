import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/server';
import { openWs } from '../helpers/streams';

/** Issue 13: LOKI_DASHBOARD_CORS replaces the default list, but never the server's own origin. */
describe('CORS: the server\'s own origin with LOKI_DASHBOARD_CORS set', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer({ LOKI_DASHBOARD_CORS: 'http://localhost:3000' });
  });
  afterAll(async () => {
    await s.stop();
  });

  const createToken = (origin: string, name: string) =>
    s.req('/api/enterprise/tokens', {
      method: 'POST',
      headers: { Origin: origin, 'Content-Type': 'application/json' },
      body: JSON.stringify({ name, role: 'viewer' }),
    });

  it.each([['127.0.0.1'], ['localhost']])('a state-changing request from http://%s:<port> (the dashboard page) succeeds', async (host) => {
    const origin = `http://${host}:${s.port}`;
    const r = await createToken(origin, `own-${host}`);
    expect(r.status).toBe(201);
    expect(r.headers.get('access-control-allow-origin')).toBe(origin);
    expect(r.headers.get('access-control-allow-credentials')).toBe('true');
    const pre = await s.req('/api/enterprise/tokens', { method: 'OPTIONS', headers: { Origin: origin, 'Access-Control-Request-Method': 'POST' } });
    expect(pre.status).toBe(204);
  });

  it('the configured origin is allowed too', async () => {
    const r = await createToken('http://localhost:3000', 'from-3000');
    expect(r.status).toBe(201);
    expect(r.headers.get('access-control-allow-origin')).toBe('http://localhost:3000');
  });

  it('a foreign origin is still refused with 403 forbidden_origin, and nothing is created', async () => {
    const r = await createToken('http://evil.example', 'evil');
    expect(r.status).toBe(403);
    expect((await r.json()).error).toMatchObject({ code: 'forbidden_origin', message: 'origin is not in the CORS allowlist' });
    // Another port on loopback is another origin.
    expect((await createToken(`http://127.0.0.1:${s.port + 1}`, 'other-port')).status).toBe(403);
    const list = await (await s.req('/api/enterprise/tokens')).json();
    expect(list.tokens.map((t: { name: string }) => t.name).sort()).toEqual(['from-3000', 'own-127.0.0.1', 'own-localhost']);
  });
});

describe('WebSocket handshake: the server\'s own origin with LOKI_DASHBOARD_CORS set', () => {
  it('the dashboard page\'s origin may open /ws; a foreign one gets 403', async () => {
    const s = await startTestServer({ LOKI_DASHBOARD_CORS: 'http://localhost:3000' });
    try {
      const url = `ws://127.0.0.1:${s.port}/ws`;
      const ok = openWs(url, { origin: `http://127.0.0.1:${s.port}`, protocols: ['loki.v1'] });
      await ok.opened;
      ok.ws.close();
      await ok.closed;
      expect(await openWs(url, { origin: 'http://evil.example', protocols: ['loki.v1'] }).refused).toBe(403);
    } finally {
      await s.stop();
    }
  });
});

describe('CORS: the configured host is one of the server\'s own origins', () => {
  it('LOKI_DASHBOARD_HOST=localhost with a replaced allowlist', async () => {
    const s = await startTestServer({ LOKI_DASHBOARD_HOST: 'localhost', LOKI_DASHBOARD_CORS: 'https://app.example.com' });
    try {
      const r = await s.req('/api/enterprise/tokens', {
        method: 'POST',
        headers: { Origin: `http://localhost:${s.port}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ name: 'x', role: 'viewer' }),
      });
      expect(r.status).toBe(201);
    } finally {
      await s.stop();
    }
  });
});

/**
 * GET /ws on a real server with the `ws` client: subprotocol and query-string
 * credentials, scope, Origin, messages, pings, limits, revocation, and that the
 * query-string token never reaches the audit log.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLokiApp } from '../../src/app';
import { runCli, startTestServer, type TestServer } from '../helpers/server';
import { openWs, type WsClient, waitForStreams } from '../helpers/streams';
import { makeToken } from '../helpers/tokens';

describe('WebSocket /ws (auth on)', () => {
  let s: TestServer;
  let admin: string;
  let viewer: string;
  let wsUrl: string;
  const clients: WsClient[] = [];
  const connect = (opts: Parameters<typeof openWs>[1] & { token?: string; query?: string } = {}) => {
    const protocols = opts.protocols ?? (opts.token === undefined ? ['loki.v1', `loki.bearer.${viewer}`] : ['loki.v1', `loki.bearer.${opts.token}`]);
    const c = openWs(`${wsUrl}${opts.query ?? ''}`, { ...opts, protocols });
    clients.push(c);
    return c;
  };
  const req = (p: string) => s.req(p, { token: admin });

  beforeAll(async () => {
    s = await startTestServer({ LOKI_ENTERPRISE_AUTH: 'true', LOKI_MAX_WS_CLIENTS: '4', LOKI_WS_PING_INTERVAL_MS: '300' });
    admin = (await makeToken(s, 'admin', 'admin')).token;
    viewer = (await makeToken(s, 'viewer', 'viewer')).token;
    wsUrl = `ws://127.0.0.1:${s.port}/ws`;
  });
  afterAll(async () => {
    for (const c of clients) c.ws.terminate();
    await s.stop();
  });

  it('authenticates with the subprotocol; selects loki.v1 (the token is not echoed)', async () => {
    const c = connect();
    await c.opened;
    expect(c.ws.protocol).toBe('loki.v1');
    const hello = await c.waitFor((m) => m.type === 'connected');
    expect(hello).toMatchObject({ protocol: 'loki.v1' });
    const id = await s.runtime.events.publish('w.one', 'sess_w', { x: 1 });
    const m = await c.waitFor((m) => m.type === 'event');
    expect(m.event).toMatchObject({ id, type: 'w.one', session_id: 'sess_w', data: { x: 1 } });
    c.ws.close();
    await c.closed;
  });

  it('echoes the bearer protocol when it is the only one offered (a browser needs a selection)', async () => {
    const c = connect({ protocols: [`loki.bearer.${viewer}`] });
    await c.opened;
    expect(c.ws.protocol).toBe(`loki.bearer.${viewer}`);
    c.ws.close();
    await c.closed;
  });

  it('accepts ?token= (compatibility) and never writes it to the audit log', async () => {
    const t = await makeToken(s, 'ws-query', 'viewer');
    const c = connect({ protocols: [], query: `?token=${t.token}` });
    await c.opened;
    await c.waitFor((m) => m.type === 'connected');
    c.ws.close();
    await c.closed;
    const bad = connect({ protocols: [], query: '?token=not-a-token-at-all' });
    expect(await bad.refused).toBe(401);
    await s.runtime.audit.drain();
    const rows = await s.sql<{ entry: string }>('SELECT entry FROM audit_log');
    const all = rows.map((r) => r.entry).join('\n');
    expect(all).not.toContain(t.token);
    expect(all).not.toContain(t.token.slice(5));
    expect(all).not.toContain('not-a-token-at-all');
    const wsEntries = rows.map((r) => JSON.parse(r.entry)).filter((e) => e.request?.path?.startsWith('/ws'));
    expect(wsEntries.length).toBeGreaterThanOrEqual(2);
    for (const e of wsEntries.filter((e) => e.request.path.includes('token='))) expect(e.request.path).toBe('/ws?token=[REDACTED]');
    expect(s.logger.lines.map((l) => JSON.stringify(l)).join('\n')).not.toContain(t.token);
  });

  it('refuses a missing or unknown credential (401) and a worker token (403: no read scope)', async () => {
    expect(await connect({ protocols: ['loki.v1'] }).refused).toBe(401);
    expect(await connect({ protocols: ['loki.v1', 'loki.bearer.loki_bogus'] }).refused).toBe(401);
    const worker = (await makeToken(s, 'ws-worker', 'worker', { workerId: 'w-ws' })).token;
    expect(await connect({ token: worker }).refused).toBe(403);
  });

  it('refuses a forged Origin (cross-site WebSocket hijacking) and accepts an allowed one', async () => {
    expect(await connect({ origin: 'https://evil.example' }).refused).toBe(403);
    expect(await connect({ origin: 'null' }).refused).toBe(403);
    const ok = connect({ origin: `http://127.0.0.1:${s.port}` });
    await ok.opened;
    ok.ws.close();
    await ok.closed;
  });

  it('answers 501 on a runtime without a WebSocket helper (the Workers entry passes none)', async () => {
    const { app } = createLokiApp({ ...s.runtime.deps, upgradeWebSocket: undefined });
    const r = await app.request('/ws', { headers: { Host: `127.0.0.1:${s.port}`, Upgrade: 'websocket', Authorization: `Bearer ${viewer}` } });
    expect(r.status).toBe(501);
    expect((await r.json()).error.code).toBe('not_implemented');
  });

  it('answers a plain GET with 426', async () => {
    const r = await s.req('/ws', { token: viewer });
    expect(r.status).toBe(426);
    expect((await r.json()).error.code).toBe('upgrade_required');
  });

  it('subscribe {types, session} changes the filter; ping gets pong', async () => {
    const c = connect();
    await c.waitFor((m) => m.type === 'connected');
    c.ws.send(JSON.stringify({ type: 'subscribe', types: ['s.b'], session: 'sess_s' }));
    await c.waitFor((m) => m.type === 'subscribed');
    await s.runtime.events.publish('s.a', 'sess_s', {});
    await s.runtime.events.publish('s.b', 'sess_t', {});
    const want = await s.runtime.events.publish('s.b', 'sess_s', { hit: true });
    await c.waitFor((m) => m.type === 'event');
    await new Promise((r) => setTimeout(r, 200));
    expect(c.events().map((e) => e.id)).toEqual([want]);
    c.ws.send(JSON.stringify({ type: 'ping' }));
    await c.waitFor((m) => m.type === 'pong');
    c.ws.send('{nope');
    expect(await c.waitFor((m) => m.type === 'error')).toMatchObject({ code: 'bad_message' });
    // Replay from a cursor.
    c.ws.send(JSON.stringify({ type: 'subscribe', types: ['s.a', 's.b'], session: null, after: want - 3 }));
    await c.waitFor((m) => m.type === 'event' && (m.event as { type: string }).type === 's.a');
    c.ws.close();
    await c.closed;
  });

  it('pings every interval and drops a client that misses two pongs', async () => {
    const silent = connect({ autoPong: false });
    const lively = connect();
    await silent.opened;
    await lively.opened;
    lively.ws.on('message', (m) => {
      if (JSON.parse(String(m)).type === 'ping') lively.ws.send(JSON.stringify({ type: 'pong' }));
    });
    await silent.waitFor((m) => m.type === 'ping', 2000);
    const closed = await Promise.race([silent.closed, new Promise<null>((r) => setTimeout(() => r(null), 4000))]);
    expect(closed).not.toBeNull();
    expect(lively.ws.readyState).toBe(1);
    lively.ws.close();
    await lively.closed;
  });

  it('closes with 1013 past LOKI_MAX_WS_CLIENTS', async () => {
    await waitForStreams(req, { ws: 0 });
    const four = Array.from({ length: 4 }, () => connect());
    for (const c of four) await c.waitFor((m) => m.type === 'connected');
    const fifth = connect();
    expect((await fifth.closed).code).toBe(1013);
    for (const c of four) c.ws.close();
    await waitForStreams(req, { ws: 0, listeners: 0 });
  });

  it('closes with 1008 within 5 s of a revocation through the API', async () => {
    const t = await makeToken(s, 'ws-revoke-api', 'viewer');
    const c = connect({ token: t.token });
    await c.waitFor((m) => m.type === 'connected');
    const t0 = Date.now();
    expect((await s.req(`/api/enterprise/tokens/${t.id}`, { method: 'DELETE', token: admin })).status).toBe(200);
    const { code } = await c.closed;
    expect(code).toBe(1008);
    expect(Date.now() - t0).toBeLessThan(5000);
  });

  it('closes with 1008 within 5 s of a revocation by the CLI (another process)', async () => {
    const t = await makeToken(s, 'ws-revoke-cli', 'viewer');
    const c = connect({ token: t.token });
    await c.waitFor((m) => m.type === 'connected');
    const r = await runCli(['enterprise', 'token', 'revoke', t.id], { LOKI_HOME: s.home });
    expect(r.code, r.stderr).toBe(0);
    const t0 = Date.now();
    const { code } = await c.closed;
    expect(code).toBe(1008);
    expect(Date.now() - t0).toBeLessThan(5000);
  });

  it('leaves no listener behind after all disconnects', async () => {
    for (let i = 0; i < 3; i++) {
      const batch = Array.from({ length: 4 }, () => connect());
      for (const c of batch) await c.opened;
      for (const c of batch) c.ws.terminate();
    }
    expect(await waitForStreams(req, { ws: 0, listeners: 0 })).toMatchObject({ ws: 0, listeners: 0 });
  });
});

describe('WebSocket attempt limit and shutdown', () => {
  it('refuses more than LOKI_WS_ATTEMPTS_PER_MINUTE attempts per address with 429', async () => {
    const s = await startTestServer({ LOKI_WS_ATTEMPTS_PER_MINUTE: '5' });
    try {
      const statuses: (number | null)[] = [];
      for (let i = 0; i < 7; i++) {
        const c = openWs(`ws://127.0.0.1:${s.port}/ws`, { protocols: ['loki.v1'] });
        const st = await c.refused;
        statuses.push(st);
        c.ws.terminate();
      }
      expect(statuses).toEqual([null, null, null, null, null, 429, 429]);
    } finally {
      await s.stop();
    }
  });

  it('closes sockets with 1001 at shutdown (auth off, loopback)', async () => {
    const s = await startTestServer();
    const c = openWs(`ws://127.0.0.1:${s.port}/ws`, { protocols: ['loki.v1'] });
    await c.waitFor((m) => m.type === 'connected');
    const stopping = s.stop(5000);
    expect((await c.closed).code).toBe(1001);
    await stopping;
  });
});

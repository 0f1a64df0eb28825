/**
 * GET /api/events on a real server with real clients (fetch streaming):
 * resumption, filters, the connection limit, revocation and expiry, events
 * from another process, shutdown, and that every disconnect releases its listener.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, startTestServer, type TestServer } from '../helpers/server';
import { openSse, type SseClient, waitForStreams } from '../helpers/streams';
import { makeToken } from '../helpers/tokens';

const LIMIT = 6;

describe('SSE /api/events (auth on)', () => {
  let s: TestServer;
  let admin: string;
  let viewer: string;
  const open: SseClient[] = [];
  const sse = async (path: string, opts: Parameters<typeof openSse>[1] = {}) => {
    const c = await openSse(`${s.url}${path}`, { token: viewer, ...opts });
    open.push(c);
    return c;
  };
  const req = (p: string) => s.req(p, { token: admin });
  const publish = (type: string, session: string | null = null, data: unknown = {}) => s.runtime.events.publish(type, session, data);

  beforeAll(async () => {
    s = await startTestServer({ LOKI_ENTERPRISE_AUTH: 'true', LOKI_MAX_SSE_CONNECTIONS: String(LIMIT) });
    admin = (await makeToken(s, 'admin', 'admin')).token;
    viewer = (await makeToken(s, 'viewer', 'viewer')).token;
  });
  afterAll(async () => {
    for (const c of open) c.close();
    await s.stop();
  });

  it('streams new events with id = events.id, in order', async () => {
    const c = await sse('/api/events');
    expect(c.status).toBe(200);
    const ids = [await publish('t.one'), await publish('t.two', 'sess_1', { n: 2 })];
    const got = await c.waitFor(2);
    expect(got.map((e) => e.id)).toEqual(ids);
    expect(got[1]).toMatchObject({ type: 't.two', session_id: 'sess_1', data: { n: 2 } });
    c.close();
  });

  it('resumes after Last-Event-ID (and ?after=) losing and repeating nothing', async () => {
    const first = await sse('/api/events?types=r.ev');
    const ids: number[] = [];
    for (let i = 0; i < 5; i++) ids.push(await publish('r.ev', null, { i }));
    await first.waitFor(5);
    first.close();
    await first.ended;
    // Disconnected after seeing the third: everything after it must come exactly once.
    for (let i = 5; i < 9; i++) ids.push(await publish('r.ev', null, { i }));
    const resumed = await sse('/api/events?types=r.ev', { lastEventId: ids[2]! });
    await resumed.waitFor(6);
    const more = await publish('r.ev', null, { i: 9 });
    await resumed.waitFor(7);
    await new Promise((r) => setTimeout(r, 300));
    expect(resumed.events.map((e) => e.id)).toEqual([...ids.slice(3), more]);
    expect(resumed.events.map((e) => (e.data as { i: number }).i)).toEqual([3, 4, 5, 6, 7, 8, 9]);

    const viaQuery = await sse(`/api/events?types=r.ev&after=${ids[6]}`);
    await viaQuery.waitFor(3);
    expect(viaQuery.events.map((e) => e.id)).toEqual([ids[7], ids[8], more]);
    resumed.close();
    viaQuery.close();
  });

  it('a resume far behind pages through the table in order', async () => {
    const base = await s.runtime.events.latestId();
    for (let i = 0; i < 1200; i++) await publish('bulk.ev', null, { i });
    const c = await sse(`/api/events?types=bulk.ev&after=${base}`);
    const got = await c.waitFor(1200, 10_000);
    expect(got.map((e) => (e.data as { i: number }).i)).toEqual(Array.from({ length: 1200 }, (_, i) => i));
    c.close();
  });

  it('filters by ?types= and ?session=', async () => {
    const byType = await sse('/api/events?types=f.a,f.b');
    const bySession = await sse('/api/events?session=sess_f');
    await publish('f.a', null);
    await publish('f.c', 'sess_f');
    await publish('f.b', 'sess_g');
    await publish('f.a', 'sess_f');
    await byType.waitFor(3);
    await bySession.waitFor(2);
    await new Promise((r) => setTimeout(r, 200));
    expect(byType.events.map((e) => e.type)).toEqual(['f.a', 'f.b', 'f.a']);
    expect(bySession.events.map((e) => [e.type, e.session_id])).toEqual([
      ['f.c', 'sess_f'],
      ['f.a', 'sess_f'],
    ]);
    byType.close();
    bySession.close();
  });

  it('refuses malformed parameters with 400', async () => {
    for (const [path, headers] of [
      ['/api/events?after=-1', {}],
      ['/api/events?types=%3Cscript%3E', {}],
      ['/api/events?session=a%20b', {}],
      ['/api/events', { 'Last-Event-ID': 'abc' }],
    ] as const) {
      const r = await s.req(path, { token: viewer, headers });
      expect(r.status, path).toBe(400);
      expect((await r.json()).error.code).toBe('validation_error');
    }
  });

  it('needs the read scope: no token 401, a worker token 403', async () => {
    const none = await s.req('/api/events');
    expect(none.status).toBe(401);
    const worker = (await makeToken(s, 'sse-worker', 'worker', { workerId: 'w-sse' })).token;
    const r = await s.req('/api/events', { token: worker });
    expect(r.status).toBe(403);
    expect((await r.json()).error.code).toBe('insufficient_scope');
  });

  it(`answers 503 JSON past LOKI_MAX_SSE_CONNECTIONS (${LIMIT}), and frees slots on disconnect`, async () => {
    await waitForStreams(req, { sse: 0, listeners: 0 });
    const clients = await Promise.all(Array.from({ length: LIMIT }, () => sse('/api/events')));
    expect(clients.every((c) => c.status === 200)).toBe(true);
    const over = await s.req('/api/events', { token: viewer });
    expect(over.status).toBe(503);
    expect(over.headers.get('retry-after')).toBe('5');
    expect((await over.json()).error.code).toBe('service_unavailable');
    await waitForStreams(req, { sse: LIMIT, listeners: LIMIT });
    for (const c of clients) c.close();
    await waitForStreams(req, { sse: 0, listeners: 0 });
    const again = await sse('/api/events');
    expect(again.status).toBe(200);
    again.close();
  });

  it('every disconnect releases its listener: 200 connect/disconnect cycles leave 0', async () => {
    for (let round = 0; round < 40; round++) {
      const batch = await Promise.all(Array.from({ length: 5 }, () => sse('/api/events?types=x')));
      for (const c of batch) c.close();
    }
    expect(await waitForStreams(req, { listeners: 0, sse: 0 })).toMatchObject({ listeners: 0, sse: 0 });
  });

  it('closes the stream within 5 s of a revocation through the API', async () => {
    const t = await makeToken(s, 'sse-revoke-api', 'viewer');
    const c = await sse('/api/events?types=none', { token: t.token });
    expect(c.status).toBe(200);
    const t0 = Date.now();
    expect((await s.req(`/api/enterprise/tokens/${t.id}`, { method: 'DELETE', token: admin })).status).toBe(200);
    await c.ended;
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(c.controls).toContainEqual({ event: 'close', data: '{"reason":"revoked"}' });
    const after = await s.req('/api/events', { token: t.token });
    expect(after.status).toBe(401);
  });

  it('closes the stream within 5 s of a revocation by the CLI (another process)', async () => {
    const t = await makeToken(s, 'sse-revoke-cli', 'viewer');
    const c = await sse('/api/events?types=none', { token: t.token });
    const r = await runCli(['enterprise', 'token', 'revoke', t.id], { LOKI_HOME: s.home });
    expect(r.code, r.stderr).toBe(0);
    const t0 = Date.now();
    await c.ended;
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(c.controls.at(-1)).toEqual({ event: 'close', data: '{"reason":"revoked"}' });
  });

  it('closes the stream when the token expires', async () => {
    const t = await makeToken(s, 'sse-expiring', 'viewer', { expiresDays: 1 });
    await s.sql('UPDATE tokens SET expires_at = ? WHERE id = ?', Date.now() + 1500, t.id);
    const c = await sse('/api/events?types=none', { token: t.token });
    expect(c.status).toBe(200);
    const t0 = Date.now();
    await c.ended;
    expect(Date.now() - t0).toBeLessThan(1500 + 5000);
    expect(c.controls.at(-1)?.data).toBe('{"reason":"revoked"}');
  });

  it('delivers events written by another process (the CLI) within 1 s', async () => {
    const c = await sse('/api/events?types=token_created');
    const r = await runCli(['enterprise', 'token', 'generate', 'from-cli', '--role', 'viewer', '--json'], { LOKI_HOME: s.home });
    const t0 = Date.now();
    expect(r.code, r.stderr).toBe(0);
    const [e] = await c.waitFor(1, 1000);
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(e).toMatchObject({ type: 'token_created', data: { name: 'from-cli', role: 'viewer' } });
    c.close();
  });

  it('publishes token and audit events from the API', async () => {
    const c = await sse('/api/events?types=token_created,token_revoked,audit_verified');
    const created = await s.req('/api/enterprise/tokens', { method: 'POST', token: admin, headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ name: 'evt-tok', role: 'viewer' }) });
    const { id } = (await created.json()) as { id: string };
    await s.req(`/api/enterprise/tokens/${id}`, { method: 'DELETE', token: admin });
    await s.req('/api/enterprise/audit/verify', { token: admin });
    const got = await c.waitFor(3);
    expect(got.map((e) => e.type)).toEqual(['token_created', 'token_revoked', 'audit_verified']);
    expect(got[2]!.data).toMatchObject({ valid: true });
    c.close();
  });

  it('sends a keep-alive comment every 15 s', { timeout: 30_000 }, async () => {
    const c = await sse('/api/events?types=none');
    await new Promise((r) => setTimeout(r, 16_500));
    expect(c.comments).toContain('keep-alive');
    c.close();
  });
});

describe('SSE and shutdown', () => {
  it('ends open streams when the server shuts down', async () => {
    const s = await startTestServer();
    const c = await openSse(`${s.url}/api/events`);
    expect(c.status).toBe(200);
    const t0 = Date.now();
    const stopping = s.stop(5000);
    await c.ended;
    expect(Date.now() - t0).toBeLessThan(1000);
    await stopping;
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(c.controls.at(-1)).toEqual({ event: 'close', data: '{"reason":"shutdown"}' });
  });

  it('works with auth off for loopback callers', async () => {
    const s = await startTestServer();
    try {
      const c = await openSse(`${s.url}/api/events`);
      await s.runtime.events.publish('plain', null, { ok: true });
      expect((await c.waitFor(1))[0]).toMatchObject({ type: 'plain', data: { ok: true } });
      c.close();
    } finally {
      await s.stop();
    }
  });
});

/**
 * Volume an attacker cannot inflate (issue 11, part 7), on a real server with an
 * injected clock: a flood of unauthenticated 404s with long paths and user agents,
 * authenticated failures, the shutdown flush, and LOKI_AUDIT_READS=failures.
 */
import { statSync } from 'node:fs';
import { Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditEntry, AuditInput } from '../../src/audit/chain';
import type { AuditLog } from '../../src/audit/log';
import { loadConfig } from '../../src/env';
import type { AppEnv } from '../../src/http/context';
import { ANONYMOUS_PATH_MAX, ANONYMOUS_USER_AGENT_MAX, auditTrail } from '../../src/http/middleware/audit';
import { freePort, runCli, startTestServer, type TestServer, tempHome } from '../helpers/server';
import { makeToken } from '../helpers/tokens';

const MINUTE = 60_000;

interface Clock {
  now: () => number;
  set(t: number): void;
}

function clock(start: number): Clock {
  let t = start;
  return {
    now: () => t,
    set: (v) => {
      t = v;
    },
  };
}

function startClocked(env: Record<string, string>, c: Clock): Promise<TestServer> {
  return startTestServer(env, { now: c.now, homePrefix: 'loki-flood-' });
}

async function all(s: TestServer, afterSeq = 0): Promise<AuditEntry[]> {
  await s.runtime.audit.drain();
  const out: AuditEntry[] = [];
  for (let after = afterSeq; ; ) {
    const rows = await s.runtime.audit.query({ afterSeq: after, limit: 5000 });
    if (rows.length === 0) return out;
    for (const r of rows) out.push(JSON.parse(r.entry) as AuditEntry);
    after = rows.at(-1)!.seq;
  }
}

async function tipSeq(s: TestServer): Promise<number> {
  await s.runtime.audit.drain();
  return (await s.runtime.audit.storage.tip()).seq;
}

/** The database's size with the WAL folded in (what it really grew by); on PostgreSQL pg_database_size. */
async function dbBytes(s: TestServer): Promise<number> {
  if (s.store === 'postgres') return Number((await s.sql<{ n: string }>('SELECT pg_database_size(current_database()) AS n'))[0]?.n);
  s.runtime.db.pragma('wal_checkpoint(TRUNCATE)');
  return statSync(s.runtime.deps.config.dbPath).size;
}

/** `n` requests with at most `parallel` in flight; returns the statuses. */
async function flood(n: number, parallel: number, send: (i: number) => Promise<Response>): Promise<number[]> {
  const statuses = new Array<number>(n);
  let next = 0;
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (next < n) {
        const i = next++;
        const r = await send(i);
        await r.arrayBuffer();
        statuses[i] = r.status;
      }
    }),
  );
  return statuses;
}

async function until<T>(what: string, f: () => Promise<T | undefined | null | false>, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const LONG_PATH = `/flood/${'a'.repeat(3000)}`;
const LONG_UA = `attack-bot/${'u'.repeat(2000)}`;

describe('the flood: unauthenticated failures cannot inflate the log (real server, auth on)', () => {
  // Minute M starts at a whole minute; requests run at M + 5 s and M + 65 s on the injected clock.
  const M = Math.ceil(Date.now() / MINUTE) * MINUTE;
  const c = clock(M + 5_000);
  let s: TestServer;
  let viewer: { id: string; token: string };
  beforeAll(async () => {
    s = await startClocked({ LOKI_ENTERPRISE_AUTH: 'true' }, c);
    viewer = await makeToken(s, 'flood-viewer', 'viewer');
  });
  afterAll(async () => {
    await s?.stop();
  });

  it('10,000 unauthenticated 404s with long paths and user agents grow the database by less than 2 MB; the summaries carry the true counts', async () => {
    const before = await dbBytes(s);
    const startSeq = await tipSeq(s);
    // 6,000 in minute M, 4,000 in minute M+1, every one claiming another X-Forwarded-For.
    const send = (i: number) =>
      fetch(`${s.url}${LONG_PATH}/${i}?q=${'q'.repeat(500)}`, {
        headers: { 'User-Agent': LONG_UA, 'X-Forwarded-For': `10.${i % 250}.${(i >> 8) % 250}.1`, 'X-Real-IP': `10.9.${i % 250}.9` },
      });
    const first = await flood(6_000, 32, send);
    c.set(M + MINUTE + 5_000);
    const second = await flood(4_000, 32, (i) => send(6_000 + i));
    expect([...first, ...second].every((st) => st === 404)).toBe(true);
    // Minute M+1 ends with no further request: the timer writes its summary.
    c.set(M + 2 * MINUTE + 1_000);
    const entries = await until('both summaries', async () => {
      const e = await all(s, startSeq);
      return e.filter((x) => x.action === 'audit.suppressed').length === 2 ? e : null;
    });
    const grown = (await dbBytes(s)) - before;
    expect(grown).toBeLessThan(2 * 1024 * 1024);

    const individual = entries.filter((e) => e.action === 'http.request');
    const summaries = entries.filter((e) => e.action === 'audit.suppressed');
    expect(entries).toHaveLength(individual.length + summaries.length);
    // The first 20 per minute, one by one, with capped fields and the socket address (never X-Forwarded-For).
    expect(individual).toHaveLength(40);
    expect(individual.filter((e) => e.ts < M + MINUTE)).toHaveLength(20);
    for (const e of individual) {
      expect(e).toMatchObject({ actor: { type: 'anonymous' }, client: { ip: '127.0.0.1' }, outcome: { status: 404, success: false, error: 'not_found' } });
      expect(e.request!.path!.length).toBe(ANONYMOUS_PATH_MAX);
      expect(e.request!.path!.startsWith('/flood/aaaa')).toBe(true);
      expect(e.request!.path!.endsWith('…')).toBe(true);
      expect(e.client!.user_agent!.length).toBe(ANONYMOUS_USER_AGENT_MAX);
      expect(e.client!.user_agent!.endsWith('…')).toBe(true);
    }
    // One summary per address per minute, with the exact numbers.
    expect(summaries.map((e) => e.details)).toEqual([
      expect.objectContaining({
        address: '127.0.0.1',
        grouping: 'ipv4',
        window_start: new Date(M).toISOString(),
        window_end: new Date(M + MINUTE).toISOString(),
        suppressed: 5_980,
        by_status: { '404': 5_980 },
        recorded: 20,
        limit_per_address: 20,
      }),
      expect.objectContaining({
        address: '127.0.0.1',
        window_start: new Date(M + MINUTE).toISOString(),
        suppressed: 3_980,
        by_status: { '404': 3_980 },
        recorded: 20,
      }),
    ]);
    expect(summaries.reduce((n, e) => n + (e.details!.suppressed as number), 0) + individual.length).toBe(10_000);
    expect(summaries[0]).toMatchObject({ actor: { type: 'anonymous' }, client: { ip: '127.0.0.1', user_agent: null }, outcome: { success: false, error: 'suppressed' } });

    // The bound is meaningful: one capped entry per request would have taken more than the limit.
    const rows = await s.runtime.audit.query({ afterSeq: startSeq, limit: 1 });
    expect(rows[0]!.entry.length * 10_000).toBeGreaterThan(2 * 1024 * 1024);
    expect(s.logger.lines.filter((l) => l.level === 'error')).toEqual([]);
  }, 300_000); // 10,000 requests: about 15 s on an idle 2-core machine, far more when its cores are shared

  it('never suppresses authenticated failures: a token holder is recorded every time, in full', async () => {
    c.set(M + 3 * MINUTE + 1_000);
    const startSeq = await tipSeq(s);
    const longPath = `/api/nope/${'b'.repeat(400)}`;
    const denied = await flood(30, 4, () => s.req('/api/enterprise/tokens', { token: viewer.token }));
    const missing = await flood(30, 4, () => s.req(longPath, { token: viewer.token, headers: { 'User-Agent': LONG_UA } }));
    expect(denied.every((st) => st === 403)).toBe(true);
    expect(missing.every((st) => st === 404)).toBe(true);
    // Meanwhile, in the same minute, anonymous callers are summarised after 20 (and after 21
    // failed authentications the limiter answers 429).
    await flood(25, 4, () => s.req('/api/status', { headers: { Authorization: 'Bearer loki_wrong' } }));
    c.set(M + 4 * MINUTE + 1_000);
    const entries = await until('the summary', async () => {
      const e = await all(s, startSeq);
      return e.some((x) => x.action === 'audit.suppressed') ? e : null;
    });
    const mine = entries.filter((e) => e.actor.id === viewer.id);
    expect(mine.filter((e) => e.action === 'scope.denied')).toHaveLength(30);
    const notFound = mine.filter((e) => e.outcome.status === 404);
    expect(notFound).toHaveLength(30);
    expect(notFound[0]!.request!.path).toBe(longPath);
    expect(notFound[0]!.client!.user_agent).toHaveLength(512);
    expect(entries.filter((e) => e.action === 'auth.failure')).toHaveLength(20);
    expect(entries.filter((e) => e.action === 'audit.suppressed').map((e) => e.details)).toEqual([
      expect.objectContaining({ address: '127.0.0.1', suppressed: 5, by_status: { '401': 1, '429': 4 } }),
    ]);
  });

  it('writes the open minute at shutdown, and the log still verifies', async () => {
    c.set(M + 5 * MINUTE + 1_000);
    await flood(27, 4, (i) => s.req(`/nowhere/${i}`));
    await s.stop();
    const env = { LOKI_HOME: s.home };
    const tail = await runCli(['enterprise', 'audit', 'tail', '-n', '3', '--json'], env);
    expect(tail.code).toBe(0);
    const last = tail.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as AuditInput)
      .filter((e) => e.action === 'audit.suppressed');
    expect(last.map((e) => e.details)).toEqual([expect.objectContaining({ window_start: new Date(M + 5 * MINUTE).toISOString(), suppressed: 7 })]);
    const v = await runCli(['enterprise', 'audit', 'verify', '--json'], env);
    expect(v.code).toBe(0);
    expect(JSON.parse(v.stdout)).toMatchObject({ valid: true });
  });
});

describe('LOKI_AUDIT_READS', () => {
  it('defaults to all (as before); failures is accepted in any case', () => {
    const d = { home: '/home/u', cwd: '/w' };
    expect(loadConfig({}, d).auditReads).toBe('all');
    expect(loadConfig({ LOKI_AUDIT_READS: 'FAILURES' }, d).auditReads).toBe('failures');
  });

  it('exits 2 with one line naming the variable for an invalid value', async () => {
    const home = tempHome();
    const r = await runCli(['dashboard', '--port', String(await freePort())], { LOKI_HOME: home, LOKI_AUDIT_READS: 'some' });
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('loki: LOKI_AUDIT_READS="some" is invalid: expected one of all, failures\n');
  });

  describe('=failures on a real server', () => {
    const c = clock(Date.now());
    let s: TestServer;
    let viewer: string;
    let admin: string;
    let auditor: string;
    let worker: string;
    beforeAll(async () => {
      s = await startClocked({ LOKI_ENTERPRISE_AUTH: 'true', LOKI_AUDIT_READS: 'failures' }, c);
      viewer = (await makeToken(s, 'r-viewer', 'viewer')).token;
      admin = (await makeToken(s, 'r-admin', 'admin')).token;
      auditor = (await makeToken(s, 'r-auditor', 'auditor')).token;
      worker = (await makeToken(s, 'r-worker', 'worker', { workerId: 'w-reads' })).token;
    });
    afterAll(async () => {
      await s?.stop();
    });

    it('leaves out successful reads and worker polling; records failures, writes and reads of the audit log', async () => {
      const id = (tag: string) => ({ 'X-Request-Id': `reads-${tag}-0001` });
      expect((await s.req('/api/status', { token: viewer, headers: id('ok-get') })).status).toBe(200);
      expect((await s.req('/api/status', { method: 'HEAD', token: viewer, headers: id('ok-head') })).status).toBe(200);
      expect((await s.req('/api/sessions/ses_nope', { token: viewer, headers: id('get-404') })).status).toBe(404);
      expect((await s.req('/api/status', { token: 'loki_wrong', headers: id('get-401') })).status).toBe(401);
      const created = await s.req('/api/enterprise/tokens', {
        method: 'POST',
        token: admin,
        headers: { ...id('post'), 'Content-Type': 'application/json' },
        body: JSON.stringify({ name: 'made-under-failures', role: 'viewer' }),
      });
      expect(created.status).toBe(201);
      expect((await s.req('/api/enterprise/audit?limit=1', { token: auditor, headers: id('audit-read') })).status).toBe(200);
      const claim = await s.req('/api/sandbox/jobs/claim', {
        method: 'POST',
        token: worker,
        headers: { ...id('claim'), 'Content-Type': 'application/json' },
        body: JSON.stringify({ worker_id: 'w-reads', wait_ms: 0 }),
      });
      expect(claim.status).toBe(204);
      expect((await s.req('/api/sandbox/jobs?worker_id=w-reads', { token: worker, headers: id('jobs') })).status).toBe(200);
      const byId = new Map((await all(s)).map((e) => [e.request?.id, e]));
      expect(byId.has('reads-ok-get-0001')).toBe(false);
      expect(byId.has('reads-ok-head-0001')).toBe(false);
      expect(byId.has('reads-claim-0001')).toBe(false);
      expect(byId.has('reads-jobs-0001')).toBe(false);
      expect(byId.get('reads-get-404-0001')).toMatchObject({ outcome: { status: 404, success: false } });
      expect(byId.get('reads-get-401-0001')).toMatchObject({ action: 'auth.failure', outcome: { status: 401 } });
      expect(byId.get('reads-post-0001')).toMatchObject({ action: 'token.create', outcome: { status: 201, success: true } });
      expect(byId.get('reads-audit-read-0001')).toMatchObject({ action: 'audit.read', outcome: { status: 200 } });
    });
  });

  describe('the worker protocol under =failures (the middleware alone)', () => {
    function app(reads: 'all' | 'failures') {
      const written: AuditInput[] = [];
      const audit = { enabled: true, append: async (i: AuditInput) => written.push(i) } as unknown as AuditLog;
      const a = new Hono<AppEnv>();
      a.use('*', auditTrail({ audit, clientAddress: () => '127.0.0.1', now: Date.now, onError: () => {}, reads }));
      a.use('*', async (c, next) => {
        c.set('identity', { actor: { type: 'token', id: 'tok_w', name: 'w' }, role: 'worker', scopes: ['sandbox'], expiresAt: null, tokenId: 'tok_w', via: 'token' });
        await next();
      });
      a.post('/claim/:found', (c) => {
        c.set('auditAction', 'sandbox.claim');
        return c.req.param('found') === 'yes' ? c.json({ job: {} }) : c.body(null, 204);
      });
      a.post('/events/:kinds', (c) => {
        c.set('auditAction', 'sandbox.events');
        const events: Record<string, number> = {};
        for (const k of c.req.param('kinds').split(',')) events[k] = 1;
        c.set('auditDetails', { events });
        return c.json({ applied: 1 });
      });
      a.post('/write', (c) => c.json({ ok: true }, 201));
      a.get('/read', (c) => c.json({ ok: true }));
      a.options('/read', (c) => c.body(null, 204));
      a.get('/fail', (c) => c.json({ error: {} }, 500));
      return { a, written };
    }

    it.each([
      ['POST', '/claim/no', false],
      ['POST', '/claim/yes', true],
      ['POST', '/events/heartbeat', false],
      ['POST', '/events/heartbeat,output', true],
      ['POST', '/events/state', true],
      ['POST', '/write', true],
      ['GET', '/read', false],
      ['OPTIONS', '/read', false],
      ['GET', '/fail', true],
    ] as const)('%s %s is recorded: %s', async (method, path, recorded) => {
      const f = app('failures');
      await f.a.request(path, { method });
      expect(f.written.length).toBe(recorded ? 1 : 0);
      const everything = app('all');
      await everything.a.request(path, { method });
      expect(everything.written.length).toBe(1);
    });
  });
});

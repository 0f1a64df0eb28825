import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLokiApp } from '../../src/app';
import { ROUTES } from '../../src/http/scopes';
import { runCli, startTestServer, type TestServer } from '../helpers/server';
import { makeToken } from '../helpers/tokens';

const WWW_INVALID = 'Bearer realm="loki", error="invalid_token"';

describe('token auth and RBAC on a real server', () => {
  let s: TestServer;
  let admin: string;
  let viewer: string;
  let operator: string;
  let auditor: string;
  let worker: string;
  beforeAll(async () => {
    s = await startTestServer({ LOKI_ENTERPRISE_AUTH: 'true' });
    admin = (await makeToken(s, 'admin', 'admin')).token;
    viewer = (await makeToken(s, 'viewer', 'viewer')).token;
    operator = (await makeToken(s, 'operator', 'operator')).token;
    auditor = (await makeToken(s, 'auditor', 'auditor')).token;
    worker = (await makeToken(s, 'worker', 'worker', { workerId: 'w-auth' })).token;
  });
  afterAll(async () => {
    await s.stop();
  });

  it('public routes need no token', async () => {
    expect((await s.req('/health')).status).toBe(200);
    const st = await s.req('/api/enterprise/status');
    expect(await st.json()).toMatchObject({ auth_enabled: true, oidc_enabled: false });
  });

  it('401 without a token, with the contract WWW-Authenticate', async () => {
    const r = await s.req('/api/status');
    expect(r.status).toBe(401);
    expect(r.headers.get('www-authenticate')).toBe(WWW_INVALID);
    expect((await r.json()).error.code).toBe('invalid_token');
  });

  it.each([
    ['no scheme', (t: string) => t],
    ['two spaces', (t: string) => `Bearer  ${t}`],
    ['lower-case bearer', (t: string) => `bearer ${t}`],
    ['Basic scheme', () => 'Basic dXNlcjpwYXNz'],
    ['a 10 KB token', () => `Bearer loki_${'a'.repeat(10 * 1024)}`],
    ['empty', () => ''],
    ['scheme only', () => 'Bearer'],
    ['bad checksum', (t: string) => `Bearer ${t.slice(0, -1)}${t.endsWith('A') ? 'B' : 'A'}`],
    ['wrong prefix', (t: string) => `Bearer lokx_${t.slice(5)}`],
    ['unknown but well-formed', () => 'Bearer loki_0000000000000000000000000000000000000000P0aTrD'],
  ])('malformed Authorization (%s) → 401, never 500', async (_, make) => {
    const r = await s.req('/api/status', { headers: { Authorization: make(viewer) } });
    expect(r.status).toBe(401);
    expect(r.headers.get('www-authenticate')).toBe(WWW_INVALID);
    expect((await r.json()).error.code).toBe('invalid_token');
  });

  it('non-ASCII in the header → 401', async () => {
    // fetch refuses non-Latin-1 header bytes, so send Latin-1 characters outside printable ASCII.
    const r = await s.req('/api/status', { headers: { Authorization: `Bearer loki_\u00e9\u00e8${viewer.slice(7)}` } });
    expect(r.status).toBe(401);
  });

  it('a malformed or mis-checksummed token is refused before any database lookup', async () => {
    const store = s.runtime.deps.store.tokens;
    const orig = store.findByHash;
    let lookups = 0;
    store.findByHash = async (h) => {
      lookups++;
      return orig.call(store, h);
    };
    try {
      const bad = `${viewer.slice(0, -6)}AAAAAA`;
      expect((await s.req('/api/status', { token: bad })).status).toBe(401);
      expect((await s.req('/api/status', { token: 'loki_short' })).status).toBe(401);
      expect(lookups).toBe(0);
      expect((await s.req('/api/status', { token: viewer })).status).toBe(200);
      expect(lookups).toBe(1);
    } finally {
      store.findByHash = orig;
    }
  });

  it.each([
    ['viewer', 'GET', '/api/status', 200],
    ['viewer', 'GET', '/api/enterprise/tokens', 403],
    ['viewer', 'GET', '/api/enterprise/audit', 403],
    ['viewer', 'POST', '/api/sessions', 403],
    ['operator', 'GET', '/api/enterprise/audit', 403],
    ['operator', 'GET', '/api/status', 200],
    ['auditor', 'GET', '/api/enterprise/audit', 200],
    ['auditor', 'GET', '/api/enterprise/audit/verify', 200],
    ['auditor', 'GET', '/api/enterprise/tokens', 403],
    ['worker', 'GET', '/api/status', 403],
    ['admin', 'GET', '/api/enterprise/tokens', 200],
    ['admin', 'GET', '/api/enterprise/audit', 200],
  ] as const)('%s %s %s → %i', async (role, method, path, status) => {
    const token = { admin, viewer, operator, auditor, worker }[role];
    const r = await s.req(path, { method, token, headers: { 'Content-Type': 'application/json' }, body: method === 'POST' ? '{}' : undefined });
    expect(r.status).toBe(status);
    if (status === 403) {
      const needed = ROUTES.find((x) => x.method === method && x.path === path)!.scope;
      const scope = needed === 'admin' ? '*' : needed;
      expect(r.headers.get('www-authenticate')).toBe(`Bearer realm="loki", error="insufficient_scope", scope="${scope}"`);
      const body = await r.json();
      expect(body.error.code).toBe('insufficient_scope');
      // What a person reads names the role that grants the scope, not the scope.
      const text: Record<string, string> = {
        '*': 'admin role required',
        audit: 'auditor or admin role required',
        control: 'operator or admin role required',
        read: 'viewer, auditor, operator or admin role required',
      };
      expect(body.error.message).toBe(text[scope]);
    }
  });

  it('a token narrowed to a subset of its role scopes cannot use the rest', async () => {
    const narrow = (await makeToken(s, 'ops-read-only', 'operator', { scopes: ['read'] })).token;
    expect((await s.req('/api/status', { token: narrow })).status).toBe(200);
    const r = await s.req('/api/sessions/xyz/stop', { method: 'POST', token: narrow });
    expect(r.status).toBe(403);
  });

  describe('token API', () => {
    it('creates a token: 201, secret once, list never shows it', async () => {
      const r = await s.req('/api/enterprise/tokens', {
        method: 'POST',
        token: admin,
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ name: '  deploy-bot ', role: 'operator', scopes: ['read', 'write'], expires_days: 30 }),
      });
      expect(r.status).toBe(201);
      const body = await r.json();
      expect(body).toMatchObject({ name: 'deploy-bot', role: 'operator', scopes: ['read', 'write'], status: 'active', source: 'native', created_by: 'admin' });
      expect(body.token).toMatch(/^loki_[0-9A-Za-z]{46}$/);
      expect(Date.parse(body.expires_at) - Date.parse(body.created_at)).toBe(30 * 86_400_000);
      const list = await (await s.req('/api/enterprise/tokens', { token: admin })).text();
      expect(list).toContain('deploy-bot');
      expect(list).not.toContain(body.token);
      expect(list).not.toMatch(/"hash"/);
      // The new token works with its narrowed scopes.
      expect((await s.req('/api/status', { token: body.token })).status).toBe(200);
    });

    it('never stores the plaintext: the database files do not contain it', async () => {
      const r = await s.req('/api/enterprise/tokens', {
        method: 'POST',
        token: admin,
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ name: 'grep-me', role: 'viewer' }),
      });
      const { token } = await r.json();
      await s.runtime.audit.drain();
      if (s.store === 'postgres') {
        // Every row of every table that holds text, as PostgreSQL prints it.
        const [all] = await s.sql<{ t: string }>(
          `SELECT string_agg(x, E'\\n') AS t FROM (SELECT r::text AS x FROM tokens r UNION ALL SELECT r::text FROM audit_log r
           UNION ALL SELECT r::text FROM audit_checkpoints r UNION ALL SELECT r::text FROM events r UNION ALL SELECT r::text FROM sessions r) q`,
        );
        expect(all?.t).toContain('grep-me');
        expect(all?.t.includes(token)).toBe(false);
        expect(all?.t.includes(token.slice(5, 30))).toBe(false);
        return;
      }
      const dbPath = `${s.home}/dashboard/loki.db`;
      for (const f of [dbPath, `${dbPath}-wal`]) {
        const bytes = readFileSync(f);
        expect(bytes.includes(Buffer.from(token))).toBe(false);
        expect(bytes.includes(Buffer.from(token.slice(5, 30)))).toBe(false);
      }
    });

    it.each([
      [{ name: 'bad\u0007bell' }, 400, 'name must not contain control characters'],
      [{ name: 'x'.repeat(256) }, 400, 'name must be 1 to 255 characters'],
      [{ name: '' }, 400, 'name must be 1 to 255 characters'],
      [{ name: 'r', role: 'root' }, 400, 'role must be one of admin, operator, viewer, auditor, worker (got "root")'],
      [{ name: 'w', role: 'viewer', scopes: ['write'] }, 400, 'scope "write" is wider than role viewer allows'],
      [{ name: 'e0', expires_days: 0 }, 400, 'expires_days must be a whole number of days from 1 to 3650 (got 0)'],
      [{ name: 'e1', expires_days: -1 }, 400, 'expires_days must be a whole number of days from 1 to 3650 (got -1)'],
      [{ name: 'e2', expires_days: 1.5 }, 400, 'expires_days must be a whole number of days from 1 to 3650 (got 1.5)'],
      [{ name: 'e3', expires_days: 3651 }, 400, 'expires_days must be a whole number of days from 1 to 3650 (got 3651)'],
      [{ name: 'admin' }, 409, 'a token named "admin" already exists'],
      [{ name: 'w0', role: 'worker' }, 400, 'a worker token must be bound to a worker id (worker_id, --worker-id): the protocol refuses it under any other id'],
      [{ name: 'w1', role: 'worker', worker_id: 'bad id' }, 400, 'worker_id must be 1-64 letters, digits, ".", "_" or "-" (got "bad id")'],
      [{ name: 'w2', role: 'operator', worker_id: 'w2' }, 400, 'worker_id is only for tokens of the worker role'],
    ])('refuses %j', async (body, status, message) => {
      const r = await s.req('/api/enterprise/tokens', { method: 'POST', token: admin, headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
      expect(r.status).toBe(status);
      const err = (await r.json()).error;
      expect(err.message).toBe(message);
      expect(err.code).toBe(status === 409 ? 'conflict' : 'validation_error');
    });

    it('creates a worker token bound to a worker id: worker_id in the answer and the list', async () => {
      const r = await s.req('/api/enterprise/tokens', {
        method: 'POST',
        token: admin,
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ name: 'bound-worker', role: 'worker', worker_id: 'w-bound' }),
      });
      expect(r.status).toBe(201);
      const body = await r.json();
      expect(body).toMatchObject({ name: 'bound-worker', role: 'worker', worker_id: 'w-bound', status: 'active' });
      const list = (await (await s.req('/api/enterprise/tokens', { token: admin })).json()) as { tokens: { name: string; worker_id: string | null }[] };
      expect(list.tokens.find((t) => t.name === 'bound-worker')?.worker_id).toBe('w-bound');
      expect(list.tokens.find((t) => t.name === 'viewer')?.worker_id).toBeNull();
    });

    it('refuses expires_days "30d" (not a number) with 400', async () => {
      const r = await s.req('/api/enterprise/tokens', {
        method: 'POST',
        token: admin,
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ name: 'e4', expires_days: '30d' }),
      });
      expect(r.status).toBe(400);
      expect((await r.json()).error.code).toBe('validation_error');
    });

    it('revocation through the API takes effect on the next request', async () => {
      const t = await makeToken(s, 'to-revoke', 'viewer');
      expect((await s.req('/api/status', { token: t.token })).status).toBe(200);
      const d = await s.req(`/api/enterprise/tokens/${t.id}`, { method: 'DELETE', token: admin });
      expect(d.status).toBe(200);
      expect((await d.json()).token.status).toBe('revoked');
      const r = await s.req('/api/status', { token: t.token });
      expect(r.status).toBe(401);
      expect((await r.json()).error.message).toBe('the bearer token is not valid');
      expect((await s.req(`/api/enterprise/tokens/${t.id}`, { method: 'DELETE', token: admin })).status).toBe(409);
      expect((await s.req('/api/enterprise/tokens/tok_doesnotexist', { method: 'DELETE', token: admin })).status).toBe(404);
    });

    it('an expired token is refused', async () => {
      const t = await makeToken(s, 'short-lived', 'viewer', { expiresDays: 1 });
      expect((await s.req('/api/status', { token: t.token })).status).toBe(200);
      // As if the clock had passed expires_at (written behind the server's back: the lookup cache lives ≤ 500 ms).
      await s.sql('UPDATE tokens SET expires_at = ? WHERE id = ?', Date.now() - 1, t.id);
      await new Promise((r) => setTimeout(r, 600));
      const r = await s.req('/api/status', { token: t.token });
      expect(r.status).toBe(401);
      expect((await r.json()).error.message).toBe('the bearer token is not valid');
    });

    it('writes last_used_at at most once a minute per token', async () => {
      const t = await makeToken(s, 'touchy', 'viewer');
      for (let i = 0; i < 5; i++) await s.req('/api/status', { token: t.token });
      await new Promise((r) => setTimeout(r, 50));
      const first = (await s.sql<{ last_used_at: number }>('SELECT last_used_at FROM tokens WHERE id = ?', t.id))[0]?.last_used_at;
      expect(first).toBeGreaterThan(0);
      for (let i = 0; i < 5; i++) await s.req('/api/status', { token: t.token });
      await new Promise((r) => setTimeout(r, 50));
      const again = (await s.sql<{ last_used_at: number }>('SELECT last_used_at FROM tokens WHERE id = ?', t.id))[0]?.last_used_at;
      expect(again).toBe(first);
    });
  });

  it('a revocation made with the CLI while the server runs takes effect within 1 second', async () => {
    const t = await makeToken(s, 'cli-revoke-me', 'viewer');
    expect((await s.req('/api/status', { token: t.token })).status).toBe(200);
    const cli = await runCli(['enterprise', 'token', 'revoke', 'cli-revoke-me'], { LOKI_HOME: s.home });
    expect(cli.code).toBe(0);
    expect(cli.stdout).toBe(`Revoked token cli-revoke-me (${t.id})\n`);
    const t0 = Date.now();
    let status = 200;
    while (status === 200 && Date.now() - t0 < 1000) status = (await s.req('/api/status', { token: t.token })).status;
    expect(status).toBe(401);
  });
});

describe('brute-force guard', () => {
  it('more than 20 failed authentications in a minute from one address → 429 with Retry-After', async () => {
    const s = await startTestServer({ LOKI_ENTERPRISE_AUTH: 'true' });
    try {
      const good = (await makeToken(s, 'good', 'viewer')).token;
      for (let i = 0; i < 21; i++) expect((await s.req('/api/status', { token: 'loki_nope' })).status).toBe(401);
      const r = await s.req('/api/status', { token: 'loki_nope' });
      expect(r.status).toBe(429);
      expect(Number(r.headers.get('retry-after'))).toBeGreaterThan(0);
      expect(Number(r.headers.get('retry-after'))).toBeLessThanOrEqual(60);
      expect((await r.json()).error.code).toBe('rate_limited');
      // A good token is looked at first: earlier junk from the address never refuses it.
      expect((await s.req('/api/status', { token: good })).status).toBe(200);
    } finally {
      await s.stop();
    }
  });
});

describe('route table', () => {
  it('every registered route has a scope in the table; only the public ones are public', async () => {
    const s = await startTestServer();
    try {
      const { app } = createLokiApp(s.runtime.deps);
      // Middleware shows up as method ALL, or on path '*' (the body limit, for methods with a body).
      const registered = app.routes.filter((r) => r.method !== 'ALL' && r.path !== '/*');
      expect(registered.length).toBeGreaterThan(0);
      for (const r of registered) {
        const spec = ROUTES.find((x) => x.method === r.method && x.path === r.path);
        expect(spec, `${r.method} ${r.path} has no scope`).toBeDefined();
      }
      expect(ROUTES.filter((r) => r.scope === 'public').map((r) => `${r.method} ${r.path}`)).toEqual([
        'GET /health',
        'GET /api/enterprise/status',
        'GET /',
        'GET /assets/:file',
        'GET /api/openapi.json',
      ]);
    } finally {
      await s.stop();
    }
  });
});

describe('auth off', () => {
  it('serves loopback callers as local admin, and records them as `local` in the audit log', async () => {
    const s = await startTestServer();
    try {
      const r = await s.req('/api/enterprise/tokens');
      expect(r.status).toBe(200);
      await s.runtime.audit.drain();
      const last = (await s.runtime.audit.query({ afterSeq: 0, limit: 1, order: 'desc' }))[0]!;
      expect(JSON.parse(last.entry).actor).toEqual({ type: 'local', id: null, name: 'local' });
    } finally {
      await s.stop();
    }
  });
});

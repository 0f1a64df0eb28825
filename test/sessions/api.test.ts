/**
 * The sessions API on a real server: validation before anything is queued
 * (workspace roots, PRD containment, budget), listing, logs, stop, audit, events.
 */
import { existsSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/server';
import { makeToken } from '../helpers/tokens';
import { DEFAULT_SESSION_POLICY, HOSTILE_PRD, makeWorkspace, policyDigest, tempRoot } from './helpers';

// biome-ignore lint/suspicious/noExplicitAny: JSON bodies in assertions
type Json = any;

async function json(r: Response) {
  return (await r.json()) as Record<string, Json>;
}

describe('sessions API (real server)', () => {
  let s: TestServer;
  let root: string;
  let outside: string;
  let ws: string;

  const post = (body: unknown) =>
    s.req('/api/sessions', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });

  beforeAll(async () => {
    root = tempRoot();
    outside = tempRoot('loki-outside-');
    writeFileSync(path.join(outside, 'secret.md'), 'not yours\n');
    ws = makeWorkspace(root, 'ws', { files: { [HOSTILE_PRD]: '# hostile\n', 'docs/readme.md': 'x\n' } });
    symlinkSync(path.join(outside, 'secret.md'), path.join(ws, 'link.md'));
    symlinkSync(outside, path.join(root, 'escape'));
    makeWorkspace(root, 'badcfg', { config: 'sandbox:\n  memory_limit: lots\n' });
    makeWorkspace(root, 'sbxcfg', { config: 'sandbox:\n  enabled: true\n' });
    rmSync('/tmp/pwned', { force: true });
    s = await startTestServer({ LOKI_WORKSPACE_ROOTS: root, LOKI_BUDGET_LIMIT: '3.50' });
  });
  afterAll(async () => {
    await s?.stop();
    rmSync(root, { recursive: true, force: true });
    rmSync(outside, { recursive: true, force: true });
  });

  it('starts a session: 201 queued and sandboxed by default, with its effective policy; LOKI_BUDGET_LIMIT as default budget, audit entry with the user, PRD path and policy digest, a session_state event', async () => {
    const r = await post({ workspace: ws, prd: './prd.md', name: 'first' });
    expect(r.status).toBe(201);
    const body = await json(r);
    expect(body).toMatchObject({
      workspace: ws,
      prd: 'prd.md',
      name: 'first',
      sandbox: true,
      host_session: false,
      result: null,
      budget_usd: 3.5,
      cost_usd: 0,
      status: 'queued',
      created_by: 'local',
      worker_id: null,
      last_event_seq: 0,
      stop_requested: false,
    });
    expect(body.id).toMatch(/^ses_[0-9a-f]{16}$/);
    expect(Date.parse(body.created_at)).toBeGreaterThan(0);
    // No policy file: the built-in operator policy, the workspace asks for nothing.
    expect(body.policy).toEqual(DEFAULT_SESSION_POLICY);
    expect(body.policy_sha256).toBe(policyDigest(body.policy));

    const audit = await json(await s.req('/api/enterprise/audit?action=session.start'));
    const entry = audit.entries.find((e: Json) => e.resource?.id === body.id);
    expect(entry).toMatchObject({
      action: 'session.start',
      actor: { type: 'local', name: 'local' },
      resource: { type: 'session', id: body.id },
      outcome: { status: 201, success: true },
      details: { prd: 'prd.md', workspace: ws, sandbox: true, host_session: false, policy_sha256: body.policy_sha256, budget_usd: 3.5, name: 'first' },
    });

    const events = await s.runtime.deps.events.after(0, { sessionId: body.id });
    expect(events.map((e) => [e.type, (e.data as Json).status])).toEqual([['session_state', 'queued']]);
  });

  it.each([
    ['outside the roots', () => ({ workspace: outside, prd: 'secret.md' }), /outside the allowed roots/],
    ['a symlink inside the roots pointing outside', () => ({ workspace: path.join(root, 'escape'), prd: 'secret.md' }), /outside the allowed roots/],
    ['relative', () => ({ workspace: 'ws', prd: 'prd.md' }), /absolute path/],
    ['missing', () => ({ workspace: path.join(root, 'nope'), prd: 'prd.md' }), /does not exist/],
    ['a file', () => ({ workspace: path.join(ws, 'prd.md'), prd: 'prd.md' }), /not a directory/],
    ['the parent of the roots', () => ({ workspace: path.dirname(root), prd: path.join(path.basename(root), 'ws/prd.md') }), /outside the allowed roots/],
  ])('workspace %s → 400 invalid_path', async (_, body, message) => {
    const r = await post(body());
    expect(r.status).toBe(400);
    const b = await json(r);
    expect(b.error.code).toBe('invalid_path');
    expect(b.error.message).toMatch(message);
  });

  it.each([
    ['with ..', '../escape/secret.md', /"\.\." segments/],
    ['with .. that stays inside', 'docs/../prd.md', /"\.\." segments/],
    ['absolute', '/etc/passwd', /not an absolute path/],
    ['absolute inside the workspace', '', /not an absolute path/],
    ['a symlink out of the workspace', 'link.md', /escapes the workspace/],
    ['a directory', 'docs', /not a regular file/],
    ['the workspace itself', '.', /not a regular file/],
    ['missing', 'nope.md', /does not exist/],
    ['with a NUL byte', 'prd.md\u0000.txt', /NUL/],
  ])('PRD %s → 400 invalid_path', async (_, prd, message) => {
    const r = await post({ workspace: ws, prd: prd === '' ? path.join(ws, 'prd.md') : prd });
    expect(r.status).toBe(400);
    const b = await json(r);
    expect(b.error.code).toBe('invalid_path');
    expect(b.error.message).toMatch(message);
  });

  it.each([[0], [-1], [1.234], [10001], ['abc'], ['1e2'], [''], ['10000.01'], ['0.00'], [Number.MAX_VALUE], [true], [{}], ['5.00 USD']])(
    'budget %j → 400 validation_error',
    async (budget) => {
      const r = await post({ workspace: ws, prd: 'prd.md', budget_usd: budget });
      expect(r.status).toBe(400);
      const b = await json(r);
      expect(b.error.code).toBe('validation_error');
      expect(b.error.message).toMatch(/^budget_usd: /);
    },
  );

  it.each([
    [5, 5],
    ['5.00', 5],
    [0.01, 0.01],
    ['0.5', 0.5],
    [10000, 10000],
    ['10000.00', 10000],
  ])('budget %j is accepted as %d', async (budget, usd) => {
    const r = await post({ workspace: ws, prd: 'prd.md', budget_usd: budget });
    expect(r.status).toBe(201);
    expect((await json(r)).budget_usd).toBe(usd);
  });

  it('a PRD named like a shell injection is just a file name: accepted verbatim, nothing executed', async () => {
    const r = await post({ workspace: ws, prd: HOSTILE_PRD });
    expect(r.status).toBe(201);
    expect((await json(r)).prd).toBe(HOSTILE_PRD);
    expect(existsSync('/tmp/pwned')).toBe(false);
  });

  it('missing or mistyped fields → 400 validation_error naming the field', async () => {
    for (const [body, field] of [
      [{ prd: 'prd.md' }, 'workspace'],
      [{ workspace: ws }, 'prd'],
      [{ workspace: ws, prd: 'prd.md', sandbox: 'yes' }, 'sandbox'],
      [{ workspace: ws, prd: 'prd.md', name: 'a\u0007b' }, 'name'],
    ] as const) {
      const r = await post(body);
      expect(r.status).toBe(400);
      const b = await json(r);
      expect(b.error.code).toBe('validation_error');
      expect(b.error.message.startsWith(`${field}:`)).toBe(true);
    }
  });

  it('an invalid .loki/config.yaml → 400 naming the key; sandbox.enabled: true keeps a session sandboxed even when the request asks for the host', async () => {
    const bad = await post({ workspace: path.join(root, 'badcfg'), prd: 'prd.md' });
    expect(bad.status).toBe(400);
    const b = await json(bad);
    expect(b.error.code).toBe('validation_error');
    expect(b.error.message).toMatch(/^\.loki\/config\.yaml: sandbox\.memory_limit: /);

    const forced = await post({ workspace: path.join(root, 'sbxcfg'), prd: 'prd.md', sandbox: false });
    expect(forced.status).toBe(201);
    expect(await json(forced)).toMatchObject({ sandbox: true, host_session: false, policy: { sandbox: true } });
  });

  it('refused starts are audited too, as failures with the requested paths', async () => {
    await post({ workspace: outside, prd: 'secret.md' });
    const audit = await json(await s.req('/api/enterprise/audit?action=session.start&limit=1000'));
    const refused = audit.entries.filter((e: Json) => e.outcome.success === false && e.details.workspace === outside);
    expect(refused.length).toBeGreaterThan(0);
    expect(refused[0]).toMatchObject({ outcome: { status: 400, error: 'invalid_path' }, details: { prd: 'secret.md' } });
  });

  it('GET /api/sessions pages newest first with next_cursor, and filters by status', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await json(await post({ workspace: ws, prd: 'prd.md', name: `page-${i}` }))).id);
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const q: string = cursor ? `&cursor=${encodeURIComponent(cursor)}` : '';
      const page = await json(await s.req(`/api/sessions?limit=2${q}`));
      expect(page.sessions.length).toBeLessThanOrEqual(2);
      seen.push(...page.sessions.map((x: Json) => x.id));
      cursor = page.next_cursor;
    } while (cursor);
    expect(new Set(seen).size).toBe(seen.length);
    const newestFive = seen.slice(0, 5);
    expect(newestFive).toEqual([...ids].reverse());

    const queued = await json(await s.req('/api/sessions?status=queued&limit=200'));
    expect(queued.sessions.every((x: Json) => x.status === 'queued')).toBe(true);
    for (const q of ['limit=0', 'limit=201', 'limit=x', 'status=bogus', 'cursor=nope']) {
      const r = await s.req(`/api/sessions?${q}`);
      expect(r.status, q).toBe(400);
      expect((await json(r)).error.code).toBe('validation_error');
    }
  });

  it('GET one session, its logs (empty while queued), and 404 for an unknown id', async () => {
    const created = await json(await post({ workspace: ws, prd: 'prd.md' }));
    const one = await json(await s.req(`/api/sessions/${created.id}`));
    expect(one).toEqual(created);
    const logs = await json(await s.req(`/api/sessions/${created.id}/logs?after=0&limit=10`));
    expect(logs).toEqual({ session_id: created.id, status: 'queued', ended: false, lines: [], next_after: 0 });
    for (const p of ['/api/sessions/ses_0000000000000000', '/api/sessions/ses_0000000000000000/logs']) {
      const r = await s.req(p);
      expect(r.status).toBe(404);
      expect((await json(r)).error.code).toBe('not_found');
    }
    expect((await s.req(`/api/sessions/${created.id}/logs?limit=5001`)).status).toBe(400);
  });

  it('stop: a queued session ends `stopped` at once (200), audited with the PRD; stopping it again → 409', async () => {
    const created = await json(await post({ workspace: ws, prd: 'docs/readme.md' }));
    const r = await s.req(`/api/sessions/${created.id}/stop`, { method: 'POST' });
    expect(r.status).toBe(200);
    const body = await json(r);
    expect(body.stop_requested).toBe(true);
    expect(body.session).toMatchObject({ id: created.id, status: 'stopped', stop_requested: true });
    expect(body.session.reason).toMatch(/stopped by local before it started/);

    const again = await s.req(`/api/sessions/${created.id}/stop`, { method: 'POST' });
    expect(again.status).toBe(409);
    expect((await json(again)).error.code).toBe('conflict');
    expect((await s.req('/api/sessions/ses_0000000000000000/stop', { method: 'POST' })).status).toBe(404);

    const audit = await json(await s.req('/api/enterprise/audit?action=session.stop'));
    const entry = audit.entries.find((e: Json) => e.resource?.id === created.id && e.outcome.success);
    expect(entry).toMatchObject({
      actor: { name: 'local' },
      details: { prd: 'docs/readme.md', previous_status: 'queued', status: 'stopped' },
    });
    const states = (await s.runtime.deps.events.after(0, { sessionId: created.id })).map((e) => (e.data as Json).status);
    expect(states).toEqual(['queued', 'stopped']);
  });
});

describe('sessions API with auth on', () => {
  let s: TestServer;
  let root: string;
  let ws: string;
  beforeAll(async () => {
    root = tempRoot();
    ws = makeWorkspace(root, 'ws');
    s = await startTestServer({ LOKI_WORKSPACE_ROOTS: root, LOKI_ENTERPRISE_AUTH: 'true', LOKI_SANDBOX_MODE: 'true' });
  });
  afterAll(async () => {
    await s?.stop();
    rmSync(root, { recursive: true, force: true });
  });

  it('operators start and stop; viewers and workers cannot; created_by is the token name; LOKI_SANDBOX_MODE sandboxes every session', async () => {
    const operator = (await makeToken(s, 'alice-ops', 'operator')).token;
    const viewer = (await makeToken(s, 'bob-viewer', 'viewer')).token;
    const worker = (await makeToken(s, 'worker-1', 'worker', { workerId: 'w-api-1' })).token;
    const body = JSON.stringify({ workspace: ws, prd: 'prd.md' });
    const headers = { 'Content-Type': 'application/json' };
    for (const token of [viewer, worker]) {
      const r = await s.req('/api/sessions', { method: 'POST', headers, body, token });
      expect(r.status).toBe(403);
      expect((await json(r)).error.code).toBe('insufficient_scope');
    }
    const r = await s.req('/api/sessions', { method: 'POST', headers, body, token: operator });
    expect(r.status).toBe(201);
    const created = await json(r);
    expect(created).toMatchObject({ created_by: 'alice-ops', sandbox: true, host_session: false });
    // LOKI_SANDBOX_MODE: a request for the host is sandboxed all the same (not refused).
    const host = await s.req('/api/sessions', { method: 'POST', headers, body: JSON.stringify({ workspace: ws, prd: 'prd.md', sandbox: false }), token: operator });
    expect(host.status).toBe(201);
    expect(await json(host)).toMatchObject({ sandbox: true, host_session: false, policy: { sandbox: true } });
    expect((await s.req(`/api/sessions/${created.id}`, { token: viewer })).status).toBe(200);
    expect((await s.req(`/api/sessions/${created.id}/stop`, { method: 'POST', token: viewer })).status).toBe(403);
    expect((await s.req(`/api/sessions/${created.id}`, { token: worker })).status).toBe(403);
    expect((await s.req('/api/sessions', {})).status).toBe(401);

    const audit = await json(await s.req('/api/enterprise/audit?action=session.start', { token: (await makeToken(s, 'root', 'admin')).token }));
    expect(audit.entries.find((e: Json) => e.resource?.id === created.id)).toMatchObject({ actor: { type: 'token', name: 'alice-ops' } });
  });

  it('the worker protocol needs the sandbox scope: an operator token is refused, a worker token is served', async () => {
    const operator = (await makeToken(s, 'carol-ops', 'operator')).token;
    const worker = (await makeToken(s, 'worker-2', 'worker', { workerId: 'w1' })).token;
    const body = JSON.stringify({ worker_id: 'w1', wait_ms: 0 });
    const headers = { 'Content-Type': 'application/json' };
    const refused = await s.req('/api/sandbox/jobs/claim', { method: 'POST', headers, body, token: operator });
    expect(refused.status).toBe(403);
    expect(refused.headers.get('www-authenticate')).toBe('Bearer realm="loki", error="insufficient_scope", scope="sandbox"');
    const served = await s.req('/api/sandbox/jobs/claim', { method: 'POST', headers, body, token: worker });
    expect([200, 204]).toContain(served.status);
    expect((await s.req('/api/sandbox/jobs?worker_id=w1', { token: operator })).status).toBe(403);
    expect((await s.req('/api/sandbox/jobs?worker_id=w1', { token: worker })).status).toBe(200);
  });
});

describe('without a file-system validator (the Workers runtime)', () => {
  it('refuses to start sessions with 503 rather than skip the path checks', async () => {
    const root = tempRoot();
    const ws = makeWorkspace(root, 'ws');
    const s = await startTestServer({ LOKI_WORKSPACE_ROOTS: root });
    try {
      const { createLokiApp } = await import('../../src/app');
      const { app } = createLokiApp({ ...s.runtime.deps, sessions: undefined, hostCheck: false, clientAddress: () => '127.0.0.1' });
      const r = await app.request('/api/sessions', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ workspace: ws, prd: 'prd.md' }),
      });
      expect(r.status).toBe(503);
      expect((await json(r)).error.code).toBe('service_unavailable');
    } finally {
      await s.stop();
      rmSync(root, { recursive: true, force: true });
    }
  });
});


/**
 * Issue 13: fail closed before the side effect. A state-changing request commits
 * an `<action>.intent` audit entry before it changes anything; when that entry
 * cannot be written the client gets 503 audit_unavailable and nothing is done.
 */
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/server';
import { withAuditFailing } from '../helpers/audit';
import { makeToken } from '../helpers/tokens';
import { makeWorkspace, tempRoot } from '../sessions/helpers';

const AUDIT_503 = { code: 'audit_unavailable', message: 'the audit log cannot be written; the request was not completed' };

async function entries(s: TestServer) {
  await s.runtime.audit.drain();
  return (await s.runtime.audit.query({ afterSeq: 0, limit: 1000 })).map((r) => JSON.parse(r.entry));
}

describe('fail closed before the side effect (real server, auth on)', () => {
  let s: TestServer;
  let admin: string;
  let root: string;
  let ws: string;
  const json = { 'Content-Type': 'application/json' };
  beforeAll(async () => {
    root = tempRoot();
    ws = makeWorkspace(root, 'ws');
    s = await startTestServer({ LOKI_ENTERPRISE_AUTH: 'true', LOKI_WORKSPACE_ROOTS: root });
    admin = (await makeToken(s, 'root', 'admin')).token;
  });
  afterAll(async () => {
    await s?.stop();
    rmSync(root, { recursive: true, force: true });
  });

  it('POST /api/enterprise/tokens with the audit log failing: 503 and the token does not exist afterwards', async () => {
    const r = await withAuditFailing(s.runtime.audit, () =>
      s.req('/api/enterprise/tokens', { method: 'POST', token: admin, headers: json, body: JSON.stringify({ name: 'never-made', role: 'viewer' }) }),
    );
    expect(r.status).toBe(503);
    const body = await r.json();
    expect(body.error).toMatchObject(AUDIT_503);
    expect(body.token).toBeUndefined();
    expect((await s.runtime.deps.store.tokens.list(true)).map((t) => t.name)).not.toContain('never-made');
    // Once the log is writable again the same request works.
    const ok = await s.req('/api/enterprise/tokens', { method: 'POST', token: admin, headers: json, body: JSON.stringify({ name: 'never-made', role: 'viewer' }) });
    expect(ok.status).toBe(201);
  });

  it('DELETE /api/enterprise/tokens/:id with the audit log failing: 503 and the token still works', async () => {
    const t = await makeToken(s, 'keep-me', 'viewer');
    const r = await withAuditFailing(s.runtime.audit, () => s.req(`/api/enterprise/tokens/${t.id}`, { method: 'DELETE', token: admin }));
    expect(r.status).toBe(503);
    expect((await r.json()).error).toMatchObject(AUDIT_503);
    expect((await s.runtime.deps.store.tokens.get(t.id))?.revokedAt).toBeNull();
    expect((await s.req('/api/status', { token: t.token })).status).toBe(200);
  });

  it('POST /api/sessions and POST /api/sessions/:id/stop with the audit log failing: 503, no session queued, none stopped', async () => {
    const start = () => s.req('/api/sessions', { method: 'POST', token: admin, headers: json, body: JSON.stringify({ workspace: ws, prd: 'prd.md', name: 'unaudited' }) });
    const r = await withAuditFailing(s.runtime.audit, start);
    expect(r.status).toBe(503);
    expect((await r.json()).error).toMatchObject(AUDIT_503);
    expect((await s.runtime.deps.store.sessions.list({ limit: 200 })).map((x) => x.name)).not.toContain('unaudited');

    const created = await start();
    expect(created.status).toBe(201);
    const id = (await created.json()).id as string;
    const stop = await withAuditFailing(s.runtime.audit, () => s.req(`/api/sessions/${id}/stop`, { method: 'POST', token: admin }));
    expect(stop.status).toBe(503);
    const after = await s.runtime.deps.store.sessions.get(id);
    expect(after?.status).toBe('queued');
    expect(after?.stopRequested).toBe(false);
  });

  it('the intent entry is committed before the change, the outcome after, with the same request id', async () => {
    const r = await s.req('/api/enterprise/tokens', {
      method: 'POST',
      token: admin,
      headers: { ...json, 'X-Request-Id': 'intent-order-1' },
      body: JSON.stringify({ name: 'ordered', role: 'auditor' }),
    });
    expect(r.status).toBe(201);
    const id = (await r.json()).id;
    const mine = (await entries(s)).filter((e) => e.request?.id === 'intent-order-1');
    expect(mine.map((e) => [e.action, e.outcome.status])).toEqual([
      ['token.create.intent', null],
      ['token.create', 201],
    ]);
    expect(mine[0]).toMatchObject({ actor: { type: 'token', name: 'root' }, details: { request: { name: 'ordered', role: 'auditor' } } });
    expect(mine[1].resource).toEqual({ type: 'token', id });
    expect(mine[0].seq).toBeLessThan(mine[1].seq);
  });

  it('a request refused before the handler (validation, scope) writes no intent', async () => {
    const viewer = (await makeToken(s, 'v', 'viewer')).token;
    await s.req('/api/enterprise/tokens', { method: 'POST', token: viewer, headers: { ...json, 'X-Request-Id': 'no-intent-1' }, body: '{"name":"x"}' });
    await s.req('/api/enterprise/tokens', { method: 'POST', token: admin, headers: { ...json, 'X-Request-Id': 'no-intent-2' }, body: '{"name":5}' });
    const all = await entries(s);
    expect(all.filter((e) => e.request?.id === 'no-intent-1').map((e) => e.action)).toEqual(['scope.denied']);
    expect(all.filter((e) => e.request?.id === 'no-intent-2').map((e) => [e.action, e.outcome.status])).toEqual([['http.request', 400]]);
  });
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkRecord, checkTree, defaultHasher } from '../../src/audit/tlog/merkle';
import { noteVerifier, openCheckpoint } from '../../src/audit/tlog/note';
import { fromBase64, toBase64, utf8 } from '../../src/audit/tlog/sha256';
import { parseEntryBundle } from '../../src/audit/tlog/tiles';
import { treeRootAt } from '../../src/audit/verify';
import { sampleEntry } from '../helpers/audit';
import { TEST_STORE } from '../helpers/postgres';
import { startTestServer, type TestServer } from '../helpers/server';
import { makeToken } from '../helpers/tokens';

async function entries(s: TestServer) {
  await s.runtime.audit.drain();
  return (await s.runtime.audit.query({ afterSeq: 0, limit: 1000 })).map((r) => JSON.parse(r.entry));
}

describe('audit trail of API requests (real server, auth on)', () => {
  let s: TestServer;
  let admin: { id: string; token: string };
  let auditor: { id: string; token: string };
  let viewer: { id: string; token: string };
  beforeAll(async () => {
    s = await startTestServer({ LOKI_ENTERPRISE_AUTH: 'true' });
    admin = await makeToken(s, 'root', 'admin');
    auditor = await makeToken(s, 'aud', 'auditor');
    viewer = await makeToken(s, 'view', 'viewer');
  });
  afterAll(async () => {
    await s.stop();
  });

  it('records a request after its outcome, with the real status and the token as actor', async () => {
    const r = await s.req('/api/status', { token: viewer.token, headers: { 'X-Request-Id': 'trace-status-1', 'User-Agent': 'probe/1.0' } });
    expect(r.status).toBe(200);
    const e = (await entries(s)).find((x) => x.request?.id === 'trace-status-1');
    expect(e).toMatchObject({
      action: 'http.request',
      actor: { type: 'token', id: viewer.id, name: 'view' },
      client: { ip: '127.0.0.1', user_agent: 'probe/1.0' },
      request: { id: 'trace-status-1', method: 'GET', path: '/api/status' },
      outcome: { status: 200, success: true, error: null },
    });
  });

  it('does not record /health', async () => {
    await s.req('/health', { headers: { 'X-Request-Id': 'trace-health-1' } });
    expect((await entries(s)).some((x) => x.request?.id === 'trace-health-1')).toBe(false);
  });

  it('records failed authentication and denied scope with their reasons', async () => {
    await s.req('/api/status', { token: 'loki_bogus', headers: { 'X-Request-Id': 'trace-authfail' } });
    await s.req('/api/enterprise/tokens', { token: viewer.token, headers: { 'X-Request-Id': 'trace-denied' } });
    const all = await entries(s);
    expect(all.find((x) => x.request?.id === 'trace-authfail')).toMatchObject({
      action: 'auth.failure',
      actor: { type: 'anonymous' },
      outcome: { status: 401, success: false, error: 'invalid_token' },
      details: { reason: 'malformed' },
    });
    expect(all.find((x) => x.request?.id === 'trace-denied')).toMatchObject({
      action: 'scope.denied',
      actor: { name: 'view' },
      outcome: { status: 403, success: false, error: 'insufficient_scope' },
      details: { needed_scope: '*' },
    });
  });

  it('records token creation and revocation, never the secret', async () => {
    const c = await s.req('/api/enterprise/tokens', {
      method: 'POST',
      token: admin.token,
      headers: { 'Content-Type': 'application/json', 'X-Request-Id': 'trace-create' },
      body: JSON.stringify({ name: 'audited', role: 'viewer' }),
    });
    const created = await c.json();
    await s.req(`/api/enterprise/tokens/${created.id}`, { method: 'DELETE', token: admin.token, headers: { 'X-Request-Id': 'trace-revoke' } });
    const all = await entries(s);
    // The intent is committed first (fail closed before the change), then the outcome.
    expect(all.filter((x) => x.request?.id === 'trace-create').map((x) => x.action)).toEqual(['token.create.intent', 'token.create']);
    expect(all.find((x) => x.request?.id === 'trace-create' && x.action === 'token.create')).toMatchObject({
      action: 'token.create',
      resource: { type: 'token', id: created.id },
      outcome: { status: 201, success: true },
      details: { name: 'audited', role: 'viewer', scopes: ['read'] },
    });
    expect(all.find((x) => x.request?.id === 'trace-revoke' && x.action === 'token.revoke')).toMatchObject({ resource: { type: 'token', id: created.id } });
    expect(JSON.stringify(all)).not.toContain(created.token);
  });

  it('redacts secrets in recorded paths', async () => {
    await s.req(`/api/status?token=${viewer.token}&x=1`, { token: viewer.token, headers: { 'X-Request-Id': 'trace-redact' } });
    const e = (await entries(s)).find((x) => x.request?.id === 'trace-redact');
    expect(e.request.path).toBe('/api/status?token=[REDACTED]&x=1');
    expect(JSON.stringify(await entries(s))).not.toContain(viewer.token);
  });

  it('reading the audit log is itself audited; filters work', async () => {
    const r = await s.req('/api/enterprise/audit?action=token.create&limit=5', { token: auditor.token, headers: { 'X-Request-Id': 'trace-read' } });
    expect(r.status).toBe(200);
    const body = await r.json();
    expect(body.entries.length).toBeGreaterThan(0);
    expect(body.entries.every((e: { action: string }) => e.action === 'token.create')).toBe(true);
    expect(body.entries[0]).toHaveProperty('hash');
    expect(body.entries[0]).toHaveProperty('prev_hash');
    expect((await entries(s)).find((x) => x.request?.id === 'trace-read')).toMatchObject({ action: 'audit.read', actor: { name: 'aud' } });
    const byActor = await (await s.req('/api/enterprise/audit?actor=view&limit=1000', { token: auditor.token })).json();
    expect(byActor.entries.length).toBeGreaterThan(0);
    expect(byActor.entries.every((e: { actor: { name: string } }) => e.actor.name === 'view')).toBe(true);
    const after = await (await s.req(`/api/enterprise/audit?after_seq=${body.entries[0].seq}&limit=2`, { token: auditor.token })).json();
    expect(after.entries.map((e: { seq: number }) => e.seq)).toEqual([body.entries[0].seq + 1, body.entries[0].seq + 2]);
    const since = await (await s.req(`/api/enterprise/audit?since=${new Date(Date.now() + 60_000).toISOString()}`, { token: auditor.token })).json();
    expect(since.entries).toEqual([]);
  });

  it.each([
    ['limit=-1', 'limit: must be an integer from 1 to 1000'],
    ['limit=0', 'limit: must be an integer from 1 to 1000'],
    ['limit=1001', 'limit: must be an integer from 1 to 1000'],
    ['limit=99999999999', 'limit: must be an integer from 1 to 1000'],
    ['after_seq=abc', 'after_seq: must be a non-negative integer'],
    ['after_seq=-5', 'after_seq: must be a non-negative integer'],
    ['since=yesterday-ish', 'since: must be an ISO 8601 date or epoch milliseconds'],
  ])('bad query %s → 400', async (q, message) => {
    const r = await s.req(`/api/enterprise/audit?${q}`, { token: auditor.token });
    expect(r.status).toBe(400);
    expect((await r.json()).error).toMatchObject({ code: 'validation_error', message });
  });

  it('GET /api/enterprise/audit/verify reports the chain', async () => {
    const r = await s.req('/api/enterprise/audit/verify', { token: auditor.token });
    expect(r.status).toBe(200);
    const v = await r.json();
    expect(v).toMatchObject({ valid: true, first_invalid_seq: null, reason: null });
    expect(v.entries_checked).toBeGreaterThan(10);
    expect(v.last_hash).toMatch(/^[0-9a-f]{64}$/);
  });

  it('verify over HTTP pinpoints tampering done on the file', async () => {
    const target = (await s.runtime.audit.query({ afterSeq: 0, limit: 3 }))[2]!.seq;
    await s.sql("UPDATE audit_log SET entry = replace(entry, '\"GET\"', '\"PUT\"') WHERE seq = ?", target);
    const v = await (await s.req('/api/enterprise/audit/verify', { token: auditor.token })).json();
    expect(v).toMatchObject({ valid: false, first_invalid_seq: target, reason: 'hash_mismatch', entries_checked: target - 1 });
    const all = await entries(s);
    expect(all.at(-1)).toMatchObject({ action: 'audit.verify_failed', details: { first_invalid_seq: target, reason: 'hash_mismatch' } });
  });
});

// SQLite's full disk; on PostgreSQL the same rule is tested with the database stopped (test/audit/pg-audit.test.ts).
describe.skipIf(TEST_STORE === 'postgres')('fail closed', () => {
  it.each([
    ['on the event loop', {}],
    ['on the writer thread (LOKI_AUDIT_WRITER_THREAD)', { LOKI_AUDIT_WRITER_THREAD: 'true' }],
  ])('when the audit entry cannot be committed (%s): 503, no success reported, server keeps running; resumes after space returns', async (_, env) => {
    const s = await startTestServer(env);
    try {
      expect((await s.req('/api/status')).status).toBe(200);
      await s.runtime.audit.drain();
      // The database refuses every audit insert, as a full disk would. A trigger, not
      // `max_page_count`: that pragma holds for one connection only, and with
      // LOKI_AUDIT_WRITER_THREAD the entries are committed on the thread's own connection.
      s.runtime.db.exec("CREATE TRIGGER test_audit_full BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END");
      let first503: Response | null = null;
      for (let i = 0; i < 500 && !first503; i++) {
        const r = await s.req(`/api/status?pad=${'x'.repeat(300)}`);
        if (r.status === 503) first503 = r;
        else expect(r.status).toBe(200);
      }
      expect(first503).not.toBeNull();
      const body = await first503!.json();
      expect(body.error).toMatchObject({ code: 'audit_unavailable', message: 'the audit log cannot be written; the request was not completed' });
      for (let i = 0; i < 3; i++) expect((await s.req(`/api/status?pad=${'x'.repeat(300)}`)).status).toBe(503);
      expect((await s.req('/health')).status).toBe(200);
      s.runtime.db.exec('DROP TRIGGER test_audit_full');
      expect((await s.req('/api/status')).status).toBe(200);
      const v = await s.runtime.audit.verify();
      expect(v.valid).toBe(true);
    } finally {
      await s.stop();
    }
  });
});

describe('the audit log as C2SP tlog-tiles (real server, auth on)', () => {
  let s: TestServer;
  let auditor: string;
  let viewer: string;
  beforeAll(async () => {
    s = await startTestServer({ LOKI_ENTERPRISE_AUTH: 'true' });
    auditor = (await makeToken(s, 'aud', 'auditor')).token;
    viewer = (await makeToken(s, 'view', 'viewer')).token;
    await Promise.all(Array.from({ length: 1500 }, (_, i) => s.runtime.audit.append(sampleEntry(i))));
    await s.runtime.audit.drain();
  });
  afterAll(async () => {
    await s.stop();
  });

  const bytes = async (r: Response) => new Uint8Array(await r.arrayBuffer());

  it('GET …/tlog/checkpoint: the latest signed note, text/plain, not cached; scope audit', async () => {
    const r = await s.req('/api/enterprise/audit/tlog/checkpoint', { token: auditor });
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toBe('text/plain; charset=utf-8');
    expect(r.headers.get('cache-control')).toBe('no-cache');
    const text = await r.text();
    const tlog = s.runtime.audit.tlog!;
    const { checkpoint } = await openCheckpoint(text, [await noteVerifier(tlog.vkey)], tlog.origin);
    expect(checkpoint.size).toBeGreaterThanOrEqual(1000);
    expect(toBase64(checkpoint.rootHash)).toBe(toBase64(await treeRootAt(s.runtime.audit.storage, checkpoint.size)));
    const denied = await s.req('/api/enterprise/audit/tlog/checkpoint', { token: viewer });
    expect(denied.status).toBe(403);
    expect(denied.headers.get('www-authenticate')).toBe('Bearer realm="loki", error="insufficient_scope", scope="audit"');
    expect((await s.req('/api/enterprise/audit/tlog/tile/0/000')).status).toBe(401);
  });

  it('hash tiles: full ones immutable (8,192 bytes), partial ones as any prefix the tree has, not cached', async () => {
    const full = await s.req('/api/enterprise/audit/tlog/tile/0/000', { token: auditor });
    expect(full.status).toBe(200);
    expect(full.headers.get('content-type')).toBe('application/octet-stream');
    expect(full.headers.get('cache-control')).toBe('public, max-age=31536000, immutable');
    const data = await bytes(full);
    expect(data.length).toBe(8192);
    expect(toBase64(data)).toBe(toBase64((await s.runtime.audit.storage.readTile(0, 0))!));
    const part = await s.req('/api/enterprise/audit/tlog/tile/0/001.p/17', { token: auditor });
    expect(part.status).toBe(200);
    expect(part.headers.get('cache-control')).toBe('no-cache');
    expect(toBase64(await bytes(part))).toBe(toBase64((await s.runtime.audit.storage.readTile(0, 1))!.subarray(0, 17 * 32)));
    const l1 = await s.req('/api/enterprise/audit/tlog/tile/1/000.p/5', { token: auditor });
    expect(l1.status).toBe(200);
    expect((await bytes(l1)).length).toBe(5 * 32);
  });

  it('entry bundles: the stored entries, big-endian uint16 length-prefixed', async () => {
    const r = await s.req('/api/enterprise/audit/tlog/tile/entries/000', { token: auditor });
    expect(r.status).toBe(200);
    expect(r.headers.get('cache-control')).toBe('public, max-age=31536000, immutable');
    const entries = parseEntryBundle(await bytes(r)).map((e) => new TextDecoder().decode(e));
    const rows = await s.runtime.audit.storage.range(1, 256);
    expect(entries).toEqual(rows.map((x) => x.entry));
    const p = await s.req('/api/enterprise/audit/tlog/tile/entries/002.p/3', { token: auditor });
    expect(parseEntryBundle(await bytes(p)).map((e) => new TextDecoder().decode(e))).toEqual((await s.runtime.audit.storage.range(513, 515)).map((x) => x.entry));
  });

  it.each([
    ['tile/0/0', 400, 'bad_request'],
    ['tile/0/000.p/256', 400, 'bad_request'],
    ['tile/00/000', 400, 'bad_request'],
    ['tile/8/0/000', 400, 'bad_request'],
    ['tile/data/000', 400, 'bad_request'],
    ['tile/0/x001/000', 404, 'not_found'],
    ['tile/3/000.p/1', 404, 'not_found'],
    ['tile/1/001', 404, 'not_found'],
    ['tile/entries/999', 404, 'not_found'],
  ])('GET …/tlog/%s → %i %s', async (p, status, code) => {
    const r = await s.req(`/api/enterprise/audit/tlog/${p}`, { token: auditor });
    expect(r.status).toBe(status);
    const body = await r.json();
    expect(body.error).toMatchObject({ code, request_id: expect.any(String) });
    expect(body.error.message).toMatch(status === 400 ? /is not a tile path/ : /is not in the tree of size \d+|not stored/);
  });

  it('inclusion and consistency proofs as JSON (base64), checked with the RFC 6962 verifier', async () => {
    const r = await s.req('/api/enterprise/audit/tlog/proof/inclusion?index=700&size=1000', { token: auditor });
    expect(r.status).toBe(200);
    const j = await r.json();
    expect(j).toMatchObject({ index: 700, size: 1000, root: toBase64(await treeRootAt(s.runtime.audit.storage, 1000)) });
    const entry = (await s.runtime.audit.storage.range(701, 701))[0]!.entry;
    checkRecord(j.proof.map(fromBase64), 1000, fromBase64(j.root)!, 700, defaultHasher.recordHash(utf8(entry)));
    const c = await (await s.req('/api/enterprise/audit/tlog/proof/consistency?old=1000&new=1400', { token: auditor })).json();
    expect(c).toMatchObject({ old: 1000, new: 1400 });
    checkTree(c.proof.map(fromBase64), 1400, fromBase64(c.new_root)!, 1000, fromBase64(c.old_root)!);
  });

  it.each([
    ['inclusion?index=abc&size=10', 'index: must be a leaf index (0 or more)'],
    ['inclusion?index=-1&size=10', 'index: must be a leaf index (0 or more)'],
    ['inclusion?index=10&size=10', 'index: must be below size (10)'],
    ['inclusion?index=0&size=0', /^size: must be a tree size from 1 to \d+$/],
    ['inclusion?index=0&size=99999999', /^size: must be a tree size from 1 to \d+$/],
    ['inclusion?size=10', /^index: /],
    ['consistency?old=5&new=4', 'old: must be a tree size from 1 to new (4)'],
    ['consistency?old=0&new=4', 'old: must be a tree size from 1 to new (4)'],
    ['consistency?old=1&new=1e3', 'new: must be a tree size (1 or more)'],
  ])('GET …/tlog/proof/%s → 400', async (q, message) => {
    const r = await s.req(`/api/enterprise/audit/tlog/proof/${q}`, { token: auditor });
    expect(r.status).toBe(400);
    const e = (await r.json()).error;
    expect(e.code).toBe('validation_error');
    if (typeof message === 'string') expect(e.message).toBe(message);
    else expect(e.message).toMatch(message);
  });
});

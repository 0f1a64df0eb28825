/**
 * A JSON body may spell a lone UTF-16 surrogate (`"\ud800"`): JSON.parse accepts it,
 * and the audit entry that records the request (the intent's details) carried it
 * as the same escape. PostgreSQL's json refuses a lone surrogate, so the entry,
 * and every other entry in its group commit, could not be written (503 for all of
 * them). Audit entries are stored with U+FFFD in its place, on either store.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/server';
import { makeToken } from '../helpers/tokens';

describe('a lone surrogate in a request body (real server, auth on)', () => {
  let s: TestServer;
  let admin: string;
  beforeAll(async () => {
    s = await startTestServer({ LOKI_ENTERPRISE_AUTH: 'true' });
    admin = (await makeToken(s, 'surrogate-admin', 'admin')).token;
  });
  afterAll(async () => {
    await s?.stop();
  });

  it('is audited as U+FFFD; the request and the requests around it are answered, the log verifies', async () => {
    const create = (raw: string) =>
      s.req('/api/enterprise/tokens', { method: 'POST', token: admin, headers: { 'Content-Type': 'application/json' }, body: raw });
    // Sent together, so that they can share a group commit.
    const [lone, plain, status] = await Promise.all([
      create('{"name":"lone-\\ud800-surrogate","role":"viewer"}'),
      create('{"name":"plain-name","role":"viewer"}'),
      s.req('/api/status', { token: admin }),
    ]);
    expect([lone.status, plain.status, status.status]).toEqual([201, 201, 200]);
    await s.runtime.audit.drain();
    const rows = await s.runtime.audit.query({ afterSeq: 0, limit: 1000 });
    const intent = rows.map((r) => JSON.parse(r.entry)).find((e) => e.action === 'token.create.intent' && String(e.details?.request?.name).startsWith('lone-'));
    expect(intent?.details.request.name).toBe('lone-\ufffd-surrogate');
    expect(rows.some((r) => /\\ud[89ab]/i.test(r.entry))).toBe(false);
    const verify = await s.req('/api/enterprise/audit/verify', { token: admin });
    expect(verify.status).toBe(200);
    expect(await verify.json()).toMatchObject({ valid: true });
  });
});

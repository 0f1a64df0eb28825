/**
 * Issue 13: a 401 must not tell a caller which tokens exist. Malformed, unknown,
 * revoked and expired tokens get the same status, error code, message and header;
 * the reason is in the audit entry only.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateToken } from '../../src/auth/tokens';
import { startTestServer, type TestServer } from '../helpers/server';
import { makeToken } from '../helpers/tokens';

describe('identical 401 answers for refused tokens (real server)', () => {
  let s: TestServer;
  let admin: string;
  // The server's clock: moved forward to expire a token (the same on every store).
  let offsetMs = 0;
  beforeAll(async () => {
    s = await startTestServer({ LOKI_ENTERPRISE_AUTH: 'true' }, { now: () => Date.now() + offsetMs });
    admin = (await makeToken(s, 'admin', 'admin')).token;
  });
  afterAll(async () => {
    await s.stop();
  });

  it('malformed, unknown, revoked and expired: same status, code, message and WWW-Authenticate; the reason only in the audit log', async () => {
    const revoked = await makeToken(s, 'gone', 'viewer');
    expect((await s.req(`/api/enterprise/tokens/${revoked.id}`, { method: 'DELETE', token: admin })).status).toBe(200);
    const expired = await makeToken(s, 'old', 'viewer', { expiresDays: 1 });
    offsetMs = 2 * 86_400_000;

    const cases: [string, string][] = [
      ['malformed', 'loki_short'],
      ['malformed', `${admin.slice(0, -1)}${admin.endsWith('A') ? 'B' : 'A'}`], // bad checksum
      ['unknown', generateToken()], // well-formed, checksum right, never issued
      ['revoked', revoked.token],
      ['expired', expired.token],
    ];
    const answers: unknown[] = [];
    for (const [i, [, token]] of cases.entries()) {
      const r = await s.req('/api/status', { token, headers: { 'X-Request-Id': `same-401-${i}` } });
      const body = await r.json();
      expect(body.error.request_id).toBe(`same-401-${i}`);
      answers.push({ status: r.status, www: r.headers.get('www-authenticate'), code: body.error.code, message: body.error.message, keys: Object.keys(body.error) });
    }
    const expected = {
      status: 401,
      www: 'Bearer realm="loki", error="invalid_token"',
      code: 'invalid_token',
      message: 'the bearer token is not valid',
      keys: ['code', 'message', 'request_id'],
    };
    expect(answers).toEqual(cases.map(() => expected));

    await s.runtime.audit.drain();
    const rows = (await s.runtime.audit.query({ afterSeq: 0, limit: 1000 })).map((x) => JSON.parse(x.entry));
    const reasons = cases.map((_, i) => rows.find((e) => e.request?.id === `same-401-${i}`));
    expect(reasons.map((e) => [e?.action, e?.outcome.status, e?.details.reason])).toEqual(cases.map(([reason]) => ['auth.failure', 401, reason]));
  });
});

/**
 * Issue 13: the failed-authentication limiter looks at the credential first (a valid
 * token is never refused because of earlier junk from the same address) and counts
 * IPv6 clients by their /64.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLokiApp } from '../../src/app';
import { generateToken } from '../../src/auth/tokens';
import { startTestServer, type TestServer } from '../helpers/server';
import { makeToken } from '../helpers/tokens';

const JUNK = generateToken(); // well-formed, never issued: each try is a store lookup

describe('failed-authentication limiter (real server)', () => {
  let s: TestServer;
  let admin: string;
  beforeAll(async () => {
    s = await startTestServer({ LOKI_ENTERPRISE_AUTH: 'true' });
    admin = (await makeToken(s, 'admin', 'admin')).token;
  });
  afterAll(async () => {
    await s.stop();
  });

  it('after 25 junk requests from an address, a valid admin token from it gets 200; the junk keeps getting 429', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 25; i++) {
      const junk = i % 3 === 0 ? { headers: { Authorization: 'Bearer nonsense' } } : i % 3 === 1 ? { token: JUNK } : {};
      statuses.push((await s.req('/api/enterprise/tokens', junk)).status);
    }
    // 21 failures are answered 401, then the address is held back.
    expect(statuses).toEqual([...Array(21).fill(401), ...Array(4).fill(429)]);
    const ok = await s.req('/api/enterprise/tokens', { token: admin });
    expect(ok.status).toBe(200);
    expect(ok.headers.get('retry-after')).toBeNull();
    // A success does not reset the count of the failures.
    const again = await s.req('/api/status', { token: JUNK });
    expect(again.status).toBe(429);
    expect((await again.json()).error.code).toBe('rate_limited');
    expect((await s.req('/api/status', { token: admin })).status).toBe(200);
  });
});

describe('IPv6 clients are counted by their /64', () => {
  it('rotating addresses inside one /64 still hits 429; another /64 does not', async () => {
    const s = await startTestServer({ LOKI_ENTERPRISE_AUTH: 'true' });
    try {
      const admin = (await makeToken(s, 'admin6', 'admin')).token;
      // The real app and store; only the peer address comes from the test (loopback has no /64 to rotate in).
      const { app } = createLokiApp({ ...s.runtime.deps, hostCheck: false, clientAddress: (c) => c.req.header('x-test-peer') ?? null });
      const from = (peer: string, token = JUNK) => app.request('/api/status', { headers: { 'x-test-peer': peer, Authorization: `Bearer ${token}` } });
      const statuses: number[] = [];
      for (let i = 1; i <= 23; i++) statuses.push((await from(`2001:db8:aa:bb:${i.toString(16)}:${((i * 7919) % 0x10000).toString(16)}::${i.toString(16)}`)).status);
      expect(statuses).toEqual([...Array(21).fill(401), 429, 429]);
      const limited = await from('2001:db8:aa:bb:ffff:ffff:ffff:fffe');
      expect(limited.status).toBe(429);
      expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0);
      // Another /64 is another client.
      expect((await from('2001:db8:aa:bc::1')).status).toBe(401);
      // And a valid token from the held-back /64 still works.
      expect((await from('2001:db8:aa:bb::42', admin)).status).toBe(200);
    } finally {
      await s.stop();
    }
  });
});

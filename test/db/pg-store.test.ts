/**
 * The PostgreSQL store on a real server: concurrent migrators, job claims by
 * several workers at once (FOR UPDATE SKIP LOCKED: each session exactly once),
 * unique violations, and values read back with the same JavaScript types as on
 * SQLite (numbers, booleans).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migratePg, openPgPool, openPostgresBackend, type PostgresBackend } from '../../src/db/pg';
import { queuedSession, type SessionRecord, UniqueViolation } from '../../src/db/store';
import { postgresMissing, startPostgres, type TestPostgres } from '../helpers/postgres';

const missing = postgresMissing();
if (missing && process.env.CI === 'true') throw new Error(missing);

function session(id: string, createdAt: number): SessionRecord {
  return queuedSession({ id, workspace: '/w', prd: 'prd.md', sandbox: true, budgetUsd: 5, createdBy: 'test', createdAt });
}

describe.skipIf(missing !== null)(`PostgreSQL store${missing ? ` (skipped: ${missing})` : ''}`, () => {
  let pgs: TestPostgres;
  beforeAll(async () => {
    pgs = await startPostgres({ fsync: false });
  });
  afterAll(async () => {
    await pgs?.stop();
  });

  it('five migrators at once: exactly one applies 0000_init, the others find it applied', async () => {
    const url = await pgs.createDatabase();
    const pools = Array.from({ length: 5 }, () => openPgPool({ url, poolSize: 2, statementTimeoutMs: 10_000 }));
    try {
      const results = await Promise.all(pools.map((p) => migratePg(p)));
      expect(results.filter((r) => r.length > 0)).toEqual([['0000_init']]);
      expect(results.filter((r) => r.length === 0)).toHaveLength(4);
    } finally {
      await Promise.all(pools.map((p) => p.end()));
    }
  });

  describe('one database, two workers', () => {
    let a: PostgresBackend;
    let b: PostgresBackend;
    beforeAll(async () => {
      const url = await pgs.createDatabase();
      a = await openPostgresBackend({ url, poolSize: 8, statementTimeoutMs: 10_000 });
      b = await openPostgresBackend({ url, poolSize: 8, statementTimeoutMs: 10_000 });
    });
    afterAll(async () => {
      await a?.close();
      await b?.close();
    });

    it('30 claims racing from two processes over 30 queued sessions: every claim gets a session, each session leased once (none waits on another)', async () => {
      const t0 = 1_700_000_000_000;
      for (let i = 0; i < 30; i++) await a.store.sessions.insert(session(`ses_${String(i).padStart(2, '0')}`, t0 + i));
      const claims = await Promise.all(
        Array.from({ length: 30 }, (_, i) => (i % 2 ? a : b).store.sessions.claim(`worker-${i % 2}`, `lease-${i}`, t0 + 100, t0 + 60_000)),
      );
      // Without SKIP LOCKED, claims racing for the same oldest row come back empty.
      expect(claims.filter((c) => c === null)).toHaveLength(0);
      const got = claims.filter((c): c is SessionRecord => c !== null);
      expect(new Set(got.map((c) => c.id)).size).toBe(30);
      for (const c of got) expect(c).toMatchObject({ status: 'running', startedAt: t0 + 100, leaseExpiresAt: t0 + 60_000, sandbox: true, stopRequested: false });
      expect(await a.store.sessions.counts()).toEqual({ running: 30 });
      expect(await b.store.sessions.claim('worker-9', 'lease-x', t0, t0 + 1)).toBeNull();
      // Leases held: each session's lease id is the one its claim returned.
      for (const c of got) expect((await a.store.sessions.get(c.id))?.leaseId).toBe(c.leaseId);
    });

    it('a duplicate token name is a UniqueViolation; values come back with SQLite types', async () => {
      const token = {
        id: 'tok_1',
        name: 'dup',
        hash: 'h1',
        legacySalt: null,
        role: 'viewer' as const,
        scopes: ['read' as const],
        createdAt: 1_700_000_000_123,
        expiresAt: null,
        lastUsedAt: null,
        revokedAt: null,
        createdBy: null,
        source: 'native' as const,
        workerId: null,
      };
      await a.store.tokens.insert(token);
      await expect(b.store.tokens.insert({ ...token, id: 'tok_2', hash: 'h2' })).rejects.toBeInstanceOf(UniqueViolation);
      expect(await b.store.tokens.get('dup')).toEqual(token);
      expect(await a.store.tokens.revoke('tok_1', 5)).toBe(true);
      expect(await b.store.tokens.revoke('tok_1', 6)).toBe(false);
      const id = await a.store.events.insert('t', null, { x: 1 }, 7);
      expect(typeof id).toBe('number');
      expect(await b.store.events.maxId()).toBe(id);
      expect(await b.store.events.after({ afterId: 0, limit: 10 })).toEqual([{ id, type: 't', sessionId: null, data: { x: 1 }, ts: 7 }]);
      await a.store.ping();
    });

    it('session output with a NUL byte is stored (as U+FFFD), line numbers reserved atomically', async () => {
      await a.store.sessions.insert(session('ses_logs', 1));
      const [r1, r2] = await Promise.all([a.store.sessions.reserveLogLines('ses_logs', 2, 10), b.store.sessions.reserveLogLines('ses_logs', 3, 5)]);
      expect([r1!.firstLine, r2!.firstLine].sort()).toEqual([1, r1!.firstLine === 1 ? 3 : 4].sort());
      await a.store.sessions.appendLogs('ses_logs', [{ line: 1, stream: 'stdout', text: 'a\u0000b', ts: 1 }]);
      expect(await b.store.sessions.logs('ses_logs', 0, 10)).toEqual([{ line: 1, stream: 'stdout', text: 'a\ufffdb', ts: 1 }]);
    });

    it('a patch with a NUL byte (git diffs a file with a NUL after its first 8000 bytes as text) is stored and read back byte for byte', async () => {
      await a.store.sessions.insert(session('ses_patch', 0)); // queued before ses_logs: claimed first
      const claimed = await a.store.sessions.claim('worker-p', 'lease-p', 2, 60_000);
      expect(claimed?.id).toBe('ses_patch');
      const patch = `diff --git a/f.txt b/f.txt\n+${'a'.repeat(9000)}\n+\u0000zz\n`;
      expect(await a.store.sessions.saveResult('ses_patch', 'lease-p', '{"has_patch":true}', patch)).toBe(true);
      expect(await b.store.sessions.resultPatch('ses_patch')).toBe(patch);
      // A patch without NUL is stored as it is.
      expect(await a.store.sessions.saveResult('ses_patch', 'lease-p', '{"has_patch":true}', 'diff --git a/x b/x\n')).toBe(true);
      expect(await b.store.sessions.resultPatch('ses_patch')).toBe('diff --git a/x b/x\n');
      // Nor is a patch mistaken for an encoded one.
      const lookalike = '\u0001loki-base64:ZGlmZg==';
      expect(await a.store.sessions.saveResult('ses_patch', 'lease-p', '{"has_patch":true}', lookalike)).toBe(true);
      expect(await b.store.sessions.resultPatch('ses_patch')).toBe(lookalike);
      // The worker's reason for the outcome, NUL included, ends the session (U+FFFD in its place).
      const ended = await b.store.sessions.transition('ses_patch', { from: ['running'], leaseId: 'lease-p' }, { status: 'failed', reason: 'agent said a\u0000b', endedAt: 3 });
      expect(ended).toMatchObject({ status: 'failed', reason: 'agent said a\ufffdb' });
    });
  });
});

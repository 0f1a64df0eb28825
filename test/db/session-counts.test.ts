/**
 * Session counts for /api/status come from a cache (src/db/session-counts.ts):
 * exact right after a change made through this process's store, and a change
 * made elsewhere on the same database (another process on the SQLite file,
 * another server on PostgreSQL) shows within SESSION_COUNTS_TTL_MS, not before
 * (the documented bound), on a real database.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openPostgresBackend, type PostgresBackend } from '../../src/db/pg';
import { createPgStore } from '../../src/db/pg-store';
import { SESSION_COUNTS_TTL_MS } from '../../src/db/session-counts';
import { createSqliteStore, migrate, openSqlite } from '../../src/db/sqlite';
import { queuedSession, type SessionRecord, type Store } from '../../src/db/store';
import { postgresMissing, startPostgres, type TestPostgres } from '../helpers/postgres';
import { startTestServer, tempHome } from '../helpers/server';

function session(id: string, createdAt: number): SessionRecord {
  return queuedSession({ id, workspace: '/w', prd: 'prd.md', sandbox: true, budgetUsd: 5, createdBy: 'test', createdAt });
}

/** `here` caches with the clock `t`; `elsewhere` is another process's store on the same database. */
async function staleness(here: Store, elsewhere: Store, clock: { t: number }) {
  expect(await here.sessions.counts()).toEqual({});
  // Written through this store: exact at once, every kind of state change.
  await here.sessions.insert(session('ses_a', 1));
  expect(await here.sessions.counts()).toEqual({ queued: 1 });
  const claimed = await here.sessions.claim('wrk_1', 'lease_1', 2, 10_000);
  expect(claimed?.id).toBe('ses_a');
  expect(await here.sessions.counts()).toEqual({ running: 1 });
  await here.sessions.transition('ses_a', { from: ['running'], leaseId: 'lease_1' }, { status: 'succeeded', endedAt: 3 });
  expect(await here.sessions.counts()).toEqual({ succeeded: 1 });
  await here.sessions.insert(session('ses_b', 4));
  await here.sessions.update('ses_b', null, { status: 'stopped' });
  expect(await here.sessions.counts()).toEqual({ succeeded: 1, stopped: 1 });

  // Written elsewhere: the cached counts stand until the TTL has passed, then the new ones show.
  await elsewhere.sessions.insert(session('ses_c', 5));
  clock.t += SESSION_COUNTS_TTL_MS - 1;
  expect(await here.sessions.counts()).toEqual({ succeeded: 1, stopped: 1 });
  clock.t += 1;
  expect(await here.sessions.counts()).toEqual({ succeeded: 1, stopped: 1, queued: 1 });
  // A lease expiry swept here drops the cache too.
  await elsewhere.sessions.claim('wrk_2', 'lease_2', 6, 7);
  await here.sessions.expireLeases(8);
  expect(await here.sessions.counts()).toEqual({ succeeded: 1, stopped: 1, lost: 1 });
  // The caller gets a copy: changing it does not change what the next caller sees.
  const got = await here.sessions.counts();
  got.lost = 99;
  expect((await here.sessions.counts()).lost).toBe(1);
}

describe('session counts cache', () => {
  it('SQLite: exact after this process writes; another process on the file shows within the TTL', async () => {
    const file = path.join(tempHome(), 'loki.db');
    const a = openSqlite(file);
    migrate(a);
    const b = openSqlite(file);
    const clock = { t: 1_000_000 };
    try {
      await staleness(createSqliteStore(a, { now: () => clock.t }), createSqliteStore(b), clock);
    } finally {
      a.close();
      b.close();
    }
  });

  it('/api/status shows a session created in this process on the next request', async () => {
    const s = await startTestServer();
    try {
      const before = await (await s.req('/api/status')).json();
      expect(before.sessions).toEqual({ total: 0, by_status: {} });
      await s.runtime.deps.store.sessions.insert(session('ses_status', Date.now()));
      const after = await (await s.req('/api/status')).json();
      expect(after.sessions).toEqual({ total: 1, by_status: { queued: 1 } });
    } finally {
      await s.stop();
    }
  });
});

const missing = postgresMissing();
describe.skipIf(missing !== null)(`session counts cache on PostgreSQL${missing ? ` (skipped: ${missing})` : ''}`, () => {
  let pgs: TestPostgres;
  let a: PostgresBackend;
  let b: PostgresBackend;
  beforeAll(async () => {
    pgs = await startPostgres({ fsync: false });
    const url = await pgs.createDatabase();
    a = await openPostgresBackend({ url, poolSize: 4, statementTimeoutMs: 10_000 });
    b = await openPostgresBackend({ url, poolSize: 4, statementTimeoutMs: 10_000 });
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
    await pgs?.stop();
  });

  it('two servers on one database: exact after this server writes; the other server’s changes show within the TTL', async () => {
    const clock = { t: 1_000_000 };
    await staleness(createPgStore(a.pool, { now: () => clock.t }), b.store, clock);
  });
});

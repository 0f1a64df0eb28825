/**
 * Events on PostgreSQL written concurrently by several processes' pools reach a
 * following hub completely: the hub advances its cursor to the newest id it
 * read, so a row with a smaller id that commits later would be skipped for
 * good. The store serialises event inserts (id order = commit order).
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { openPostgresBackend, type PostgresBackend } from '../../src/db/pg';
import { EventHub } from '../../src/events/hub';
import { startPostgres, type TestPostgres } from '../helpers/postgres';
import { describePg } from './pg';

describePg('events across pools on one PostgreSQL', () => {
  let pg: TestPostgres;
  const backends: PostgresBackend[] = [];
  beforeAll(async () => {
    pg = await startPostgres({ fsync: false });
    const url = await pg.createDatabase();
    for (let i = 0; i < 3; i++) backends.push(await openPostgresBackend({ url, poolSize: 8, statementTimeoutMs: 10_000 }));
  });
  afterAll(async () => {
    for (const b of backends) await b.close();
    await pg?.stop();
  });

  it('an event whose transaction commits after a later id is still delivered (id order = commit order)', async () => {
    // Test-only trigger: rows marked slow sleep 400 ms after their id is taken, before
    // their commit, the window in which another connection's later id can commit first.
    await backends[0]!.pool.query(`CREATE OR REPLACE FUNCTION test_slow_event() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN IF NEW.data LIKE '%"slow":true%' THEN PERFORM pg_sleep(0.4); END IF; RETURN NEW; END $$`);
    await backends[0]!.pool.query('CREATE TRIGGER test_slow_event BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION test_slow_event()');
    try {
      const follower = new EventHub(backends[0]!.store.events);
      follower.startPolling(10);
      const seen: number[] = [];
      follower.subscribeBatches((b) => {
        for (const e of b.events) seen.push(e.id);
      });
      const start = await backends[0]!.store.events.maxId();
      while (follower.cursor < start) await new Promise((r) => setTimeout(r, 10));
      await new Promise((r) => setTimeout(r, 50));
      const slow = backends[1]!.store.events.insert('test.slow', null, { slow: true }, Date.now());
      await new Promise((r) => setTimeout(r, 100));
      const fast = await backends[2]!.store.events.insert('test.fast', null, { slow: false }, Date.now());
      const slowId = await slow;
      const max = Math.max(fast, slowId);
      const deadline = Date.now() + 5_000;
      while (follower.cursor < max && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      await new Promise((r) => setTimeout(r, 100));
      follower.stop();
      expect(slowId).toBeLessThan(fast);
      expect(seen).toEqual([slowId, fast]);
    } finally {
      await backends[0]!.pool.query('DROP TRIGGER test_slow_event ON events');
    }
  });

  it('1,500 events inserted concurrently through 3 pools reach a polling hub, each once, in id order', async () => {
    const follower = new EventHub(backends[0]!.store.events);
    follower.startPolling(10);
    const seen: number[] = [];
    follower.subscribeBatches((b) => {
      for (const e of b.events) seen.push(e.id);
    });
    // The hub takes its starting cursor before anything is written.
    const start = await backends[0]!.store.events.maxId();
    while (follower.cursor < start) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 50));
    const writers = backends.map((b) => new EventHub(b.store.events));
    const ids = (
      await Promise.all(
        writers.map(async (hub, w) => {
          const out: number[] = [];
          await Promise.all(
            Array.from({ length: 8 }, async (_, k) => {
              for (let i = 0; i < 62; i++) out.push(await hub.publish('test.event', null, { w, k, i }));
            }),
          );
          return out;
        }),
      )
    ).flat();
    // 3 * 8 * 62 = 1,488 writes, plus 12 more from the follower's own pool
    ids.push(...(await Promise.all(Array.from({ length: 12 }, (_, i) => follower.publish('test.event', null, { i })))));
    const max = Math.max(...ids);
    const deadline = Date.now() + 10_000;
    while (follower.cursor < max && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    follower.stop();
    expect(ids).toHaveLength(1500);
    expect(seen).toEqual([...ids].sort((a, b) => a - b));
  });
});

/**
 * Review: the session-counts cache (src/db/session-counts.ts) keeps a change made
 * by another process on the same database for at most SESSION_COUNTS_TTL_MS, also
 * when the wall clock is stepped back (NTP, an operator) after the counts were
 * cached: an entry stamped "in the future" must not be served until the clock
 * catches up.
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { SESSION_COUNTS_TTL_MS } from '../../src/db/session-counts';
import { createSqliteStore, migrate, openSqlite } from '../../src/db/sqlite';
import { queuedSession, type SessionRecord } from '../../src/db/store';
import { tempHome } from '../helpers/server';

function queued(id: string): SessionRecord {
  return queuedSession({ id, workspace: '/w', prd: 'prd.md', sandbox: true, budgetUsd: 5, createdBy: 'test', createdAt: 1 });
}

describe('session counts cache and the wall clock', () => {
  it('a clock stepped back after the counts were cached does not keep another process’s change hidden past the TTL', async () => {
    const file = path.join(tempHome('loki-counts-clock-'), 'loki.db');
    const db = openSqlite(file);
    migrate(db);
    const otherDb = openSqlite(file);
    const clock = { t: 1_000_000 };
    const here = createSqliteStore(db, { now: () => clock.t });
    const elsewhere = createSqliteStore(otherDb);
    try {
      expect(await here.sessions.counts()).toEqual({});
      // The wall clock is stepped back one hour; then another process queues a session.
      clock.t -= 3_600_000;
      await elsewhere.sessions.insert(queued('ses_other'));
      // Real time keeps going: after the TTL the change must show.
      clock.t += SESSION_COUNTS_TTL_MS;
      expect(await here.sessions.counts()).toEqual({ queued: 1 });
    } finally {
      db.close();
      otherDb.close();
    }
  });
});

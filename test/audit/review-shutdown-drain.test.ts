/**
 * Review: SIGTERM during a request flood, with the server's audit appends on the
 * writer thread. Shutdown drains: every acknowledged request is on disk, the
 * shutdown checkpoint is the last thing written and covers the whole log, and
 * the chain, tree and checkpoints verify.
 */
import { describe, expect, it } from 'vitest';
import { missingRequestIds, openHomeAudit } from '../helpers/audit';
import { floodStatus, spawnServer, tempHome } from '../helpers/server';

describe('SIGTERM under load with the audit writer thread', () => {
  it('drains: no acknowledged entry lost, the shutdown checkpoint signs the final tip', async () => {
    const home = tempHome('loki-review-drain-');
    const srv = await spawnServer({ LOKI_AUDIT_WRITER_THREAD: 'true' }, home);
    const flood = floodStatus(srv.url, 12, 'drain');
    const acked = flood.acked;
    await new Promise((r) => setTimeout(r, 1500));
    srv.child.kill('SIGTERM');
    const exit = await srv.exited;
    await flood.stop();
    expect(exit).toEqual({ code: 0, signal: null });
    expect(acked.length).toBeGreaterThan(50);

    const { db, audit, close } = await openHomeAudit(home, { syncTree: false });
    try {
      const hi = (db.prepare('SELECT max(seq) AS hi FROM audit_log').get() as { hi: number }).hi;
      const last = db.prepare('SELECT kind, size FROM audit_checkpoints ORDER BY id DESC LIMIT 1').get();
      expect(last).toEqual({ kind: 'shutdown', size: hi });
      expect(await audit.verify()).toMatchObject({ valid: true, entries_checked: hi });
      expect(missingRequestIds(db, acked)).toEqual([]);
    } finally {
      await close();
    }
  }, 90_000);
});

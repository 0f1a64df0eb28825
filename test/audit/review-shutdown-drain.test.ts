/**
 * Review: SIGTERM during a request flood, with the server's audit appends on the
 * writer thread. Shutdown drains: every acknowledged request is on disk, the
 * shutdown checkpoint is the last thing written and covers the whole log, and
 * the chain, tree and checkpoints verify.
 */
import { describe, expect, it } from 'vitest';
import { createNodeAudit } from '../../src/audit/node-audit';
import { loadConfig } from '../../src/env';
import { migrate, openSqlite } from '../../src/db/sqlite';
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

    const config = loadConfig({ LOKI_HOME: home }, { home, cwd: home });
    const db = openSqlite(config.dbPath);
    migrate(db);
    const node = await createNodeAudit(config, db, { syncTree: false });
    try {
      const hi = (db.prepare('SELECT max(seq) AS hi FROM audit_log').get() as { hi: number }).hi;
      const last = db.prepare('SELECT kind, size FROM audit_checkpoints ORDER BY id DESC LIMIT 1').get();
      expect(last).toEqual({ kind: 'shutdown', size: hi });
      expect(await node.audit.verify()).toMatchObject({ valid: true, entries_checked: hi });
      const ids = new Set((db.prepare("SELECT json_extract(entry, '$.request.id') AS id FROM audit_log").all() as { id: string }[]).map((r) => r.id));
      expect(acked.filter((id) => !ids.has(id))).toEqual([]);
    } finally {
      await node.close();
      db.close();
    }
  }, 90_000);
});

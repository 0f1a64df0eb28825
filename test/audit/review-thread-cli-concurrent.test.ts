/**
 * Review: the server commits its audit entries on a writer thread (its own
 * connection) while another process (the CLI) appends to the same SQLite file.
 * Flood the server, append from a second process at the same time, SIGKILL the
 * server mid-flood: one linear chain, a Merkle tree that matches it, valid
 * checkpoints, every acknowledged request on disk and every CLI entry present.
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/env';
import { openSqlite } from '../../src/db/sqlite';
import { missingRequestIds, openHomeAudit } from '../helpers/audit';
import { floodStatus, ROOT, spawnServer, tempHome } from '../helpers/server';
import { runTsx } from '../helpers/process';

describe('server writer thread beside a CLI appender, then SIGKILL', () => {
  it('keeps one chain and one tree; no acknowledged entry is lost', async () => {
    const home = tempHome('loki-review-cc-');
    const srv = await spawnServer({ LOKI_AUDIT_WRITER_THREAD: 'true' }, home);
    const flood = floodStatus(srv.url, 12, 'ack');
    const acked = flood.acked;
    const cli = runTsx([path.join(ROOT, 'test/helpers/append-proc.ts'), home, '20000', 'cli']);
    // Kill the server once the CLI is appending (its start-up is slow on a loaded host).
    const watch = openSqlite(loadConfig({ LOKI_HOME: home }, { home, cwd: home }).dbPath);
    const cliSoFar = watch.prepare("SELECT count(*) AS n FROM audit_log WHERE json_extract(entry, '$.actor.name') = 'cli'").pluck();
    // ... and once the server has committed after the CLI's first entry (so the writers
    // overlapped by construction: a loaded host can otherwise let the CLI hold the lock).
    const serverAfterCli = watch
      .prepare(
        "SELECT count(*) FROM audit_log WHERE json_extract(entry, '$.actor.name') IS NOT 'cli' AND seq > (SELECT min(seq) FROM audit_log WHERE json_extract(entry, '$.actor.name') = 'cli')",
      )
      .pluck();
    const until = Date.now() + 60_000;
    while (((cliSoFar.get() as number) < 300 || (serverAfterCli.get() as number) < 1) && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    watch.close();
    srv.child.kill('SIGKILL');
    await flood.stop();
    expect((await srv.exited).signal).toBe('SIGKILL');
    expect(await cli).toMatchObject({ code: 0, out: 'done\n' });
    expect(acked.length).toBeGreaterThan(50);

    const { db, audit, close } = await openHomeAudit(home, { syncTree: false });
    try {
      const { count, lo, hi } = db.prepare('SELECT count(*) AS count, min(seq) AS lo, max(seq) AS hi FROM audit_log').get() as {
        count: number;
        lo: number;
        hi: number;
      };
      expect([lo, hi]).toEqual([1, count]);
      // The tree was extended by every append, from either connection: it covers the whole log.
      expect(await audit.storage.treeStatus()).toMatchObject({ state: 'complete', size: count, logSize: count });
      const v = await audit.verify();
      expect(v).toMatchObject({ valid: true, entries_checked: count, first_invalid_seq: null });
      const cliCount = db.prepare("SELECT count(*) AS n FROM audit_log WHERE json_extract(entry, '$.actor.name') = 'cli'").get() as { n: number };
      expect(cliCount.n).toBe(20000);
      expect(missingRequestIds(db, acked)).toEqual([]);
      // Interleaved: the two writers really overlapped.
      const names = (db.prepare("SELECT json_extract(entry, '$.actor.name') = 'cli' AS c FROM audit_log ORDER BY seq").all() as { c: number }[]).map((r) => r.c);
      let switches = 0;
      for (let i = 1; i < names.length; i++) if (names[i] !== names[i - 1]) switches++;
      expect(switches).toBeGreaterThan(2);
    } finally {
      await close();
    }
  }, 120_000);
});

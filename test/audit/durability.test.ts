import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/env';
import { createNodeAudit } from '../../src/audit/node-audit';
import { migrate, openSqlite } from '../../src/db/sqlite';
import { floodStatus, ROOT, spawnServer, tempHome } from '../helpers/server';
import { runTsx } from '../helpers/process';

async function openAudit(home: string) {
  const config = loadConfig({ LOKI_HOME: home }, { home, cwd: home });
  const db = openSqlite(config.dbPath);
  migrate(db);
  const a = await createNodeAudit(config, db);
  return { db, audit: a.audit, close: () => db.close() };
}

describe('audit durability and concurrency', () => {
  it('three processes appending 2,000 entries each keep one linear chain', async () => {
    const home = tempHome();
    const script = path.join(ROOT, 'test/helpers/append-proc.ts');
    const results = await Promise.all(['a', 'b', 'c'].map((l) => runTsx([script, home, '2000', l, '3'])));
    for (const r of results) expect(r).toMatchObject({ code: 0, out: 'done\n' });
    const { db, audit, close } = await openAudit(home);
    try {
      const v = await audit.verify();
      expect(v).toMatchObject({ valid: true, entries_checked: 6000, first_invalid_seq: null });
      const byLabel = db.prepare("SELECT json_extract(entry, '$.actor.name') AS l, count(*) AS n FROM audit_log GROUP BY l ORDER BY l").all();
      expect(byLabel).toEqual([
        { l: 'a', n: 2000 },
        { l: 'b', n: 2000 },
        { l: 'c', n: 2000 },
      ]);
      expect(db.prepare('SELECT min(seq) AS lo, max(seq) AS hi FROM audit_log').get()).toEqual({ lo: 1, hi: 6000 });
      // interleaved, not three runs one after another
      const labels = (db.prepare("SELECT json_extract(entry, '$.actor.name') AS l FROM audit_log ORDER BY seq").all() as { l: string }[]).map((r) => r.l);
      let switches = 0;
      for (let i = 1; i < labels.length; i++) if (labels[i] !== labels[i - 1]) switches++;
      expect(switches).toBeGreaterThan(2);
    } finally {
      close();
    }
  });

  it('a SIGKILLed server loses no acknowledged entry', async () => {
    const home = tempHome();
    const srv = await spawnServer({}, home);
    const flood = floodStatus(srv.url, 16, 'ack');
    const acked = flood.acked;
    await new Promise((r) => setTimeout(r, 1500));
    srv.child.kill('SIGKILL');
    await flood.stop();
    expect((await srv.exited).signal).toBe('SIGKILL');
    expect(acked.length).toBeGreaterThan(50);

    // Restart on the same database: every acknowledged request is in a chain that verifies.
    const again = await spawnServer({}, home);
    again.child.kill('SIGTERM');
    await again.exited;
    const { db, audit, close } = await openAudit(home);
    try {
      expect((await audit.verify()).valid).toBe(true);
      const ids = new Set((db.prepare("SELECT json_extract(entry, '$.request.id') AS id FROM audit_log").all() as { id: string }[]).map((r) => r.id));
      const missing = acked.filter((id) => !ids.has(id));
      expect(missing).toEqual([]);
    } finally {
      close();
    }
  });
});

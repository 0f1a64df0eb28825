import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { missingRequestIds, openHomeAudit } from '../helpers/audit';
import { floodStatus, ROOT, spawnServer, tempHome } from '../helpers/server';
import { runTsx } from '../helpers/process';

describe('audit durability and concurrency', () => {
  it('three processes appending 2,000 entries each keep one linear chain', async () => {
    const home = tempHome();
    const script = path.join(ROOT, 'test/helpers/append-proc.ts');
    const results = await Promise.all(['a', 'b', 'c'].map((l) => runTsx([script, home, '2000', l, '3'])));
    for (const r of results) expect(r).toMatchObject({ code: 0, out: 'done\n' });
    const { db, audit, close } = await openHomeAudit(home);
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
      await close();
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
    const { db, audit, close } = await openHomeAudit(home);
    try {
      expect((await audit.verify()).valid).toBe(true);
      expect(missingRequestIds(db, acked)).toEqual([]);
    } finally {
      await close();
    }
  });
});

/**
 * Exactly one process produces each periodic checkpoint: three processes append
 * to one PostgreSQL audit log across 1,000, 2,000 and 3,000 entries; each size
 * gets one periodic checkpoint, stored by exactly one of them (the one whose
 * group commit held that seq), and the log verifies.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startPostgres, type TestPostgres } from '../helpers/postgres';
import { ROOT, runCli, tempHome } from '../helpers/server';
import { describePg } from './pg';

function run(args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'test/cluster/append-proc.ts'), ...args], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => {
      out += d;
    });
    child.stderr.on('data', (d) => {
      err += d;
    });
    child.once('close', (code) => resolve({ code, out, err }));
  });
}

describePg('periodic checkpoints with several appending processes', () => {
  let pg: TestPostgres;
  let home: string;
  beforeAll(async () => {
    pg = await startPostgres({ fsync: false });
    home = tempHome('loki-cluster-cp-');
    mkdirSync(path.join(home, 'dashboard'), { recursive: true });
  });
  afterAll(async () => {
    await pg?.stop();
    rmSync(home, { recursive: true, force: true });
  });

  it('3 processes appending 1,100 entries each: one periodic checkpoint at 1,000, 2,000 and 3,000, each stored by one process', async () => {
    const url = await pg.createDatabase();
    // The first run creates the shared keys and the genesis checkpoint.
    const init = await run([url, home, '0', 'init']);
    expect(init.code, init.err).toBe(0);
    expect(JSON.parse(init.out)).toEqual({ genesis: [0] });
    const results = await Promise.all(['a', 'b', 'c'].map((l) => run([url, home, '1100', l, '3'])));
    const periodic: number[] = [];
    for (const r of results) {
      expect(r.code, r.err).toBe(0);
      const produced = JSON.parse(r.out) as Record<string, number[]>;
      expect(Object.keys(produced).filter((k) => k !== 'periodic')).toEqual([]);
      periodic.push(...(produced.periodic ?? []));
    }
    // Each multiple of 1,000 once, over all three processes.
    expect(periodic.sort((x, y) => x - y)).toEqual([1000, 2000, 3000]);
    const rows = await pg.query<{ kind: string; size: string; n: string }>(
      new URL(url).pathname.slice(1),
      'SELECT kind, size, count(*) AS n FROM audit_checkpoints GROUP BY kind, size ORDER BY size, kind',
    );
    expect(rows.map((r) => [r.kind, Number(r.size), Number(r.n)])).toEqual([
      ['genesis', 0, 1],
      ['periodic', 1000, 1],
      ['periodic', 2000, 1],
      ['periodic', 3000, 1],
    ]);
    // The appends of the three interleave, and the chain, tree and checkpoints verify.
    const labels = await pg.query<{ l: string }>(new URL(url).pathname.slice(1), "SELECT entry::json->'actor'->>'name' AS l FROM audit_log ORDER BY seq");
    expect(labels).toHaveLength(3300);
    let switches = 0;
    for (let i = 1; i < labels.length; i++) if (labels[i]!.l !== labels[i - 1]!.l) switches++;
    expect(switches).toBeGreaterThan(2);
    const v = await runCli(['enterprise', 'audit', 'verify', '--json'], { LOKI_HOME: home, LOKI_DATABASE_URL: url }, { timeoutMs: 60_000 });
    expect(v.code, v.stderr).toBe(0);
    expect(JSON.parse(v.stdout)).toMatchObject({ valid: true, entries_checked: 3300, first_invalid_seq: null });
  }, 240_000);
});

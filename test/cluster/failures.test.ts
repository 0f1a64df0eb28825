/**
 * Failures under load, 3 server processes on one PostgreSQL: a server killed with
 * SIGKILL loses nothing it acknowledged and the others keep serving; PostgreSQL
 * restarted (pg_ctl stop -m fast, then start on the same port) makes every server
 * answer 503 audit_unavailable meanwhile, and they recover without a restart.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { auditFacts, type Cluster, loadCluster, startCluster } from './cluster';
import { describePg } from './pg';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describePg('cluster failures (3 servers, one PostgreSQL)', () => {
  let c: Cluster;
  let token: string;
  beforeAll(async () => {
    c = await startCluster({ servers: 3 });
    token = await c.token('load', 'viewer');
  });
  afterAll(() => c?.close());

  it('kill -9 one server under load: nothing it acknowledged is lost, the other two keep serving', async () => {
    const [victim, ...others] = c.servers as [(typeof c.servers)[0], ...typeof c.servers];
    let stop = false;
    let killedAt = 0;
    const afterKill = new Map<string, number>();
    const run = loadCluster({
      urls: () => (killedAt ? c.servers : [victim, ...others]).map((s) => s.url),
      token,
      clients: 24,
      stop: () => stop,
      label: 'kill9',
      onResult: (status, _code, url) => {
        if (killedAt && url !== victim.url && status === 200) afterKill.set(url, (afterKill.get(url) ?? 0) + 1);
      },
    });
    await sleep(2_000);
    victim.child.kill('SIGKILL');
    killedAt = Date.now();
    expect((await victim.exited).signal).toBe('SIGKILL');
    c.servers.shift();
    await sleep(2_000);
    stop = true;
    const out = await run;
    // Requests to the killed server failed at the connection (0); the others answered 200.
    expect([...out.statuses.keys()].filter((k) => k !== 0)).toEqual([200]);
    for (const s of others) expect(afterKill.get(s.url) ?? 0).toBeGreaterThan(10);
    const facts = await auditFacts(c.backend);
    expect(facts.min).toBe(1);
    expect(facts.max).toBe(facts.count);
    expect(out.acked.filter((id) => !facts.requestIds.has(id))).toEqual([]);
    expect(out.acked.length).toBeGreaterThan(50);
    // The log (chain, tree, checkpoints) still verifies.
    const v = await c.cli(['enterprise', 'audit', 'verify', '--json']);
    expect(v.code, v.stderr).toBe(0);
    expect(JSON.parse(v.stdout)).toMatchObject({ valid: true, first_invalid_seq: null });
  }, 180_000);

  it('PostgreSQL restarted under load: 503 audit_unavailable meanwhile, then every server serves again without a restart', async () => {
    let stop = false;
    const run = loadCluster({ urls: () => c.servers.map((s) => s.url), token, clients: 16, stop: () => stop, label: 'pgrestart' });
    await sleep(1_500);
    await c.pg.restart(3_000);
    const backAt = Date.now();
    await sleep(3_000);
    stop = true;
    const out = await run;
    expect(out.statuses.get(503) ?? 0).toBeGreaterThan(0);
    // Nothing but 200 and 503 audit_unavailable: no 500, no dropped connection.
    expect([...out.statuses.keys()].sort()).toEqual([200, 503]);
    expect([...out.codes.keys()]).toEqual(['audit_unavailable']);
    // Every server answers 200 again (within a few seconds of the database's return).
    for (const s of c.servers) {
      let status = 0;
      const until = Date.now() + 15_000;
      while (Date.now() < until) {
        status = (await fetch(`${s.url}/api/status`, { headers: { Authorization: `Bearer ${token}` } })).status;
        if (status === 200) break;
        await sleep(200);
      }
      expect(status).toBe(200);
      expect(s.child.exitCode).toBeNull();
    }
    expect(Date.now() - backAt).toBeLessThan(20_000);
    const facts = await auditFacts(c.backend);
    expect(facts.max).toBe(facts.count);
    expect(out.acked.filter((id) => !facts.requestIds.has(id))).toEqual([]);
    const v = await c.cli(['enterprise', 'audit', 'verify', '--json']);
    expect(v.code, v.stderr).toBe(0);
    expect(JSON.parse(v.stdout)).toMatchObject({ valid: true });
  }, 180_000);
});

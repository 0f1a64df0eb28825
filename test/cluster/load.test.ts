/**
 * 3 server processes and 2 sandbox workers on one PostgreSQL: 30,000 audited
 * requests from 64 concurrent clients spread over the 3 servers, while 40 host
 * sessions (the operator's one allowed host command, no Docker) are created
 * through one server and run by workers attached to the other two. Afterwards
 * the chain, tree and checkpoints verify (`loki enterprise audit verify` on the
 * PostgreSQL URL), seq is gapless, every acknowledged request id is in the log,
 * each multiple of 1,000 has exactly one periodic checkpoint, and each session
 * ran exactly once.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { LokiClient } from '../../src/client';
import { makeWorkspace, providerConfig } from '../sessions/helpers';
import { auditFacts, type Cluster, loadCluster, markerCommand, startCluster } from './cluster';
import { describePg } from './pg';

const REQUESTS = 30_000;
const CLIENTS = 64;
const SESSIONS = 40;
const TERMINAL = new Set(['succeeded', 'failed', 'stopped', 'lost']);

describePg('cluster under load (3 servers, 2 workers, one PostgreSQL)', () => {
  let c: Cluster;
  beforeAll(async () => {
    c = await startCluster({ servers: 3 });
    await c.startWorker(c.servers[0]!, 'wk-a');
    await c.startWorker(c.servers[1]!, 'wk-b');
  });
  afterAll(() => c?.close());

  it('30,000 requests over 3 servers and 40 sessions over 2 workers: one verified, gapless log; each session once', async () => {
    const operator = new LokiClient({ url: c.servers[2]!.url, token: await c.token('operator', 'operator') });
    const viewer = await c.token('load', 'viewer');
    const ids: string[] = [];
    for (let i = 0; i < SESSIONS; i++) {
      const ws = makeWorkspace(c.root, `ws-${i}`, { config: providerConfig(markerCommand(c.runLog)), files: { 'marker.txt': `marker-${i}\n` } });
      ids.push((await operator.createSession({ workspace: ws, prd: 'prd.md', sandbox: false, name: `s-${i}` })).id);
    }
    const t0 = Date.now();
    const out = await loadCluster({ urls: () => c.servers.map((s) => s.url), token: viewer, clients: CLIENTS, total: REQUESTS, label: 'load' });
    const seconds = (Date.now() - t0) / 1000;
    console.log(JSON.stringify({ requests: REQUESTS, clients: CLIENTS, seconds, per_sec: Math.round(REQUESTS / seconds), statuses: Object.fromEntries(out.statuses) }));
    expect(Object.fromEntries(out.statuses)).toEqual({ 200: REQUESTS });
    expect(out.acked).toHaveLength(REQUESTS);

    // The sessions: each ends succeeded, ran by one of the two workers, exactly once.
    const until = Date.now() + 180_000;
    let views = await Promise.all(ids.map((id) => operator.getSession(id)));
    while (views.some((v) => !TERMINAL.has(v.status)) && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 500));
      views = await Promise.all(ids.map((id) => operator.getSession(id)));
    }
    expect(views.map((v) => v.status)).toEqual(ids.map(() => 'succeeded'));
    expect(new Set(views.map((v) => v.worker_id))).toEqual(new Set(['wk-a', 'wk-b']));
    const ran = readFileSync(c.runLog, 'utf8').trim().split('\n').sort();
    expect(ran).toEqual(Array.from({ length: SESSIONS }, (_, i) => `marker-${i}`).sort());
    const ends = await c.backend.pool.query<{ id: string; n: string }>(
      "SELECT entry::json->'resource'->>'id' AS id, count(*) AS n FROM audit_log WHERE entry::json->>'action' = 'session.end' GROUP BY 1",
    );
    expect(new Map(ends.rows.map((r) => [r.id, Number(r.n)]))).toEqual(new Map(ids.map((id) => [id, 1])));

    // The log: gapless from 1, every acknowledged request in it, one periodic checkpoint per 1,000.
    const facts = await auditFacts(c.backend);
    expect(facts.min).toBe(1);
    expect(facts.max).toBe(facts.count);
    expect(facts.count).toBeGreaterThan(REQUESTS);
    expect(out.acked.filter((id) => !facts.requestIds.has(id))).toEqual([]);
    const cps = await c.backend.pool.query<{ size: number; n: string }>(
      "SELECT size, count(*) AS n FROM audit_checkpoints WHERE kind = 'periodic' AND size % 1000 = 0 GROUP BY size ORDER BY size",
    );
    const multiples = Array.from({ length: Math.floor(facts.max / 1000) }, (_, i) => (i + 1) * 1000);
    expect(cps.rows.map((r) => [Number(r.size), Number(r.n)])).toEqual(multiples.map((m) => [m, 1]));
    const v = await c.cli(['enterprise', 'audit', 'verify', '--json']);
    expect(v.code, v.stderr).toBe(0);
    // The workers' claim polls (and the verification itself) keep appending meanwhile.
    const verified = JSON.parse(v.stdout) as { valid: boolean; first_invalid_seq: number | null; entries_checked: number };
    expect(verified).toMatchObject({ valid: true, first_invalid_seq: null });
    expect(verified.entries_checked).toBeGreaterThanOrEqual(facts.count);
  }, 900_000);
});

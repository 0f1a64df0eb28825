/**
 * The audit log on a real PostgreSQL: several processes append to one chain and
 * one tree; migrations run concurrently; a server whose database restarts
 * answers 503 audit_unavailable meanwhile and recovers without a restart.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPgNodeAudit } from '../../src/audit/node-audit';
import { openPostgresBackend } from '../../src/db/pg';
import { loadConfig } from '../../src/env';
import { postgresMissing, startPostgres, type TestPostgres } from '../helpers/postgres';
import { ROOT, runCli, startTestServer, tempHome } from '../helpers/server';
import { runTsx } from '../helpers/process';
import { makeToken } from '../helpers/tokens';

const missing = postgresMissing();
if (missing && process.env.CI === 'true') throw new Error(missing);

async function openAudit(url: string, home: string) {
  const config = loadConfig({ LOKI_HOME: home, LOKI_DATABASE_URL: url }, { home, cwd: home });
  const backend = await openPostgresBackend(config.database!);
  const a = await createPgNodeAudit(config, backend.auditStorage);
  return {
    backend,
    audit: a.audit,
    async close() {
      await a.audit.drain();
      await backend.close();
    },
  };
}

describe.skipIf(missing !== null)(`audit log on PostgreSQL${missing ? ` (skipped: ${missing})` : ''}`, () => {
  let pgs: TestPostgres;
  beforeAll(async () => {
    pgs = await startPostgres();
  });
  afterAll(async () => {
    await pgs?.stop();
  });

  it('three processes appending 700 entries each keep one linear, gapless chain, one tree, one checkpoint at 1000', async () => {
    const url = await pgs.createDatabase();
    const home = tempHome('loki-pg-append-');
    // Keys and the genesis checkpoint first (as the first server start would).
    const first = await openAudit(url, home);
    await first.close();
    const script = path.join(ROOT, 'test/audit/pg-append-proc.ts');
    const results = await Promise.all(['a', 'b', 'c'].map((l) => runTsx([script, url, home, '700', l, '3'])));
    for (const r of results) expect(r).toMatchObject({ code: 0, out: 'done\n' });
    const { backend, audit, close } = await openAudit(url, home);
    try {
      const v = await audit.verify();
      expect(v).toMatchObject({ valid: true, entries_checked: 2100, first_invalid_seq: null, reason: null });
      expect(await backend.auditStorage.bounds()).toEqual({ first: 1, last: 2100, count: 2100 });
      expect(await backend.auditStorage.treeStatus()).toEqual({ size: 2100, logSize: 2100, state: 'complete' });
      const byLabel = await pgs.query(url.split('/').pop()!, "SELECT entry::jsonb -> 'actor' ->> 'name' AS l, count(*)::int AS n FROM audit_log GROUP BY l ORDER BY l");
      expect(byLabel).toEqual([
        { l: 'a', n: 700 },
        { l: 'b', n: 700 },
        { l: 'c', n: 700 },
      ]);
      // Each process's entries are in its own order, and the processes interleave.
      const rows = await pgs.query<{ l: string; i: number }>(
        url.split('/').pop()!,
        "SELECT entry::jsonb -> 'actor' ->> 'name' AS l, (entry::jsonb -> 'details' ->> 'i')::int AS i FROM audit_log ORDER BY seq",
      );
      const next: Record<string, number> = { a: 1, b: 1, c: 1 };
      let switches = 0;
      for (const [k, r] of rows.entries()) {
        expect(r.i).toBe(next[r.l]);
        next[r.l]! += 1;
        if (k > 0 && rows[k - 1]!.l !== r.l) switches++;
      }
      expect(switches).toBeGreaterThan(2);
      // Crossing seq 1000 and 2000 made exactly one periodic checkpoint each (one process owns each seq).
      const cps = await pgs.query<{ size: number; n: number }>(
        url.split('/').pop()!,
        "SELECT size::int AS size, count(*)::int AS n FROM audit_checkpoints WHERE kind = 'periodic' GROUP BY size ORDER BY size",
      );
      expect(cps).toEqual([
        { size: 1000, n: 1 },
        { size: 2000, n: 1 },
      ]);
      const notes = await backend.auditStorage.checkpoints();
      expect(notes.filter((c) => c.kind === 'genesis')).toHaveLength(1);
      expect(notes.find((c) => c.size === 1000)?.note).toMatch(/\n1000\n/);
    } finally {
      await close();
    }
  });

  it('a periodic checkpoint of one size is stored once, whichever servers sign it', async () => {
    const url = await pgs.createDatabase();
    const home = tempHome('loki-pg-cp-');
    const a = await openAudit(url, home);
    const b = await openAudit(url, home);
    try {
      await a.audit.append({ ts: Date.now(), action: 'test.append', actor: { type: 'system', id: null, name: 'a' }, outcome: { status: null, success: true, error: null } });
      // Both servers' timers fire on the same tip.
      await Promise.all([a.audit.checkpoint('periodic'), b.audit.checkpoint('periodic'), a.audit.checkpoint('periodic')]);
      const cps = await a.backend.auditStorage.checkpoints();
      expect(cps.filter((c) => c.kind === 'periodic').map((c) => c.size)).toEqual([1]);
      expect(await a.audit.verify()).toMatchObject({ valid: true, entries_checked: 1 });
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('`loki db migrate` run twice at once: one applies, the other finds it done; the schema is there once', async () => {
    const url = await pgs.createDatabase();
    const home = tempHome('loki-pg-migrate-');
    const env = { LOKI_HOME: home, LOKI_DATABASE_URL: url };
    const [one, two] = await Promise.all([runCli(['db', 'migrate'], env), runCli(['db', 'migrate'], env)]);
    expect([one.code, two.code]).toEqual([0, 0]);
    const outs = [one.stdout, two.stdout].sort();
    const where = url.replace('postgres://postgres@', 'postgres://postgres@');
    expect(outs).toEqual([`applied 1 migration(s) to ${where}: 0000_init\n`, `database ${where} is up to date\n`].sort());
    expect(one.stderr + two.stderr).toBe('');
    const db = url.split('/').pop()!;
    expect(await pgs.query(db, 'SELECT tag FROM _migrations')).toEqual([{ tag: '0000_init' }]);
    // And again later: nothing to do.
    const again = await runCli(['db', 'migrate'], env);
    expect(again).toMatchObject({ code: 0, stdout: `database ${where} is up to date\n` });
  });

  it('a bad LOKI_DATABASE_URL is one line naming the variable, without the password', async () => {
    const r = await runCli(['db', 'migrate'], { LOKI_HOME: tempHome(), LOKI_DATABASE_URL: 'mysql://u:s3cretpw@127.0.0.1/db' });
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(
      'loki: LOKI_DATABASE_URL="mysql://u:[REDACTED]@127.0.0.1/db" is invalid: expected a PostgreSQL URL postgres://USER:PASSWORD@HOST:PORT/DATABASE (query parameters such as ?sslmode=require allowed)\n',
    );
  });

  it('with auth on and PostgreSQL down, a token lookup that fails is a 503, and the log holds neither the query nor the token hash', async () => {
    const url = await pgs.createDatabase();
    const s = await startTestServer({ LOKI_DATABASE_URL: url, LOKI_ENTERPRISE_AUTH: 'true', LOKI_DATABASE_STATEMENT_TIMEOUT_MS: '5000' }, { homePrefix: 'loki-pg-auth-' });
    try {
      const { token } = await makeToken(s, 'pg-down', 'viewer');
      const auth = { authorization: `Bearer ${token}` };
      expect((await s.req('/api/status', { headers: auth })).status).toBe(200);
      // A valid token the server has not looked up yet (its lookup must reach the database).
      const { createHash } = await import('node:crypto');
      const unseen = (await makeToken(s, 'pg-down-unseen', 'viewer')).token;
      pgs.stopServer();
      const r = await s.req('/api/status', { headers: { authorization: `Bearer ${unseen}` } });
      expect(r.status).toBe(503);
      expect(((await r.json()) as { error: { code: string } }).error.code).toMatch(/^(service_unavailable|audit_unavailable)$/);
      pgs.startServer();
      const deadline = Date.now() + 20_000;
      let status = 0;
      while (status !== 200 && Date.now() < deadline) {
        status = (await s.req('/api/status', { headers: auth })).status;
        if (status !== 200) await new Promise((res) => setTimeout(res, 100));
      }
      expect(status).toBe(200);
      const logged = JSON.stringify(s.logger.lines);
      expect(logged).not.toContain('Failed query');
      expect(logged).not.toContain('params:');
      for (const t of [token, unseen]) expect(logged).not.toContain(createHash('sha256').update(t).digest('hex'));
      expect(s.logger.lines.some((l) => l.msg === 'unhandled error')).toBe(false);
    } finally {
      await s.stop();
    }
  });

  it('a server whose PostgreSQL restarts under load answers 503 audit_unavailable (and /health 503), then recovers by itself; nothing acknowledged is lost', async () => {
    const url = await pgs.createDatabase();
    const s = await startTestServer({ LOKI_DATABASE_URL: url, LOKI_DATABASE_STATEMENT_TIMEOUT_MS: '5000' }, { homePrefix: 'loki-pg-restart-' });
    const acked: string[] = [];
    const statuses = new Map<number, number>();
    const codes = new Set<string>();
    let stop = false;
    let n = 0;
    const client = async () => {
      while (!stop) {
        const id = `pgr-${n++}-${Math.random().toString(36).slice(2, 10)}`;
        const r = await s.req('/api/enterprise/status', { headers: { 'X-Request-Id': id } }).catch((err: Error) => {
          codes.add(`fetch failed: ${err.message}`);
          return null;
        });
        if (!r) continue;
        statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
        if (r.status === 200) acked.push(id);
        const body = (await r.json()) as { error?: { code: string } };
        if (body.error) codes.add(`${r.status} ${body.error.code}`);
        await new Promise((res) => setTimeout(res, 2));
      }
    };
    try {
      const clients = Array.from({ length: 8 }, client);
      await new Promise((r) => setTimeout(r, 500));
      const before = acked.length;
      expect(before).toBeGreaterThan(0);
      pgs.stopServer();
      // While it is down: refusals, never a success, and /health says so.
      await new Promise((r) => setTimeout(r, 700));
      const whileDown = acked.length;
      await new Promise((r) => setTimeout(r, 700));
      expect(acked.length).toBe(whileDown);
      const health = await s.req('/health');
      expect(health.status).toBe(503);
      expect(await health.json()).toEqual({ status: 'unhealthy', service: 'loki-dashboard', database: 'down' });
      pgs.startServer();
      // Recovery without restarting the server.
      const deadline = Date.now() + 20_000;
      while (acked.length === whileDown && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(acked.length).toBeGreaterThan(whileDown);
      await new Promise((r) => setTimeout(r, 300));
      stop = true;
      await Promise.all(clients);
      expect([...codes]).toEqual(['503 audit_unavailable']);
      expect(statuses.get(503)).toBeGreaterThan(0);
      expect((await s.req('/health')).status).toBe(200);
      // Every acknowledged request is in the log, and the log verifies.
      const ids = new Set(
        (await s.sql<{ id: string }>("SELECT entry::jsonb -> 'request' ->> 'id' AS id FROM audit_log WHERE action = 'http.request' OR entry::jsonb -> 'request' IS NOT NULL")).map((r) => r.id),
      );
      const lost = acked.filter((id) => !ids.has(id));
      expect(lost).toEqual([]);
      const v = await s.req('/api/enterprise/audit/verify');
      expect(v.status).toBe(200);
      expect(await v.json()).toMatchObject({ valid: true, first_invalid_seq: null });
      const b = await s.runtime.audit.storage.bounds();
      expect(b.last! - b.first! + 1).toBe(b.count);
    } finally {
      stop = true;
      await s.stop();
    }
  });
});

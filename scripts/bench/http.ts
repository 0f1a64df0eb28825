/**
 * npm run bench:http — GET /api/status on three servers measured in the same run:
 *   trivial  a one-route Hono app (`c.json({ ok: true })`, no middleware)
 *   bare     Hono with the dashboard's own system handlers, no middleware
 *   full     the real server with token auth ON (a viewer token made for the run)
 *            and the audit log in its default configuration (LOKI_AUDIT_READS=all:
 *            every request durably audited before it is answered)
 * Each run measures every server once (`--seconds`, after a 1 s warm-up), in an
 * order rotated from run to run so drift on a shared machine hits them alike.
 * Ratios full/bare and bare/trivial are computed within each run; the JSON gives
 * every run, the median and the spread (min–max) over `--runs` (default 5).
 * `--extras` adds three more servers to each run, to show where the limit is: the
 * full stack with LOKI_AUDIT_READS=failures, with the audit log disabled, and with
 * the audit commits on a writer thread (LOKI_AUDIT_WRITER_THREAD=true).
 */
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createToken } from '../../src/auth/token-service';
import { createSqliteStore, migrate, openSqlite } from '../../src/db/sqlite';
import { type LoadResult, load, numberArg, startTarget, type Target, type TargetMode } from './lib';

const seconds = numberArg('seconds', 10);
const connections = numberArg('connections', 50);
const runs = numberArg('runs', 5);
const extras = process.argv.includes('--extras');

// The full stack's home holds a real viewer token, created the way the CLI does.
const fullHome = mkdtempSync(path.join(os.tmpdir(), 'loki-bench-http-'));
const db = openSqlite(path.join(fullHome, 'dashboard', 'loki.db'));
migrate(db);
const { plaintext: token } = await createToken(createSqliteStore(db).tokens, { name: 'bench', role: 'viewer', createdBy: 'bench' }, Date.now());
db.close();
const auth = { authorization: `Bearer ${token}` };

interface Server {
  name: string;
  mode: TargetMode;
  env: Record<string, string>;
  headers: Record<string, string>;
}
const servers: Server[] = [
  { name: 'trivial', mode: 'trivial', env: {}, headers: {} },
  { name: 'bare', mode: 'bare', env: { LOKI_AUDIT_DISABLED: 'true' }, headers: {} },
  { name: 'full', mode: 'full', env: { LOKI_HOME: fullHome, LOKI_ENTERPRISE_AUTH: 'true' }, headers: auth },
];
if (extras) {
  const home = (name: string) => mkdtempSync(path.join(os.tmpdir(), `loki-bench-http-${name}-`));
  // Separate homes (each with its own copy of the token) so no two servers share a database file.
  for (const [name, env] of [
    ['full_reads_failures', { LOKI_AUDIT_READS: 'failures' }],
    ['full_audit_off', { LOKI_AUDIT_DISABLED: 'true' }],
    ['full_writer_thread', { LOKI_AUDIT_WRITER_THREAD: 'true' }],
  ] as const) {
    const h = home(name);
    const d = openSqlite(path.join(h, 'dashboard', 'loki.db'));
    migrate(d);
    const t = await createToken(createSqliteStore(d).tokens, { name: 'bench', role: 'viewer', createdBy: 'bench' }, Date.now());
    d.close();
    servers.push({ name, mode: 'full', env: { LOKI_HOME: h, LOKI_ENTERPRISE_AUTH: 'true', ...env }, headers: { authorization: `Bearer ${t.plaintext}` } });
  }
}

const targets = new Map<string, Target>();
try {
  for (const s of servers) targets.set(s.name, await startTarget(s.mode, s.env));
  const perRun: Record<string, LoadResult>[] = [];
  for (let r = 0; r < runs; r++) {
    const order = servers.map((_, i) => servers[(i + r) % servers.length]!);
    const results: Record<string, LoadResult> = {};
    for (const s of order) {
      const t = targets.get(s.name)!;
      await load(t.port, '/api/status', { connections, seconds: 1, headers: s.headers }); // warm-up
      results[s.name] = await load(t.port, '/api/status', { connections, seconds, headers: s.headers });
      if (results[s.name]!.non_2xx > 0 || results[s.name]!.errors > 0) {
        throw new Error(`${s.name}: ${results[s.name]!.non_2xx} non-2xx answers, ${results[s.name]!.errors} errors`);
      }
    }
    perRun.push(results);
    process.stderr.write(
      `run ${r + 1}/${runs}: ${servers.map((s) => `${s.name} ${results[s.name]!.requests_per_sec}/s`).join(', ')}; full/bare ${ratio(results.full!, results.bare!)}, bare/trivial ${ratio(results.bare!, results.trivial!)}\n`,
    );
  }

  const ratios: Record<string, number[]> = {
    full_vs_bare: perRun.map((x) => ratio(x.full!, x.bare!)),
    bare_vs_trivial: perRun.map((x) => ratio(x.bare!, x.trivial!)),
  };
  for (const s of servers.slice(3)) ratios[`${s.name}_vs_bare`] = perRun.map((x) => ratio(x[s.name]!, x.bare!));
  const summary = (xs: number[]) => ({ median: median(xs), min: Math.min(...xs), max: Math.max(...xs) });
  const result = {
    benchmark: 'http',
    endpoint: 'GET /api/status',
    connections,
    seconds,
    runs,
    servers: Object.fromEntries(servers.map((s) => [s.name, summary(perRun.map((x) => x[s.name]!.requests_per_sec))])),
    ratios: Object.fromEntries(Object.entries(ratios).map(([k, xs]) => [k, { ...summary(xs), runs: xs }])),
    per_run: perRun.map((x) => Object.fromEntries(Object.entries(x).map(([k, v]) => [k, { rps: v.requests_per_sec, p50_ms: v.latency_p50_ms, p99_ms: v.latency_p99_ms }]))),
    targets: { full_vs_bare: '>= 0.85 (every run)', bare_vs_trivial: '>= 0.6 (every run)' },
    target_met: {
      full_vs_bare: ratios.full_vs_bare!.every((x) => x >= 0.85),
      bare_vs_trivial: ratios.bare_vs_trivial!.every((x) => x >= 0.6),
    },
  };
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
} finally {
  for (const t of targets.values()) await t.stop();
}

function ratio(a: LoadResult, b: LoadResult): number {
  return Number((a.requests_per_sec / b.requests_per_sec).toFixed(3));
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : Number(((s[m - 1]! + s[m]!) / 2).toFixed(3));
}

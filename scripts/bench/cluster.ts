/**
 * npm run bench:cluster — several servers on one PostgreSQL (issue 12), JSON on stdout:
 *  1. durable audited requests/s (GET /api/status with a viewer token; every
 *     request's audit entry committed with synchronous_commit=on before the
 *     answer) with 1, 2 and 3 server processes on one database, the load spread
 *     evenly (autocannon, --connections in total, default 64), and the ratio of
 *     3 servers to 1 (target: at least 1.8); the same for GET /api/enterprise/status
 *     (`audit_only_route`: the token check and the audit entry, no other query);
 *  2. audit appends/s in one process (64 concurrent writers, group commit);
 *  3. cross-server event latency: an event written through server A (POST
 *     /api/enterprise/tokens publishes token_created) until an SSE client on
 *     server B has it, p50/p99 over --events (default 100);
 *  4. the same single-server figures on SQLite for comparison.
 * PostgreSQL is a real one started for the run (Debian's packages, fsync on:
 * test/helpers/postgres.ts) on this machine, like the servers and the load
 * generator: `cpu_busy` (share of all cores busy during each load) shows when
 * the machine, not the design, is the limit. Options: --seconds S (default 10), --connections N,
 * --events N, --appends N (default 20000).
 */
import { mkdirSync, mkdtempSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import autocannon from 'autocannon';
import { createNodeAudit, createPgNodeAudit } from '../../src/audit/node-audit';
import { createToken } from '../../src/auth/token-service';
import type { Role } from '../../src/auth/roles';
import { openPostgresBackend } from '../../src/db/pg';
import { createSqliteStore, migrate, openSqlite } from '../../src/db/sqlite';
import { loadConfig } from '../../src/env';
import { startPostgres } from '../../test/helpers/postgres';
import { benchEntry as entry, numberArg, startTarget, type Target } from './lib';

const SECONDS = numberArg('seconds', 10);
const CONNECTIONS = numberArg('connections', 64);
const EVENTS = numberArg('events', 100);
const APPENDS = numberArg('appends', 20_000);
const WRITERS = 64;

const pgServer = await startPostgres();

interface Setup {
  env: Record<string, string>;
  token(name: string, role: Role): Promise<string>;
  close(): Promise<void>;
}

/** A fresh database (PostgreSQL) or home (SQLite), with a key directory the servers share. */
async function setup(kind: 'postgres' | 'sqlite'): Promise<Setup> {
  const home = mkdtempSync(path.join(os.tmpdir(), 'loki-bench-cluster-'));
  mkdirSync(path.join(home, 'dashboard'), { recursive: true });
  if (kind === 'sqlite') {
    const config = loadConfig({ LOKI_HOME: home }, { home, cwd: home });
    const db = openSqlite(config.dbPath);
    migrate(db);
    const store = createSqliteStore(db);
    return {
      env: { LOKI_HOME: home, LOKI_ENTERPRISE_AUTH: 'true' },
      token: async (name, role) => (await createToken(store.tokens, { name, role, createdBy: 'bench' }, Date.now())).plaintext,
      close: async () => {
        db.close();
      },
    };
  }
  const url = await pgServer.createDatabase();
  const backend = await openPostgresBackend({ url, poolSize: 2, statementTimeoutMs: 0 });
  return {
    env: { LOKI_DATABASE_URL: url, LOKI_DB: path.join(home, 'dashboard', 'loki.db'), LOKI_ENTERPRISE_AUTH: 'true' },
    token: async (name, role) => (await createToken(backend.store.tokens, { name, role, createdBy: 'bench' }, Date.now())).plaintext,
    close: () => backend.close(),
  };
}

/** n servers on one store; the first creates the audit keys, the others share them. */
async function servers(s: Setup, n: number): Promise<Target[]> {
  const first = await startTarget('full', s.env);
  const rest = await Promise.all(Array.from({ length: n - 1 }, () => startTarget('full', s.env)));
  return [first, ...rest];
}

/** Busy share of all cores since `from` (1 = every core busy: more server processes cannot add throughput). */
function cpuTimes() {
  let idle = 0;
  let total = 0;
  for (const c of os.cpus()) {
    idle += c.times.idle;
    total += c.times.user + c.times.nice + c.times.sys + c.times.irq + c.times.idle;
  }
  return { idle, total };
}

async function loadAll(targets: Target[], token: string, seconds: number, pathname = '/api/status') {
  const per = Math.max(1, Math.round(CONNECTIONS / targets.length));
  const cpu0 = cpuTimes();
  const runs = await Promise.all(
    targets.map((t) =>
      autocannon({
        url: `http://127.0.0.1:${t.port}${pathname}`,
        connections: per,
        duration: seconds,
        headers: { host: `127.0.0.1:${t.port}`, authorization: `Bearer ${token}` },
      }),
    ),
  );
  const cpu1 = cpuTimes();
  const ok = runs.reduce((a, r) => a + r.requests.total - r.non2xx, 0);
  return {
    servers: targets.length,
    connections: per * targets.length,
    requests_per_sec: Math.round(runs.reduce((a, r) => a + r.requests.average, 0)),
    ok_requests: ok,
    non_2xx: runs.reduce((a, r) => a + r.non2xx, 0),
    errors: runs.reduce((a, r) => a + r.errors, 0),
    latency_p50_ms: Math.max(...runs.map((r) => r.latency.p50)),
    latency_p99_ms: Math.max(...runs.map((r) => r.latency.p99)),
    cpu_busy: Number((1 - (cpu1.idle - cpu0.idle) / Math.max(1, cpu1.total - cpu0.total)).toFixed(3)),
  };
}

async function httpFigures(kind: 'postgres' | 'sqlite', n: number) {
  const s = await setup(kind);
  const token = await s.token('bench', 'viewer');
  const targets = await servers(s, n);
  try {
    await loadAll(targets, token, 2); // warm-up
    const status = await loadAll(targets, token, SECONDS);
    // The cheapest audited route: token check and the durable entry, no other query.
    const auditOnly = await loadAll(targets, token, SECONDS, '/api/enterprise/status');
    return { ...status, audit_only_route: auditOnly };
  } finally {
    await Promise.all(targets.map((t) => t.stop()));
    await s.close();
  }
}


async function appendsPerSec(kind: 'postgres' | 'sqlite') {
  const home = mkdtempSync(path.join(os.tmpdir(), 'loki-bench-cluster-audit-'));
  const url = kind === 'postgres' ? await pgServer.createDatabase() : undefined;
  const config = loadConfig({ LOKI_HOME: home, ...(url ? { LOKI_DATABASE_URL: url } : {}) }, { home, cwd: home });
  let closeStore: () => Promise<void>;
  let made: Awaited<ReturnType<typeof createNodeAudit>>;
  if (config.database) {
    const backend = await openPostgresBackend(config.database);
    made = await createPgNodeAudit(config, backend.auditStorage);
    closeStore = () => backend.close();
  } else {
    const db = openSqlite(config.dbPath);
    migrate(db);
    made = await createNodeAudit(config, db);
    closeStore = async () => {
      db.close();
    };
  }
  let next = 1;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: WRITERS }, async () => {
      while (next <= APPENDS) await made.audit.append(entry(next++));
    }),
  );
  const s = (performance.now() - t0) / 1000;
  await made.close();
  await closeStore();
  return { writers: WRITERS, appended: APPENDS, seconds: Number(s.toFixed(2)), per_sec: Math.round(APPENDS / s) };
}

/** Milliseconds from each write's answer on server A until an SSE client on server B has the event. */
async function eventLatency() {
  const s = await setup('postgres');
  const admin = await s.token('bench-admin', 'admin');
  const viewer = await s.token('bench-viewer', 'viewer');
  const [a, b] = await servers(s, 2);
  const arrived = new Map<string, number>();
  const req = http.get({
    host: '127.0.0.1',
    port: b!.port,
    path: '/api/events?types=token_created',
    headers: { authorization: `Bearer ${viewer}`, accept: 'text/event-stream' },
  });
  await new Promise<void>((resolve, reject) => {
    req.once('response', (res) => {
      if (res.statusCode !== 200) reject(new Error(`SSE answered ${res.statusCode}`));
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        buf += d;
        for (let end = buf.indexOf('\n\n'); end >= 0; end = buf.indexOf('\n\n')) {
          const frame = buf.slice(0, end);
          buf = buf.slice(end + 2);
          const data = frame.split('\n').find((l) => l.startsWith('data: '));
          if (data && !frame.includes('event: ')) {
            const name = (JSON.parse(data.slice(6)) as { data?: { name?: string } }).data?.name;
            if (name) arrived.set(name, performance.now());
          }
        }
      });
      resolve();
    });
    req.once('error', reject);
  });
  await new Promise((r) => setTimeout(r, 500));
  const lat: number[] = [];
  try {
    for (let i = 0; i < EVENTS; i++) {
      const name = `lat-${i}`;
      const r = await fetch(`http://127.0.0.1:${a!.port}/api/enterprise/tokens`, {
        method: 'POST',
        headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
        body: JSON.stringify({ name, role: 'viewer' }),
      });
      if (r.status !== 201) throw new Error(`token create answered ${r.status}`);
      const written = performance.now();
      const until = written + 10_000;
      while (!arrived.has(name) && performance.now() < until) await new Promise((res) => setTimeout(res, 1));
      lat.push(arrived.has(name) ? Math.max(0, arrived.get(name)! - written) : Number.POSITIVE_INFINITY);
      // Writes land at random points of the hubs' 250 ms poll.
      await new Promise((res) => setTimeout(res, Math.random() * 250));
    }
  } finally {
    req.destroy();
    await Promise.all([a!.stop(), b!.stop()]);
    await s.close();
  }
  const sorted = [...lat].sort((x, y) => x - y);
  const pct = (p: number) => Number(sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!.toFixed(1));
  return { events: EVENTS, transport: 'sse', p50_ms: pct(50), p99_ms: pct(99), max_ms: pct(100), lost: lat.filter((x) => !Number.isFinite(x)).length };
}

try {
  const pg1 = await httpFigures('postgres', 1);
  const pg2 = await httpFigures('postgres', 2);
  const pg3 = await httpFigures('postgres', 3);
  const pgAppends = await appendsPerSec('postgres');
  const latency = await eventLatency();
  const sqlite1 = await httpFigures('sqlite', 1);
  const sqliteAppends = await appendsPerSec('sqlite');
  const ratio = Number((pg3.requests_per_sec / pg1.requests_per_sec).toFixed(3));
  const result = {
    benchmark: 'cluster',
    machine: { cpus: os.availableParallelism(), loadavg_1m: Number(os.loadavg()[0]!.toFixed(2)) },
    durable: 'PostgreSQL synchronous_commit=on, fsync on; SQLite WAL + synchronous=FULL',
    postgres: {
      audited_requests: {
        servers_1: pg1,
        servers_2: pg2,
        servers_3: pg3,
        ratio_3_to_1: ratio,
        ratio_2_to_1: Number((pg2.requests_per_sec / pg1.requests_per_sec).toFixed(3)),
        audit_only_ratio_3_to_1: Number((pg3.audit_only_route.requests_per_sec / pg1.audit_only_route.requests_per_sec).toFixed(3)),
      },
      audit_appends: pgAppends,
      cross_server_event_latency: latency,
    },
    sqlite: { audited_requests: { servers_1: sqlite1 }, audit_appends: sqliteAppends },
    targets: { ratio_3_to_1: 1.8, event_latency_ms: 1000 },
    met: { ratio_3_to_1: ratio >= 1.8, event_latency_p99: latency.p99_ms < 1000 },
  };
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
} finally {
  await pgServer.stop();
}

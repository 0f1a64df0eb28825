/**
 * A cluster for the multi-server tests: one real PostgreSQL (test/helpers/postgres.ts),
 * N `loki dashboard` processes on it (spawnServer, LOKI_DATABASE_URL in their
 * environment) sharing one audit signing key and note key (LOKI_DB points every
 * server's key directory at one place, as a deployment copies the key files to
 * each server), tokens made straight in the database, and a load generator that
 * records every acknowledged X-Request-Id.
 */
import { chmodSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createToken } from '../../src/auth/token-service';
import type { Role } from '../../src/auth/roles';
import { openPostgresBackend, type PostgresBackend } from '../../src/db/pg';
import { startPostgres, type TestPostgres } from '../helpers/postgres';
import { runCli, type SpawnedServer, spawnServer, tempHome } from '../helpers/server';
import { type SpawnedWorker, spawnWorker } from '../helpers/worker';
import { tempRoot } from '../sessions/helpers';

/** The one host command the cluster's host sessions may run: it appends the workspace's marker to a shared file. */
export function markerCommand(runLog: string): string[] {
  return ['/bin/sh', '-c', `cat marker.txt >> ${runLog}`];
}

export interface Cluster {
  pg: TestPostgres;
  url: string;
  /** The directory holding the shared audit keys (LOKI_DB's directory) and the policy file. */
  keys: string;
  root: string;
  runLog: string;
  backend: PostgresBackend;
  servers: SpawnedServer[];
  workers: SpawnedWorker[];
  env: Record<string, string>;
  token(name: string, role: Role, workerId?: string): Promise<string>;
  startServer(extra?: Record<string, string>): Promise<SpawnedServer>;
  startWorker(server: SpawnedServer, id: string, extra?: Record<string, string>): Promise<SpawnedWorker>;
  /** `loki …` against the cluster's database (the CLI works on the database directly). */
  cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }>;
  close(): Promise<void>;
}

export async function startCluster(opts: { servers: number; env?: Record<string, string>; pg?: TestPostgres }): Promise<Cluster> {
  const pg = opts.pg ?? (await startPostgres());
  const url = await pg.createDatabase();
  const keys = tempHome('loki-cluster-keys-');
  mkdirSync(path.join(keys, 'dashboard'), { recursive: true, mode: 0o700 });
  const root = tempRoot('loki-cluster-roots-');
  const runLog = path.join(tempHome('loki-cluster-runs-'), 'ran.log');
  writeFileSync(runLog, '');
  chmodSync(runLog, 0o666);
  const policyFile = path.join(keys, 'policy.yaml');
  writeFileSync(policyFile, `host_commands:\n  - ${JSON.stringify(markerCommand(runLog))}\n`);
  chmodSync(policyFile, 0o600);
  const env: Record<string, string> = {
    LOKI_DATABASE_URL: url,
    LOKI_DB: path.join(keys, 'dashboard', 'loki.db'),
    LOKI_ENTERPRISE_AUTH: 'true',
    LOKI_WORKSPACE_ROOTS: root,
    LOKI_POLICY_FILE: policyFile,
    LOKI_ALLOW_HOST_SESSIONS: 'true',
    ...(opts.env ?? {}),
  };
  const backend = await openPostgresBackend({ url, poolSize: 2, statementTimeoutMs: 10_000 });
  const servers: SpawnedServer[] = [];
  const workers: SpawnedWorker[] = [];
  const startServer = async (extra: Record<string, string> = {}) => {
    const s = await spawnServer({ ...env, ...extra }, tempHome(), { startTimeoutMs: 120_000 });
    servers.push(s);
    return s;
  };
  // The first server creates the audit keys (and the log's genesis checkpoint); the others find them.
  try {
    await startServer();
    await Promise.all(Array.from({ length: opts.servers - 1 }, () => startServer()));
  } catch (err) {
    // Nothing is left running when the cluster does not come up.
    for (const s of servers) s.child.kill('SIGKILL');
    await backend.close();
    if (!opts.pg) await pg.stop();
    throw err;
  }
  const token = async (name: string, role: Role, workerId?: string) =>
    (await createToken(backend.store.tokens, { name, role, workerId, createdBy: 'test' }, Date.now())).plaintext;
  return {
    pg,
    url,
    keys,
    root,
    runLog,
    backend,
    servers,
    workers,
    env,
    token,
    startServer,
    async startWorker(server, id, extra = {}) {
      const home = tempHome('loki-cluster-worker-');
      const w = await spawnWorker(
        {
          HOME: home,
          LOKI_HOME: home,
          LOKI_URL: server.url,
          LOKI_WORKER_TOKEN: await token(`worker-${id}`, 'worker', id),
          LOKI_WORKER_ID: id,
          LOKI_POLICY_FILE: policyFile,
          LOKI_ALLOW_HOST_SESSIONS: 'true',
          LOKI_SANDBOX_KILL_GRACE_MS: '500',
          ...extra,
        },
        ['--concurrency', '4'],
        { startTimeoutMs: 120_000 },
      );
      workers.push(w);
      return w;
    },
    cli: (args) => runCli(args, { LOKI_HOME: keys, LOKI_DATABASE_URL: url, LOKI_DB: env.LOKI_DB! }, { timeoutMs: 120_000 }),
    async close() {
      for (const w of workers) if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill('SIGTERM');
      await Promise.all(workers.map((w) => w.exited));
      for (const s of servers) if (s.child.exitCode === null && s.child.signalCode === null) s.child.kill('SIGTERM');
      await Promise.all(servers.map((s) => s.exited));
      await backend.close();
      if (!opts.pg) await pg.stop();
      rmSync(root, { recursive: true, force: true });
      rmSync(keys, { recursive: true, force: true });
      rmSync(path.dirname(runLog), { recursive: true, force: true });
    },
  };
}

export interface LoadOutcome {
  /** Request ids answered 2xx. */
  acked: string[];
  /** Status counts (0: connection error). */
  statuses: Map<number, number>;
  /** Error codes of non-2xx JSON bodies. */
  codes: Map<string, number>;
}

/**
 * `clients` concurrent loops of GET `pathname` spread round-robin over `urls`, each
 * request with its own X-Request-Id, until `total` were sent or `stop()` returns
 * true. A loop whose server is gone moves on to the next URL.
 */
export async function loadCluster(opts: {
  urls: () => string[];
  token: string;
  clients: number;
  total?: number;
  stop?: () => boolean;
  pathname?: string;
  label: string;
  onResult?: (status: number, code: string | null, url: string) => void;
}): Promise<LoadOutcome> {
  const out: LoadOutcome = { acked: [], statuses: new Map(), codes: new Map() };
  let sent = 0;
  const count = <K>(m: Map<K, number>, k: K) => m.set(k, (m.get(k) ?? 0) + 1);
  const loop = async (c: number) => {
    for (let i = 0; ; i++) {
      if (opts.total !== undefined && sent >= opts.total) return;
      if (opts.stop?.()) return;
      const n = sent++;
      const urls = opts.urls();
      const base = urls[(c + i) % urls.length]!;
      const id = `${opts.label}-${String(n).padStart(6, "0")}`;
      let status = 0;
      let code: string | null = null;
      try {
        const r = await fetch(`${base}${opts.pathname ?? '/api/status'}`, {
          headers: { Authorization: `Bearer ${opts.token}`, 'X-Request-Id': id },
          signal: AbortSignal.timeout(30_000),
        });
        status = r.status;
        const text = await r.text();
        if (status >= 200 && status < 300) out.acked.push(id);
        else code = (JSON.parse(text) as { error?: { code?: string } }).error?.code ?? null;
      } catch {
        status = 0;
      }
      count(out.statuses, status);
      if (code) count(out.codes, code);
      opts.onResult?.(status, code, base);
    }
  };
  await Promise.all(Array.from({ length: opts.clients }, (_, c) => loop(c)));
  return out;
}

/** Seq from 1 with no gap, and every acknowledged id present, read straight from the database. */
export async function auditFacts(backend: PostgresBackend): Promise<{ count: number; min: number; max: number; requestIds: Set<string> }> {
  const b = await backend.pool.query<{ n: number; lo: number; hi: number }>('SELECT count(*)::bigint AS n, min(seq) AS lo, max(seq) AS hi FROM audit_log');
  const ids = await backend.pool.query<{ id: string | null }>("SELECT entry::json->'request'->>'id' AS id FROM audit_log");
  return {
    count: Number(b.rows[0]!.n),
    min: Number(b.rows[0]!.lo),
    max: Number(b.rows[0]!.hi),
    requestIds: new Set(ids.rows.map((r) => r.id).filter((x): x is string => x !== null)),
  };
}

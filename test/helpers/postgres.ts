/**
 * A real PostgreSQL (Debian's packages, /usr/lib/postgresql/<v>/bin) for tests:
 * `initdb` into a temporary directory owned by `postgres`, `pg_ctl start` on a
 * free loopback port with its Unix socket in that directory, a fresh database
 * per test file or server (`createDatabase`), and `stop` (or `restart`, for the
 * tests of a server that loses its database). Started as user `postgres` when
 * the tests run as root (initdb refuses root).
 */
import { execFileSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { freePort } from './server';

/** The newest installed server's bin directory, or null. */
export function postgresBin(): string | null {
  const base = '/usr/lib/postgresql';
  if (!existsSync(base)) return null;
  const versions = readdirSync(base)
    .filter((v) => existsSync(path.join(base, v, 'bin', 'initdb')))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] ? path.join(base, versions[0], 'bin') : null;
}

/** Why PostgreSQL tests cannot run here (null: they can). */
export function postgresMissing(): string | null {
  if (!postgresBin()) return 'PostgreSQL is not installed (/usr/lib/postgresql/*/bin/initdb; scripts/ci-deps.sh installs it)';
  if (process.getuid?.() === 0) {
    try {
      execFileSync('id', ['-u', 'postgres'], { stdio: 'ignore' });
    } catch {
      return 'no postgres user to run the server as';
    }
  }
  return null;
}

export interface TestPostgres {
  port: number;
  dir: string;
  /** postgres://postgres@127.0.0.1:PORT/NAME */
  url(database: string): string;
  /** CREATE DATABASE (a fresh, empty one); returns its URL. */
  createDatabase(name?: string): Promise<string>;
  /** Run one statement against a database (admin). */
  query<T extends pg.QueryResultRow = pg.QueryResultRow>(database: string, text: string, values?: unknown[]): Promise<T[]>;
  /** pg_ctl stop -m fast (connections are cut), then start again on the same port. */
  restart(downMs?: number): Promise<void>;
  stopServer(): void;
  startServer(): void;
  stop(): Promise<void>;
}

let counter = 0;

export async function startPostgres(opts: { fsync?: boolean } = {}): Promise<TestPostgres> {
  const bin = postgresBin();
  if (!bin) throw new Error('PostgreSQL is not installed');
  const asRoot = process.getuid?.() === 0;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'loki-pg-'));
  const run = (cmd: string, args: string[]) => {
    const full = path.join(bin, cmd);
    return asRoot
      ? execFileSync('runuser', ['-u', 'postgres', '--', full, ...args], { stdio: ['ignore', 'pipe', 'pipe'], cwd: dir })
      : execFileSync(full, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: dir });
  };
  if (asRoot) {
    const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres']).toString().trim());
    chownSync(dir, uid, gid);
  }
  const data = path.join(dir, 'data');
  run('initdb', ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-locale']);
  const port = await freePort();
  const options = [
    `-p ${port}`,
    `-k ${dir}`,
    '-c listen_addresses=127.0.0.1',
    '-c max_connections=300',
    `-c fsync=${opts.fsync === false ? 'off' : 'on'}`,
    '-c shared_buffers=32MB',
  ].join(' ');
  const startServer = () => {
    run('pg_ctl', ['-D', data, '-l', path.join(dir, 'log'), '-o', options, '-w', '-t', '60', 'start']);
  };
  const stopServer = () => {
    run('pg_ctl', ['-D', data, '-m', 'fast', '-w', '-t', '60', 'stop']);
  };
  startServer();
  const url = (database: string) => `postgres://postgres@127.0.0.1:${port}/${database}`;
  const query = async <T extends pg.QueryResultRow>(database: string, text: string, values?: unknown[]): Promise<T[]> => {
    const c = new pg.Client({ connectionString: url(database) });
    await c.connect();
    try {
      return (await c.query<T>(text, values)).rows;
    } finally {
      await c.end();
    }
  };
  let running = true;
  return {
    port,
    dir,
    url,
    async createDatabase(name) {
      const db = name ?? `loki_${process.pid}_${++counter}_${Date.now().toString(36)}`;
      if (!/^[a-z0-9_]+$/.test(db)) throw new Error(`bad test database name ${db}`);
      await query('postgres', `CREATE DATABASE ${db} TEMPLATE template0`);
      return url(db);
    },
    query,
    stopServer() {
      stopServer();
      running = false;
    },
    startServer() {
      startServer();
      running = true;
    },
    async restart(downMs = 0) {
      stopServer();
      running = false;
      if (downMs > 0) await new Promise((r) => setTimeout(r, downMs));
      startServer();
      running = true;
    },
    async stop() {
      if (running) {
        try {
          stopServer();
        } catch {
          // already stopped
        }
        running = false;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// ---------------------------------------------------------------------------
// The API suite on PostgreSQL (vitest project `postgres`, vitest.config.ts):
// one server for the run (globalSetup below), a fresh database per test server.

declare module 'vitest' {
  export interface ProvidedContext {
    /** The admin URL (database `postgres`) of the run's PostgreSQL; '' outside the postgres project. */
    pgAdminUrl: string;
  }
}

/** The store the API tests run on: `LOKI_TEST_STORE=postgres` (the postgres project) or SQLite. */
export const TEST_STORE: 'sqlite' | 'postgres' = process.env.LOKI_TEST_STORE === 'postgres' ? 'postgres' : 'sqlite';

/** vitest globalSetup of the postgres project: start PostgreSQL once, stop it after the run. */
export default async function setup(project: { provide: (key: 'pgAdminUrl', value: string) => void }): Promise<() => Promise<void>> {
  const server = await startPostgres({ fsync: false });
  project.provide('pgAdminUrl', server.url('postgres'));
  return () => server.stop();
}

const databases = new Map<string, string>();

/**
 * The env a test server on `home` needs for the current store: nothing on
 * SQLite; on PostgreSQL `LOKI_DATABASE_URL` of a database made for that home
 * (the same one again for a server restarted on the same home).
 */
export async function testStoreEnv(home: string): Promise<Record<string, string>> {
  if (TEST_STORE !== 'postgres') return {};
  const known = databases.get(home);
  if (known) return { LOKI_DATABASE_URL: known };
  const { inject } = await import('vitest');
  const admin = inject('pgAdminUrl');
  if (!admin) throw new Error('LOKI_TEST_STORE=postgres but no PostgreSQL was started (run through the vitest postgres project)');
  const name = `t_${path.basename(home).toLowerCase().replace(/[^a-z0-9]/g, '_')}_${process.pid}`.slice(0, 63);
  const c = new pg.Client({ connectionString: admin });
  await c.connect();
  try {
    await c.query(`CREATE DATABASE ${name} TEMPLATE template0`);
  } finally {
    await c.end();
  }
  const u = new URL(admin);
  u.pathname = `/${name}`;
  databases.set(home, u.toString());
  return { LOKI_DATABASE_URL: u.toString() };
}

/** The env a CLI process on `home` needs to reach the same store as that home's test server. */
export function knownStoreEnv(home: string | undefined): Record<string, string> {
  const url = home ? databases.get(home) : undefined;
  return url ? { LOKI_DATABASE_URL: url } : {};
}

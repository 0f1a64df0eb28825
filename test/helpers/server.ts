/**
 * Real servers for tests: in-process (`startTestServer`, the full Node wiring on
 * a temporary LOKI_HOME and a free loopback port) and as a spawned process
 * (`spawnServer`, for signals and SIGKILL).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../../src/env';
import { type RunningServer, startServer } from '../../src/server';
import type { Logger } from '../../src/http/context';
import { knownStoreEnv, testStoreEnv } from './postgres';
import { ROOT, runProcess } from './process';

export { ROOT };
export const LOKI_BIN = path.join(ROOT, 'bin/loki.js');

export function tempHome(prefix = 'loki-test-'): string {
  return mkdtempSync(path.join(os.tmpdir(), prefix));
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export interface CapturedLogger extends Logger {
  lines: { level: string; msg: string; fields?: Record<string, unknown> }[];
}

export function captureLogger(): CapturedLogger {
  const lines: CapturedLogger['lines'] = [];
  return {
    lines,
    info: (msg, fields) => lines.push({ level: 'info', msg, fields }),
    warn: (msg, fields) => lines.push({ level: 'warn', msg, fields }),
    error: (msg, fields) => lines.push({ level: 'error', msg, fields }),
  };
}

export interface TestServer extends RunningServer {
  home: string;
  logger: CapturedLogger;
  /** fetch against the server with the right Host header. */
  req(pathname: string, init?: RequestInit & { token?: string }): Promise<Response>;
  /** The store it runs on (LOKI_TEST_STORE). */
  store: 'sqlite' | 'postgres';
  /** One SQL statement straight on its database (`?` placeholders, on either store); the rows it returns. */
  sql<T = Record<string, unknown>>(text: string, ...args: unknown[]): Promise<T[]>;
}

/**
 * An in-process server on a free port; `opts.now` injects its clock, `opts.homePrefix` names its temporary LOKI_HOME.
 * No embedded sandbox worker unless `env` sets LOKI_EMBEDDED_WORKER (auto or on).
 */
export async function startTestServer(env: Record<string, string> = {}, opts: { now?: () => number; homePrefix?: string } = {}): Promise<TestServer> {
  const home = env.LOKI_HOME ?? tempHome(opts.homePrefix);
  const port = env.LOKI_DASHBOARD_PORT ? Number(env.LOKI_DASHBOARD_PORT) : await freePort();
  const store = await testStoreEnv(home);
  const config = loadConfig({ LOKI_HOME: home, LOKI_EMBEDDED_WORKER: 'off', ...store, ...env, LOKI_DASHBOARD_PORT: String(port) }, { home, cwd: home });
  const logger = captureLogger();
  const server = await startServer(config, { logger, embeddedWorker: true, ...(opts.now ? { now: opts.now } : {}) });
  return Object.assign(server, {
    home,
    logger,
    store: config.database ? ('postgres' as const) : ('sqlite' as const),
    async sql<T>(text: string, ...args: unknown[]): Promise<T[]> {
      const pgb = server.runtime.pg;
      if (pgb) {
        let i = 0;
        return (await pgb.pool.query(text.replace(/\?/g, () => `$${++i}`), args)).rows as T[];
      }
      const stmt = server.runtime.db.prepare(text);
      if (stmt.reader) return stmt.all(...args) as T[];
      stmt.run(...args);
      return [];
    },
    req(pathname: string, init: RequestInit & { token?: string } = {}) {
      const headers = new Headers(init.headers);
      if (init.token) headers.set('Authorization', `Bearer ${init.token}`);
      return fetch(`${server.url}${pathname}`, { ...init, headers });
    },
  });
}

export interface SpawnedServer {
  child: ChildProcess;
  port: number;
  url: string;
  home: string;
  output(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * Spawn `loki dashboard` as a real process and wait until /health answers. No
 * embedded sandbox worker unless `env` sets LOKI_EMBEDDED_WORKER (auto or on).
 * `opts.startTimeoutMs`: how long to wait for /health (default 30 s; the cluster tests start several at once).
 */
export async function spawnServer(env: Record<string, string> = {}, home = tempHome(), opts: { startTimeoutMs?: number } = {}): Promise<SpawnedServer> {
  const port = env.LOKI_DASHBOARD_PORT ? Number(env.LOKI_DASHBOARD_PORT) : await freePort();
  const child = spawn(process.execPath, [LOKI_BIN, 'dashboard'], {
    env: { PATH: process.env.PATH ?? '', HOME: home, LOKI_HOME: home, LOKI_EMBEDDED_WORKER: 'off', ...(await testStoreEnv(home)), ...env, LOKI_DASHBOARD_PORT: String(port) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout?.on('data', (d) => {
    out += d;
  });
  child.stderr?.on('data', (d) => {
    out += d;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + (opts.startTimeoutMs ?? 30_000);
  for (;;) {
    if (child.exitCode !== null) throw new Error(`server exited early (${child.exitCode}): ${out}`);
    try {
      const r = await fetch(`${url}/health`);
      if (r.ok) break;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`server did not start: ${out}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { child, port, url, home, output: () => out, exited };
}

/** Run the CLI as a real process. */
export function runCli(
  args: string[],
  env: Record<string, string> = {},
  opts: { input?: string; timeoutMs?: number } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return runProcess(process.execPath, [LOKI_BIN, ...args], {
    env: { PATH: process.env.PATH ?? '', HOME: env.LOKI_HOME ?? os.tmpdir(), ...knownStoreEnv(env.LOKI_HOME), ...env },
    input: opts.input,
    timeoutMs: opts.timeoutMs,
  });
}

/**
 * `clients` loops sending `GET /api/status`, each with its own `X-Request-Id`
 * (`<prefix>-<n>-<random>`), until `stop()` or the server goes away; `acked` holds
 * the ids answered 2xx (which must then be in the audit log).
 */
export function floodStatus(url: string, clients: number, prefix: string): { acked: string[]; stop(): Promise<void> } {
  const acked: string[] = [];
  let stopped = false;
  let n = 0;
  const client = async () => {
    while (!stopped) {
      const id = `${prefix}-${n++}-${Math.random().toString(36).slice(2, 10)}`;
      try {
        const r = await fetch(`${url}/api/status`, { headers: { 'X-Request-Id': id } });
        if (r.status >= 200 && r.status < 300) acked.push(id);
        await r.arrayBuffer();
      } catch {
        return; // the server is gone
      }
    }
  };
  const running = Array.from({ length: clients }, client);
  return {
    acked,
    async stop() {
      stopped = true;
      await Promise.all(running);
    },
  };
}

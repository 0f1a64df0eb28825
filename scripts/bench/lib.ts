/** Shared pieces of the benchmark scripts: spawn a target server, load it with autocannon. */
import type { AuditInput } from '../../src/audit/chain';
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import autocannon from 'autocannon';

export const ROOT = path.resolve(import.meta.dirname, '../..');

export async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

export interface Target {
  port: number;
  home: string;
  stop(): Promise<void>;
}

export type TargetMode = 'trivial' | 'bare' | 'full';

export async function startTarget(mode: TargetMode, env: Record<string, string> = {}): Promise<Target> {
  const port = await freePort();
  const home = env.LOKI_HOME ?? mkdtempSync(path.join(os.tmpdir(), 'loki-bench-'));
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'scripts/bench/serve-target.ts'), mode], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: home, LOKI_HOME: home, ...env, LOKI_DASHBOARD_PORT: String(port) },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise<void>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('READY')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`target ${mode} exited with ${code}`)));
  });
  return {
    port,
    home,
    stop: () =>
      new Promise((resolve) => {
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

export interface LoadResult {
  requests_per_sec: number;
  latency_p50_ms: number;
  latency_p99_ms: number;
  non_2xx: number;
  errors: number;
  total: number;
}

export async function load(port: number, pathname: string, opts: { connections?: number; seconds?: number; headers?: Record<string, string> } = {}): Promise<LoadResult> {
  const r = await autocannon({
    url: `http://127.0.0.1:${port}${pathname}`,
    connections: opts.connections ?? 50,
    duration: opts.seconds ?? 10,
    headers: { host: `127.0.0.1:${port}`, ...(opts.headers ?? {}) },
  });
  return {
    requests_per_sec: Math.round(r.requests.average),
    latency_p50_ms: r.latency.p50,
    latency_p99_ms: r.latency.p99,
    non_2xx: r.non2xx,
    errors: r.errors,
    total: r.requests.total,
  };
}

export function numberArg(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && process.argv[i + 1] ? Number(process.argv[i + 1]) : dflt;
}

/** The audit entry every benchmark appends: a token-authenticated GET /api/status, request id from `i`. */
export function benchEntry(i: number): AuditInput {
  return {
    ts: Date.now(),
    action: 'http.request',
    resource: null,
    actor: { type: 'token', id: 'tok_0123456789abcdef', name: 'bench' },
    client: { ip: '127.0.0.1', user_agent: 'bench/1.0' },
    request: { id: `req_${i.toString(16).padStart(20, '0')}`, method: 'GET', path: '/api/status' },
    outcome: { status: 200, success: true, error: null },
    details: {},
  };
}

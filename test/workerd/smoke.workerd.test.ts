/**
 * Workers smoke test: the real Worker under `wrangler dev` (workerd, local D1),
 * with migrations applied by scripts/workerd-migrate.sh to a temporary state
 * directory. Offline: no login, telemetry, update check or cf.json download.
 *
 * Two Workers run side by side on copies of one migrated database: one with the
 * wrangler.toml defaults (token auth on, an admin token inserted into D1), one
 * with auth off, to show that a Worker never extends loopback trust.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateToken, sha256Hex } from '../../src/auth/tokens';
import { freePort, ROOT } from '../helpers/server';

const WRANGLER = path.join(ROOT, 'node_modules/wrangler/bin/wrangler.js');
const TOKEN_NAME = 'workerd-smoke-admin';

const state = mkdtempSync(path.join(os.tmpdir(), 'loki-workerd-'));
/** Keeps wrangler off the network and out of the user's config directory. */
const wranglerEnv: NodeJS.ProcessEnv = {
  ...process.env,
  CI: 'true',
  WRANGLER_SEND_METRICS: 'false',
  WRANGLER_SEND_ERROR_REPORTS: 'false',
  WRANGLER_HIDE_BANNER: 'true',
  CLOUDFLARE_CF_FETCH_ENABLED: 'false',
  WRANGLER_LOG_PATH: path.join(state, 'logs'),
  WRANGLER_REGISTRY_PATH: path.join(state, 'registry'),
  NO_COLOR: '1',
  FORCE_COLOR: '0',
};

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], timeoutMs = 60_000): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: ROOT, env: wranglerEnv, stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      stdout += d;
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

async function d1(persistTo: string, sql: string): Promise<Record<string, unknown>[]> {
  const r = await run(process.execPath, [WRANGLER, 'd1', 'execute', 'DB', '--local', '--persist-to', persistTo, '--json', '--command', sql]);
  if (r.code !== 0) throw new Error(`wrangler d1 execute failed (${r.code}): ${r.stderr || r.stdout}`);
  const out = JSON.parse(r.stdout) as { results: Record<string, unknown>[] }[];
  return out[0]?.results ?? [];
}

interface Dev {
  url: string;
  child: ChildProcess;
  output: () => string;
}

async function startDev(persistTo: string, vars: string[] = []): Promise<Dev> {
  const port = await freePort();
  const args = [WRANGLER, 'dev', '--local', '--ip', '127.0.0.1', '--port', String(port), '--inspector-port', '0'];
  args.push('--persist-to', persistTo, '--show-interactive-dev-session=false', '--log-level', 'warn');
  for (const v of vars) args.push('--var', v);
  // detached: its own process group, so afterAll can stop wrangler and workerd together.
  const child = spawn(process.execPath, args, { cwd: ROOT, env: wranglerEnv, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout?.on('data', (d) => {
    out += d;
  });
  child.stderr?.on('data', (d) => {
    out += d;
  });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`wrangler dev exited with ${child.exitCode}:\n${out}`);
    try {
      const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(2_000) });
      await res.arrayBuffer();
      if (res.status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`wrangler dev did not answer within 60 s:\n${out}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  return { url, child, output: () => out };
}

async function stopDev(dev: Dev | undefined): Promise<void> {
  const pid = dev?.child.pid;
  if (!dev || pid === undefined || dev.child.exitCode !== null) return;
  const exited = new Promise<void>((r) => dev.child.once('exit', () => r()));
  const signalGroup = (sig: NodeJS.Signals) => {
    try {
      process.kill(-pid, sig);
    } catch {
      // already gone
    }
  };
  signalGroup('SIGTERM');
  const timer = setTimeout(() => signalGroup('SIGKILL'), 5_000);
  await exited;
  clearTimeout(timer);
  signalGroup('SIGKILL'); // workerd, should it have outlived wrangler
}

const withAuthDir = path.join(state, 'auth-on');
const authOffDir = path.join(state, 'auth-off');
const token = generateToken();
let authOn: Dev | undefined;
let authOff: Dev | undefined;

beforeAll(async () => {
  const migrated = await run('bash', [path.join(ROOT, 'scripts/workerd-migrate.sh'), '--persist-to', withAuthDir]);
  if (migrated.code !== 0) throw new Error(`migrations failed: ${migrated.stderr || migrated.stdout}`);
  expect(migrated.stdout).toContain('0000_init.sql');
  cpSync(withAuthDir, authOffDir, { recursive: true });
  // The plaintext never reaches D1: only its SHA-256, as the CLI stores it.
  // Every value below is generated here (hex, base62, a fixed name): safe to inline.
  const hash = await sha256Hex(token);
  await d1(
    withAuthDir,
    `INSERT INTO tokens (id, name, hash, role, scopes, created_at, source) VALUES ('tok_workerdsmoke', '${TOKEN_NAME}', '${hash}', 'admin', '["*"]', ${Date.now()}, 'native')`,
  );
  [authOn, authOff] = await Promise.all([startDev(withAuthDir), startDev(authOffDir, ['LOKI_ENTERPRISE_AUTH:false'])]);
}, 110_000);

afterAll(async () => {
  await Promise.all([stopDev(authOn), stopDev(authOff)]);
  rmSync(state, { recursive: true, force: true });
});

const bearer = () => ({ Authorization: `Bearer ${token}` });

describe('Workers (wrangler dev, local D1)', () => {
  it('GET /health answers 200 with the security headers', async () => {
    const res = await fetch(`${authOn!.url}/health`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: 'healthy', service: 'loki-dashboard' });
    expect(res.headers.get('content-security-policy')).toMatch(/default-src 'self'.*frame-ancestors 'none'/);
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    expect(res.headers.get('referrer-policy')).toBe('no-referrer');
    expect(res.headers.get('x-request-id')).toMatch(/^req_/);
  });

  it('GET /api/status needs a token (wrangler.toml turns auth on)', async () => {
    const res = await fetch(`${authOn!.url}/api/status`);
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toBe('Bearer realm="loki", error="invalid_token"');
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('invalid_token');
  });

  it('GET /api/status with a bearer token from D1 reports the Workers runtime', async () => {
    const res = await fetch(`${authOn!.url}/api/status`, { headers: bearer() });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    const body = (await res.json()) as Record<string, unknown> & { flags: Record<string, unknown>; audit: { seq: number } | null };
    expect(body).toMatchObject({ status: 'running', service: 'loki-dashboard', runtime: 'workers' });
    expect(body.flags).toMatchObject({ auth_enabled: true, audit_enabled: true, env: 'production' });
    expect(body.audit?.seq).toBeGreaterThan(0);
  });

  it('answers an unknown route with the JSON error shape', async () => {
    const res = await fetch(`${authOn!.url}/no/such/route`);
    expect(res.status).toBe(404);
    const body = (await res.json()) as { error: { code: string; message: string; request_id: string } };
    expect(body.error.code).toBe('not_found');
    expect(body.error.message).toContain('/no/such/route');
    expect(body.error.request_id).toBe(res.headers.get('x-request-id'));
  });

  it('keeps one linear audit chain under concurrent requests, verifiable with Web Crypto', async () => {
    const statuses = await Promise.all(
      Array.from({ length: 20 }, () => fetch(`${authOn!.url}/api/status`, { headers: bearer() }).then(async (r) => (await r.arrayBuffer(), r.status))),
    );
    expect(statuses).toEqual(Array(20).fill(200));
    const res = await fetch(`${authOn!.url}/api/enterprise/audit/verify`, { headers: bearer() });
    expect(res.status).toBe(200);
    const v = (await res.json()) as { valid: boolean; entries_checked: number; first_invalid_seq: number | null };
    expect(v).toMatchObject({ valid: true, first_invalid_seq: null });
    expect(v.entries_checked).toBeGreaterThanOrEqual(23);
  });

  it('writes the audit entries to D1', async () => {
    const [count] = await d1(withAuthDir, 'SELECT count(*) AS n, max(seq) AS last FROM audit_log');
    expect(Number(count?.n)).toBeGreaterThanOrEqual(24);
    expect(count?.n).toBe(count?.last); // seq 1..n, no gaps
    const rows = await d1(withAuthDir, "SELECT action, actor, entry FROM audit_log WHERE action = 'auth.failure' OR actor IS NOT NULL ORDER BY seq");
    expect(rows.some((r) => r.action === 'auth.failure')).toBe(true);
    expect(rows.some((r) => r.actor === TOKEN_NAME)).toBe(true);
    // The token's plaintext is never written anywhere.
    expect(JSON.stringify(rows)).not.toContain(token);
  });

  it('with auth off, serves only public routes: no caller is trusted as loopback', async () => {
    const plain = await fetch(`${authOff!.url}/api/status`);
    expect(plain.status).toBe(403);
    expect(((await plain.json()) as { error: { code: string } }).error.code).toBe('forbidden');
    // wrangler dev keeps a CF-Connecting-IP the client sent; it must not earn trust.
    const spoofed = await fetch(`${authOff!.url}/api/status`, { headers: { 'CF-Connecting-IP': '127.0.0.1' } });
    expect(spoofed.status).toBe(403);
    await spoofed.arrayBuffer();
    const pub = await fetch(`${authOff!.url}/api/enterprise/status`);
    expect(await pub.json()).toMatchObject({ auth_enabled: false, audit_enabled: true });
  });
});

/**
 * Workers smoke test: the real Worker under `wrangler dev` (workerd, local D1),
 * with migrations applied by scripts/workerd-migrate.sh to a temporary state
 * directory. Offline: no login, telemetry, update check or cf.json download.
 *
 * Three Workers run side by side: two on copies of one migrated database, one
 * with the wrangler.toml defaults (token auth on, an admin token made by
 * scripts/workerd-token.ts) and one with auth off, to show that a Worker never
 * extends loopback trust; a third with a bad setting, to show how a Worker
 * reports it.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type Ran, runProcess } from '../helpers/process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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

function run(cmd: string, args: string[], timeoutMs = 60_000): Promise<Ran> {
  return runProcess(cmd, args, { cwd: ROOT, env: wranglerEnv, timeoutMs });
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

/** Every wrangler started, registered before it answers, so afterAll stops even one that failed to come up. */
const started: ChildProcess[] = [];

async function startDev(persistTo: string, vars: string[] = [], healthStatus = 200): Promise<Dev> {
  const port = await freePort();
  const args = [WRANGLER, 'dev', '--local', '--ip', '127.0.0.1', '--port', String(port), '--inspector-port', '0'];
  args.push('--persist-to', persistTo, '--show-interactive-dev-session=false', '--log-level', 'warn');
  for (const v of vars) args.push('--var', v);
  // detached: its own process group, so afterAll can stop wrangler and workerd together.
  const child = spawn(process.execPath, args, { cwd: ROOT, env: wranglerEnv, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  started.push(child);
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
      if (res.status === healthStatus) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`wrangler dev did not answer within 60 s:\n${out}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  return { url, child, output: () => out };
}

/** SIGTERM to wrangler's process group, SIGKILL after 5 s, and SIGKILL for any workerd left behind. */
async function stopGroup(child: ChildProcess): Promise<void> {
  const pid = child.pid;
  if (pid === undefined) return;
  const signalGroup = (sig: NodeJS.Signals) => {
    try {
      process.kill(-pid, sig);
    } catch {
      // already gone
    }
  };
  if (child.exitCode === null && child.signalCode === null) {
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    signalGroup('SIGTERM');
    const timer = setTimeout(() => signalGroup('SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
  }
  signalGroup('SIGKILL');
}

const withAuthDir = path.join(state, 'auth-on');
const authOffDir = path.join(state, 'auth-off');
let token = '';
let authOn: Dev | undefined;
let authOff: Dev | undefined;
let misconfigured: Dev | undefined;

beforeAll(async () => {
  const migrated = await run('bash', [path.join(ROOT, 'scripts/workerd-migrate.sh'), '--persist-to', withAuthDir]);
  if (migrated.code !== 0) throw new Error(`migrations failed: ${migrated.stderr || migrated.stdout}`);
  expect(migrated.stdout).toContain('0000_init.sql');
  cpSync(withAuthDir, authOffDir, { recursive: true }); // before the token: the auth-off Worker has none
  // The deployment's way to make a token (only its SHA-256 reaches D1).
  const made = await run(process.execPath, ['--import', 'tsx', path.join(ROOT, 'scripts/workerd-token.ts'), TOKEN_NAME, '--role', 'admin', '--persist-to', withAuthDir, '--json']);
  if (made.code !== 0) throw new Error(`workerd-token failed: ${made.stderr || made.stdout}`);
  token = (JSON.parse(made.stdout) as { token: string }).token;
  [authOn, authOff, misconfigured] = await Promise.all([
    startDev(withAuthDir),
    startDev(authOffDir, ['LOKI_ENTERPRISE_AUTH:false']),
    startDev(path.join(state, 'misconfigured'), ['LOKI_DASHBOARD_PORT:abc'], 500),
  ]);
}, 110_000);

afterAll(async () => {
  await Promise.all(started.map(stopGroup));
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

  it('GET /metrics: a token still required; with one, 501 (prom-client is Node-only, not in the Workers bundle)', async () => {
    expect((await fetch(`${authOn!.url}/metrics`)).status).toBe(401);
    const res = await fetch(`${authOn!.url}/metrics`, { headers: bearer() });
    expect(res.status).toBe(501);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('not_implemented');
  });

  it('GET /api/openapi.json without a token: the same OpenAPI 3.1 document as on Node (hono-openapi runs on workerd)', async () => {
    const res = await fetch(`${authOn!.url}/api/openapi.json`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    const doc = (await res.json()) as { openapi: string; paths: Record<string, Record<string, { security: unknown }>> };
    expect(doc.openapi).toBe('3.1.0');
    expect(doc.paths['/api/sessions']?.post?.security).toEqual([{ bearer: ['control'] }]);
    expect(Object.keys(doc.paths)).toContain('/api/enterprise/audit/tlog/tile/{tile}');
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
      Array.from({ length: 20 }, async () => {
        const r = await fetch(`${authOn!.url}/api/status`, { headers: bearer() });
        await r.arrayBuffer();
        return r.status;
      }),
    );
    expect(statuses).toEqual(Array(20).fill(200));
    const res = await fetch(`${authOn!.url}/api/enterprise/audit/verify`, { headers: bearer() });
    expect(res.status).toBe(200);
    const v = (await res.json()) as { valid: boolean; entries_checked: number; first_invalid_seq: number | null };
    expect(v).toMatchObject({ valid: true, first_invalid_seq: null });
    expect(v.entries_checked).toBeGreaterThanOrEqual(23);
  });

  it('writes the audit entries to D1', async () => {
    const [row] = await d1(
      withAuthDir,
      `SELECT count(*) AS n, max(seq) AS last, sum(action = 'auth.failure') AS failures, sum(actor = '${TOKEN_NAME}') AS by_token, sum(instr(entry, '${token}') > 0) AS leaked FROM audit_log`,
    );
    expect(Number(row?.n)).toBeGreaterThanOrEqual(24);
    expect(row?.n).toBe(row?.last); // seq 1..n, no gaps
    expect(Number(row?.failures)).toBeGreaterThanOrEqual(1);
    expect(Number(row?.by_token)).toBeGreaterThanOrEqual(21);
    expect(Number(row?.leaked)).toBe(0); // the token's plaintext is never written
  });

  it('streams events over SSE, including rows another process wrote to D1', async () => {
    const abort = new AbortController();
    const res = await fetch(`${authOn!.url}/api/events`, { headers: bearer(), signal: abort.signal });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    let text = '';
    const readUntil = async (pattern: RegExp) => {
      const deadline = Date.now() + 20_000;
      while (!pattern.test(text)) {
        if (Date.now() > deadline) throw new Error(`no ${pattern} in the stream: ${text}`);
        const { value, done } = await reader.read();
        if (done) throw new Error(`stream ended: ${text}`);
        text += value;
      }
    };
    try {
      await readUntil(/: connected/);
      // A Worker has no fan-out across requests: the stream reads the table on its own timer.
      await d1(withAuthDir, `INSERT INTO events (type, session_id, data, ts) VALUES ('session.started', 'ses_workerd', '{"n":1}', ${Date.now()})`);
      await readUntil(/"session_id":"ses_workerd"/);
      expect(text).toMatch(/^id: \d+$/m);
    } finally {
      abort.abort();
      await reader.cancel().catch(() => {});
    }
  });

  it('serves the dashboard from the assets binding, with the page CSP', async () => {
    const page = await fetch(`${authOn!.url}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    expect(page.headers.get('content-security-policy')).toContain("script-src 'self'");
    expect(page.headers.get('x-content-type-options')).toBe('nosniff');
    expect(await page.text()).toMatch(/<html/i);
    const css = await fetch(`${authOn!.url}/assets/app.css`);
    expect(css.status).toBe(200);
    expect(css.headers.get('content-type')).toMatch(/^text\/css/);
    await css.arrayBuffer();
    const missing = await fetch(`${authOn!.url}/assets/missing.js`);
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { error: { code: string } }).error.code).toBe('not_found');
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

  it('answers a bad setting with a 500 in the JSON error shape, the details only in its log', async () => {
    const res = await fetch(`${misconfigured!.url}/health`);
    expect(res.status).toBe(500);
    const body = (await res.json()) as { error: { code: string; message: string; request_id: string } };
    expect(body.error.code).toBe('internal_error');
    expect(body.error.request_id).toBe(res.headers.get('x-request-id'));
    expect(JSON.stringify(body)).not.toContain('abc');
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    expect(misconfigured!.output()).toMatch(/LOKI_DASHBOARD_PORT=\\?"abc\\?" is invalid/); // a JSON log line
  });
});

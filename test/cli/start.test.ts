/**
 * `loki start` and `loki sandbox worker` as processes, without Docker (sessions
 * run as child processes): exit codes, one-line errors, Ctrl-C stops the session.
 */
import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LokiClient } from '../../src/client';
import { freePort, LOKI_BIN, runCli, startTestServer, type TestServer, tempHome } from '../helpers/server';
import { makeToken } from '../helpers/tokens';
import { runLoki, type SpawnedWorker, spawnWorker } from '../helpers/worker';
import { makeWorkspace, providerConfig, tempRoot } from '../sessions/helpers';

describe('loki start with a worker (no sandbox)', () => {
  let s: TestServer;
  let root: string;
  let home: string;
  let worker: SpawnedWorker;
  let operator: string;
  const env = () => ({ HOME: home, LOKI_HOME: home, LOKI_URL: s.url, LOKI_TOKEN: operator });

  beforeAll(async () => {
    root = tempRoot();
    home = tempHome();
    s = await startTestServer({ LOKI_WORKSPACE_ROOTS: root, LOKI_ENTERPRISE_AUTH: 'true', LOKI_SANDBOX_LEASE_MS: '6000' });
    operator = (await makeToken(s, 'cli-operator', 'operator')).token;
    const workerToken = (await makeToken(s, 'cli-worker', 'worker')).token;
    worker = await spawnWorker(
      { HOME: home, LOKI_HOME: home, LOKI_URL: s.url, LOKI_WORKER_TOKEN: workerToken, LOKI_WORKER_ID: `cli-${process.pid}`, LOKI_SANDBOX_KILL_GRACE_MS: '500' },
      ['--concurrency', '2'],
    );
  });
  afterAll(async () => {
    worker?.child.kill('SIGTERM');
    await worker?.exited;
    await s?.stop();
    rmSync(root, { recursive: true, force: true });
    rmSync(home, { recursive: true, force: true });
  });

  it('a failing provider: its output on stdout, the outcome in one line on stderr, exit 1', async () => {
    const ws = makeWorkspace(root, 'fails', { config: providerConfig(['/bin/sh', '-c', 'echo working; echo broken >&2; exit 3']) });
    const r = await runLoki(['start', 'prd.md', '--name', 'failing'], { cwd: ws, env: env() });
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('working\nbroken\n');
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/^loki: session ses_[0-9a-f]+ queued \(no sandbox\)$/);
    expect(lines[1]).toMatch(/^loki: session ses_[0-9a-f]+ failed in [\d.]+ s, exit code 3: the provider exited with code 3$/);
  });

  it('Ctrl-C asks the server to stop the session: it ends stopped, exit 4', async () => {
    const ws = makeWorkspace(root, 'interrupted', { config: providerConfig(['/bin/sh', '-c', 'echo started; sleep 30']) });
    const child = spawn(process.execPath, [LOKI_BIN, 'start', 'prd.md'], { cwd: ws, env: { PATH: process.env.PATH ?? '', ...env() } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      stdout += d;
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    const closed = new Promise<number | null>((resolve) => child.once('close', resolve));
    const deadline = Date.now() + 20_000;
    while (!stdout.includes('started') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    child.kill('SIGINT');
    expect(await closed).toBe(4);
    expect(stderr).toMatch(/loki: stopping session ses_[0-9a-f]+ \(Ctrl-C again to leave it running\)/);
    expect(stderr).toMatch(/session ses_[0-9a-f]+ stopped .*: stop requested\n$/);
  });

  it('refused requests: 400 (PRD is a directory) and 401 (no token) → exit 2 with one line', async () => {
    const ws = makeWorkspace(root, 'refused', { files: { 'docs/a.md': 'a' } });
    const dir = await runLoki(['start', 'docs'], { cwd: ws, env: env() });
    expect(dir.code).toBe(2);
    expect(dir.stderr).toBe('loki: prd is not a regular file: docs (invalid_path)\n');
    const noToken = await runLoki(['start', 'prd.md'], { cwd: ws, env: { ...env(), LOKI_TOKEN: '' } });
    expect(noToken.code).toBe(2);
    expect(noToken.stderr).toBe('loki: the server refused the token (invalid_token): a bearer token is required; set LOKI_TOKEN to a valid token\n');
    const outside = await runLoki(['start', '../elsewhere.md'], { cwd: ws, env: env() });
    expect(outside.code).toBe(2);
    expect(outside.stderr).toBe(`loki: the PRD ../elsewhere.md is not inside the workspace ${ws}\n`);
    const client = new LokiClient({ url: s.url, token: operator });
    expect((await client.listSessions({ limit: 200 })).sessions.filter((x) => x.workspace === ws)).toEqual([]);
  });
});

describe('CLI errors without a server', () => {
  it('an unreachable server → exit 3 with one line naming the URL', async () => {
    const root = tempRoot();
    const ws = makeWorkspace(root, 'ws');
    const port = await freePort();
    try {
      const r = await runLoki(['start', 'prd.md'], { cwd: ws, env: { HOME: root, LOKI_HOME: root, LOKI_URL: `http://127.0.0.1:${port}` } });
      expect(r.code).toBe(3);
      expect(r.stderr).toBe(
        `loki: cannot reach the Loki server at http://127.0.0.1:${port} (ECONNREFUSED); is the dashboard running (loki dashboard) and LOKI_URL right?\n`,
      );
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it.each([['0'], ['33'], ['x'], ['1.5'], ['-1']])('loki sandbox worker --concurrency %s → usage error, exit 2', async (n) => {
    const r = await runCli(['sandbox', 'worker', '--concurrency', n]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`loki: --concurrency must be an integer from 1 to 32, got ${JSON.stringify(n)}\n`);
  });

  it.each([
    ['LOKI_WORKER_ID', 'bad id!', /^loki: LOKI_WORKER_ID="bad id!" is invalid: expected letters, digits/],
    ['LOKI_SANDBOX_KILL_GRACE_MS', '-5', /^loki: LOKI_SANDBOX_KILL_GRACE_MS="-5" is invalid: expected an integer from 0 to 60000\n$/],
    ['LOKI_SANDBOX_LEASE_MS', '10', /^loki: LOKI_SANDBOX_LEASE_MS="10" is invalid: expected an integer from 1000 to 600000\n$/],
  ])('a bad %s stops the worker with exit 2 and one line', async (name, value, message) => {
    const r = await runCli(['sandbox', 'worker'], { [name]: value });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });
});


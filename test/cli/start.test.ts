/**
 * `loki start` and `loki sandbox worker` as processes, without Docker: host
 * sessions (`loki start --host`, allowed by LOKI_ALLOW_HOST_SESSIONS on the server
 * and the worker, for the operator's host_commands) run as child processes in the
 * session's private worktree. Exit codes, one-line errors, Ctrl-C stops the session.
 */
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { START_EXIT_CODES } from '../../src/cli/start';
import { LokiClient } from '../../src/client';
import { freePort, LOKI_BIN, runCli, startTestServer, type TestServer, tempHome } from '../helpers/server';
import { makeToken } from '../helpers/tokens';
import { runLoki, type SpawnedWorker, spawnWorker } from '../helpers/worker';
import { makeWorkspace, providerConfig, tempRoot } from '../sessions/helpers';

/** The provider commands these host sessions run: the only ones the operator policy allows on the host. */
const FAILING = ['/bin/sh', '-c', 'echo working; echo broken >&2; exit 3'];
const SLEEPING = ['/bin/sh', '-c', 'echo started; sleep 30'];
const WRITING = ['/bin/sh', '-c', 'echo hello from the agent > made-by-agent.txt'];

describe('loki start --host with a worker (host sessions, no Docker)', () => {
  let s: TestServer;
  let root: string;
  let home: string;
  let worker: SpawnedWorker;
  let operator: string;
  const env = () => ({ HOME: home, LOKI_HOME: home, LOKI_URL: s.url, LOKI_TOKEN: operator });

  beforeAll(async () => {
    root = tempRoot();
    home = tempHome();
    // One operator policy for the server and the worker (each checks it), never ~/.loki/policy.yaml.
    const policyFile = path.join(home, 'policy.yaml');
    writeFileSync(policyFile, `host_commands:\n${[FAILING, SLEEPING, WRITING].map((c) => `  - ${JSON.stringify(c)}\n`).join('')}`);
    chmodSync(policyFile, 0o600);
    const hostSessions = { LOKI_POLICY_FILE: policyFile, LOKI_ALLOW_HOST_SESSIONS: 'true' };
    s = await startTestServer({ LOKI_WORKSPACE_ROOTS: root, LOKI_ENTERPRISE_AUTH: 'true', LOKI_SANDBOX_LEASE_MS: '6000', ...hostSessions });
    operator = (await makeToken(s, 'cli-operator', 'operator')).token;
    const workerId = `cli-${process.pid}`;
    const workerToken = (await makeToken(s, 'cli-worker', 'worker', { workerId })).token;
    worker = await spawnWorker(
      { HOME: home, LOKI_HOME: home, LOKI_URL: s.url, LOKI_WORKER_TOKEN: workerToken, LOKI_WORKER_ID: workerId, LOKI_SANDBOX_KILL_GRACE_MS: '500', ...hostSessions },
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
    const ws = makeWorkspace(root, 'fails', { config: providerConfig(FAILING) });
    const r = await runLoki(['start', 'prd.md', '--host', '--name', 'failing'], { cwd: ws, env: env() });
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('working\nbroken\n');
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(3);
    const id = /^loki: session (ses_[0-9a-f]+) /.exec(lines[0]!)?.[1];
    const session = await new LokiClient({ url: s.url, token: operator }).getSession(id!);
    expect(session).toMatchObject({ host_session: true, sandbox: false, status: 'failed', policy: { sandbox: false, command: FAILING } });
    expect(lines[0]).toBe(`loki: session ${id} queued (HOST SESSION: runs on the worker host, outside the sandbox, policy ${session.policy_sha256!.slice(0, 12)})`);
    expect(lines[1]).toBe('loki: the agent changed nothing');
    expect(lines[2]).toMatch(new RegExp(`^loki: session ${id} failed in [\\d.]+ s, exit code 3: the provider exited with code 3$`));
  });

  it('the agent works in a private copy: the workspace is untouched, the change comes back as a patch, exit 0', async () => {
    const ws = makeWorkspace(root, 'writes', { config: providerConfig(WRITING) });
    const r = await runLoki(['start', 'prd.md', '--host'], { cwd: ws, env: env() });
    expect(r.stderr).toMatch(/^loki: session ses_[0-9a-f]+ queued \(HOST SESSION/);
    expect(r.code).toBe(0);
    const id = /^loki: session (ses_[0-9a-f]+) /.exec(r.stderr)![1]!;
    expect(r.stderr).toContain(`loki: 1 file changed, +1 -0; the patch: GET /api/sessions/${id}/patch (apply it with git apply)\n`);
    expect(r.stderr).toMatch(new RegExp(`loki: session ${id} succeeded in [\\d.]+ s`));
    expect(existsSync(path.join(ws, 'made-by-agent.txt'))).toBe(false);
    const session = await new LokiClient({ url: s.url, token: operator }).getSession(id);
    expect(session.result).toMatchObject({ kind: 'copy', files_changed: 1, insertions: 1, deletions: 0, has_patch: true });
    const patch = await fetch(`${s.url}/api/sessions/${id}/patch`, { headers: { Authorization: `Bearer ${operator}` } });
    expect(patch.status).toBe(200);
    const text = await patch.text();
    expect(text).toContain('made-by-agent.txt');
    expect(text).toContain('+hello from the agent');
  });

  it('Ctrl-C asks the server to stop the session: it ends stopped, exit 4', async () => {
    const ws = makeWorkspace(root, 'interrupted', { config: providerConfig(SLEEPING) });
    const child = spawn(process.execPath, [LOKI_BIN, 'start', 'prd.md', '--host'], { cwd: ws, env: { PATH: process.env.PATH ?? '', ...env() } });
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

  it('refused requests: 400 (PRD is a directory), 401 (no token) and 403 (a host command the operator did not list) → exit 2 with one line', async () => {
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
    // A host session runs only the operator's host_commands: this workspace's default command is not one.
    const notListed = await runLoki(['start', 'prd.md', '--host'], { cwd: ws, env: env() });
    expect(notListed.code).toBe(2);
    expect(notListed.stderr).toMatch(
      /^loki: not allowed \(policy_violation\): \.loki\/config\.yaml: provider\.command: \["claude",.*\] is not one of the operator's host_commands \(.*policy\.yaml\); a host session runs only those\n$/,
    );
    const client = new LokiClient({ url: s.url, token: operator });
    expect((await client.listSessions({ limit: 200 })).sessions.filter((x) => x.workspace === ws)).toEqual([]);
  });
});

describe('loki start exit codes', () => {
  it('one per outcome, disk_exceeded included (9)', () => {
    expect(START_EXIT_CODES).toMatchObject({
      succeeded: 0,
      failed: 1,
      usage: 2,
      unreachable: 3,
      stopped: 4,
      timed_out: 5,
      budget_exceeded: 6,
      oom_killed: 7,
      lost: 8,
      disk_exceeded: 9,
    });
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

  it('--host with LOKI_SANDBOX_MODE=true, or with --sandbox, is a usage error (exit 2) before any request', async () => {
    const root = tempRoot();
    const ws = makeWorkspace(root, 'ws');
    const port = await freePort(); // nothing listens: a request would exit 3
    try {
      const env = { HOME: root, LOKI_HOME: root, LOKI_URL: `http://127.0.0.1:${port}` };
      const forced = await runLoki(['start', 'prd.md', '--host'], { cwd: ws, env: { ...env, LOKI_SANDBOX_MODE: 'true' } });
      expect(forced.code).toBe(2);
      expect(forced.stderr).toBe('loki: --host is refused: LOKI_SANDBOX_MODE=true requests a sandbox for every session\n');
      const both = await runLoki(['start', 'prd.md', '--host', '--sandbox'], { cwd: ws, env });
      expect(both.code).toBe(2);
      expect(both.stderr).toBe('loki: --host and --sandbox exclude each other\n');
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


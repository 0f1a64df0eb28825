/**
 * End to end against the real engine: `loki start` (a process) → the dashboard
 * (a process) → a sandbox worker (a process) → Docker. Auth is on: the CLI uses
 * an operator token, the worker a worker token. Containers use NetworkMode none.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import type Docker from 'dockerode';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { LokiClient } from '../../src/client';
import type { SessionView } from '../../src/sessions/api';
import { describeDocker, dockerAvailable } from '../helpers/docker';
import { until } from '../helpers/process';
import { runCli, type SpawnedServer, spawnServer, tempHome } from '../helpers/server';
import { runLoki, type SpawnedWorker, spawnWorker } from '../helpers/worker';
import { HOSTILE_PRD, makeWorkspace, providerConfig, tempRoot } from '../sessions/helpers';

const probe = await dockerAvailable();
const WORKER_ID = `e2e-${process.pid}`;
const TERMINAL = new Set(['succeeded', 'failed', 'stopped', 'timed_out', 'budget_exceeded', 'oom_killed', 'disk_exceeded', 'lost']);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));


describeDocker('loki start → server → worker → Docker (end to end)', probe, (docker: Docker) => {
  let home: string;
  let root: string;
  let server: SpawnedServer;
  let worker: SpawnedWorker | null = null;
  let opsToken: string;
  let workerToken: string;
  let client: LokiClient;

  const baseEnv = () => ({ HOME: home, LOKI_HOME: home, LOKI_URL: server.url });
  const startWorker = (concurrency = 4) =>
    spawnWorker(
      { ...baseEnv(), LOKI_WORKER_TOKEN: workerToken, LOKI_WORKER_ID: WORKER_ID, LOKI_SANDBOX_KILL_GRACE_MS: '1000' },
      ['--concurrency', String(concurrency)],
    );
  const start = (cwd: string, args: string[]) => runLoki(['start', ...args], { cwd, env: { ...baseEnv(), LOKI_TOKEN: opsToken } });
  const sessionIdFrom = (stderr: string) => /session (ses_[0-9a-f]+)/.exec(stderr)?.[1] ?? '';
  const containersOf = (label: string) => docker.listContainers({ all: true, filters: { label: [label] } });
  const waitEnded = (id: string, timeoutMs = 30_000) =>
    until(`session ${id} to end`, async () => {
      const s = await client.getSession(id);
      return TERMINAL.has(s.status) ? s : null;
    }, timeoutMs);
  const runningContainer = (id: string) =>
    until(`a running container for ${id}`, async () => (await docker.listContainers({ filters: { label: [`loki.session=${id}`] } }))[0]);
  function eventTypes(sessionId: string): string[] {
    const db = new Database(path.join(home, 'dashboard', 'loki.db'), { readonly: true });
    try {
      return (db.prepare('SELECT type FROM events WHERE session_id = ? ORDER BY id').all(sessionId) as { type: string }[]).map((r) => r.type);
    } finally {
      db.close();
    }
  }

  async function token(name: string, role: string, extra: string[] = []): Promise<string> {
    const r = await runCli(['enterprise', 'token', 'generate', name, '--role', role, '--json', ...extra], { LOKI_HOME: home, HOME: home });
    expect(r.code, r.stderr).toBe(0);
    return (JSON.parse(r.stdout) as { token: string }).token;
  }

  beforeAll(async () => {
    home = tempHome('loki-e2e-home-');
    root = tempRoot('loki-e2e-');
    writeFileSync(path.join(home, 'canary'), 'still here\n');
    rmSync('/tmp/pwned', { force: true });
    server = await spawnServer({ LOKI_WORKSPACE_ROOTS: root, LOKI_ENTERPRISE_AUTH: 'true', LOKI_SANDBOX_LEASE_MS: '3000' }, home);
    opsToken = await token('e2e-operator', 'operator');
    workerToken = await token('e2e-worker', 'worker', ['--worker-id', WORKER_ID]);
    client = new LokiClient({ url: server.url, token: opsToken });
    worker = await startWorker(4);
  });

  afterAll(async () => {
    if (worker && worker.child.exitCode === null && worker.child.signalCode === null) {
      worker.child.kill('SIGTERM');
      await worker.exited;
    }
    if (server) {
      server.child.kill('SIGTERM');
      await server.exited;
    }
    const left = await containersOf(`loki.worker=${WORKER_ID}`);
    for (const c of left) await docker.getContainer(c.Id).remove({ force: true });
    rmSync(root, { recursive: true, force: true });
    rmSync(home, { recursive: true, force: true });
    expect(left.map((c) => c.Id)).toEqual([]);
  });

  it('a sandboxed session succeeds and streams its output; a PRD named like a shell injection is only a file name', async () => {
    const ws = makeWorkspace(root, 'hostile', {
      config: providerConfig(['cat', '{prd}']),
      files: { [HOSTILE_PRD]: '# hostile PRD\nline two\n' },
    });
    const r = await start(ws, [HOSTILE_PRD, '--sandbox', '--name', 'e2e-hostile']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('# hostile PRD\nline two\n');
    const lines = r.stderr.trim().split('\n');
    expect(lines[lines.length - 1]).toMatch(/^loki: session ses_[0-9a-f]+ succeeded in [\d.]+ s, exit code 0$/);
    expect(existsSync('/tmp/pwned')).toBe(false);
    expect(readFileSync(path.join(home, 'canary'), 'utf8')).toBe('still here\n');

    const s = await client.getSession(sessionIdFrom(r.stderr));
    expect(s).toMatchObject({ status: 'succeeded', sandbox: true, prd: HOSTILE_PRD, name: 'e2e-hostile', created_by: 'e2e-operator', worker_id: WORKER_ID });
    expect(s.container_id).toMatch(/^[0-9a-f]{64}$/);
    await expect(docker.getContainer(s.container_id!).inspect()).rejects.toMatchObject({ statusCode: 404 });
  });

  it('run from a subdirectory of a repository: the git root is the workspace, the agent sees only its worktree, no Loki credential reaches it', async () => {
    const ws = makeWorkspace(root, 'repo', { config: providerConfig(['/bin/sh', '-c', 'cat "$1"; env; pwd; echo agent > out.txt', 'sh', '{prd}']) });
    const git = (...args: string[]) => {
      const g = spawnSync('git', ['-c', 'user.name=t', '-c', 'user.email=t@localhost', ...args], { cwd: ws, encoding: 'utf8' });
      expect(g.status, g.stderr).toBe(0);
      return g.stdout.trim();
    };
    git('init', '-q', '-b', 'main');
    git('add', '.');
    git('commit', '-q', '-m', 'init');
    mkdirSync(path.join(ws, 'sub'));
    const r = await start(path.join(ws, 'sub'), ['../prd.md']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.startsWith('# PRD\nbuild the thing\n')).toBe(true);
    expect(r.stdout).not.toContain(workerToken);
    expect(r.stdout).not.toContain(opsToken);
    expect(r.stdout).not.toMatch(/^LOKI_/m);
    expect(r.stdout.trim().split('\n').at(-1)).toBe('/workspace');
    const s = await client.getSession(sessionIdFrom(r.stderr));
    expect(s).toMatchObject({ sandbox: true, workspace: ws, prd: 'prd.md', base_branch: 'main', agent_branch: `loki/session-${s.id}` });
    expect(git('symbolic-ref', 'HEAD')).toBe('refs/heads/main');
    expect(git('show', `loki/session-${s.id}:out.txt`)).toBe('agent');
    expect(existsSync(path.join(ws, 'out.txt'))).toBe(false);
    expect(eventTypes(s.id)).toEqual(expect.arrayContaining(['branch', 'session_result']));
  });

  it('a provider reporting costs past the budget ends budget_exceeded (exit 6) after a budget_warning', async () => {
    const ws = makeWorkspace(root, 'spender', {
      config: providerConfig(['/bin/sh', '-c', 'echo \'{"total_cost_usd": 0.85}\'; sleep 0.5; echo \'{"total_cost_usd": 1.2}\'; sleep 30']),
    });
    const r = await start(ws, ['prd.md', '--sandbox', '--budget', '1.00']);
    expect(r.code, r.stderr).toBe(6);
    expect(r.stderr).toMatch(/budget_exceeded .*\$1\.20 spent: budget exceeded: \$1\.20 spent of \$1\.00\n$/);
    const s = await client.getSession(sessionIdFrom(r.stderr));
    expect(s).toMatchObject({ status: 'budget_exceeded', cost_usd: 1.2, budget_usd: 1 });
    const types = eventTypes(s.id);
    expect(types).toContain('budget_warning');
    expect(types).toContain('budget_exceeded');
  });

  it('a provider running past timeout_seconds ends timed_out (exit 5); a bad --budget is refused locally (exit 2)', async () => {
    const ws = makeWorkspace(root, 'sleeper', { config: providerConfig(['sleep', '30'], { timeout_seconds: 2 }) });
    const t0 = Date.now();
    const r = await start(ws, ['prd.md', '--sandbox']);
    expect(r.code, r.stderr).toBe(5);
    expect(Date.now() - t0).toBeLessThan(15_000);
    expect(r.stderr).toMatch(/timed_out .*ran longer than 2 s \(timeout_seconds\)\n$/);

    const bad = await start(ws, ['prd.md', '--budget', '1.234']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toBe(`loki: --budget: expected a positive amount in USD with at most 2 decimals, at most 10000 (e.g. 5.00), got "1.234"\n`);
  });

  it('stop through the API: the running container is stopped and removed, the session ends stopped', async () => {
    const ws = makeWorkspace(root, 'stoppable', { config: providerConfig(['/bin/sh', '-c', 'echo up; sleep 60']) });
    const created = await client.createSession({ workspace: ws, prd: 'prd.md', sandbox: true });
    const container = await runningContainer(created.id);
    const t0 = Date.now();
    await client.stopSession(created.id);
    const s = await waitEnded(created.id);
    expect(s).toMatchObject({ status: 'stopped', reason: 'stop requested' });
    expect(Date.now() - t0).toBeLessThan(10_000);
    await expect(docker.getContainer(container.Id).inspect()).rejects.toMatchObject({ statusCode: 404 });
    expect((await client.sessionLogs(created.id)).lines.map((l) => l.text)).toEqual(['up']);
  });

  it('SIGKILL of the worker mid-session: on restart the orphan container is removed and the session is lost', async () => {
    const ws = makeWorkspace(root, 'orphan', { config: providerConfig(['sleep', '60']) });
    const created = await client.createSession({ workspace: ws, prd: 'prd.md', sandbox: true });
    const container = await runningContainer(created.id);
    worker!.child.kill('SIGKILL');
    await worker!.exited;
    expect((await docker.getContainer(container.Id).inspect()).State.Running).toBe(true);

    worker = await startWorker(4);
    const s = await until('the session to be lost and its container removed', async () => {
      const now = await client.getSession(created.id);
      const left = await containersOf(`loki.session=${created.id}`);
      return now.status === 'lost' && left.length === 0 ? now : null;
    }, 30_000);
    expect(s.reason).toBe('worker lease expired');
    expect(worker.output()).toContain(`"container_id":"${container.Id}"`);
    // Its worktree is recovered: the (empty) work committed, the file system unmounted, the directory gone.
    await until('the orphan worktree to be recovered', async () => !existsSync(path.join(home, 'worktrees', created.id)));
    expect(worker.output()).toContain('orphan worktree committed and removed');
    expect(spawnSync('losetup', ['-a'], { encoding: 'utf8' }).stdout).not.toContain(created.id);
    expect(eventTypes(created.id)).not.toContain('output');
  });

  it('ten sessions through one worker at concurrency 4 all finish, never more than 4 at once, and leave no container behind', async () => {
    const ws = makeWorkspace(root, 'many', { config: providerConfig(['/bin/sh', '-c', 'echo start; sleep 1; echo done']) });
    const sessions: SessionView[] = [];
    for (let i = 0; i < 10; i++) sessions.push(await client.createSession({ workspace: ws, prd: 'prd.md', sandbox: true, name: `many-${i}` }));
    let maxRunning = 0;
    let done = false;
    const watch = (async () => {
      while (!done) {
        const running = await docker.listContainers({ filters: { label: [`loki.worker=${WORKER_ID}`] } });
        maxRunning = Math.max(maxRunning, running.length);
        await sleep(100);
      }
    })();
    const ended = await Promise.all(sessions.map((s) => waitEnded(s.id, 60_000)));
    done = true;
    await watch;
    expect(ended.map((s) => s.status)).toEqual(Array(10).fill('succeeded'));
    expect(maxRunning).toBeGreaterThan(1);
    expect(maxRunning).toBeLessThanOrEqual(4);
    for (const s of sessions) expect((await client.sessionLogs(s.id)).lines.map((l) => l.text)).toEqual(['start', 'done']);
    expect(await containersOf(`loki.worker=${WORKER_ID}`)).toEqual([]);
  });

  it('SIGTERM: the worker stops its sessions, reports them stopped and exits 0 within 15 s', async () => {
    const ws = makeWorkspace(root, 'term', { config: providerConfig(['/bin/sh', '-c', 'trap "" TERM; echo stubborn; sleep 60']) });
    const a = await client.createSession({ workspace: ws, prd: 'prd.md', sandbox: true });
    const b = await client.createSession({ workspace: ws, prd: 'prd.md', sandbox: true });
    await runningContainer(a.id);
    await runningContainer(b.id);
    const t0 = Date.now();
    worker!.child.kill('SIGTERM');
    const exit = await worker!.exited;
    expect(exit).toEqual({ code: 0, signal: null });
    expect(Date.now() - t0).toBeLessThan(15_000);
    for (const id of [a.id, b.id]) {
      expect(await client.getSession(id)).toMatchObject({ status: 'stopped', reason: 'the worker shut down' });
    }
    expect(await containersOf(`loki.worker=${WORKER_ID}`)).toEqual([]);
    worker = null;
  });
  it('warm pool (--warm 2): a session starts on a pooled container, the pool refills, SIGTERM leaves 0 containers', async () => {
    if (worker) {
      worker.child.kill('SIGTERM');
      await worker.exited;
    }
    worker = await spawnWorker(
      { ...baseEnv(), LOKI_WORKER_TOKEN: workerToken, LOKI_WORKER_ID: WORKER_ID, LOKI_SANDBOX_KILL_GRACE_MS: '1000' },
      ['--concurrency', '2', '--warm', '2'],
    );
    const warm = async () => (await containersOf(`loki.pool=1`)).filter((c) => c.Labels['loki.worker'] === WORKER_ID && c.State === 'running').map((c) => c.Id).sort();
    const ready = await until('2 warm containers', async () => {
      const ids = await warm();
      return ids.length === 2 ? ids : null;
    });
    // No sandbox settings: the session's policy is the worker's default, so it matches the pool.
    const ws = makeWorkspace(root, 'warm', { config: 'provider:\n  command: ["/bin/sh", "-c", "echo warm start; echo from-the-pool > pooled.txt"]\n' });
    const r = await start(ws, ['prd.md']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('warm start\n');
    const s = await client.getSession(sessionIdFrom(r.stderr));
    expect(s.status).toBe('succeeded');
    expect(ready).toContain(s.container_id);
    const db = new Database(path.join(home, 'dashboard', 'loki.db'), { readonly: true });
    try {
      const created = db.prepare("SELECT data FROM events WHERE session_id = ? AND type = 'container' ORDER BY id").all(s.id) as { data: string }[];
      expect(JSON.parse(created[0]!.data)).toMatchObject({ event: 'created', container_id: s.container_id, pooled: true });
      const audited = db.prepare("SELECT entry FROM audit_log WHERE action = 'sandbox.container.created' ORDER BY seq DESC LIMIT 1").get() as { entry: string };
      expect(JSON.parse(audited.entry).details).toMatchObject({ container_id: s.container_id, pooled: true });
    } finally {
      db.close();
    }
    expect(s.result?.files_changed).toBe(1);
    // The used container is gone and the pool made another.
    const refilled = await until('the pool to refill', async () => {
      const ids = await warm();
      return ids.length === 2 && !ids.includes(s.container_id!) ? ids : null;
    });
    expect(refilled.filter((id) => ready.includes(id))).toHaveLength(1);

    worker!.child.kill('SIGTERM');
    expect(await worker!.exited).toEqual({ code: 0, signal: null });
    expect(await containersOf(`loki.worker=${WORKER_ID}`)).toEqual([]);
    expect(readdirSync(path.join(home, 'pool', WORKER_ID))).toEqual([]);
    worker = null;
  });
});

/**
 * `loki sessions`, `loki logs ID [-f]`, `loki stop ID` and `loki status` as real
 * processes against a real server (token auth on). The sessions' output and
 * outcomes come through the worker protocol, posted by the test as a worker would.
 */
import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LokiClient } from '../../src/client';
import type { Job, SessionView, WorkerEvent } from '../../src/sessions/api';
import { runProcess, until } from '../helpers/process';
import { freePort, LOKI_BIN, runCli, startTestServer, type TestServer, tempHome } from '../helpers/server';
import { makeToken } from '../helpers/tokens';
import { makeWorkspace, tempRoot } from '../sessions/helpers';

describe('loki sessions / logs / stop / status against a server', () => {
  let s: TestServer;
  let root: string;
  let ws: string;
  let home: string;
  let operator: string;
  let viewer: string;
  let workerToken: string;
  let api: LokiClient;
  let worker: LokiClient;
  const WORKER_ID = 'cli-remote-test';
  const env = (token: string | null = operator) => ({ LOKI_HOME: home, LOKI_URL: s.url, ...(token ? { LOKI_TOKEN: token } : {}) });

  beforeAll(async () => {
    root = tempRoot();
    ws = makeWorkspace(root, 'ws');
    home = tempHome();
    s = await startTestServer({ LOKI_WORKSPACE_ROOTS: root, LOKI_ENTERPRISE_AUTH: 'true' });
    operator = (await makeToken(s, 'remote-operator', 'operator')).token;
    viewer = (await makeToken(s, 'remote-viewer', 'viewer')).token;
    workerToken = (await makeToken(s, 'remote-worker', 'worker', { workerId: WORKER_ID })).token;
    api = new LokiClient({ url: s.url, token: operator });
    worker = new LokiClient({ url: s.url, token: workerToken });
  });
  afterAll(async () => {
    await s?.stop();
    rmSync(root, { recursive: true, force: true });
    rmSync(home, { recursive: true, force: true });
  });

  /** Claim sessions until `id` comes (earlier tests may have left some queued; those are failed). */
  async function claim(id: string): Promise<Job> {
    for (;;) {
      const job = await worker.claimJob({ worker_id: WORKER_ID, wait_ms: 0 });
      if (!job) throw new Error(`session ${id} was not claimable`);
      if (job.session.id === id) return job;
      await post(job, [{ seq: 1, type: 'state', data: { status: 'failed', reason: 'test cleanup' } }]);
    }
  }
  const post = (job: Job, events: WorkerEvent[]) => worker.postJobEvents(job.session.id, { worker_id: WORKER_ID, lease_id: job.lease_id, events });
  const output = (seq: number, lines: string[], stream: 'stdout' | 'stderr' = 'stdout'): WorkerEvent => ({ seq, type: 'output', data: { stream, lines } });

  it('loki sessions: a table of the newest first; --json is the API list; --status and --limit filter', async () => {
    const a = await api.createSession({ workspace: ws, prd: 'prd.md', name: 'first' });
    const b = await api.createSession({ workspace: ws, prd: 'prd.md', budget_usd: 2.5 });
    const r = await runCli(['sessions'], env());
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^ID\s+STATUS\s+WHERE\s+COST\s+BUDGET\s+RAN\s+CREATED\s+NAME \/ PRD$/);
    const row = (x: SessionView) => lines.find((l) => l.startsWith(x.id))!;
    expect(row(b)).toMatch(new RegExp(`^${b.id}\\s+queued\\s+sandbox\\s+\\$0\\.00\\s+\\$2\\.50\\s+-\\s+\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ\\s+prd\\.md \\(${ws}\\)$`));
    expect(row(a)).toMatch(new RegExp(`^${a.id}\\s+queued\\s+sandbox\\s+\\$0\\.00\\s+-\\s+-\\s+\\S+\\s+first \\(${ws}\\)$`));
    expect(lines.indexOf(row(b))).toBeLessThan(lines.indexOf(row(a)));

    const j = await runCli(['sessions', '--json', '--limit', '1'], env());
    expect(j.code).toBe(0);
    const list = JSON.parse(j.stdout) as { sessions: SessionView[]; next_cursor: string | null };
    expect(list.sessions.map((x) => x.id)).toEqual([b.id]);
    expect(list.next_cursor).toMatch(/^\d+:ses_/);

    const job = await claim(a.id);
    await post(job, [{ seq: 1, type: 'state', data: { status: 'succeeded', exit_code: 0 } }]);
    const done = await runCli(['sessions', '--json', '--status', 'succeeded'], env(viewer));
    expect(done.code).toBe(0);
    expect((JSON.parse(done.stdout) as { sessions: SessionView[] }).sessions.map((x) => x.id)).toEqual([a.id]);
    const none = await runCli(['sessions', '--status', 'oom_killed'], env());
    expect(none).toEqual({ code: 0, stdout: '', stderr: `loki: no oom_killed sessions on ${s.url}\n` });
  }, 180_000);

  it('loki sessions: control characters in a workspace or PRD path (a directory anyone with access to a root may name) are shown escaped', async () => {
    const hostileWs = makeWorkspace(root, 'ws\u001b]0;pwned\u0007', { files: { 'p\u001b[2J.md': '# PRD\n' } });
    const x = await api.createSession({ workspace: hostileWs, prd: 'p\u001b[2J.md' });
    const r = await runCli(['sessions'], env(viewer));
    expect(r.code).toBe(0);
    expect(r.stdout).not.toContain('\u001b');
    const row = r.stdout.split('\n').find((l) => l.startsWith(x.id));
    expect(row).toContain(`p\\u001b[2J.md (${root}/ws\\u001b]0;pwned\\u0007)`);
    await claim(x.id).then((job) => post(job, [{ seq: 1, type: 'state', data: { status: 'failed', reason: 'test cleanup' } }]));
  }, 180_000);

  it('loki sessions: bad --status or --limit is a usage error (exit 2) before any request', async () => {
    const bad = await runCli(['sessions', '--status', 'done'], { ...env(), LOKI_URL: `http://127.0.0.1:${await freePort()}` });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^loki: --status must be one of queued, running, succeeded, .*, got "done"\n$/);
    const limit = await runCli(['sessions', '--limit', '500'], env());
    expect(limit).toEqual({ code: 2, stdout: '', stderr: 'loki: --limit must be an integer from 1 to 200, got "500"\n' });
  });

  it('loki logs ID prints the stored output and exits 0; --json gives one object per line', async () => {
    const x = await api.createSession({ workspace: ws, prd: 'prd.md' });
    const job = await claim(x.id);
    await post(job, [output(1, ['hello', 'world']), output(2, ['oops'], 'stderr')]);
    const r = await runCli(['logs', x.id], env(viewer));
    expect(r).toEqual({ code: 0, stdout: 'hello\nworld\noops\n', stderr: '' });
    const j = await runCli(['logs', x.id, '--json'], env());
    const objs = j.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(objs.map((o) => [o.line, o.stream, o.text])).toEqual([
      [1, 'stdout', 'hello'],
      [2, 'stdout', 'world'],
      [3, 'stderr', 'oops'],
    ]);
    await post(job, [{ seq: 3, type: 'state', data: { status: 'failed', exit_code: 1, reason: 'done here' } }]);
  }, 180_000);

  it('loki logs ID on a terminal: an agent\'s control characters (retitle, clear screen) are shown escaped; a pipe gets them as they are', async () => {
    const x = await api.createSession({ workspace: ws, prd: 'prd.md' });
    const job = await claim(x.id);
    const hostile = '\u001b]0;pwned\u0007\u001b[2Jclean';
    await post(job, [output(1, [hostile])]);
    expect(await runCli(['logs', x.id], env(viewer))).toEqual({ code: 0, stdout: `${hostile}\n`, stderr: '' });
    // script(1) gives the CLI a pseudo-terminal as stdout.
    const e = env(viewer);
    const tty = await runProcess('script', ['-qec', `${process.execPath} ${LOKI_BIN} logs ${x.id}`, '/dev/null'], {
      env: { PATH: process.env.PATH ?? '', HOME: e.LOKI_HOME, ...e },
    });
    expect(tty.code).toBe(0);
    expect(tty.stdout).not.toContain('\u001b');
    expect(tty.stdout.trim()).toBe('\\u001b]0;pwned\\u0007\\u001b[2Jclean');
    await post(job, [{ seq: 2, type: 'state', data: { status: 'failed', exit_code: 1, reason: 'done here' } }]);
  }, 180_000);

  it('loki logs -f follows a running session to its end; the exit code is its outcome (timed_out → 5)', async () => {
    const x = await api.createSession({ workspace: ws, prd: 'prd.md' });
    const job = await claim(x.id);
    await post(job, [output(1, ['before'])]);
    const child = spawn(process.execPath, [LOKI_BIN, 'logs', '-f', x.id], { env: { PATH: process.env.PATH ?? '', HOME: home, ...env() } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      stdout += d;
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    const closed = new Promise<number | null>((resolve) => child.once('close', resolve));
    await until('the first line', async () => stdout.includes('before\n'));
    await post(job, [output(2, ['during 1', 'during 2'])]);
    await until('the later lines', async () => stdout.includes('during 2\n'));
    expect(child.exitCode).toBeNull();
    await post(job, [output(3, ['last']), { seq: 4, type: 'state', data: { status: 'timed_out', reason: 'the session ran past 60 s' } }]);
    expect(await closed).toBe(5);
    expect(stdout).toBe('before\nduring 1\nduring 2\nlast\n');
    expect(stderr).toMatch(new RegExp(`^loki: session ${x.id} timed_out in [\\d.]+ s: the session ran past 60 s\\n$`));
  }, 180_000);

  it('loki stop ID: a queued session ends at once; a running one is asked to stop; an ended one is refused (409 → exit 2)', async () => {
    const queued = await api.createSession({ workspace: ws, prd: 'prd.md' });
    const r = await runCli(['stop', queued.id], env());
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(new RegExp(`^loki: session ${queued.id} stopped: stopped by remote-operator before it started\\n$`));
    expect((await api.getSession(queued.id)).status).toBe('stopped');

    const running = await api.createSession({ workspace: ws, prd: 'prd.md' });
    const job = await claim(running.id);
    const j = await runCli(['stop', running.id, '--json'], env());
    expect(j.code).toBe(0);
    expect(JSON.parse(j.stdout)).toMatchObject({ stop_requested: true, session: { id: running.id, status: 'running', stop_requested: true } });
    const again = await runCli(['stop', running.id], env());
    expect(again).toEqual({
      code: 0,
      stdout: '',
      stderr: `loki: stop requested for session ${running.id} (running); its worker stops it shortly (loki logs -f ${running.id} follows it to the end)\n`,
    });
    await post(job, [{ seq: 1, type: 'state', data: { status: 'stopped', reason: 'stop requested' } }]);

    const ended = await runCli(['stop', queued.id], env());
    expect(ended).toEqual({ code: 2, stdout: '', stderr: `loki: session ${queued.id} has already ended (stopped) (conflict)\n` });
  }, 180_000);

  it('loki status: the server status in words; --json is /api/status', async () => {
    const r = await runCli(['status'], env(viewer));
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toMatch(new RegExp(`^server\\s+${s.url}: running, version \\d+\\.\\d+\\.\\d+, up \\d+(s|m \\d+s) \\(node\\)$`));
    expect(lines).toContainEqual(expect.stringMatching(/^auth\s+tokens on, OIDC off, env development$/));
    expect(lines).toContainEqual(expect.stringMatching(/^audit\s+on: \d+ entries, head [0-9a-f]{16}$/));
    expect(lines).toContainEqual(expect.stringMatching(/^sandbox\s+sandbox mode off, branch protection on$/));
    expect(lines).toContainEqual(expect.stringMatching(/^sessions\s+\d+ total: .*\d+ stopped/));
    expect(r.stdout).not.toMatch(/[{}]|\[object/);
    const j = await runCli(['status', '--json'], env());
    expect(j.code).toBe(0);
    const doc = JSON.parse(j.stdout);
    const direct = await (await s.req('/api/status', { token: operator })).json();
    expect(doc).toMatchObject({ status: 'running', service: 'loki-dashboard', version: direct.version, flags: direct.flags });
    expect(Object.keys(doc).sort()).toEqual(Object.keys(direct).sort());
  }, 180_000);

  it('401 (no token): exit 2 with one line telling to set LOKI_TOKEN', async () => {
    for (const args of [['sessions'], ['logs', 'ses_0000000000000000'], ['stop', 'ses_0000000000000000'], ['status']]) {
      const r = await runCli(args, env(null));
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr).toBe('loki: the server refused the token (invalid_token): a bearer token is required; set LOKI_TOKEN to a valid token\n');
    }
  }, 180_000);

  it('403: one line naming the role needed (viewer stopping, worker listing), exit 2', async () => {
    const x = await api.createSession({ workspace: ws, prd: 'prd.md' });
    const stop = await runCli(['stop', x.id], env(viewer));
    expect(stop).toEqual({
      code: 2,
      stdout: '',
      stderr: 'loki: not allowed: stopping a session needs the operator or admin role (scope "control"); the token in LOKI_TOKEN lacks it\n',
    });
    const list = await runCli(['sessions'], env(workerToken));
    expect(list.code).toBe(2);
    expect(list.stderr).toBe('loki: not allowed: listing sessions needs the viewer, auditor, operator or admin role (scope "read"); the token in LOKI_TOKEN lacks it\n');
    const status = await runCli(['status'], env(workerToken));
    expect(status.stderr).toBe('loki: not allowed: reading the server status needs the viewer, auditor, operator or admin role (scope "read"); the token in LOKI_TOKEN lacks it\n');
    await api.stopSession(x.id);
  }, 180_000);

  it('404: an unknown session is one line, exit 2 (logs, logs -f, stop)', async () => {
    const id = 'ses_0123456789abcdef';
    for (const args of [['logs', id], ['logs', '-f', id], ['stop', id]]) {
      const r = await runCli(args, env());
      expect(r, args.join(' ')).toEqual({ code: 2, stdout: '', stderr: `loki: no session ${id} on ${s.url} (loki sessions lists them)\n` });
    }
  }, 180_000);
});

describe('API client commands without a server', () => {
  it.each([[['sessions']], [['logs', 'ses_0123456789abcdef']], [['logs', '-f', 'ses_0123456789abcdef']], [['stop', 'ses_0123456789abcdef']], [['status']]])(
    '%j: unreachable → exit 3 with one line naming the URL',
    async (args) => {
      const port = await freePort();
      const r = await runCli(args, { LOKI_HOME: tempHome(), LOKI_URL: `http://127.0.0.1:${port}` });
      expect(r).toEqual({
        code: 3,
        stdout: '',
        stderr: `loki: cannot reach the Loki server at http://127.0.0.1:${port} (ECONNREFUSED); is the dashboard running (loki dashboard) and LOKI_URL right?\n`,
      });
    },
  );

  it.each([[['sessions']], [['logs']], [['stop']], [['status']], [['start']]])('%j --help documents the exit codes', async (args) => {
    const r = await runCli([...args, '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('Exit codes:\n  0  done');
    expect(r.stdout).toContain('  3  server unreachable, or a server error\n');
    expect(r.stdout).toContain('LOKI_URL (default http://127.0.0.1:57374) and LOKI_TOKEN');
  });
});

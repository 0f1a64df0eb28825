/**
 * A real agent CLI end to end: `loki start ./prd.md --provider claude` (a process) →
 * the dashboard (a process) → a sandbox worker (a process) → Docker → Claude Code in
 * `loki-agent:local` (scripts/agent-image.sh), unattended, in a `NetworkMode: none`
 * container whose only way out is the session's egress proxy. The model is a scripted
 * Anthropic Messages API on 127.0.0.2 (test/helpers/fake-anthropic.ts): the operator
 * policy lists that exact address as a private destination and the session's
 * `sandbox.egress` names it; 127.0.0.2 is not in the agent's NO_PROXY, so Claude Code
 * reaches it only through the proxy. One Write tool call, one final answer: the file
 * lands in the session's commit. Claude Code's other traffic (feature flags,
 * bootstrap, event logging, all to api.anthropic.com:443) is refused and audited.
 *
 * The image sets CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 (with the real API allowed,
 * telemetry would go to the same host); the worker hands the session an empty value
 * through the env allowlist so that traffic is attempted and the proxy has to refuse it.
 */
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import type Docker from 'dockerode';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { LokiClient } from '../../src/client';
import { describeDocker, dockerAvailable } from '../helpers/docker';
import { type FakeAnthropic, startFakeAnthropic } from '../helpers/fake-anthropic';
import { ROOT, runCli, type SpawnedServer, spawnServer, tempHome } from '../helpers/server';
import { runLoki, type SpawnedWorker, spawnWorker } from '../helpers/worker';
import { makeWorkspace, tempRoot } from '../sessions/helpers';

const AGENT_IMAGE = 'loki-agent:local';
const probe = await dockerAvailable({ image: AGENT_IMAGE });
const WORKER_ID = `agent-cli-${process.pid}`;
/** A dummy key shaped like a real one: the agent must get it, nothing Loki stores or prints may contain it. */
const API_KEY = `sk-ant-api03-${randomBytes(24).toString('base64url')}-loki-test`;
const PRD = '# Greeting\n\nAdd docs/hello.md with a greeting from the agent.\n';
const FILE = 'docs/hello.md';
const CONTENT = 'Hello from Claude Code in the Loki sandbox.\nSecond line: ünïcödé ✓\n';
const FINAL = 'Done: docs/hello.md is written.';

/** git in `cwd` with a fixed identity; raw stdout. */
function git(cwd: string, ...args: string[]): string {
  const g = spawnSync('git', ['-c', 'user.name=t', '-c', 'user.email=t@localhost', '-c', 'safe.directory=*', ...args], { cwd, encoding: 'utf8' });
  if (g.status !== 0) throw new Error(`git ${args.join(' ')}: ${g.stderr}`);
  return g.stdout;
}

/** Everything about a checkout that a session must not change (its refs but the session branches). */
function checkoutState(ws: string) {
  return {
    head: git(ws, 'symbolic-ref', 'HEAD'),
    commit: git(ws, 'rev-parse', 'HEAD'),
    refs: git(ws, 'for-each-ref', '--format=%(refname) %(objectname)')
      .split('\n')
      .filter((l) => !l.startsWith('refs/heads/loki/session-')),
    status: git(ws, 'status', '--porcelain', '--untracked-files=all'),
    index: createHash('sha256').update(readFileSync(path.join(ws, '.git', 'index'))).digest('hex'),
    files: readdirSync(ws).sort(),
  };
}

/** Every regular file below `dir`. */
function filesBelow(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? filesBelow(p) : e.isFile() ? [p] : [];
  });
}

describeDocker(`a real agent CLI (Claude Code in ${AGENT_IMAGE}) through the egress allowlist`, probe, (docker: Docker) => {
  let fake: FakeAnthropic;
  let home: string;
  let root: string;
  let server: SpawnedServer;
  let worker: SpawnedWorker;
  let opsToken: string;

  beforeAll(async () => {
    const built = spawnSync(path.join(ROOT, 'scripts', 'forwarder', 'build.sh'), [], { encoding: 'utf8', timeout: 110_000 });
    if (built.status !== 0) throw new Error(`forwarder build failed: ${built.stderr}`);
    fake = await startFakeAnthropic({
      host: '127.0.0.2',
      write: { filePath: `/workspace/${FILE}`, content: CONTENT },
      finalText: FINAL,
      usage: { input_tokens: 1200, output_tokens: 150 },
    });
    home = tempHome('loki-agent-cli-');
    root = tempRoot('loki-agent-cli-ws-');
    // The operator: the agent image, the model endpoint as the one private
    // destination, and the variables a session may receive from the worker.
    writeFileSync(
      path.join(home, 'policy.yaml'),
      [
        'images: ["loki-sandbox:local", "loki-agent:local"]',
        'env_allowlist: [ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL, CLAUDE_CODE_MAX_RETRIES, CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC]',
        `egress: {allow: [], private_destinations: ["127.0.0.2:${fake.port}"]}`,
        '',
      ].join('\n'),
      { mode: 0o600 },
    );
    server = await spawnServer({ LOKI_WORKSPACE_ROOTS: root, LOKI_ENTERPRISE_AUTH: 'true' }, home);
    const gen = async (name: string, args: string[]) => {
      const r = await runCli(['enterprise', 'token', 'generate', name, ...args, '--json'], { LOKI_HOME: home, HOME: home });
      expect(r.code, r.stderr).toBe(0);
      return (JSON.parse(r.stdout) as { token: string }).token;
    };
    opsToken = await gen('ops', ['--role', 'operator']);
    const workerToken = await gen('w', ['--role', 'worker', '--worker-id', WORKER_ID]);
    // The same LOKI_HOME: the worker reads the same policy file.
    worker = await spawnWorker({
      HOME: home,
      LOKI_HOME: home,
      LOKI_URL: server.url,
      LOKI_WORKER_TOKEN: workerToken,
      LOKI_WORKER_ID: WORKER_ID,
      ANTHROPIC_API_KEY: API_KEY,
      ANTHROPIC_BASE_URL: fake.url,
      // A failed model call ends the run at once instead of after minutes of retries.
      CLAUDE_CODE_MAX_RETRIES: '0',
      // Empty overrides the image's 1: telemetry is attempted, and must be refused.
      CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '',
    });
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
    await fake?.close();
    const left = await docker.listContainers({ all: true, filters: { label: [`loki.worker=${WORKER_ID}`] } });
    for (const c of left) await docker.getContainer(c.Id).remove({ force: true });
    if (root) rmSync(root, { recursive: true, force: true });
    if (home) rmSync(home, { recursive: true, force: true });
    expect(left).toEqual([]);
  });

  it('claude -p runs unattended: one Write tool call through the proxy, the file on loki/session-<id>, telemetry refused, cost from the result line', async () => {
    // No provider in the file: `--provider claude` picks the preset.
    const config = [
      'sandbox:',
      `  image: ${AGENT_IMAGE}`,
      `  egress: ["127.0.0.2:${fake.port}"]`,
      '  env_allowlist: [ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL, CLAUDE_CODE_MAX_RETRIES, CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC]',
      '  memory_limit: 2g',
      '  cpu_limit: "2"',
      '  timeout_seconds: 180',
      '',
    ].join('\n');
    const ws = makeWorkspace(root, 'greeting', { config, files: { 'README.md': 'the project\n' } });
    writeFileSync(path.join(ws, 'prd.md'), PRD);
    git(ws, 'init', '-q', '-b', 'main');
    git(ws, 'add', '-A');
    git(ws, 'commit', '-q', '-m', 'init');
    writeFileSync(path.join(ws, 'notes.txt'), 'uncommitted work of the user\n');
    const before = checkoutState(ws);
    const base = git(ws, 'rev-parse', 'HEAD').trim();

    const t0 = Date.now();
    const r = await runLoki(['start', './prd.md', '--provider', 'claude', '--budget', '5.00'], {
      cwd: ws,
      env: { HOME: home, LOKI_HOME: home, LOKI_URL: server.url, LOKI_TOKEN: opsToken },
      timeoutMs: 170_000,
    });
    const seconds = (Date.now() - t0) / 1000;
    expect(r.code, `${r.stderr}\n${worker.output()}`).toBe(0);
    const id = /session (ses_[0-9a-f]+)/.exec(r.stderr)![1]!;
    const branch = `loki/session-${id}`;

    // The session, its policy and its cost (Claude Code's own total_cost_usd).
    const client = new LokiClient({ url: server.url, token: opsToken });
    const s = await client.getSession(id);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const resultLine = lines.at(-1)!;
    expect(resultLine).toMatchObject({ type: 'result', subtype: 'success', is_error: false, num_turns: 2, result: FINAL });
    expect(lines[0]).toMatchObject({ type: 'system', subtype: 'init', cwd: '/workspace', permissionMode: 'bypassPermissions', apiKeySource: 'ANTHROPIC_API_KEY' });
    const cost = resultLine.total_cost_usd as number;
    expect(cost).toBeGreaterThan(0);
    expect(s).toMatchObject({ status: 'succeeded', exit_code: 0, sandbox: true, budget_usd: 5, cost_usd: cost });
    expect(s.policy).toMatchObject({
      image: AGENT_IMAGE,
      network: false,
      egress: [`127.0.0.2:${fake.port}`],
      command: ['claude', '-p', '{prompt}', '--output-format', 'stream-json', '--verbose', '--dangerously-skip-permissions'],
    });

    // The model saw the prompt built from the PRD, asked for the Write, got its result, answered.
    expect(fake.requests.map((q) => [q.method, q.url, q.stream, q.reply])).toEqual([
      ['POST', '/v1/messages?beta=true', true, 'tool_use'],
      ['POST', '/v1/messages?beta=true', true, 'final'],
    ]);
    expect(fake.requests[0]!.tools).toContain('Write');
    expect(fake.requests[0]!.userText).toContain(`--- PRD ---\n${PRD.trimEnd()}\n--- end of PRD ---`);
    expect(fake.requests[1]!.toolResult).toBe(true);
    expect(fake.requests[1]!.toolResultText).toHaveLength(1);
    expect(fake.requests[1]!.toolResultText[0]).toMatch(new RegExp(`^File created successfully at: /workspace/${FILE}\\b`));
    expect(fake.requests.map((q) => q.apiKey)).toEqual([API_KEY, API_KEY]);

    // The file is the session's one commit; the user's checkout is as it was.
    expect(git(ws, 'show', `${branch}:${FILE}`)).toBe(CONTENT);
    expect(git(ws, 'rev-list', '--count', `${base}..${branch}`).trim()).toBe('1');
    expect(git(ws, 'rev-parse', `${branch}^`).trim()).toBe(base);
    expect(git(ws, 'diff', '--name-status', base, branch)).toBe(`A\t${FILE}\n`);
    expect(s.result).toMatchObject({ kind: 'git', branch, base_commit: base, files_changed: 1, insertions: 2, deletions: 0 });
    expect(git(ws, 'for-each-ref', '--format=%(refname) %(objectname)', 'refs/heads/loki/')).toBe(`refs/heads/${branch} ${s.result!.commit}\n`);
    expect(checkoutState(ws)).toEqual(before);
    expect(readFileSync(path.join(ws, 'notes.txt'), 'utf8')).toBe('uncommitted work of the user\n');

    // Every proxy decision, from the audit log.
    const db = new Database(path.join(home, 'dashboard', 'loki.db'), { readonly: true });
    let audit: { action: string; entry: string }[];
    let stored: string[];
    try {
      audit = db.prepare('SELECT action, entry FROM audit_log ORDER BY seq').all() as { action: string; entry: string }[];
      stored = [
        ...(db.prepare('SELECT data FROM events').all() as { data: string }[]).map((e) => e.data),
        ...(await client.sessionLogs(id, { limit: 1000 })).lines.map((l) => l.text),
      ];
    } finally {
      db.close();
    }
    const egress = audit
      .filter((a) => a.action.startsWith('egress.'))
      .map((a) => ({ action: a.action, e: JSON.parse(a.entry) as { resource: { id: string }; details: Record<string, unknown>; outcome: { success: boolean } } }))
      .filter((a) => a.e.resource.id === id);
    const allowed = egress.filter((a) => a.action === 'egress.allowed');
    const denied = egress.filter((a) => a.action === 'egress.denied');
    expect(allowed.length + denied.length).toBe(egress.length);
    // One proxied connection per model request (plain HTTP, one request each), all to the endpoint.
    expect(allowed).toHaveLength(fake.requests.length);
    for (const a of allowed) {
      expect(a.e.outcome.success).toBe(true);
      expect(a.e.details).toMatchObject({
        host: '127.0.0.2',
        port: fake.port,
        method: 'HTTP',
        rule: `private_destination:127.0.0.2:${fake.port}`,
        address: '127.0.0.2',
        worker_id: WORKER_ID,
      });
      expect(a.e.details.bytes_up).toBeGreaterThan(0);
      expect(a.e.details.bytes_down).toBeGreaterThan(0);
    }
    // The bytes each way are exactly what the endpoint read and wrote.
    const sum = (k: string) => allowed.reduce((n, a) => n + (a.e.details[k] as number), 0);
    expect(fake.bytes()).toEqual({ received: sum('bytes_up'), sent: sum('bytes_down'), connections: allowed.length });
    // Claude Code's own traffic (feature flags, bootstrap, event logging) all goes to
    // api.anthropic.com:443 over CONNECT, which this session does not list.
    expect(denied.length).toBeGreaterThan(0);
    expect([...new Set(denied.map((d) => JSON.stringify([d.e.details.host, d.e.details.port, d.e.details.method, d.e.details.rule, d.e.outcome.success])))]).toEqual([
      JSON.stringify(['api.anthropic.com', 443, 'CONNECT', 'not_allowlisted', false]),
    ]);

    // The key reached the agent, and nothing Loki printed, stored or audited holds it.
    expect(r.stdout).not.toContain(API_KEY);
    expect(r.stderr).not.toContain(API_KEY);
    expect(worker.output()).not.toContain(API_KEY);
    expect(server.output()).not.toContain(API_KEY);
    expect(audit.filter((a) => a.entry.includes(API_KEY))).toEqual([]);
    expect(stored.filter((t) => t.includes(API_KEY))).toEqual([]);
    expect(filesBelow(home).filter((f) => statSync(f).size > 0 && readFileSync(f).includes(API_KEY))).toEqual([]);

    expect(await docker.listContainers({ all: true, filters: { label: [`loki.session=${id}`] } })).toEqual([]);
    // Refused traffic does not stall it: Claude Code runs 2–3 s, the session about 10 s
    // (worktree, container, commit), far below its 180 s timeout.
    expect(seconds).toBeLessThan(60);
  }, 200_000);
});

/** The host (non-sandbox) path of runSession: a child process with the same limits. */
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { defaultWorkspaceConfig, type SandboxSettings, type WorkspaceConfig } from '../../src/sandbox/config';
import { runSession, type SessionHooks, type SessionSpec } from '../../src/sandbox/runner';

let ws: string;
let home: string;

beforeEach(() => {
  ws = mkdtempSync(path.join(tmpdir(), 'loki-run-'));
  home = mkdtempSync(path.join(tmpdir(), 'loki-home-'));
  writeFileSync(path.join(ws, 'prd.md'), '# PRD\n');
});
afterEach(() => {
  rmSync(ws, { recursive: true, force: true });
  rmSync(home, { recursive: true, force: true });
});

function config(command: string[], patch: Partial<SandboxSettings> = {}): WorkspaceConfig {
  const base = defaultWorkspaceConfig({ workspaceDir: ws, home });
  return { sandbox: { ...base.sandbox, ...patch }, provider: { command } };
}

function recorder(signal?: AbortSignal) {
  const lines: string[] = [];
  const errLines: string[] = [];
  const events: { type: string; data: Record<string, unknown> }[] = [];
  const hooks: SessionHooks = {
    onOutput: (stream, line) => (stream === 'stdout' ? lines : errLines).push(line),
    onEvent: (type, data) => events.push({ type, data }),
    signal,
  };
  return { hooks, lines, errLines, events, types: () => events.map((e) => e.type) };
}

function spec(command: string[], patch: Partial<SessionSpec> = {}, settings: Partial<SandboxSettings> = {}): SessionSpec {
  return {
    sessionId: 'host1',
    workerId: 'w1',
    workspace: ws,
    prdRelative: 'prd.md',
    sandbox: false,
    config: config(command, settings),
    budgetUsd: null,
    env: { PATH: '/usr/bin:/bin', HOME: home, LOKI_WORKER_TOKEN: 'loki_workertokenvalue', SECRET_THING: 'x', API_KEY: 'k' },
    ...patch,
  };
}

const opts = {
  killGraceMs: 500,
  get home() {
    return home;
  },
};

describe('runSession without the sandbox', () => {
  it('runs the provider in the workspace with the PRD as one argument and only allowlisted env', async () => {
    const name = "a b'; rm -rf ~; $(touch /tmp/pwned).md";
    // The name holds a `/`: it is a directory `a b'; rm -rf ~; $(touch ` with `tmp/pwned).md` below it.
    mkdirSync(path.dirname(path.join(ws, name)), { recursive: true });
    writeFileSync(path.join(ws, name), 'x');
    const r = recorder();
    const result = await runSession(
      spec(['/bin/sh', '-c', 'printf "<%s>\\n" "$@"; pwd; env | sort', 'sh', '{prd}'], { prdRelative: name }, { envAllowlist: ['API_KEY'] }),
      r.hooks,
      opts,
    );
    expect(result).toMatchObject({ outcome: 'succeeded', exitCode: 0 });
    expect(r.lines[0]).toBe(`<${name}>`);
    expect(r.lines[1]).toBe(ws);
    const env = r.lines.slice(2).filter((l) => !l.startsWith('PWD=') && !l.startsWith('SHLVL=') && !l.startsWith('_='));
    expect(env).toEqual(['API_KEY=k', `HOME=${home}`, 'PATH=/usr/bin:/bin']);
    expect(existsSync('/tmp/pwned')).toBe(false);
    expect(existsSync(home)).toBe(true);
  });

  it('reports a non-zero exit as failed and redacts output', async () => {
    const r = recorder();
    const result = await runSession(spec(['/bin/sh', '-c', 'echo token loki_abcdefghijklmnop; echo oops >&2; exit 3']), r.hooks, opts);
    expect(result).toMatchObject({ outcome: 'failed', exitCode: 3 });
    expect(r.lines).toEqual(['token [REDACTED]']);
    expect(r.errLines).toEqual(['oops']);
  });

  it('times out a sleeper, escalating to SIGKILL when SIGTERM is ignored', async () => {
    const r = recorder();
    const started = Date.now();
    const result = await runSession(spec(['/bin/sh', '-c', 'trap "" TERM; sleep 30'], {}, { timeoutSeconds: 1 }), r.hooks, opts);
    expect(result.outcome).toBe('timed_out');
    expect(r.events.find((e) => e.type === 'session_timeout')?.data).toEqual({ kind: 'session', seconds: 1 });
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('times out on idle output', async () => {
    const r = recorder();
    const result = await runSession(
      spec(['/bin/sh', '-c', 'echo start; sleep 30'], {}, { timeoutSeconds: 60, idleTimeoutSeconds: 1 }),
      r.hooks,
      opts,
    );
    expect(result.outcome).toBe('timed_out');
    expect(r.events.find((e) => e.type === 'session_timeout')?.data).toEqual({ kind: 'idle', seconds: 1 });
  });

  it('stops on request with SIGTERM', async () => {
    const ac = new AbortController();
    const r = recorder(ac.signal);
    setTimeout(() => ac.abort(), 300);
    const result = await runSession(spec(['/bin/sh', '-c', 'trap "echo got-term; exit 0" TERM; while :; do sleep 0.05; done']), r.hooks, opts);
    expect(result.outcome).toBe('stopped');
    expect(r.lines).toContain('got-term');
    expect(r.types()).toContain('stop_requested');
  });

  it('returns stopped without starting when already aborted', async () => {
    const ac = new AbortController();
    ac.abort();
    const r = recorder(ac.signal);
    const result = await runSession(spec(['/bin/sh', '-c', 'touch started']), r.hooks, opts);
    expect(result.outcome).toBe('stopped');
    expect(existsSync(path.join(ws, 'started'))).toBe(false);
  });

  it('stops at the budget with a warning first', async () => {
    const r = recorder();
    const result = await runSession(
      spec(['/bin/sh', '-c', 'while :; do echo \'{"cost_usd":0.3}\'; sleep 0.05; done'], { budgetUsd: 1 }),
      r.hooks,
      opts,
    );
    expect(result.outcome).toBe('budget_exceeded');
    expect(result.spentUsd).toBeGreaterThanOrEqual(1);
    const budget = r.events.filter((e) => e.type.startsWith('budget_'));
    expect(budget.map((e) => e.type)).toEqual(['budget_warning', 'budget_exceeded']);
    expect(budget[0]!.data).toEqual({ spent_usd: 0.9, limit_usd: 1 });
  });

  it('caps the stored output with one marker line', async () => {
    const r = recorder();
    const result = await runSession(spec(['/bin/sh', '-c', 'i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done']), r.hooks, {
      ...opts,
      maxOutputBytes: 1000,
    });
    expect(result).toMatchObject({ outcome: 'succeeded', outputTruncated: true });
    expect(r.lines.at(-1)).toMatch(/output truncated/);
    expect(r.lines.slice(0, -1).join('\n').length).toBeLessThanOrEqual(1000);
    expect(r.types().filter((t) => t === 'output_truncated')).toHaveLength(1);
  });

  it('fails cleanly when the provider does not exist', async () => {
    const r = recorder();
    const result = await runSession(spec(['/nonexistent/agent', '{prd}']), r.hooks, opts);
    expect(result.outcome).toBe('failed');
    expect(result.error).toMatch(/could not be started/);
  });

  it.each([['../outside.md'], ['/etc/passwd'], ['missing.md'], ['sub']])('refuses PRD %s before running anything', async (prd) => {
    mkdirSync(path.join(ws, 'sub'));
    const r = recorder();
    const refused = await runSession(spec(['/bin/sh', '-c', 'touch ran'], { prdRelative: prd }), r.hooks, opts);
    expect(refused.outcome).toBe('failed');
    expect(refused.error).toBeTruthy();
    expect(r.types()).toEqual(['session_error']);
    expect(existsSync(path.join(ws, 'ran'))).toBe(false);
  });

  it('works on loki/session-<id> and reports a moved base branch', async () => {
    const gitEnv = { GIT_AUTHOR_NAME: 'a', GIT_AUTHOR_EMAIL: 'a@a', GIT_COMMITTER_NAME: 'a', GIT_COMMITTER_EMAIL: 'a@a' };
    const allow = { envAllowlist: Object.keys(gitEnv) };
    const setup = await runSession(
      spec(['/bin/sh', '-c', 'git init -q -b main && git commit -q --allow-empty -m base'], { branchProtection: false, env: { ...spec([]).env, ...gitEnv } }, allow),
      recorder().hooks,
      opts,
    );
    expect(setup.outcome).toBe('succeeded');
    const r = recorder();
    const result = await runSession(
      spec(['/bin/sh', '-c', 'git symbolic-ref --short HEAD; git commit -q --allow-empty -m agent && git update-ref refs/heads/main HEAD'], { env: { ...spec([]).env, ...gitEnv } }, allow),
      r.hooks,
      opts,
    );
    expect(result.outcome).toBe('succeeded');
    expect(r.lines[0]).toBe('loki/session-host1');
    expect(result.branch).toMatchObject({ isRepo: true, baseBranch: 'main', agentBranch: 'loki/session-host1', detached: false, baseMoved: true });
    expect(r.types()).toEqual(expect.arrayContaining(['branch_created', 'branch_protection_violation']));
    const violation = r.events.find((e) => e.type === 'branch_protection_violation')!.data;
    expect(violation.base_commit).toBe(result.branch!.baseCommit);
    expect(violation.current_commit).not.toBe(result.branch!.baseCommit);
  });

  it('runs on a detached HEAD with a warning event', async () => {
    const gitEnv = { GIT_AUTHOR_NAME: 'a', GIT_AUTHOR_EMAIL: 'a@a', GIT_COMMITTER_NAME: 'a', GIT_COMMITTER_EMAIL: 'a@a' };
    const allow = { envAllowlist: Object.keys(gitEnv) };
    const env = { ...spec([]).env, ...gitEnv };
    await runSession(
      spec(['/bin/sh', '-c', 'git init -q -b main && git commit -q --allow-empty -m base && git checkout -q --detach'], { branchProtection: false, env }, allow),
      recorder().hooks,
      opts,
    );
    const r = recorder();
    const result = await runSession(spec(['/bin/sh', '-c', 'true'], { env }, allow), r.hooks, opts);
    expect(result.outcome).toBe('succeeded');
    expect(result.branch).toMatchObject({ isRepo: true, detached: true, baseMoved: null });
    expect(r.types()).toContain('branch_detached_warning');
  });

  it('requires a Docker client for sandboxed sessions', async () => {
    await expect(runSession(spec(['true'], { sandbox: true }), recorder().hooks, opts)).rejects.toThrow(TypeError);
  });
});

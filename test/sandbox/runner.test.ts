/**
 * The host-session path of runSession: a child process with the same limits, in the
 * session's private worktree (never the workspace itself), committed afterwards.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { runSession, type SessionHooks, type SessionSpec } from '../../src/sandbox/runner';
import type { SessionPolicy } from '../../src/sessions/api';
import { sessionPolicy } from '../sessions/helpers';

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

/** A host session's policy (no disk limit: the loop-mounted file system is tested with Docker). */
function policy(command: string[], patch: Partial<SessionPolicy> = {}): SessionPolicy {
  return sessionPolicy(command, { sandbox: false, disk_bytes: null, ...patch });
}

const worktree = (id = 'host1') => path.join(home, 'worktrees', id, 'fs', 'work');

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

function spec(command: string[], patch: Partial<SessionSpec> = {}, settings: Partial<SessionPolicy> = {}): SessionSpec {
  return {
    sessionId: 'host1',
    workerId: 'w1',
    workspace: ws,
    prdRelative: 'prd.md',
    policy: policy(command, settings),
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
  get worktreeRoot() {
    return path.join(home, 'worktrees');
  },
};

describe('runSession without the sandbox', () => {
  it('runs the provider in its worktree with the PRD as one argument and only allowlisted env', async () => {
    const name = "a b'; rm -rf ~; $(touch /tmp/pwned).md";
    // The name holds a `/`: it is a directory `a b'; rm -rf ~; $(touch ` with `tmp/pwned).md` below it.
    mkdirSync(path.dirname(path.join(ws, name)), { recursive: true });
    writeFileSync(path.join(ws, name), 'x');
    const r = recorder();
    const result = await runSession(
      spec(['/bin/sh', '-c', 'printf "<%s>\\n" "$@"; pwd; env | sort', 'sh', '{prd}'], { prdRelative: name }, { env_allowlist: ['API_KEY'] }),
      r.hooks,
      opts,
    );
    expect(result).toMatchObject({ outcome: 'succeeded', exitCode: 0 });
    expect(r.lines[0]).toBe(`<${name}>`);
    expect(r.lines[1]).toBe(worktree());
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
    const result = await runSession(spec(['/bin/sh', '-c', 'trap "" TERM; sleep 30'], {}, { timeout_seconds: 1 }), r.hooks, opts);
    expect(result.outcome).toBe('timed_out');
    expect(r.events.find((e) => e.type === 'session_timeout')?.data).toEqual({ kind: 'session', seconds: 1 });
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('times out on idle output', async () => {
    const r = recorder();
    const result = await runSession(
      spec(['/bin/sh', '-c', 'echo start; sleep 30'], {}, { timeout_seconds: 60, idle_timeout_seconds: 1 }),
      r.hooks,
      opts,
    );
    expect(result.outcome).toBe('timed_out');
    expect(r.events.find((e) => e.type === 'session_timeout')?.data).toEqual({ kind: 'idle', seconds: 1 });
  });

  it('stops on request with SIGTERM', async () => {
    const ac = new AbortController();
    const r = recorder(ac.signal);
    const onOutput = r.hooks.onOutput;
    // Stop once the trap is installed (the worktree is made first, so no fixed delay).
    r.hooks.onOutput = (stream, line) => {
      onOutput(stream, line);
      if (line === 'ready') ac.abort();
    };
    const result = await runSession(spec(['/bin/sh', '-c', 'trap "echo got-term; exit 0" TERM; echo ready; while :; do sleep 0.05; done']), r.hooks, opts);
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
    expect(existsSync(path.join(home, 'worktrees', 'host1'))).toBe(false);
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

  it('reports spending while the session runs (the cost event), not only at the end', async () => {
    const r = recorder();
    const result = await runSession(spec(['/bin/sh', '-c', 'for i in 1 2 3; do echo \'{"cost_usd":0.3}\'; sleep 0.4; done']), r.hooks, opts);
    expect(result.outcome).toBe('succeeded');
    expect(result.spentUsd).toBe(0.9);
    const cost = r.events.filter((e) => e.type === 'cost').map((e) => e.data);
    // The first line is reported at once; later ones at most every 250 ms (a loaded machine may bunch them).
    expect(cost[0]).toEqual({ spent_usd: 0.3, limit_usd: null });
    const spent = cost.map((d) => d.spent_usd as number);
    expect(spent).toEqual([...spent].sort((a, b) => a - b));
    expect(new Set(spent).size).toBe(spent.length);
    expect(Math.max(...spent)).toBeLessThanOrEqual(0.9);
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
    expect(r.types()).toEqual(['setup_failed']);
    expect(existsSync(path.join(ws, 'ran'))).toBe(false);
  });

  it('never touches the workspace: a git repository gets one commit on loki/session-<id>, the checkout stays as it was', async () => {
    const git = (...args: string[]) => {
      const g = spawnSync('git', ['-c', 'user.name=u', '-c', 'user.email=u@u', ...args], { cwd: ws, encoding: 'utf8' });
      expect(g.status, g.stderr).toBe(0);
      return g.stdout.trim();
    };
    git('init', '-q', '-b', 'main');
    git('add', '-A');
    git('commit', '-q', '-m', 'base');
    const base = git('rev-parse', 'HEAD');
    const r = recorder();
    // The agent tries the old tricks: switch branches, move main, write hooks.
    const agent = 'echo agent > agent.txt; git checkout -q -b evil 2>/dev/null; ls -a; if test -e .git; then echo HAS_GIT; fi';
    const result = await runSession(spec(['/bin/sh', '-c', agent]), r.hooks, opts);
    expect(result.outcome).toBe('succeeded');
    expect(r.lines).not.toContain('HAS_GIT');
    expect(git('symbolic-ref', 'HEAD')).toBe('refs/heads/main');
    expect(git('rev-parse', 'main')).toBe(base);
    expect(git('status', '--porcelain')).toBe('');
    expect(existsSync(path.join(ws, 'agent.txt'))).toBe(false);
    expect(git('rev-list', '--count', `${base}..loki/session-host1`)).toBe('1');
    expect(git('show', 'loki/session-host1:agent.txt')).toBe('agent');
    expect(result.result).toMatchObject({ kind: 'git', branch: 'loki/session-host1', baseCommit: base, filesChanged: 1, insertions: 1, deletions: 0 });
    expect(r.types()).toEqual(expect.arrayContaining(['worktree_created', 'session_result']));
    expect(r.events.find((e) => e.type === 'worktree_created')!.data).toMatchObject({ kind: 'git', base_branch: 'main', base_commit: base, agent_branch: 'loki/session-host1' });
    expect(readdirSync(path.join(home, 'worktrees'))).toEqual([]);
  });

  it('an uncommitted PRD is placed in the worktree and lands in the session commit', async () => {
    const git = (...args: string[]) => spawnSync('git', ['-c', 'user.name=u', '-c', 'user.email=u@u', ...args], { cwd: ws, encoding: 'utf8' }).stdout.trim();
    rmSync(path.join(ws, 'prd.md'));
    writeFileSync(path.join(ws, 'README'), 'r\n');
    git('init', '-q', '-b', 'main');
    git('add', '-A');
    git('commit', '-q', '-m', 'base');
    mkdirSync(path.join(ws, 'docs'));
    writeFileSync(path.join(ws, 'docs', 'prd.md'), '# new PRD\n');
    const r = recorder();
    const result = await runSession(spec(['/bin/cat', '{prd}'], { prdRelative: 'docs/prd.md' }), r.hooks, opts);
    expect(result.outcome).toBe('succeeded');
    expect(r.lines).toEqual(['# new PRD']);
    expect(git('show', 'loki/session-host1:docs/prd.md')).toBe('# new PRD');
  });

  it('the PRD is never written outside the worktree through a symlink in the base commit', async () => {
    const git = (...args: string[]) => spawnSync('git', ['-c', 'user.name=u', '-c', 'user.email=u@u', ...args], { cwd: ws, encoding: 'utf8' });
    // The base commit has `a -> ..`; the user's working tree has a real directory `a/` holding the PRD.
    spawnSync('ln', ['-s', '..', path.join(ws, 'a')]);
    git('init', '-q', '-b', 'main');
    git('add', '-A');
    git('commit', '-q', '-m', 'base');
    rmSync(path.join(ws, 'a'));
    mkdirSync(path.join(ws, 'a'));
    writeFileSync(path.join(ws, 'a', 'prd.md'), '# PRD\n');
    const r = recorder();
    const result = await runSession(spec(['/bin/cat', '{prd}'], { prdRelative: 'a/prd.md' }), r.hooks, opts);
    expect(result.outcome).toBe('failed');
    expect(result.error).toBe('PRD path escapes the worktree: a/prd.md');
    expect(r.types()).toEqual(['worktree_created', 'setup_failed']);
    expect(existsSync(path.join(home, 'worktrees', 'host1'))).toBe(false);
  });

  it('a preset command gets a prompt built from the PRD content as one argument', async () => {
    writeFileSync(path.join(ws, 'prd.md'), '# Make a CLI\n$(touch /tmp/pwned)\n');
    const r = recorder();
    const result = await runSession(spec(['/bin/sh', '-c', 'printf "%s\\n" "$1"', 'sh', '{prompt}']), r.hooks, opts);
    expect(result.outcome).toBe('succeeded');
    expect(r.lines).toContain('# Make a CLI');
    expect(r.lines).toContain('$(touch /tmp/pwned)');
    expect(r.lines[0]).toMatch(/^You are working in \/workspace/);
    expect(existsSync('/tmp/pwned')).toBe(false);
  });

  it('a workspace that is not a repository gets a copy; the result is a patch', async () => {
    writeFileSync(path.join(ws, 'keep.txt'), 'keep\n');
    const r = recorder();
    const result = await runSession(spec(['/bin/sh', '-c', 'echo new > new.txt; rm keep.txt']), r.hooks, opts);
    expect(result.outcome).toBe('succeeded');
    expect(readFileSync(path.join(ws, 'keep.txt'), 'utf8')).toBe('keep\n');
    expect(existsSync(path.join(ws, 'new.txt'))).toBe(false);
    expect(result.result).toMatchObject({ kind: 'copy', branch: null, filesChanged: 2, patchTooLarge: false });
    expect(result.result!.patch).toContain('+++ b/new.txt');
    expect(result.result!.patch).toContain('--- a/keep.txt');
  });

  it('requires a Docker client for sandboxed sessions', async () => {
    await expect(runSession(spec(['true'], {}, { sandbox: true }), recorder().hooks, opts)).rejects.toThrow(TypeError);
  });
});

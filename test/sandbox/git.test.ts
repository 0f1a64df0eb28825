import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { branchCommit, checkBaseMoved, GitError, prepareSessionBranch } from '../../src/sandbox/git';

let dir: string;

function git(...args: string[]): string {
  const r = spawnSync('git', args, {
    cwd: dir,
    encoding: 'utf8',
    env: { PATH: '/usr/bin:/bin', HOME: dir, GIT_AUTHOR_NAME: 't', GIT_AUTHOR_EMAIL: 't@t', GIT_COMMITTER_NAME: 't', GIT_COMMITTER_EMAIL: 't@t' },
  });
  if (r.status !== 0) throw new Error(`git ${args.join(' ')}: ${r.stderr}`);
  return r.stdout.trim();
}

function initRepo(withCommit = true) {
  git('init', '-q', '-b', 'main');
  if (withCommit) {
    writeFileSync(path.join(dir, 'a.txt'), 'a\n');
    git('add', 'a.txt');
    git('commit', '-q', '-m', 'first');
  }
}

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'loki-git-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('prepareSessionBranch', () => {
  it('reports a plain directory as not a repository', async () => {
    expect(await prepareSessionBranch(dir, 's1')).toEqual({
      isRepo: false,
      baseBranch: null,
      baseCommit: null,
      agentBranch: null,
      detached: false,
    });
  });

  it('creates and checks out loki/session-<id> at the base commit, keeping local changes', async () => {
    initRepo();
    const base = git('rev-parse', 'HEAD');
    writeFileSync(path.join(dir, 'a.txt'), 'changed\n');
    const info = await prepareSessionBranch(dir, 's1');
    expect(info).toEqual({ isRepo: true, baseBranch: 'main', baseCommit: base, agentBranch: 'loki/session-s1', detached: false });
    expect(git('symbolic-ref', '--short', 'HEAD')).toBe('loki/session-s1');
    expect(git('rev-parse', 'loki/session-s1')).toBe(base);
    expect(git('status', '--porcelain')).toBe('M a.txt');
    expect(await checkBaseMoved(dir, 'main', base)).toBe(false);
  });

  it('works from a subdirectory of the repository', async () => {
    initRepo();
    mkdirSync(path.join(dir, 'sub'));
    const info = await prepareSessionBranch(path.join(dir, 'sub'), 's2');
    expect(info.agentBranch).toBe('loki/session-s2');
  });

  it('detects a moved, deleted or recreated base branch', async () => {
    initRepo();
    const info = await prepareSessionBranch(dir, 's1');
    git('commit', '-q', '--allow-empty', '-m', 'agent work');
    expect(await checkBaseMoved(dir, 'main', info.baseCommit)).toBe(false);
    git('update-ref', 'refs/heads/main', 'HEAD');
    expect(await checkBaseMoved(dir, 'main', info.baseCommit)).toBe(true);
    expect(await branchCommit(dir, 'main')).toBe(git('rev-parse', 'HEAD'));
    git('branch', '-D', 'main');
    expect(await checkBaseMoved(dir, 'main', info.baseCommit)).toBe(true);
    expect(await branchCommit(dir, 'main')).toBeNull();
  });

  it('leaves a detached HEAD alone', async () => {
    initRepo();
    const base = git('rev-parse', 'HEAD');
    git('checkout', '-q', '--detach');
    expect(await prepareSessionBranch(dir, 's1')).toEqual({
      isRepo: true,
      baseBranch: null,
      baseCommit: base,
      agentBranch: null,
      detached: true,
    });
    expect(spawnSync('git', ['symbolic-ref', '-q', 'HEAD'], { cwd: dir }).status).toBe(1);
  });

  it('handles an unborn branch (no commits yet)', async () => {
    initRepo(false);
    const info = await prepareSessionBranch(dir, 's1');
    expect(info).toEqual({ isRepo: true, baseBranch: 'main', baseCommit: null, agentBranch: 'loki/session-s1', detached: false });
    expect(await checkBaseMoved(dir, 'main', null)).toBe(false);
  });

  it('refuses to reuse an existing session branch and bad session ids', async () => {
    initRepo();
    git('branch', 'loki/session-s1');
    await expect(prepareSessionBranch(dir, 's1')).rejects.toThrow(GitError);
    await expect(prepareSessionBranch(dir, '../x')).rejects.toThrow(/cannot name a branch/);
    await expect(prepareSessionBranch(dir, 'a b')).rejects.toThrow(/cannot name a branch/);
  });

  it('runs no repository hooks and no fsmonitor on the host', async () => {
    initRepo();
    const marker = path.join(dir, 'hook-ran');
    const script = `#!/bin/sh\ntouch ${marker}\n`;
    for (const hook of ['post-checkout', 'reference-transaction', 'fsmonitor-watchman']) {
      writeFileSync(path.join(dir, '.git', 'hooks', hook), script);
      chmodSync(path.join(dir, '.git', 'hooks', hook), 0o755);
    }
    writeFileSync(path.join(dir, 'fsmon.sh'), script);
    chmodSync(path.join(dir, 'fsmon.sh'), 0o755);
    git('config', 'core.fsmonitor', path.join(dir, 'fsmon.sh'));
    const info = await prepareSessionBranch(dir, 's1');
    await checkBaseMoved(dir, 'main', info.baseCommit);
    expect(existsSync(marker)).toBe(false);
    // the hook itself works when git is asked to run it
    git('update-ref', 'refs/heads/other', 'HEAD');
    expect(existsSync(marker)).toBe(true);
  });
});

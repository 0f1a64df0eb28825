/** `loki sessions branches`: list and prune session branches in a real repository. */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runLoki } from '../helpers/worker';

let repo: string;
const git = (...args: string[]) => {
  const g = spawnSync('git', ['-c', 'user.name=t', '-c', 'user.email=t@localhost', ...args], { cwd: repo, encoding: 'utf8' });
  if (g.status !== 0) throw new Error(g.stderr);
  return g.stdout.trim();
};
const loki = (args: string[]) => runLoki(['sessions', 'branches', ...args], { cwd: repo, env: { HOME: repo } });

beforeAll(() => {
  repo = mkdtempSync(path.join(tmpdir(), 'loki-branches-'));
  git('init', '-q', '-b', 'main');
  writeFileSync(path.join(repo, 'a'), 'a\n');
  git('add', 'a');
  git('commit', '-q', '-m', 'base');
  // merged: a session branch whose commit main already contains
  git('branch', 'loki/session-merged');
  // abandoned: a commit main does not contain
  git('checkout', '-q', '-b', 'loki/session-abandoned');
  writeFileSync(path.join(repo, 'b'), 'b\n');
  git('add', 'b');
  git('commit', '-q', '-m', 'agent work');
  git('checkout', '-q', 'main');
  git('branch', 'unrelated');
});
afterAll(() => {
  rmSync(repo, { recursive: true, force: true });
});

describe('loki sessions branches', () => {
  it('lists session branches with their merge state (JSON)', async () => {
    const r = await loki(['--json']);
    expect(r.code, r.stderr).toBe(0);
    const body = JSON.parse(r.stdout) as { repo: string; branches: { branch: string; merged: boolean; commit: string }[] };
    expect(body.branches.map((b) => [b.branch, b.merged]).sort()).toEqual([
      ['loki/session-abandoned', false],
      ['loki/session-merged', true],
    ]);
  });

  it('--prune deletes only merged ones; --prune --all the abandoned ones too; other branches stay', async () => {
    const r = await loki(['--prune']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^deleted loki\/session-merged \(was [0-9a-f]{12}\)\n$/);
    expect(r.stderr).toBe(`loki: 1 session branch deleted in ${repo}\n`);
    expect(git('branch', '--list', 'loki/*')).toBe('loki/session-abandoned');
    const all = await loki(['--prune', '--all']);
    expect(all.code, all.stderr).toBe(0);
    expect(git('branch', '--list', 'loki/*')).toBe('');
    expect(git('branch', '--list', 'unrelated')).toBe('unrelated');
  });

  it('never deletes the checked-out session branch', async () => {
    git('checkout', '-q', '-b', 'loki/session-current');
    const r = await loki(['--prune', '--all']);
    expect(r.code, r.stderr).toBe(0);
    expect(git('symbolic-ref', '--short', 'HEAD')).toBe('loki/session-current');
    git('checkout', '-q', 'main');
  });

  it('usage errors are one line with exit 2', async () => {
    const r = await loki(['--all']);
    expect(r).toMatchObject({ code: 2, stdout: '', stderr: 'loki: --all goes with --prune\n' });
    const outside = await runLoki(['sessions', 'branches'], { cwd: tmpdir(), env: { HOME: tmpdir() } });
    expect(outside.code).toBe(2);
    expect(outside.stderr).toMatch(/^loki: \S+ is not inside a git repository\n$/);
  });
});

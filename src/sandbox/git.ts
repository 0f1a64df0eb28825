/**
 * Branch protection: before the agent starts, the workspace (if it is a git
 * repository) is moved from its branch onto `loki/session-<id>` at the same commit;
 * afterwards we check whether the base branch moved anyway.
 *
 * The agent can write `.git/` (the workspace is mounted read-write), so the host-side
 * git here must not run anything the repository configures: the branch switch uses
 * plumbing (`update-ref` + `symbolic-ref`, no checkout, so no smudge filters and no
 * work-tree refresh), every call disables hooks and fsmonitor, and the environment
 * is built from scratch (no inherited GIT_DIR and friends).
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { redactString } from '../util/redact';

export interface BranchInfo {
  isRepo: boolean;
  /** Short name of the branch the workspace was on (null when not a repo or detached). */
  baseBranch: string | null;
  /** Commit of that branch when the session started (null for an unborn branch). */
  baseCommit: string | null;
  /** `loki/session-<id>`, now checked out (null when not a repo or detached). */
  agentBranch: string | null;
  detached: boolean;
}

export interface GitOptions {
  /** PATH used to find `git` (the environment is not inherited). */
  path?: string;
  /** HOME for git (user config); omitted when not given. */
  home?: string;
  timeoutMs?: number;
}

export class GitError extends Error {
  readonly code = 'git_failed';
}

const DEFAULT_PATH = '/usr/local/bin:/usr/bin:/bin';
const SAFE_CONFIG = ['-c', 'core.hooksPath=/dev/null', '-c', 'core.fsmonitor=false'];
const SESSION_ID = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;

interface GitResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function git(cwd: string, args: string[], opts: GitOptions): Promise<GitResult> {
  const env: Record<string, string> = {
    PATH: opts.path ?? DEFAULT_PATH,
    LC_ALL: 'C',
    GIT_TERMINAL_PROMPT: '0',
    GIT_COMMITTER_NAME: 'Loki worker',
    GIT_COMMITTER_EMAIL: 'loki-worker@localhost',
  };
  if (opts.home) env.HOME = opts.home;
  return new Promise((resolve, reject) => {
    const child = spawn('git', [...SAFE_CONFIG, ...args], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new GitError(`git could not be started: ${err.message}`));
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: stdout.trim(), stderr: stderr.trim() });
    });
  });
}

async function gitOk(cwd: string, args: string[], opts: GitOptions): Promise<string> {
  const r = await git(cwd, args, opts);
  if (r.code !== 0) {
    const first = redactString(r.stderr.split('\n')[0] ?? '');
    throw new GitError(`git ${args[0]} failed: ${first || `exit code ${r.code}`}`);
  }
  return r.stdout;
}

/** The commit a local branch points at, or null when it does not exist. */
export async function branchCommit(workspace: string, branch: string, opts: GitOptions = {}): Promise<string | null> {
  const r = await git(workspace, ['rev-parse', '--verify', '--quiet', `refs/heads/${branch}^{commit}`], opts);
  return r.code === 0 && r.stdout ? r.stdout : null;
}

export function sessionBranchName(sessionId: string): string {
  if (!SESSION_ID.test(sessionId)) throw new GitError(`session id ${JSON.stringify(sessionId)} cannot name a branch`);
  return `loki/session-${sessionId}`;
}

/**
 * If `workspace` is in a git work tree, record its branch and commit, then create
 * and switch to `loki/session-<id>` at that commit (work tree and index untouched).
 * A detached HEAD is left alone and reported as `detached: true`.
 */
export async function prepareSessionBranch(workspace: string, sessionId: string, opts: GitOptions = {}): Promise<BranchInfo> {
  const agentBranch = sessionBranchName(sessionId);
  // git finds a repository only through a `.git` entry here or above (its
  // environment is built from scratch, so no GIT_DIR): without one, skip the spawn.
  if (!hasGitEntry(workspace)) return { isRepo: false, baseBranch: null, baseCommit: null, agentBranch: null, detached: false };
  const inside = await git(workspace, ['rev-parse', '--is-inside-work-tree'], opts);
  if (inside.code !== 0 || inside.stdout !== 'true') {
    return { isRepo: false, baseBranch: null, baseCommit: null, agentBranch: null, detached: false };
  }
  const head = await git(workspace, ['symbolic-ref', '--quiet', 'HEAD'], opts);
  const commitResult = await git(workspace, ['rev-parse', '--verify', '--quiet', 'HEAD^{commit}'], opts);
  const baseCommit = commitResult.code === 0 && commitResult.stdout ? commitResult.stdout : null;
  if (head.code !== 0 || !head.stdout.startsWith('refs/heads/')) {
    return { isRepo: true, baseBranch: null, baseCommit, agentBranch: null, detached: true };
  }
  const baseBranch = head.stdout.slice('refs/heads/'.length);
  const agentRef = `refs/heads/${agentBranch}`;
  await gitOk(workspace, ['check-ref-format', agentRef], opts);
  if (baseCommit) {
    // An empty old value makes update-ref fail if the branch already exists.
    await gitOk(workspace, ['update-ref', '-m', 'loki: create session branch', agentRef, baseCommit, ''], opts);
  }
  await gitOk(workspace, ['symbolic-ref', '-m', `loki: switch from ${baseBranch} to ${agentBranch}`, 'HEAD', agentRef], opts);
  return { isRepo: true, baseBranch, baseCommit, agentBranch, detached: false };
}

function hasGitEntry(dir: string): boolean {
  for (let d = path.resolve(dir); ; d = path.dirname(d)) {
    if (existsSync(path.join(d, '.git'))) return true;
    if (path.dirname(d) === d) return false;
  }
}

/** True when `baseBranch` no longer points at `baseCommit` (moved, created or deleted). */
export async function checkBaseMoved(
  workspace: string,
  baseBranch: string,
  baseCommit: string | null,
  opts: GitOptions = {},
): Promise<boolean> {
  return (await branchCommit(workspace, baseBranch, opts)) !== baseCommit;
}

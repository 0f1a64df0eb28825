/**
 * Session branch names and the options for host-side git. The git that touches a
 * session's worktree or the user's repository is in `worktree.ts` (hardened: no
 * hooks, no fsmonitor, no config-driven commands, an environment built from scratch).
 */

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

const SESSION_ID = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;

/** `loki/session-<id>`; refuses an id that could not safely name a branch. */
export function sessionBranchName(sessionId: string): string {
  if (!SESSION_ID.test(sessionId)) throw new GitError(`session id ${JSON.stringify(sessionId)} cannot name a branch`);
  return `loki/session-${sessionId}`;
}

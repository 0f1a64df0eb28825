/**
 * `loki sessions branches [--repo DIR] [--prune [--all]] [--json]`: every session
 * lands as a `loki/session-<id>` branch; this lists them (merged or not) and prunes
 * the merged ones, or with `--all` the abandoned ones too. It works on the
 * repository directly with the same hardened git as the worker (no hooks, no
 * config-driven commands), never deletes the checked-out branch, and deletes only a
 * branch that still points where it was listed.
 */
import { realpathSync } from 'node:fs';
import { listSessionBranches, pruneSessionBranches, WorktreeError } from '../sandbox/worktree';
import { gitRoot } from './start';

function say(line: string): void {
  process.stderr.write(`loki: ${line}\n`);
}

export async function runBranches(o: { repo?: string; into?: string; prune?: boolean; all?: boolean; json?: boolean }): Promise<number> {
  if (o.all && !o.prune) {
    say('--all goes with --prune');
    return 2;
  }
  let repo: string;
  try {
    repo = realpathSync(o.repo ?? process.cwd());
  } catch {
    say(`no such directory: ${o.repo}`);
    return 2;
  }
  const top = await gitRoot(repo);
  if (!top) {
    say(`${repo} is not inside a git repository`);
    return 2;
  }
  try {
    if (o.prune) {
      const deleted = await pruneSessionBranches(top, { mode: o.all ? 'all' : 'merged', into: o.into });
      if (o.json) process.stdout.write(`${JSON.stringify({ repo: top, deleted }, null, 2)}\n`);
      else {
        for (const b of deleted) process.stdout.write(`deleted ${b.branch} (was ${b.commit.slice(0, 12)})\n`);
        say(`${deleted.length} session branch${deleted.length === 1 ? '' : 'es'} deleted in ${top}`);
      }
      return 0;
    }
    const branches = await listSessionBranches(top, { into: o.into });
    if (o.json) process.stdout.write(`${JSON.stringify({ repo: top, branches }, null, 2)}\n`);
    else if (branches.length === 0) say(`no session branches in ${top}`);
    else for (const b of branches) process.stdout.write(`${b.merged ? 'merged    ' : 'unmerged  '}${b.commit.slice(0, 12)}  ${b.branch}\n`);
    return 0;
  } catch (err) {
    if (err instanceof WorktreeError) {
      say(err.message);
      return 1;
    }
    throw err;
  }
}

import type { Command } from 'commander';

/** `loki start` and `loki sandbox worker` (API clients of the server). */
export function sessionCommands(program: Command): void {
  program
    .command('start')
    .description('start an agent session for a PRD through the dashboard API; exit code = session outcome')
    .argument('<prd>', 'path to the PRD file, inside the current workspace')
    .option('--sandbox', 'run the session in the Docker sandbox (the default)')
    .option('--host', 'run on the worker host, outside the sandbox (the operator must allow host sessions)')
    .option('--provider <name>', 'an agent preset: claude, codex or gemini (instead of the config\'s provider.command)')
    .option('--budget <usd>', 'budget in USD (e.g. 5.00)')
    .option('--name <name>', 'a name for the session')
    .action(async (prd: string, o: { sandbox?: boolean; host?: boolean; provider?: string; budget?: string; name?: string }) => {
      const { runStart } = await import('./start');
      process.exit(await runStart(prd, o));
    });

  const sessions = program.command('sessions').description('agent sessions');
  sessions
    .command('branches')
    .description('list the loki/session-* branches of a repository; --prune deletes the merged ones (never the checked-out branch)')
    .option('--repo <dir>', 'the repository (default: the git root of the current directory)')
    .option('--into <branch>', 'merged into this branch (default: the current branch)')
    .option('--prune', 'delete the session branches already merged')
    .option('--all', 'with --prune: delete abandoned (unmerged) session branches too')
    .option('--json', 'print JSON')
    .action(async (o: { repo?: string; into?: string; prune?: boolean; all?: boolean; json?: boolean }) => {
      const { runBranches } = await import('./branches');
      process.exit(await runBranches(o));
    });

  const sandbox = program.command('sandbox').description('the sandbox worker');
  sandbox
    .command('worker')
    .description('run a sandbox worker: claims sessions from the server and runs them')
    .option('--concurrency <n>', 'sessions at once (1-32)', '2')
    .option('--warm <n>', 'containers of the default image and policy kept started ahead of time (0-32; 0: none)', '2')
    .action(async (o: { concurrency: string; warm: string }) => {
      const { runWorkerCli } = await import('../sandbox/worker');
      await runWorkerCli(o);
    });
}

import type { Command } from 'commander';
import { API_EXIT_CODES_HELP } from './start';
import { keepServingOnClosedPipe } from './pipe';

/** `loki start`, `sessions`, `logs`, `stop`, `status` and `loki sandbox worker` (API clients of the server). */
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
    .addHelpText('after', API_EXIT_CODES_HELP)
    .action(async (prd: string, o: { sandbox?: boolean; host?: boolean; provider?: string; budget?: string; name?: string }) => {
      const { runStart } = await import('./start');
      process.exit(await runStart(prd, o));
    });

  const sessions = program
    .command('sessions')
    .description('list the sessions on the server (newest first); `sessions branches`: their git branches')
    .option('--json', 'print JSON: {sessions, next_cursor}')
    .option('--status <state>', 'only sessions in this state (queued, running, succeeded, failed, stopped, …)')
    .option('--limit <n>', 'at most this many (1-200; default 50)')
    .addHelpText('after', API_EXIT_CODES_HELP)
    .action(async (o: { json?: boolean; status?: string; limit?: string }) => {
      const { runSessions } = await import('./remote');
      process.exit(await runSessions(o));
    });
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

  program
    .command('logs')
    .description("print a session's output; -f follows it until the session ends (exit code = its outcome, as loki start)")
    .argument('<id>', 'session id (loki sessions lists them)')
    .option('-f, --follow', 'keep printing until the session ends, then print its outcome on stderr')
    .option('--json', 'print each line as a JSON object {line, stream, text, ts}')
    .addHelpText('after', API_EXIT_CODES_HELP)
    .action(async (id: string, o: { follow?: boolean; json?: boolean }) => {
      const { runLogs } = await import('./remote');
      process.exit(await runLogs(id, o));
    });

  program
    .command('stop')
    .description('stop a session: a queued one ends at once, a running one is stopped by its worker')
    .argument('<id>', 'session id')
    .option('--json', 'print JSON: {session, stop_requested}')
    .addHelpText('after', API_EXIT_CODES_HELP)
    .action(async (id: string, o: { json?: boolean }) => {
      const { runStop } = await import('./remote');
      process.exit(await runStop(id, o));
    });

  program
    .command('status')
    .description('the server status (GET /api/status): version, uptime, auth, audit tip, sessions by state')
    .option('--json', 'print the status document as JSON')
    .addHelpText('after', API_EXIT_CODES_HELP)
    .action(async (o: { json?: boolean }) => {
      const { runStatus } = await import('./remote');
      process.exit(await runStatus(o));
    });

  const sandbox = program.command('sandbox').description('the sandbox worker');
  sandbox
    .command('worker')
    .description('run a sandbox worker: claims sessions from the server and runs them')
    .option('--concurrency <n>', 'sessions at once (1-32)', '2')
    .option('--warm <n>', 'containers of the default image and policy kept started ahead of time (0-32; 0: none)', '2')
    .option('--exit-with-parent', 'shut down (as on SIGTERM) when the process that started this worker is gone (used by the embedded worker)')
    .action(async (o: { concurrency: string; warm: string; exitWithParent?: boolean }) => {
      const { runWorkerCli } = await import('../sandbox/worker');
      keepServingOnClosedPipe();
      await runWorkerCli(o);
    });
}

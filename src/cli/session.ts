import type { Command } from 'commander';

/** `loki start` and `loki sandbox worker` (API clients of the server). */
export function sessionCommands(program: Command): void {
  program
    .command('start')
    .description('start an agent session for a PRD through the dashboard API; exit code = session outcome')
    .argument('<prd>', 'path to the PRD file, inside the current workspace')
    .option('--sandbox', 'run the session in the Docker sandbox')
    .option('--budget <usd>', 'budget in USD (e.g. 5.00)')
    .option('--name <name>', 'a name for the session')
    .action(async (prd: string, o: { sandbox?: boolean; budget?: string; name?: string }) => {
      const { runStart } = await import('./start');
      process.exit(await runStart(prd, o));
    });

  const sandbox = program.command('sandbox').description('the sandbox worker');
  sandbox
    .command('worker')
    .description('run a sandbox worker: claims sessions from the server and runs them')
    .option('--concurrency <n>', 'sessions at once (1-32)', '2')
    .action(async (o: { concurrency: string }) => {
      const { runWorkerCli } = await import('../sandbox/worker');
      await runWorkerCli(o);
    });
}

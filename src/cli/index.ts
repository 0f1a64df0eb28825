/**
 * The `loki` CLI. Usage errors exit 2 with one line on stderr; every command has --help.
 */
import { Command, CommanderError } from 'commander';
import { VERSION } from '../version';
import { auditCommands } from './audit';
import { dbCommands } from './db';
import { securityCommands } from './security';
import { sessionCommands } from './session';
import { tokenCommands } from './token';
import { witnessCommands } from './witness';

export function buildProgram(): Command {
  const program = new Command('loki')
    .description('Loki Mode control plane: dashboard server, tokens, audit log, sandboxed sessions')
    .version(VERSION, '-v, --version')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
    .configureOutput({ outputError: (str, write) => write(str.split('\n')[0]!.trim() ? `${str.split('\n')[0]}\n` : str) });

  program
    .command('dashboard')
    .description('run the dashboard API server (default 127.0.0.1:57374)')
    .option('--host <host>', 'bind address (LOKI_DASHBOARD_HOST)')
    .option('--port <port>', 'port (LOKI_DASHBOARD_PORT)')
    .action(async (o: { host?: string; port?: string }) => {
      const { runDashboard } = await import('../node');
      await runDashboard(o);
    });

  dbCommands(program);
  sessionCommands(program);
  const enterprise = program.command('enterprise').description('enterprise features: tokens and audit');
  tokenCommands(enterprise);
  auditCommands(enterprise);
  securityCommands(program);
  witnessCommands(program);
  return program;
}

export async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') process.exit(0);
      process.exit(2);
    }
    process.stderr.write(`loki: ${(err as Error).message}\n`);
    process.exit(1);
  }
}

await main(process.argv);

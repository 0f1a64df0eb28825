/**
 * The `loki` CLI. Usage errors exit 2 with one line on stderr; every command has
 * --help. Commander's own errors (unknown option or command, missing argument)
 * keep commander's message, on one line, and its verdict: exit 0 where commander
 * exits 0 (--help, --version), 2 (usage) where it reports an error. A closed
 * stdout or stderr ends the process as SIGPIPE ends a Unix tool (pipe.ts).
 */
import { Command, CommanderError } from 'commander';
import { VERSION } from '../version';
import { auditCommands } from './audit';
import { dbCommands } from './db';
import { exitQuietlyOnClosedPipe, keepServingOnClosedPipe } from './pipe';
import { securityCommands } from './security';
import { sessionCommands } from './session';
import { tokenCommands } from './token';
import { witnessCommands } from './witness';

/** Commander's message on one line ("error: unknown command 'sesions' (Did you mean sessions?)"). */
function oneLine(message: string): string {
  return message
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .join(' ');
}

/** The exit code for a commander error: its own 0 (help, version) stays 0, every error it reports is a usage error. */
export function commanderExitCode(err: CommanderError): number {
  return err.exitCode === 0 ? 0 : 2;
}

export function buildProgram(): Command {
  const program = new Command('loki')
    .description('Loki Mode control plane: dashboard server, tokens, audit log, sandboxed sessions')
    .version(VERSION, '-v, --version')
    .enablePositionalOptions()
    .exitOverride()
    .configureOutput({ outputError: (str, write) => write(`${oneLine(str)} (run with --help for usage)\n`) });

  program
    .command('dashboard')
    .description('run the dashboard API server (default 127.0.0.1:57374)')
    .option('--host <host>', 'bind address (LOKI_DASHBOARD_HOST)')
    .option('--port <port>', 'port (LOKI_DASHBOARD_PORT)')
    .action(async (o: { host?: string; port?: string }) => {
      const { runDashboard } = await import('../node');
      keepServingOnClosedPipe();
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
  exitQuietlyOnClosedPipe();
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) process.exit(commanderExitCode(err));
    process.stderr.write(`loki: ${(err as Error).message}\n`);
    process.exit(1);
  }
}


import type { Command } from 'commander';
import { migrate, openSqlite, tightenDbFiles } from '../db/sqlite';
import { configOrExit } from '../node';
import { fail } from './common';

export function dbCommands(program: Command): void {
  const db = program.command('db').description('database administration');
  db.command('migrate')
    .description('apply pending migrations to $LOKI_HOME/dashboard/loki.db and say which')
    .action(() => {
      const config = configOrExit();
      process.umask(0o077);
      try {
        const handle = openSqlite(config.dbPath);
        const applied = migrate(handle);
        tightenDbFiles(config.dbPath);
        handle.close();
        if (applied.length === 0) process.stdout.write(`database ${config.dbPath} is up to date\n`);
        else process.stdout.write(`applied ${applied.length} migration(s) to ${config.dbPath}: ${applied.join(', ')}\n`);
      } catch (err) {
        fail(`migration failed: ${(err as Error).message}`, 1);
      }
    });
}

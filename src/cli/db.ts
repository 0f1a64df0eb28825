import type { Command } from 'commander';
import { describeDatabaseUrl, migratePg, openPgPool } from '../db/pg';
import { migrate, openSqlite, tightenDbFiles } from '../db/sqlite';
import { configOrExit } from '../node';
import { fail } from './common';

export function dbCommands(program: Command): void {
  const db = program.command('db').description('database administration');
  db.command('migrate')
    .description('apply pending migrations to $LOKI_HOME/dashboard/loki.db (or LOKI_DATABASE_URL) and say which')
    .action(async () => {
      const config = configOrExit();
      process.umask(0o077);
      if (config.database) {
        // PostgreSQL: under an advisory lock, so servers and migrators starting together are safe.
        const where = describeDatabaseUrl(config.database.url);
        const pool = openPgPool(config.database, { applicationName: 'loki-migrate' });
        try {
          const applied = await migratePg(pool);
          if (applied.length === 0) process.stdout.write(`database ${where} is up to date\n`);
          else process.stdout.write(`applied ${applied.length} migration(s) to ${where}: ${applied.join(', ')}\n`);
        } catch (err) {
          fail(`migration failed on ${where}: ${(err as Error).message}`, 1);
        } finally {
          await pool.end().catch(() => {});
        }
        return;
      }
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

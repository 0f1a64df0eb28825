/**
 * A separate process appending to the PostgreSQL audit log (the multi-process
 * test in pg-audit.test.ts). Usage: pg-append-proc.ts DATABASE_URL LOKI_HOME COUNT LABEL PROCESSES
 * Each process waits at a file barrier until all are set up, so their appends overlap.
 */
import { createPgNodeAudit } from '../../src/audit/node-audit';
import { openPostgresBackend } from '../../src/db/pg';
import { loadConfig } from '../../src/env';
import { appendAll, barrier } from '../helpers/append-loop';

const [url, home, countArg, label, processes] = process.argv.slice(2);
const config = loadConfig({ LOKI_HOME: home, LOKI_DATABASE_URL: url, LOKI_DATABASE_POOL_SIZE: '4' }, { home: home!, cwd: home! });
const backend = await openPostgresBackend(config.database!);
const { audit, close } = await createPgNodeAudit(config, backend.auditStorage);
await barrier(home!, label!, Number(processes));
// Small groups with a pause between them, so the processes' group commits interleave.
await appendAll(audit, label!, Number(countArg), 20, () => new Promise((r) => setTimeout(r, 1)));
await close();
await backend.close();
process.stdout.write('done\n');

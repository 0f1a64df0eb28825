/**
 * A process appending to the PostgreSQL audit log, for the checkpoint test.
 * Usage: append-proc.ts DATABASE_URL KEY_HOME COUNT LABEL [PROCESSES]
 * KEY_HOME holds the shared audit keys (created by the first run). With
 * PROCESSES, each waits until that many are ready (files in KEY_HOME), so the
 * appends overlap. Prints one JSON line: the sizes of the checkpoints this
 * process stored, by kind.
 */
import { createPgNodeAudit } from '../../src/audit/node-audit';
import { openPostgresBackend } from '../../src/db/pg';
import { loadConfig } from '../../src/env';
import { appendAll, barrier } from '../helpers/append-loop';

const [url, home, countArg, label, processes] = process.argv.slice(2);
const config = loadConfig({ LOKI_HOME: home, LOKI_DATABASE_URL: url }, { home: home!, cwd: home! });
const backend = await openPostgresBackend(config.database!);
const produced: Record<string, number[]> = {};
const storage = {
  ...backend.auditStorage,
  insertCheckpoint: async (cp: Parameters<typeof backend.auditStorage.insertCheckpoint>[0]) => {
    await backend.auditStorage.insertCheckpoint(cp);
    produced[cp.kind] = [...(produced[cp.kind] ?? []), cp.size];
  },
};
const { audit } = await createPgNodeAudit(config, storage);
if (processes) await barrier(home!, label!, Number(processes));
await appendAll(audit, label!, Number(countArg), 40);
// No shutdown checkpoint here (close() would write one): only what the appends produced.
await audit.drain();
await backend.close();
process.stdout.write(`${JSON.stringify(produced)}\n`);

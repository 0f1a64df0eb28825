/**
 * A separate process appending to the PostgreSQL audit log (the multi-process
 * test in pg-audit.test.ts). Usage: pg-append-proc.ts DATABASE_URL LOKI_HOME COUNT LABEL PROCESSES
 * Each process waits at a file barrier until all are set up, so their appends overlap.
 */
import { readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createPgNodeAudit } from '../../src/audit/node-audit';
import { openPostgresBackend } from '../../src/db/pg';
import { loadConfig } from '../../src/env';

const [url, home, countArg, label, processes] = process.argv.slice(2);
const config = loadConfig({ LOKI_HOME: home, LOKI_DATABASE_URL: url, LOKI_DATABASE_POOL_SIZE: '4' }, { home: home!, cwd: home! });
const backend = await openPostgresBackend(config.database!);
const { audit, close } = await createPgNodeAudit(config, backend.auditStorage);
writeFileSync(path.join(home!, `ready-${label}`), '');
const ready = () => readdirSync(home!).filter((f) => f.startsWith('ready-')).length;
while (ready() < Number(processes)) await new Promise((r) => setTimeout(r, 5));
const count = Number(countArg);
let pending: Promise<unknown>[] = [];
for (let i = 1; i <= count; i++) {
  pending.push(
    audit.append({
      ts: Date.now(),
      action: 'test.append',
      actor: { type: 'system', id: null, name: label! },
      outcome: { status: null, success: true, error: null },
      details: { label, i },
    }),
  );
  // Small groups with a pause between them, so the processes' group commits interleave.
  if (pending.length >= 20) {
    await Promise.all(pending);
    pending = [];
    await new Promise((r) => setTimeout(r, 1));
  }
}
await Promise.all(pending);
await close();
await backend.close();
process.stdout.write('done\n');

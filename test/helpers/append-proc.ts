/**
 * A separate process appending to an audit log (used to show that several
 * processes keep one linear chain). Usage: append-proc.ts LOKI_HOME COUNT LABEL [START_AT_MS]
 * (all processes start appending at START_AT_MS, so their appends really overlap).
 */
import { loadConfig } from '../../src/env';
import { createNodeAudit } from '../../src/audit/node-audit';
import { migrate, openSqlite } from '../../src/db/sqlite';

const [home, countArg, label, startAt] = process.argv.slice(2);
const config = loadConfig({ LOKI_HOME: home }, { home: home!, cwd: home! });
const db = openSqlite(config.dbPath);
migrate(db);
const { audit, close } = await createNodeAudit(config, db);
const count = Number(countArg);
if (startAt) await new Promise((r) => setTimeout(r, Math.max(0, Number(startAt) - Date.now())));
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
  if (pending.length >= 50) {
    await Promise.all(pending);
    pending = [];
  }
}
await Promise.all(pending);
await close();
db.close();
process.stdout.write('done\n');

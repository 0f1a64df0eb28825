/**
 * A separate process appending to an audit log (used to show that several
 * processes keep one linear chain). Usage: append-proc.ts LOKI_HOME COUNT LABEL [PROCESSES]
 * (with PROCESSES, each one waits until that many are set up and ready, so their
 * appends really overlap however slowly each one started).
 */
import { readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { loadConfig } from '../../src/env';
import { createNodeAudit } from '../../src/audit/node-audit';
import { migrate, openSqlite } from '../../src/db/sqlite';

const [home, countArg, label, processes] = process.argv.slice(2);
const config = loadConfig({ LOKI_HOME: home }, { home: home!, cwd: home! });
const db = openSqlite(config.dbPath);
migrate(db);
const { audit, close } = await createNodeAudit(config, db);
const count = Number(countArg);
if (processes) {
  writeFileSync(path.join(home!, `ready-${label}`), '');
  const ready = () => readdirSync(home!).filter((f) => f.startsWith('ready-')).length;
  while (ready() < Number(processes)) await new Promise((r) => setTimeout(r, 5));
  // The last one in may still be reading the directory: a moment so all start together.
  await new Promise((r) => setTimeout(r, 20));
}
async function othersCommitted(n: number): Promise<void> {
  const q = db.prepare("SELECT count(DISTINCT json_extract(entry, '$.actor.name')) AS n FROM audit_log");
  const until = Date.now() + 60_000;
  while ((q.get() as { n: number }).n < n && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
}
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
    // After the first committed batch, wait (up to 60 s) until every process has
    // committed one too: the chain then interleaves by construction, however the
    // machine schedules the processes (a loaded CI host once ran them one after another).
    if (processes && i === 50) await othersCommitted(Number(processes));
  }
}
await Promise.all(pending);
await close();
db.close();
process.stdout.write('done\n');

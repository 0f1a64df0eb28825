/**
 * A separate process appending to an audit log (used to show that several
 * processes keep one linear chain). Usage: append-proc.ts LOKI_HOME COUNT LABEL [PROCESSES]
 * (with PROCESSES, each one waits until that many are set up and ready, so their
 * appends really overlap however slowly each one started).
 */
import { loadConfig } from '../../src/env';
import { createNodeAudit } from '../../src/audit/node-audit';
import { migrate, openSqlite } from '../../src/db/sqlite';
import { appendAll, barrier } from './append-loop';

const [home, countArg, label, processes] = process.argv.slice(2);
const config = loadConfig({ LOKI_HOME: home }, { home: home!, cwd: home! });
const db = openSqlite(config.dbPath);
migrate(db);
const { audit, close } = await createNodeAudit(config, db);
if (processes) {
  await barrier(home!, label!, Number(processes));
  // The last one in may still be reading the directory: a moment so all start together.
  await new Promise((r) => setTimeout(r, 20));
}
async function othersCommitted(n: number): Promise<void> {
  const q = db.prepare("SELECT count(DISTINCT json_extract(entry, '$.actor.name')) AS n FROM audit_log");
  const until = Date.now() + 60_000;
  while ((q.get() as { n: number }).n < n && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
}
// After the first committed batch, wait (up to 60 s) until every process has
// committed one too: the chain then interleaves by construction, however the
// machine schedules the processes (a loaded CI host once ran them one after another).
await appendAll(audit, label!, Number(countArg), 50, async (i) => {
  if (processes && i === 50) await othersCommitted(Number(processes));
});
await close();
db.close();
process.stdout.write('done\n');

/**
 * The audit writer thread: its own connection to the SQLite file (WAL,
 * synchronous=FULL, as every connection), running batches with
 * `createSqliteAuditStorage` exactly as the server's own connection would. The
 * batches that arrived while a commit was running are committed together in the
 * next IMMEDIATE transaction (group commit across batches), in arrival order;
 * each batch is answered only after that commit returned (on disk), with its
 * positions or the error.
 */
import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import type { AuditInput } from '../audit/chain';
import { openSqlite } from './sqlite';
import { createSqliteAuditStorage } from './sqlite-audit';

export type WriterRequest = { id: number; inputs: AuditInput[] } | { close: true };
export type WriterReply = { ready: true } | { id: number; tips: { seq: number; hash: string }[] } | { id: number; error: string; code: string | null };

/** Entries per transaction when batches are merged. */
const MERGE_MAX = 4096;

const port = parentPort!;
const db = openSqlite((workerData as { dbPath: string }).dbPath);
const storage = createSqliteAuditStorage(db);
let closing = false;
port.postMessage({ ready: true } satisfies WriterReply);

port.on('message', async (first: WriterRequest) => {
  if (closing) return;
  const batches: { id: number; inputs: AuditInput[] }[] = [];
  let entries = 0;
  for (let m: WriterRequest | undefined = first; m !== undefined; ) {
    if ('close' in m) {
      closing = true;
      break;
    }
    batches.push(m);
    entries += m.inputs.length;
    m = entries < MERGE_MAX ? (receiveMessageOnPort(port)?.message as WriterRequest | undefined) : undefined;
  }
  if (batches.length > 0) {
    try {
      const tips = await storage.appendBatch(batches.length === 1 ? batches[0]!.inputs : batches.flatMap((b) => b.inputs));
      let at = 0;
      for (const b of batches) {
        port.postMessage({ id: b.id, tips: tips.slice(at, at + b.inputs.length) } satisfies WriterReply);
        at += b.inputs.length;
      }
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      const reply = { error: err instanceof Error ? err.message : String(err), code: typeof code === 'string' ? code : null };
      for (const b of batches) port.postMessage({ id: b.id, ...reply } satisfies WriterReply);
    }
  }
  if (closing) {
    db.close();
    port.close();
  }
});

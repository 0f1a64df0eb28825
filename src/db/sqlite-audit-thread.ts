/**
 * The server's audit appends on a thread of their own. A batch's transaction
 * (linking, hashing, the Merkle tree, and the fsync of synchronous=FULL) runs in
 * a worker thread on its own connection to the same file, so the event loop
 * keeps serving requests while the disk commits; the requests that arrive
 * meanwhile form the next batch. `appendBatch` still resolves only once the
 * batch's commit returned in the thread (durable), and rejects when it failed or
 * the thread died: the caller (AuditLog, then the HTTP layer) fails closed as
 * before. Every other method runs on the caller's connection. Several
 * connections appending to one file is what SQLite's IMMEDIATE transactions
 * already serialise (the CLI appends to the server's file the same way).
 */
import { Worker } from 'node:worker_threads';
import type { AuditStorage, Tip } from '../audit/storage';
import type { WriterReply, WriterRequest } from './sqlite-audit-writer-thread';

export interface ThreadedAuditStorage extends AuditStorage {
  /** Resolves once the thread has its connection open (rejects when it could not start). */
  ready: Promise<void>;
  /** Finish the thread (after the caller drained its appends); closes its connection. */
  close(): Promise<void>;
}

export function withAppendThread(storage: AuditStorage, dbPath: string): ThreadedAuditStorage {
  type Pending = { resolve: (t: Tip[]) => void; reject: (e: unknown) => void };
  /** Each thread's unanswered batches: a thread that dies fails its own, never its replacement's. */
  const pendingOf = new WeakMap<Worker, Map<number, Pending>>();
  let nextId = 1;
  let worker: Worker | null = null;
  let closed = false;
  let ready!: Promise<void>;

  const start = (): Worker => {
    const w = new Worker(new URL('./sqlite-audit-writer.js', import.meta.url), {
      workerData: { dbPath },
      // The entry registers its own TypeScript loader (the parent's loaders are not inherited).
      execArgv: [],
    });
    // An idle thread does not keep the process alive; one with batches in flight does.
    w.unref();
    const pending = new Map<number, Pending>();
    pendingOf.set(w, pending);
    let started!: () => void;
    let failed!: (e: unknown) => void;
    ready = new Promise<void>((resolve, reject) => {
      started = resolve;
      failed = reject;
    });
    // Not awaited by every caller: an unobserved rejection must not end the process.
    ready.catch(() => {});
    w.on('message', (m: WriterReply) => {
      if ('ready' in m) return started();
      const p = pending.get(m.id);
      if (!p) return;
      pending.delete(m.id);
      if (pending.size === 0) w.unref();
      if ('tips' in m) p.resolve(m.tips);
      else p.reject(Object.assign(new Error(m.error), { code: m.code ?? undefined }));
    });
    const gone = (err: unknown) => {
      if (worker === w) worker = null;
      failed(err);
      for (const p of pending.values()) p.reject(err);
      pending.clear();
    };
    w.on('error', gone);
    w.on('exit', (code) => gone(new Error(`the audit writer thread exited (code ${code})`)));
    return w;
  };
  worker = start();

  return {
    ...storage,
    pipelined: true,
    get ready() {
      return ready;
    },
    appendBatch(inputs) {
      if (closed) return Promise.reject(new Error('the audit writer thread is closed'));
      // A thread that died (its batches were rejected) is replaced for the next batch.
      worker ??= start();
      const w = worker;
      const pending = pendingOf.get(w)!;
      return new Promise<Tip[]>((resolve, reject) => {
        const id = nextId++;
        pending.set(id, { resolve, reject });
        try {
          w.ref();
          w.postMessage({ id, inputs } satisfies WriterRequest);
        } catch (err) {
          pending.delete(id);
          reject(err);
        }
      });
    },
    async close() {
      closed = true;
      const w = worker;
      worker = null;
      if (!w) return;
      // `worker` is cleared when the thread exits, so this one is still running.
      const exited = new Promise<void>((r) => w.once('exit', () => r()));
      // Held until it exits: an idle thread is unref'd, and waiting on an unref'd thread
      // let the process end right here, before the rest of the shutdown (closing the
      // database, the last log line) ran.
      w.ref();
      w.postMessage({ close: true } satisfies WriterRequest);
      await exited;
    },
  };
}

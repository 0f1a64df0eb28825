/**
 * The worker's side of the event protocol for one leased session: events get
 * per-session sequence numbers when they are queued, output lines are batched
 * while a post is in flight, and one sender posts batches strictly in order,
 * retrying the same batch (same seqs) on network or server errors, so the server
 * can acknowledge a retry without applying it twice.
 */
import { ApiClientError, type LokiClient } from '../client';
import type { EventsAck, WorkerEvent } from '../sessions/api';
import { utf8Length } from '../sessions/service';
import type { Logger } from '../http/context';

type NewEvent = WorkerEvent extends infer E ? (E extends { seq: number } ? Omit<E, 'seq'> : never) : never;

/** Longest line sent in one piece; longer ones are split (the body limit is 1 MiB). */
export const MAX_TRANSPORT_LINE_CHARS = 128 * 1024;
const MAX_EVENT_LINES = 1_000;
const MAX_EVENT_BYTES = 256 * 1024;
const MAX_POST_BYTES = 512 * 1024;
const RETRY_MIN_MS = 250;
const RETRY_MAX_MS = 5_000;
/** How long a lifecycle event may wait to travel with the next output or state. */
const COALESCE_MS = 250;

export interface ReporterOptions {
  client: LokiClient;
  sessionId: string;
  workerId: string;
  leaseId: string;
  /** The session's last_event_seq when claimed (0 for a fresh claim). */
  lastSeq: number;
  leaseMs: number;
  logger: Logger;
  /** The server says a user asked to stop the session. */
  onStopRequested(): void;
  /** The server refused the lease (409/404) or the protocol (400): stop working on it. */
  onLeaseLost(message: string): void;
}

interface PendingOutput {
  stream: 'stdout' | 'stderr';
  lines: string[];
  bytes: number;
}

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });

export class JobReporter {
  private seq: number;
  private queue: WorkerEvent[] = [];
  private pending: PendingOutput | null = null;
  private sending: Promise<void> | null = null;
  private scheduled = false;
  private deferred: NodeJS.Timeout | null = null;
  private lost = false;
  private readonly closed = new AbortController();
  private heartbeat: NodeJS.Timeout | null = null;
  private heartbeatMs: number;
  private idleWaiters: (() => void)[] = [];
  lastAck: EventsAck | null = null;

  constructor(private readonly o: ReporterOptions) {
    this.seq = o.lastSeq;
    this.heartbeatMs = heartbeatInterval(o.leaseMs);
    this.armHeartbeat();
  }

  get leaseLost(): boolean {
    return this.lost;
  }

  /** One line of output (already redacted by the collector). */
  output(stream: 'stdout' | 'stderr', line: string): void {
    if (this.lost) return;
    for (let i = 0; i === 0 || i < line.length; i += MAX_TRANSPORT_LINE_CHARS) {
      const piece = line.slice(i, i + MAX_TRANSPORT_LINE_CHARS);
      const size = utf8Length(JSON.stringify(piece)) + 1;
      if (this.pending && (this.pending.stream !== stream || this.pending.lines.length >= MAX_EVENT_LINES || this.pending.bytes + size > MAX_EVENT_BYTES)) {
        this.sealOutput();
      }
      this.pending ??= { stream, lines: [], bytes: 0 };
      this.pending.lines.push(piece);
      this.pending.bytes += size;
    }
    this.schedule();
  }

  /**
   * Any other event; output before it is sent before it. Lifecycle notes
   * (container, branch, notices) wait up to `COALESCE_MS` for company, so the
   * worker and the server stay quiet while a container is starting; output,
   * budget, state and heartbeats go at once.
   */
  event(e: NewEvent): void {
    if (this.lost) return;
    this.sealOutput();
    this.queue.push({ ...e, seq: ++this.seq } as WorkerEvent);
    if (e.type === 'container' || e.type === 'branch' || e.type === 'notice') this.scheduleSoon();
    else this.schedule();
  }

  private scheduleSoon(): void {
    if (this.deferred || this.scheduled || this.sending) return;
    this.deferred = setTimeout(() => {
      this.deferred = null;
      this.schedule();
    }, COALESCE_MS);
  }

  /** Resolves when everything queued has been acknowledged (or the lease was lost, or `close`d). */
  drain(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Stop heartbeats and retries (the session is over, or the worker gives up). */
  close(): void {
    if (this.deferred) clearTimeout(this.deferred);
    this.deferred = null;
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = null;
    this.closed.abort();
    this.notifyIdle(true);
  }

  private isIdle(): boolean {
    return (
      this.lost ||
      this.closed.signal.aborted ||
      (!this.sending && !this.scheduled && !this.deferred && this.queue.length === 0 && this.pending === null)
    );
  }

  private notifyIdle(force = false): void {
    if (!force && !this.isIdle()) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  private sealOutput(): void {
    if (!this.pending) return;
    const p = this.pending;
    this.pending = null;
    this.queue.push({ seq: ++this.seq, type: 'output', data: { stream: p.stream, lines: p.lines } });
  }

  /** Lines emitted in one synchronous burst travel together: send on the next turn. */
  private schedule(): void {
    if (this.deferred) {
      clearTimeout(this.deferred);
      this.deferred = null;
    }
    if (this.scheduled || this.sending) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.kick();
    });
  }

  private kick(): void {
    if (this.sending || this.lost || this.closed.signal.aborted) {
      this.notifyIdle();
      return;
    }
    this.sealOutput();
    if (this.queue.length === 0) {
      this.notifyIdle();
      return;
    }
    this.sending = this.sendAll().finally(() => {
      this.sending = null;
      if (this.queue.length > 0 || this.pending) this.kick();
      else this.notifyIdle();
    });
  }

  private armHeartbeat(): void {
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = setInterval(() => {
      if (!this.sending && this.queue.length === 0 && this.pending === null) this.event({ type: 'heartbeat', data: {} });
    }, this.heartbeatMs);
    this.heartbeat.unref();
  }

  private takeBatch(): WorkerEvent[] {
    const batch: WorkerEvent[] = [];
    let bytes = 0;
    for (const e of this.queue) {
      const size = e.type === 'output' ? e.data.lines.reduce((n, l) => n + utf8Length(JSON.stringify(l)) + 1, 64) : 256;
      if (batch.length > 0 && bytes + size > MAX_POST_BYTES) break;
      batch.push(e);
      bytes += size;
    }
    return batch;
  }

  private async sendAll(): Promise<void> {
    let delay = RETRY_MIN_MS;
    let failing = false;
    while (this.queue.length > 0 && !this.lost && !this.closed.signal.aborted) {
      const batch = this.takeBatch();
      let ack: EventsAck;
      try {
        ack = await this.o.client.postJobEvents(
          this.o.sessionId,
          { worker_id: this.o.workerId, lease_id: this.o.leaseId, events: batch },
          this.closed.signal,
        );
      } catch (err) {
        if (this.closed.signal.aborted) return;
        if (err instanceof ApiClientError && (err.status === 409 || err.status === 404 || err.status === 400)) {
          this.lost = true;
          this.queue = [];
          this.pending = null;
          this.o.logger.warn('session lease refused by the server; abandoning the session', {
            session: this.o.sessionId,
            status: err.status,
            code: err.code,
            message: err.message,
          });
          this.o.onLeaseLost(err.message);
          return;
        }
        if (!failing) {
          failing = true;
          this.o.logger.warn('posting session events failed; retrying', { session: this.o.sessionId, err: (err as Error).message });
        }
        await sleep(delay, this.closed.signal);
        delay = Math.min(RETRY_MAX_MS, delay * 2);
        continue;
      }
      if (failing) this.o.logger.info('posting session events recovered', { session: this.o.sessionId });
      failing = false;
      delay = RETRY_MIN_MS;
      this.queue.splice(0, batch.length);
      this.lastAck = ack;
      const hb = heartbeatInterval(ack.lease_ms);
      if (hb !== this.heartbeatMs) {
        this.heartbeatMs = hb;
        this.armHeartbeat();
      }
      if (ack.stop_requested) this.o.onStopRequested();
      this.sealOutput();
    }
  }
}

/** A third of the lease, at most 10 s: two heartbeats may be lost before it expires. */
export function heartbeatInterval(leaseMs: number): number {
  return Math.max(200, Math.min(10_000, Math.floor(leaseMs / 3)));
}

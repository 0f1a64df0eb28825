/**
 * Live events: the durable `events` table is the source of truth; the hub
 * wakes streams when something was written (by this process immediately, by
 * other processes through a short poll of the table's max id).
 *
 * Fan-out: when the hub polls (the Node server), it reads each new run of rows
 * once and hands the same batch to every batch subscriber, so one event costs
 * one query however many streams are open. A stream that is behind (resuming,
 * or slow) reads the table itself until it has caught up (see LiveStream).
 */
import type { EventRecord, EventStore } from '../db/store';

export type Listener = () => void;

/** Rows `(fromId, toId]` of the table, in id order, with no filter applied. */
export interface EventBatch {
  fromId: number;
  toId: number;
  events: EventRecord[];
}
export type BatchListener = (batch: EventBatch) => void;

export type StreamKind = 'sse' | 'ws';

const FANOUT_PAGE = 1000;

export class EventHub {
  private listeners = new Set<Listener>();
  private batchListeners = new Set<BatchListener>();
  private open: Record<StreamKind, number> = { sse: 0, ws: 0 };
  private lastSeen = 0;
  /** Id of the last row handed to batch listeners; null until first read. */
  private fanoutCursor: number | null = null;
  private pumping = false;
  private pumpAgain = false;
  private timer: ReturnType<typeof setInterval> | null = null;

  constructor(
    private readonly store: EventStore,
    private readonly now: () => number = Date.now,
  ) {}

  /** Wake-up and batch subscribers currently registered (shown in /api/status). */
  get listenerCount(): number {
    return this.listeners.size + this.batchListeners.size;
  }

  /** Open SSE and WebSocket connections. */
  get connections(): Record<StreamKind, number> {
    return { ...this.open };
  }

  /**
   * Whether batches reach subscribers across requests. True once polling runs
   * (Node). On Workers each request's I/O belongs to that request, so a stream
   * there reads the table from its own timer instead of subscribing.
   */
  get fanout(): boolean {
    return this.timer !== null;
  }

  /** The id up to which batches have been handed out (0 before the first read). */
  get cursor(): number {
    return this.fanoutCursor ?? 0;
  }

  async publish(type: string, sessionId: string | null, data: unknown): Promise<number> {
    const id = await this.store.insert(type, sessionId, data, this.now());
    this.lastSeen = Math.max(this.lastSeen, id);
    this.wake();
    return id;
  }

  subscribe(l: Listener): () => void {
    this.listeners.add(l);
    return () => {
      this.listeners.delete(l);
    };
  }

  subscribeBatches(l: BatchListener): () => void {
    this.batchListeners.add(l);
    if (this.fanoutCursor === null) this.pump();
    return () => {
      this.batchListeners.delete(l);
    };
  }

  /** Count an open stream against its limit; returns the release (idempotent), or null when full. */
  admit(kind: StreamKind, max: number): (() => void) | null {
    if (this.open[kind] >= max) return null;
    this.open[kind]++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.open[kind]--;
    };
  }

  after(afterId: number, opts: { sessionId?: string; types?: string[]; limit?: number } = {}): Promise<EventRecord[]> {
    return this.store.after({ afterId, limit: opts.limit ?? 500, sessionId: opts.sessionId, types: opts.types });
  }

  /** The newest event id in the table (0 when empty): where a fresh stream starts. */
  latestId(): Promise<number> {
    return this.store.maxId();
  }

  /** Delete events older than `maxAgeMs` and all but the newest `keepMax`. */
  prune(maxAgeMs: number, keepMax: number): Promise<number> {
    return this.store.prune(this.now() - maxAgeMs, keepMax);
  }

  private wake(): void {
    for (const l of [...this.listeners]) {
      try {
        l();
      } catch {
        // a broken listener must not stop the others
      }
    }
    if (this.batchListeners.size > 0 && this.timer !== null) this.pump();
  }

  /** Read new rows once and hand them to every batch listener; coalesces concurrent calls. */
  private pump(): void {
    if (this.pumping) {
      this.pumpAgain = true;
      return;
    }
    this.pumping = true;
    void (async () => {
      try {
        do {
          this.pumpAgain = false;
          if (this.fanoutCursor === null) {
            this.fanoutCursor = await this.store.maxId();
            continue;
          }
          const from: number = this.fanoutCursor;
          const rows = await this.store.after({ afterId: from, limit: FANOUT_PAGE });
          if (rows.length === 0) continue;
          const batch: EventBatch = { fromId: from, toId: rows[rows.length - 1]!.id, events: rows };
          this.fanoutCursor = batch.toId;
          this.lastSeen = Math.max(this.lastSeen, batch.toId);
          for (const l of [...this.batchListeners]) {
            try {
              l(batch);
            } catch {
              // a broken stream must not stop the others
            }
          }
          if (rows.length === FANOUT_PAGE) this.pumpAgain = true;
        } while (this.pumpAgain && this.batchListeners.size > 0);
      } catch {
        // the next publish or poll retries
      } finally {
        this.pumping = false;
      }
    })();
  }

  /** Poll for events written by other processes (CLI, another server). */
  startPolling(intervalMs = 250): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      if (this.listeners.size === 0 && this.batchListeners.size === 0) return;
      this.store
        .maxId()
        .then((m) => {
          const behind = this.fanoutCursor !== null && m > this.fanoutCursor;
          if (m > this.lastSeen || behind) {
            this.lastSeen = Math.max(this.lastSeen, m);
            this.wake();
          }
        })
        .catch(() => {});
    }, intervalMs);
    (this.timer as { unref?: () => void }).unref?.();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.listeners.clear();
    this.batchListeners.clear();
  }
}

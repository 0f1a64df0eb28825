/**
 * Live events: the durable `events` table is the source of truth; the hub
 * wakes streams when something was written (by this process immediately, by
 * other processes through a short poll of the table's max id).
 */
import type { EventRecord, EventStore } from '../db/store';

export type Listener = () => void;

export class EventHub {
  private listeners = new Set<Listener>();
  private lastSeen = 0;
  private timer: ReturnType<typeof setInterval> | null = null;

  constructor(
    private readonly store: EventStore,
    private readonly now: () => number = Date.now,
  ) {}

  get listenerCount(): number {
    return this.listeners.size;
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

  after(afterId: number, opts: { sessionId?: string; types?: string[]; limit?: number } = {}): Promise<EventRecord[]> {
    return this.store.after({ afterId, limit: opts.limit ?? 500, sessionId: opts.sessionId, types: opts.types });
  }

  private wake(): void {
    for (const l of [...this.listeners]) {
      try {
        l();
      } catch {
        // a broken listener must not stop the others
      }
    }
  }

  /** Poll for events written by other processes (CLI, another server). */
  startPolling(intervalMs = 250): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      if (this.listeners.size === 0) return;
      this.store
        .maxId()
        .then((m) => {
          if (m > this.lastSeen) {
            this.lastSeen = m;
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
  }
}

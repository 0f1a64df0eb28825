/**
 * One live event stream (an SSE response or a WebSocket), independent of the
 * transport: it reads the events table from a cursor, follows the hub, applies
 * the client's filters, re-checks the caller's credential, and releases
 * everything it holds (hub subscription, timer, shutdown listener, connection
 * slot) exactly once when it closes.
 *
 * Ordering and resumption: `cursor` is the id of the last row this stream has
 * considered (delivered or filtered out). Rows are always delivered in id order
 * and only when `id > cursor`, so a client that resumes from the last id it saw
 * loses and repeats nothing.
 */
import type { EventRecord } from '../db/store';
import type { Identity } from '../http/context';
import type { EventBatch, EventHub } from './hub';

export interface LiveFilter {
  sessionId?: string;
  types?: string[];
}

export type CloseReason = 'client' | 'revoked' | 'shutdown' | 'slow' | 'error';

export interface LiveSink {
  /** Write events to the client (already filtered, in id order). */
  send(events: EventRecord[]): void;
  /** Bytes written but not yet taken by the client. */
  buffered(): number;
  /** Called once a second while open (keep-alive, pings). */
  tick?(now: number): void;
  /** The stream has closed; the transport ends its connection. Called once. */
  closed(reason: CloseReason): void;
}

export interface LiveStreamOptions {
  hub: EventHub;
  identity: Identity;
  /** Is the credential still good (not revoked, not expired)? */
  stillValid: (identity: Identity) => Promise<boolean>;
  after: number;
  filter: LiveFilter;
  sink: LiveSink;
  now: () => number;
  /** Frees the connection slot (EventHub.admit). */
  release: () => void;
  /** The endpoint's open streams; all are closed at shutdown. */
  group: LiveGroup;
  /** How often the credential is re-checked (ms); the contract says within 5 s. */
  revalidateMs?: number;
}

const TICK_MS = 1000;
const PAGE = 500;
/** Pause catch-up while this much is buffered; close a live stream past the hard limit. */
const SOFT_BUFFER = 256 * 1024;
const HARD_BUFFER = 4 * 1024 * 1024;
const DRAIN_WAIT_MS = 30_000;

export class LiveStream {
  cursor: number;
  private filter: LiveFilter;
  private typeSet: Set<string> | null;
  private unsubscribe: (() => void) | null = null;
  private timer: ReturnType<typeof setInterval> | null = null;
  private catchingUp = false;
  private catchUpAgain = false;
  private lastCheck: number;
  private checking = false;
  private done = false;

  constructor(private readonly opts: LiveStreamOptions) {
    this.cursor = Math.max(0, opts.after);
    this.filter = opts.filter;
    this.typeSet = toSet(opts.filter.types);
    this.lastCheck = opts.now();
  }

  get isClosed(): boolean {
    return this.done;
  }

  /** Begin: catch up from the cursor, then follow the hub. */
  start(): void {
    if (this.done) return;
    if (this.opts.group.shuttingDown) {
      this.close('shutdown');
      return;
    }
    this.opts.group.add(this);
    this.timer = setInterval(() => this.tick(), TICK_MS);
    (this.timer as { unref?: () => void }).unref?.();
    if (this.opts.hub.fanout) this.unsubscribe = this.opts.hub.subscribeBatches((b) => this.onBatch(b));
    this.catchUp();
  }

  /** Replace the filters (WebSocket `subscribe`); `after` rewinds the cursor to replay. */
  setFilter(filter: LiveFilter, after?: number): void {
    this.filter = filter;
    this.typeSet = toSet(filter.types);
    if (after !== undefined && after >= 0) {
      this.cursor = after;
      this.catchUp();
    }
  }

  close(reason: CloseReason): void {
    if (this.done) return;
    this.done = true;
    this.unsubscribe?.();
    this.unsubscribe = null;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.opts.group.delete(this);
    this.opts.release();
    try {
      this.opts.sink.closed(reason);
    } catch {
      // the connection is already gone
    }
  }

  private matches(e: EventRecord): boolean {
    if (this.filter.sessionId !== undefined && e.sessionId !== this.filter.sessionId) return false;
    return this.typeSet === null || this.typeSet.has(e.type);
  }

  private deliver(events: EventRecord[]): void {
    const out: EventRecord[] = [];
    for (const e of events) {
      if (e.id <= this.cursor) continue;
      this.cursor = e.id;
      if (this.matches(e)) out.push(e);
    }
    if (out.length > 0) this.opts.sink.send(out);
  }

  private onBatch(batch: EventBatch): void {
    if (this.done) return;
    if (batch.events.some((e) => e.type === 'token_revoked')) this.revalidate();
    if (this.catchingUp) {
      this.catchUpAgain = true;
      return;
    }
    if (batch.fromId > this.cursor) {
      this.catchUp();
      return;
    }
    this.deliver(batch.events);
    this.cursor = Math.max(this.cursor, batch.toId);
    if (this.opts.sink.buffered() > HARD_BUFFER) this.close('slow');
  }

  /** Read the table from the cursor until this stream has reached the hub. */
  private catchUp(): void {
    if (this.catchingUp) {
      this.catchUpAgain = true;
      return;
    }
    this.catchingUp = true;
    void (async () => {
      try {
        do {
          this.catchUpAgain = false;
          for (;;) {
            if (this.done) return;
            const horizon = this.opts.hub.cursor;
            const rows = await this.opts.hub.after(this.cursor, { ...this.filter, limit: PAGE });
            if (this.done) return;
            this.deliver(rows);
            if (rows.length < PAGE) {
              // Every matching row up to the hub's cursor was in that read.
              this.cursor = Math.max(this.cursor, horizon);
              break;
            }
            if (!(await this.drained())) return;
          }
        } while (this.catchUpAgain || (this.opts.hub.fanout && this.opts.hub.cursor > this.cursor));
      } catch {
        this.close('error');
      } finally {
        this.catchingUp = false;
      }
    })();
  }

  private async drained(): Promise<boolean> {
    const until = this.opts.now() + DRAIN_WAIT_MS;
    while (this.opts.sink.buffered() > SOFT_BUFFER) {
      if (this.done) return false;
      if (this.opts.now() > until) {
        this.close('slow');
        return false;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    return !this.done;
  }

  private tick(): void {
    if (this.done) return;
    const now = this.opts.now();
    const exp = this.opts.identity.expiresAt;
    if (exp !== null && exp <= now) {
      this.close('revoked');
      return;
    }
    // Without fan-out (Workers) the stream follows the table itself.
    if (!this.opts.hub.fanout) this.catchUp();
    if (now - this.lastCheck >= (this.opts.revalidateMs ?? 2000)) this.revalidate();
    if (this.opts.sink.buffered() > HARD_BUFFER) {
      this.close('slow');
      return;
    }
    try {
      this.opts.sink.tick?.(now);
    } catch {
      this.close('error');
    }
  }

  private revalidate(): void {
    if (this.checking || this.done) return;
    this.checking = true;
    this.lastCheck = this.opts.now();
    this.opts
      .stillValid(this.opts.identity)
      .then((ok) => {
        if (!ok) this.close('revoked');
      })
      .catch(() => {
        // a store hiccup is not a revocation; the next check retries
      })
      .finally(() => {
        this.checking = false;
      });
  }
}

/**
 * The open streams of one endpoint. One shutdown listener closes them all (a
 * listener per stream would pile up on the shared AbortSignal).
 */
export class LiveGroup {
  private readonly open = new Set<LiveStream>();
  private shut = false;

  constructor(signal?: AbortSignal) {
    if (signal?.aborted) this.shut = true;
    signal?.addEventListener(
      'abort',
      () => {
        this.shut = true;
        for (const s of [...this.open]) s.close('shutdown');
      },
      { once: true },
    );
  }

  get size(): number {
    return this.open.size;
  }

  get shuttingDown(): boolean {
    return this.shut;
  }

  add(s: LiveStream): void {
    this.open.add(s);
  }

  delete(s: LiveStream): void {
    this.open.delete(s);
  }
}

function toSet(types: string[] | undefined): Set<string> | null {
  return types && types.length > 0 ? new Set(types) : null;
}

/** Parse `?types=a,b` (and the WebSocket `types` field): event type names, at most 32. */
export function parseTypes(raw: string | string[] | undefined | null): string[] | undefined | 'invalid' {
  if (raw === undefined || raw === null || raw === '') return undefined;
  const list = (Array.isArray(raw) ? raw : raw.split(','))
    .map((s) => (typeof s === 'string' ? s.trim() : ''))
    .filter((s) => s !== '');
  if (list.length > 32 || list.some((t) => !/^[a-z][a-z0-9_.]{0,63}$/.test(t))) return 'invalid';
  return list.length > 0 ? list : undefined;
}

/** Parse an event id cursor (`Last-Event-ID`, `?after=`). */
export function parseCursor(raw: string | undefined | null): number | undefined | 'invalid' {
  if (raw === undefined || raw === null || raw.trim() === '') return undefined;
  const v = raw.trim();
  if (!/^\d{1,15}$/.test(v)) return 'invalid';
  return Number(v);
}

/** A session id filter: the ids the server issues are short and plain. */
export function parseSession(raw: string | undefined | null): string | undefined | 'invalid' {
  if (raw === undefined || raw === null || raw === '') return undefined;
  return /^[A-Za-z0-9_-]{1,128}$/.test(raw) ? raw : 'invalid';
}

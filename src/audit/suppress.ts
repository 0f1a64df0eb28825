/**
 * Volume an attacker cannot inflate: requests that fail without an identity (no
 * token, a bad one, an unknown path, a refused Host or origin) are recorded one
 * by one only up to a limit per client address per minute; past it they are
 * counted, and each address's count is written as one `audit.suppressed` entry
 * when its minute is over. Runtime-free (timers are optional and unref'd).
 *
 * Nothing is dropped silently:
 * - a minute's summaries are written by a timer once the minute is over (even if
 *   no further request arrives) and by `close()` at shutdown;
 * - a summary that cannot be written is kept and retried, and while the log is
 *   failing nothing is suppressed: every request again waits for its own entry
 *   and gets 503 when it cannot be written (fail closed, as before);
 * - the table of addresses is bounded: past `maxAddresses` in one minute, new
 *   addresses share one `overflow` bucket with its own summary, and past
 *   `maxIndividual` individual entries in one minute (all addresses together)
 *   further requests are counted in their address's summary.
 *
 * Addresses are the socket peer (see `nodeClientAddress`; X-Forwarded-For is
 * never read). IPv4 addresses are counted one by one, IPv4-mapped IPv6 as IPv4,
 * and IPv6 per /64, since one host usually holds a whole /64.
 */
import type { AuditInput } from './chain';

export interface AddressGroup {
  /** The counting key: the IPv4 address, the IPv6 /64 prefix (`2001:db8:1:2::/64`), or `unknown`. */
  key: string;
  kind: 'ipv4' | 'ipv6/64' | 'unknown';
}

const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

function ipv4Ok(s: string): boolean {
  const m = IPV4.exec(s);
  return Boolean(m?.slice(1).every((p) => Number(p) <= 255 && (p.length === 1 || p[0] !== '0')));
}

/** 8 hextets of an IPv6 address (with an optional trailing dotted IPv4), or null. */
export function parseIpv6(text: string): number[] | null {
  let s = text.toLowerCase();
  let tail: number[] = [];
  const lastColon = s.lastIndexOf(':');
  if (s.includes('.', lastColon)) {
    const v4 = s.slice(lastColon + 1);
    if (!ipv4Ok(v4)) return null;
    const b = v4.split('.').map(Number);
    tail = [(b[0]! << 8) | b[1]!, (b[2]! << 8) | b[3]!];
    s = s.slice(0, lastColon + 1);
    if (!s.endsWith('::')) s = s.slice(0, -1);
  }
  const want = 8 - tail.length;
  const halves = s.split('::');
  if (halves.length > 2) return null;
  const part = (h: string) => (h === '' ? [] : h.split(':'));
  const head = part(halves[0]!);
  const rest = halves.length === 2 ? part(halves[1]!) : [];
  const groups = [...head, ...rest];
  if (!groups.every((g) => /^[0-9a-f]{1,4}$/.test(g))) return null;
  let hextets: number[];
  if (halves.length === 2) {
    const fill = want - groups.length;
    if (fill < 1) return null;
    hextets = [...head.map((g) => Number.parseInt(g, 16)), ...new Array<number>(fill).fill(0), ...rest.map((g) => Number.parseInt(g, 16))];
  } else {
    if (groups.length !== want) return null;
    hextets = groups.map((g) => Number.parseInt(g, 16));
  }
  return [...hextets, ...tail];
}

/** RFC 5952 text of 8 hextets (longest run of two or more zero groups as `::`). */
function formatIpv6(h: number[]): string {
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (h[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && h[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = h.map((x) => x.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}

/** How an address is counted: IPv4 as is, IPv4-mapped IPv6 as IPv4, IPv6 by its /64. */
export function addressGroup(ip: string | null): AddressGroup {
  if (ip === null || ip === '') return { key: 'unknown', kind: 'unknown' };
  const s = ip.trim().replace(/^\[|\]$/g, '').replace(/%.*$/, '');
  if (ipv4Ok(s)) return { key: s, kind: 'ipv4' };
  const h = s.includes(':') ? parseIpv6(s) : null;
  if (!h) return { key: 'unknown', kind: 'unknown' };
  if (h[0] === 0 && h[1] === 0 && h[2] === 0 && h[3] === 0 && h[4] === 0 && h[5] === 0xffff) {
    return { key: `${h[6]! >> 8}.${h[6]! & 0xff}.${h[7]! >> 8}.${h[7]! & 0xff}`, kind: 'ipv4' };
  }
  return { key: `${formatIpv6([h[0]!, h[1]!, h[2]!, h[3]!, 0, 0, 0, 0])}/64`, kind: 'ipv6/64' };
}

interface Counter {
  key: string;
  kind: AddressGroup['kind'] | 'overflow';
  /** Entries written one by one in this window. */
  recorded: number;
  suppressed: number;
  byStatus: Record<string, number>;
  firstSuppressed: number;
  lastSuppressed: number;
  /** Overflow only: distinct address keys (counted up to OVERFLOW_DISTINCT_CAP) and a few of them. */
  distinct?: Set<string>;
  written: boolean;
}

interface Window {
  start: number;
  counters: Map<string, Counter>;
  overflow: Counter | null;
  recorded: number;
}

const OVERFLOW_DISTINCT_CAP = 10_000;
const OVERFLOW_SAMPLE = 10;
/** Windows whose summaries could not be written are kept for retries, at most this many. */
const MAX_PENDING_WINDOWS = 60;

export interface AuditVolumeOptions {
  append: (input: AuditInput) => Promise<unknown>;
  now: () => number;
  /** Individual entries per address per window (default 20). */
  perAddress?: number;
  /** Window length (default one minute). */
  windowMs?: number;
  /** Addresses tracked per window before new ones share the overflow bucket (default 1,000). */
  maxAddresses?: number;
  /** Individual entries per window over all addresses (default 1,000). */
  maxIndividual?: number;
  /** A summary could not be written (it is kept and retried), or was given up at close (`lost`). */
  onError?: (err: unknown, info: { lost: boolean; summaries: Record<string, unknown>[] }) => void;
}

export type Admission = 'record' | 'suppress';

export class AuditVolumeGuard {
  readonly perAddress: number;
  private readonly windowMs: number;
  private readonly maxAddresses: number;
  private readonly maxIndividual: number;
  private windows = new Map<number, Window>();
  /** The earliest start a new window may have: windows only move forward, and a written one never reopens. */
  private floor = Number.NEGATIVE_INFINITY;
  private healthy = true;
  private closed = false;
  private chain: Promise<void> = Promise.resolve();
  private timer: ReturnType<typeof setInterval> | null = null;
  private totals = { suppressed: 0, summaries: 0 };

  constructor(private readonly opts: AuditVolumeOptions) {
    this.perAddress = opts.perAddress ?? 20;
    this.windowMs = opts.windowMs ?? 60_000;
    this.maxAddresses = opts.maxAddresses ?? 1_000;
    this.maxIndividual = opts.maxIndividual ?? 1_000;
  }

  /**
   * Decide for one failed request without an identity: `record` (write its own
   * entry and wait for it) or `suppress` (counted in its address's summary).
   */
  admit(ip: string | null, status: number): Admission {
    if (this.closed || !this.healthy) return 'record';
    const w = this.window();
    const g = addressGroup(ip);
    let c = w.counters.get(g.key);
    if (!c) {
      if (w.counters.size < this.maxAddresses) {
        c = newCounter(g.key, g.kind);
        w.counters.set(g.key, c);
      } else {
        w.overflow ??= { ...newCounter('overflow', 'overflow'), distinct: new Set() };
        c = w.overflow;
        if (c.distinct!.size < OVERFLOW_DISTINCT_CAP) c.distinct!.add(g.key);
      }
    }
    if (c.recorded < this.perAddress && w.recorded < this.maxIndividual) {
      c.recorded++;
      w.recorded++;
      return 'record';
    }
    const now = this.opts.now();
    if (c.suppressed === 0) c.firstSuppressed = now;
    c.suppressed++;
    c.lastSuppressed = now;
    c.byStatus[String(status)] = (c.byStatus[String(status)] ?? 0) + 1;
    this.totals.suppressed++;
    return 'suppress';
  }

  /** The outcome of an entry the caller wrote: a failure stops suppression until a write succeeds again. */
  recorded(ok: boolean): void {
    if (ok === this.healthy) return;
    this.healthy = ok;
    if (ok) void this.flushDue();
  }

  /** Write the summaries of every window that is over. */
  flushDue(): Promise<void> {
    return this.enqueue(false);
  }

  /** Write the summaries of every window, the current one included (shutdown). */
  flushAll(): Promise<void> {
    return this.enqueue(true);
  }

  /** Check for finished windows every `intervalMs` (default 1 s). */
  start(intervalMs = 1_000): void {
    if (this.timer || this.closed) return;
    this.timer = setInterval(() => void this.flushDue(), intervalMs);
    (this.timer as { unref?: () => void }).unref?.();
  }

  /** Stop the timer and write everything still counted; afterwards every request records its own entry. */
  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.closed = true;
    await this.flushAll();
    if (this.windows.size > 0) {
      const summaries = [...this.windows.values()].flatMap((w) => this.pending(w).map((c) => this.details(c, w)));
      this.windows.clear();
      if (summaries.length) this.opts.onError?.(new Error('audit.suppressed summaries could not be written before shutdown'), { lost: true, summaries });
    }
  }

  stats() {
    let tracked = 0;
    for (const w of this.windows.values()) tracked += w.counters.size;
    return { healthy: this.healthy, windows: this.windows.size, tracked_addresses: tracked, suppressed: this.totals.suppressed, summaries: this.totals.summaries };
  }

  private window(): Window {
    // A clock stepping back never reopens a finished minute.
    const start = Math.max(Math.floor(this.opts.now() / this.windowMs) * this.windowMs, this.floor);
    this.floor = start;
    let w = this.windows.get(start);
    if (!w) {
      if (this.windows.size > 0) void this.flushDue();
      w = { start, counters: new Map(), overflow: null, recorded: 0 };
      this.windows.set(start, w);
    }
    return w;
  }

  private enqueue(all: boolean): Promise<void> {
    const run = this.chain.then(() => this.flush(all));
    this.chain = run.catch(() => {});
    return run;
  }

  private pending(w: Window): Counter[] {
    const out = [...w.counters.values()].filter((c) => c.suppressed > 0 && !c.written);
    if (w.overflow && w.overflow.suppressed > 0 && !w.overflow.written) out.push(w.overflow);
    return out;
  }

  private async flush(all: boolean): Promise<void> {
    const now = this.opts.now();
    for (const [start, w] of [...this.windows]) {
      if (!all && start + this.windowMs > now) continue;
      const todo = this.pending(w);
      const results = await Promise.allSettled(todo.map((c) => this.opts.append(this.summary(c, w, now))));
      let failed: unknown = null;
      for (const [i, r] of results.entries()) {
        if (r.status === 'fulfilled') {
          todo[i]!.written = true;
          this.totals.summaries++;
        } else failed ??= r.reason;
      }
      if (failed === null) {
        this.windows.delete(start);
        this.floor = Math.max(this.floor, start + this.windowMs);
        if (todo.length > 0) this.healthy = true;
        continue;
      }
      this.healthy = false;
      this.opts.onError?.(failed, { lost: false, summaries: this.pending(w).map((c) => this.details(c, w)) });
    }
    // Bounded even if the log stays unwritable: the oldest pending window is reported and dropped.
    while (this.windows.size > MAX_PENDING_WINDOWS) {
      const [start, w] = this.windows.entries().next().value as [number, Window];
      this.windows.delete(start);
      this.opts.onError?.(new Error('too many unwritten audit.suppressed summaries'), { lost: true, summaries: this.pending(w).map((c) => this.details(c, w)) });
    }
  }

  private details(c: Counter, w: Window): Record<string, unknown> {
    const iso = (t: number) => new Date(t).toISOString();
    const d: Record<string, unknown> = {
      address: c.kind === 'overflow' ? null : c.key,
      grouping: c.kind,
      window_start: iso(w.start),
      window_end: iso(w.start + this.windowMs),
      first_suppressed: iso(c.firstSuppressed),
      last_suppressed: iso(c.lastSuppressed),
      suppressed: c.suppressed,
      by_status: { ...c.byStatus },
      recorded: c.recorded,
      limit_per_address: this.perAddress,
    };
    if (c.distinct) {
      d.distinct_addresses = c.distinct.size;
      d.distinct_addresses_capped = c.distinct.size >= OVERFLOW_DISTINCT_CAP;
      d.sample_addresses = [...c.distinct].slice(0, OVERFLOW_SAMPLE);
    }
    return d;
  }

  private summary(c: Counter, w: Window, now: number): AuditInput {
    return {
      ts: now,
      action: 'audit.suppressed',
      resource: null,
      actor: { type: 'anonymous', id: null, name: null },
      client: { ip: c.kind === 'overflow' ? null : c.key, user_agent: null },
      request: null,
      outcome: { status: null, success: false, error: 'suppressed' },
      details: this.details(c, w),
    };
  }
}

function newCounter(key: string, kind: Counter['kind']): Counter {
  return { key, kind, recorded: 0, suppressed: 0, byStatus: {}, firstSuppressed: 0, lastSuppressed: 0, written: false };
}

import { addressGroup } from '../../audit/suppress';

/**
 * A client address as the limiter counts it: IPv4 as is, IPv6 by its /64 (one
 * host's whole prefix is one client, so rotating addresses inside it gains nothing),
 * anything else as given.
 */
function limiterKey(key: string): string {
  const g = addressGroup(key);
  return g.kind === 'unknown' ? key : g.key;
}

/** Counts failures per client address in a fixed one-minute window (brute-force guard). */
export class FailureLimiter {
  private windows = new Map<string, { start: number; count: number }>();

  constructor(
    private readonly limit: number,
    private readonly windowMs: number,
    private readonly now: () => number,
  ) {}

  /** Seconds to wait when the key is over the limit, else 0. */
  retryAfter(address: string): number {
    const key = limiterKey(address);
    const w = this.windows.get(key);
    if (!w) return 0;
    const elapsed = this.now() - w.start;
    if (elapsed >= this.windowMs) {
      this.windows.delete(key);
      return 0;
    }
    return w.count > this.limit ? Math.ceil((this.windowMs - elapsed) / 1000) : 0;
  }

  fail(address: string): void {
    const key = limiterKey(address);
    const now = this.now();
    const w = this.windows.get(key);
    if (!w || now - w.start >= this.windowMs) {
      if (this.windows.size > 50_000) this.sweep(now);
      this.windows.set(key, { start: now, count: 1 });
    } else {
      w.count++;
    }
  }

  private sweep(now: number): void {
    for (const [k, w] of this.windows) if (now - w.start >= this.windowMs) this.windows.delete(k);
  }
}

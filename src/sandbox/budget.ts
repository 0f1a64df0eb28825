/**
 * Per-session budget from the provider's own JSON output lines: `total_cost_usd`
 * is cumulative (the largest seen counts), `cost_usd` is incremental (summed); a
 * line carrying both is read as cumulative only. Only top-level keys count.
 */
export const BUDGET_WARNING_RATIO = 0.8;

export type BudgetEvent =
  | { type: 'warning'; spentUsd: number; limitUsd: number }
  | { type: 'exceeded'; spentUsd: number; limitUsd: number };

export interface BudgetTracker {
  readonly limitUsd: number | null;
  /** What the session has spent so far, as reported by the provider. */
  readonly spentUsd: number;
  readonly exceeded: boolean;
  /** Feed one output line; returns the events it crossed (each fires once). */
  feed(line: string): BudgetEvent[];
}

/** Sums kept to a micro-dollar so 0.1 + 0.7 reaches 80% of 1.0. */
const round6 = (x: number) => Math.round(x * 1e6) / 1e6;

function costOf(value: unknown): number | null {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0 ? value : null;
}

export function createBudgetTracker(limitUsd: number | null): BudgetTracker {
  if (limitUsd !== null && !(Number.isFinite(limitUsd) && limitUsd > 0)) {
    throw new RangeError('budget limit must be a positive number or null');
  }
  let cumulative = 0;
  let incremental = 0;
  let warned = false;
  let exceeded = false;
  const spent = () => Math.max(cumulative, incremental);

  return {
    limitUsd,
    get spentUsd() {
      return spent();
    },
    get exceeded() {
      return exceeded;
    },
    feed(line: string): BudgetEvent[] {
      if (!line.includes('cost_usd')) return [];
      const text = line.trim();
      if (!text.startsWith('{')) return [];
      let doc: unknown;
      try {
        doc = JSON.parse(text);
      } catch {
        return [];
      }
      if (!doc || typeof doc !== 'object' || Array.isArray(doc)) return [];
      const record = doc as Record<string, unknown>;
      const total = costOf(record.total_cost_usd);
      const delta = costOf(record.cost_usd);
      if (total !== null) cumulative = Math.max(cumulative, total);
      else if (delta !== null) incremental = round6(incremental + delta);
      else return [];
      if (limitUsd === null) return [];
      const events: BudgetEvent[] = [];
      const now = spent();
      if (!warned && now >= limitUsd * BUDGET_WARNING_RATIO) {
        warned = true;
        events.push({ type: 'warning', spentUsd: now, limitUsd });
      }
      if (!exceeded && now >= limitUsd) {
        exceeded = true;
        events.push({ type: 'exceeded', spentUsd: now, limitUsd });
      }
      return events;
    },
  };
}

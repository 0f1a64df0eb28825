import { describe, expect, it } from 'vitest';
import { createBudgetTracker } from '../../src/sandbox/budget';

describe('createBudgetTracker', () => {
  it('treats total_cost_usd as cumulative (max) and warns once, then exceeds once', () => {
    const b = createBudgetTracker(1);
    expect(b.feed('{"type":"result","total_cost_usd":0.5}')).toEqual([]);
    expect(b.feed('{"total_cost_usd":0.3}')).toEqual([]);
    expect(b.spentUsd).toBe(0.5);
    expect(b.feed('{"total_cost_usd":0.8}')).toEqual([{ type: 'warning', spentUsd: 0.8, limitUsd: 1 }]);
    expect(b.feed('{"total_cost_usd":0.9}')).toEqual([]);
    expect(b.feed('{"total_cost_usd":1.0}')).toEqual([{ type: 'exceeded', spentUsd: 1, limitUsd: 1 }]);
    expect(b.exceeded).toBe(true);
    expect(b.feed('{"total_cost_usd":2}')).toEqual([]);
  });

  it('adds cost_usd increments without float drift', () => {
    const b = createBudgetTracker(1);
    expect(b.feed('{"cost_usd":0.1}')).toEqual([]);
    expect(b.feed('{"cost_usd":0.7}')).toEqual([{ type: 'warning', spentUsd: 0.8, limitUsd: 1 }]);
    expect(b.feed('  {"cost_usd":0.2}  ')).toEqual([{ type: 'exceeded', spentUsd: 1, limitUsd: 1 }]);
  });

  it('reports warning and exceeded together when one line jumps past both', () => {
    const b = createBudgetTracker(0.5);
    expect(b.feed('{"total_cost_usd":3}').map((e) => e.type)).toEqual(['warning', 'exceeded']);
  });

  it('takes the larger of cumulative and incremental, and prefers total when a line has both', () => {
    const b = createBudgetTracker(10);
    b.feed('{"cost_usd":1}');
    b.feed('{"cost_usd":1}');
    expect(b.spentUsd).toBe(2);
    b.feed('{"cost_usd":5,"total_cost_usd":3}');
    expect(b.spentUsd).toBe(3);
  });

  it('ignores non-JSON, nested, negative and non-numeric costs', () => {
    const b = createBudgetTracker(1);
    for (const line of [
      'cost_usd: 5',
      'I spent {"cost_usd": 5}',
      '{"usage":{"cost_usd":5}}',
      '{"cost_usd":-5}',
      '{"cost_usd":"5"}',
      '{"total_cost_usd":null}',
      '[{"cost_usd":5}]',
      '{"cost_usd":5',
    ]) {
      expect(b.feed(line)).toEqual([]);
    }
    expect(b.spentUsd).toBe(0);
  });

  it('tracks spend without a limit and never fires', () => {
    const b = createBudgetTracker(null);
    expect(b.feed('{"total_cost_usd":100}')).toEqual([]);
    expect(b.spentUsd).toBe(100);
  });

  it('refuses a non-positive limit', () => {
    expect(() => createBudgetTracker(0)).toThrow(RangeError);
    expect(() => createBudgetTracker(Number.NaN)).toThrow(RangeError);
  });
});

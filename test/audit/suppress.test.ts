import { describe, expect, it } from 'vitest';
import type { AuditInput } from '../../src/audit/chain';
import { AuditVolumeGuard, addressGroup, parseIpv6 } from '../../src/audit/suppress';

describe('addressGroup: how callers are counted', () => {
  it.each([
    ['203.0.113.7', '203.0.113.7', 'ipv4'],
    ['::ffff:203.0.113.7', '203.0.113.7', 'ipv4'],
    ['::FFFF:cb00:7107', '203.0.113.7', 'ipv4'],
    ['2001:db8:1:2:3:4:5:6', '2001:db8:1:2::/64', 'ipv6/64'],
    ['2001:0db8:0001:0002:ffff:ffff:ffff:ffff', '2001:db8:1:2::/64', 'ipv6/64'],
    ['2001:db8:1:2::1', '2001:db8:1:2::/64', 'ipv6/64'],
    ['[2001:db8:1:2::9]', '2001:db8:1:2::/64', 'ipv6/64'],
    ['fe80::1%eth0', 'fe80::/64', 'ipv6/64'],
    ['2001:db8::', '2001:db8::/64', 'ipv6/64'],
    ['::1', '::/64', 'ipv6/64'],
    ['::', '::/64', 'ipv6/64'],
    ['1:2:3:4:5:6:1.2.3.4', '1:2:3:4::/64', 'ipv6/64'],
    [null, 'unknown', 'unknown'],
    ['', 'unknown', 'unknown'],
    ['not-an-address', 'unknown', 'unknown'],
    ['1.2.3.256', 'unknown', 'unknown'],
    ['2001:db8:::1', 'unknown', 'unknown'],
    ['1:2:3:4:5:6:7:8:9', 'unknown', 'unknown'],
  ] as const)('%s → %s', (ip, key, kind) => {
    expect(addressGroup(ip)).toEqual({ key, kind });
  });

  it('puts every address of one /64 in one group, and neighbouring /64s apart', () => {
    const keys = new Set<string>();
    for (let i = 0; i < 100; i++) keys.add(addressGroup(`2001:db8:aa:bb:${i.toString(16)}:${(i * 7).toString(16)}::${i.toString(16)}`).key);
    expect([...keys]).toEqual(['2001:db8:aa:bb::/64']);
    expect(addressGroup('2001:db8:aa:bc::1').key).toBe('2001:db8:aa:bc::/64');
  });

  it('parses the embedded IPv4 forms', () => {
    expect(parseIpv6('::1.2.3.4')).toEqual([0, 0, 0, 0, 0, 0, 0x0102, 0x0304]);
    expect(parseIpv6('::ffff:1.2.3.4')).toEqual([0, 0, 0, 0, 0, 0xffff, 0x0102, 0x0304]);
    expect(parseIpv6('::ffff:1.2.3')).toBeNull();
  });
});

function harness(opts: { fail?: () => boolean; maxAddresses?: number; maxIndividual?: number } = {}) {
  let t = Date.UTC(2026, 5, 1, 12, 0, 5);
  const written: AuditInput[] = [];
  const errors: { lost: boolean; summaries: Record<string, unknown>[] }[] = [];
  const guard = new AuditVolumeGuard({
    now: () => t,
    append: async (input) => {
      if (opts.fail?.()) throw new Error('disk full');
      written.push(input);
    },
    maxAddresses: opts.maxAddresses,
    maxIndividual: opts.maxIndividual,
    onError: (_err, info) => errors.push(info),
  });
  return {
    guard,
    written,
    errors,
    advance: (ms: number) => {
      t += ms;
    },
    now: () => t,
  };
}

const count = (xs: string[], v: string) => xs.filter((x) => x === v).length;

describe('AuditVolumeGuard', () => {
  it('records the first 20 per address per minute and summarises the rest with the exact count', async () => {
    const h = harness();
    const a = Array.from({ length: 95 }, (_, i) => h.guard.admit('198.51.100.1', i % 5 === 0 ? 401 : 404));
    expect(count(a, 'record')).toBe(20);
    expect(count(a, 'suppress')).toBe(75);
    // Another address has its own 20.
    expect(count(Array.from({ length: 25 }, () => h.guard.admit('198.51.100.2', 404)), 'record')).toBe(20);
    await h.guard.flushDue();
    expect(h.written).toEqual([]); // the minute is not over
    h.advance(60_000);
    await h.guard.flushDue();
    const s = h.written.filter((e) => e.action === 'audit.suppressed');
    expect(s).toHaveLength(2);
    const first = s.find((e) => e.details?.address === '198.51.100.1')!;
    expect(first).toMatchObject({
      actor: { type: 'anonymous' },
      client: { ip: '198.51.100.1', user_agent: null },
      outcome: { status: null, success: false, error: 'suppressed' },
      details: {
        grouping: 'ipv4',
        window_start: '2026-06-01T12:00:00.000Z',
        window_end: '2026-06-01T12:01:00.000Z',
        suppressed: 75,
        recorded: 20,
        limit_per_address: 20,
      },
    });
    // i % 5 === 0 → 401: 19 of the 95 were 401s; the first 20 requests held 4 of them.
    expect(first.details?.by_status).toEqual({ '401': 15, '404': 60 });
    expect(s.find((e) => e.details?.address === '198.51.100.2')?.details).toMatchObject({ suppressed: 5, by_status: { '404': 5 } });
    // A new minute starts a new allowance; nothing is written twice.
    expect(h.guard.admit('198.51.100.1', 404)).toBe('record');
    h.advance(60_000);
    await h.guard.flushDue();
    expect(h.written).toHaveLength(2);
    expect(h.guard.stats()).toMatchObject({ suppressed: 80, summaries: 2 });
  });

  it('counts a whole IPv6 /64 as one caller', async () => {
    const h = harness();
    const a = Array.from({ length: 50 }, (_, i) => h.guard.admit(`2001:db8:5:6:${i.toString(16)}::1`, 404));
    expect(count(a, 'record')).toBe(20);
    h.advance(60_000);
    await h.guard.flushDue();
    expect(h.written).toHaveLength(1);
    expect(h.written[0]).toMatchObject({ client: { ip: '2001:db8:5:6::/64' }, details: { address: '2001:db8:5:6::/64', grouping: 'ipv6/64', suppressed: 30 } });
  });

  it('writes the summary from its timer when no further request arrives', async () => {
    const h = harness();
    for (let i = 0; i < 30; i++) h.guard.admit('198.51.100.3', 404);
    h.guard.start(20);
    h.advance(60_000);
    for (let i = 0; i < 100 && h.written.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    await h.guard.close();
    expect(h.written.map((e) => e.details?.suppressed)).toEqual([10]);
  });

  it('writes the open minute at close, then records everything', async () => {
    const h = harness();
    for (let i = 0; i < 23; i++) h.guard.admit('198.51.100.4', 404);
    await h.guard.close();
    expect(h.written).toHaveLength(1);
    expect(h.written[0]!.details).toMatchObject({ suppressed: 3 });
    expect(h.guard.admit('198.51.100.4', 404)).toBe('record');
  });

  it('bounds the address table: new addresses past the cap share one overflow summary', async () => {
    const h = harness({ maxAddresses: 10, maxIndividual: 100_000 });
    let recorded = 0;
    let suppressed = 0;
    for (let a = 0; a < 50; a++) {
      for (let i = 0; i < 25; i++) {
        if (h.guard.admit(`10.0.${a}.1`, 404) === 'record') recorded++;
        else suppressed++;
      }
    }
    // 10 tracked addresses × 20, plus 20 for the shared overflow bucket.
    expect(recorded).toBe(220);
    expect(h.guard.stats().tracked_addresses).toBe(10);
    h.advance(60_000);
    await h.guard.flushDue();
    const total = h.written.reduce((n, e) => n + (e.details?.suppressed as number), 0);
    expect(total).toBe(suppressed);
    expect(h.written).toHaveLength(11);
    const overflow = h.written.find((e) => e.details?.grouping === 'overflow')!;
    expect(overflow).toMatchObject({ client: { ip: null }, details: { address: null, distinct_addresses: 40, distinct_addresses_capped: false, recorded: 20 } });
    expect(overflow.details?.sample_addresses).toHaveLength(10);
  });

  it('bounds individual entries per minute over all addresses', async () => {
    const h = harness({ maxIndividual: 30 });
    let recorded = 0;
    for (let a = 0; a < 10; a++) for (let i = 0; i < 5; i++) if (h.guard.admit(`10.1.${a}.1`, 404) === 'record') recorded++;
    expect(recorded).toBe(30);
    h.advance(60_000);
    await h.guard.flushDue();
    expect(h.written.reduce((n, e) => n + (e.details?.suppressed as number), 0)).toBe(20);
  });

  it('fails closed: a summary that cannot be written is kept, retried, and meanwhile nothing is suppressed', async () => {
    let broken = true;
    const h = harness({ fail: () => broken });
    for (let i = 0; i < 26; i++) h.guard.admit('198.51.100.5', 404);
    h.advance(60_000);
    await h.guard.flushDue();
    expect(h.written).toEqual([]);
    expect(h.errors).toHaveLength(1);
    expect(h.errors[0]).toMatchObject({ lost: false, summaries: [{ address: '198.51.100.5', suppressed: 6 }] });
    expect(h.guard.stats().healthy).toBe(false);
    // While unhealthy every request must write (and wait for) its own entry.
    expect(Array.from({ length: 30 }, () => h.guard.admit('198.51.100.5', 404)).every((a) => a === 'record')).toBe(true);
    broken = false;
    h.guard.recorded(true); // a request's own entry went through
    await h.guard.flushDue();
    expect(h.written.map((e) => e.details?.suppressed)).toEqual([6]);
    expect(h.guard.stats()).toMatchObject({ healthy: true, windows: 0 });
  });

  it('reports (never silently drops) what it could not write by shutdown', async () => {
    const h = harness({ fail: () => true });
    for (let i = 0; i < 21; i++) h.guard.admit('198.51.100.6', 404);
    await h.guard.close();
    expect(h.errors.at(-1)).toMatchObject({ lost: true, summaries: [{ address: '198.51.100.6', suppressed: 1 }] });
  });

  it('never reopens a written minute when the clock steps back', async () => {
    const h = harness();
    for (let i = 0; i < 21; i++) h.guard.admit('198.51.100.7', 404);
    h.advance(60_000);
    await h.guard.flushDue();
    h.advance(-30_000);
    expect(Array.from({ length: 21 }, () => h.guard.admit('198.51.100.7', 404)).filter((a) => a === 'suppress')).toHaveLength(1);
    h.advance(120_000);
    await h.guard.flushDue();
    expect(h.written.map((e) => [e.details?.window_start, e.details?.suppressed])).toEqual([
      ['2026-06-01T12:00:00.000Z', 1],
      ['2026-06-01T12:01:00.000Z', 1],
    ]);
  });
});

import { describe, expect, it } from 'vitest';
import { FailureLimiter } from '../../src/http/middleware/rate-limit';

describe('FailureLimiter', () => {
  it('counts an IPv6 /64 as one client, IPv4 addresses one by one', () => {
    let now = 1_000_000;
    const l = new FailureLimiter(2, 60_000, () => now);
    l.fail('2001:db8:1:2::1');
    l.fail('2001:db8:1:2:ffff::9');
    l.fail('[2001:db8:1:2::abcd]');
    expect(l.retryAfter('2001:db8:1:2::77')).toBe(60);
    expect(l.retryAfter('2001:db8:1:3::1')).toBe(0);
    l.fail('192.0.2.1');
    l.fail('192.0.2.1');
    l.fail('::ffff:192.0.2.1');
    expect(l.retryAfter('192.0.2.1')).toBe(60);
    expect(l.retryAfter('192.0.2.2')).toBe(0);
    now += 60_000;
    expect(l.retryAfter('2001:db8:1:2::1')).toBe(0);
  });
});

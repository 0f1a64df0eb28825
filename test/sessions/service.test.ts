import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/env';
import { heartbeatInterval } from '../../src/sandbox/reporter';
import { defaultWorkerId, outcomeReason, parseConcurrency } from '../../src/sandbox/worker';
import { checkSessionPaths, parseBudget, utf8Length } from '../../src/sessions/service';

describe('parseBudget', () => {
  it.each([
    [5, 5],
    ['5', 5],
    ['5.00', 5],
    [' 7.5 ', 7.5],
    [0.01, 0.01],
    [10000, 10000],
    ['10000.00', 10000],
  ])('%j → %d', (input, usd) => {
    expect(parseBudget(input)).toEqual({ usd });
  });

  it.each([[0], ['0'], [-1], ['-1'], [1.234], ['1.234'], [10000.01], [10001], ['abc'], ['1e2'], [1e21], ['0x10'], [''], [Number.NaN], [Number.POSITIVE_INFINITY], [null], [true], ['5 USD'], ['.5']])(
    '%j is refused with the rule',
    (input) => {
      const r = parseBudget(input);
      expect(r).toHaveProperty('error');
      expect((r as { error: string }).error).toMatch(/positive amount in USD with at most 2 decimals, at most 10000/);
    },
  );
});

describe('checkSessionPaths (no file system)', () => {
  it.each([
    ['relative', 'prd.md'],
    ['/ws', '../x.md'],
    ['/ws', 'a/../b.md'],
    ['/ws', 'a\\..\\b.md'],
    ['/ws', '/etc/passwd'],
    ['/ws', 'C:\\x.md'],
    ['/ws', 'a\u0000b'],
  ])('%j + %j → invalid_path', (ws, prd) => {
    expect(() => checkSessionPaths(ws, prd)).toThrow(expect.objectContaining({ status: 400, code: 'invalid_path' }));
  });

  it('accepts names that merely look dangerous', () => {
    expect(() => checkSessionPaths('/ws', "a b'; rm -rf ~; $(touch /tmp/pwned).md")).not.toThrow();
    expect(() => checkSessionPaths('/ws', '..hidden/x..md')).not.toThrow();
  });
});

describe('small helpers', () => {
  it('utf8Length matches Buffer.byteLength', () => {
    for (const s of ['', 'abc', 'é', '€', '😀', 'a😀b€é', '\ud800', 'x'.repeat(1000)]) expect(utf8Length(s)).toBe(Buffer.byteLength(s));
  });

  it('heartbeats come every third of the lease, at most every 10 s', () => {
    expect(heartbeatInterval(30_000)).toBe(10_000);
    expect(heartbeatInterval(3_000)).toBe(1_000);
    expect(heartbeatInterval(600_000)).toBe(10_000);
  });

  it('parseConcurrency accepts 1..32 only', () => {
    expect([1, 4, 32].map((n) => parseConcurrency(String(n)))).toEqual([1, 4, 32]);
    for (const bad of ['0', '33', '', 'x', '1.5', '-1', '100']) expect(parseConcurrency(bad)).toBeNull();
  });

  it('defaultWorkerId is a valid LOKI_WORKER_ID', () => {
    const id = defaultWorkerId();
    expect(loadConfig({ LOKI_WORKER_ID: id }, { home: '/h', cwd: '/c' }).workerId).toBe(id);
  });

  it('outcome reasons', () => {
    const base = { exitCode: null, spentUsd: 0, outputTruncated: false };
    expect(outcomeReason({ ...base, outcome: 'succeeded', exitCode: 0 }, undefined, {})).toBeNull();
    expect(outcomeReason({ ...base, outcome: 'stopped' }, 'shutdown', {})).toBe('the worker shut down');
    expect(outcomeReason({ ...base, outcome: 'stopped' }, 'stop', {})).toBe('stop requested');
    expect(outcomeReason({ ...base, outcome: 'failed', exitCode: 2 }, undefined, {})).toBe('the provider exited with code 2');
    expect(outcomeReason({ ...base, outcome: 'failed', error: 'mount ~ refused (rule home)' }, undefined, {})).toBe('mount ~ refused (rule home)');
    expect(outcomeReason({ ...base, outcome: 'timed_out' }, undefined, { timeout: 'no output for 5 s' })).toBe('no output for 5 s');
    expect(outcomeReason({ ...base, outcome: 'oom_killed' }, undefined, {})).toMatch(/out of memory/);
    expect(outcomeReason({ ...base, outcome: 'disk_exceeded' }, undefined, {})).toBe('disk limit reached');
    expect(outcomeReason({ ...base, outcome: 'disk_exceeded' }, undefined, { disk: 'the worktree reached its 1g disk limit' })).toBe(
      'the worktree reached its 1g disk limit',
    );
  });
});

describe('worker configuration', () => {
  it('defaults and bounds of the worker variables', () => {
    const c = loadConfig({}, { home: '/h', cwd: '/c' });
    expect(c).toMatchObject({ workerId: null, sandboxKillGraceMs: 10_000, sandboxLeaseMs: 30_000, sessionOutputLimitBytes: 50 * 1024 * 1024 });
    const d = loadConfig(
      { LOKI_WORKER_ID: 'host-1.a_b', LOKI_SANDBOX_KILL_GRACE_MS: '0', LOKI_SANDBOX_LEASE_MS: '1000', LOKI_SESSION_MAX_OUTPUT_BYTES: '1024' },
      { home: '/h', cwd: '/c' },
    );
    expect(d).toMatchObject({ workerId: 'host-1.a_b', sandboxKillGraceMs: 0, sandboxLeaseMs: 1000, sessionOutputLimitBytes: 1024 });
    for (const [k, v] of [
      ['LOKI_WORKER_ID', '-x'],
      ['LOKI_WORKER_ID', 'a'.repeat(65)],
      ['LOKI_SANDBOX_KILL_GRACE_MS', '60001'],
      ['LOKI_SANDBOX_LEASE_MS', '999'],
      ['LOKI_SESSION_MAX_OUTPUT_BYTES', '1k'],
    ]) {
      expect(() => loadConfig({ [k!]: v }, { home: '/h', cwd: '/c' }), `${k}=${v}`).toThrow(new RegExp(`^${k}=`));
    }
  });
});

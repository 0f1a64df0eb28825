/**
 * Retention with a signed cut: the shared prune logic (src/audit/retention.ts),
 * the CLI that uses it, and the server's LOKI_AUDIT_RETENTION_DAYS timer.
 */
import { describe, expect, it } from 'vitest';
import type { AuditEntry } from '../../src/audit/chain';
import { DAY_MS, pruneAudit, retentionCutoff } from '../../src/audit/retention';
import { loadConfig } from '../../src/env';
import { startServer } from '../../src/server';
import { makeAuditLog } from '../helpers/audit';
import { captureLogger, freePort, runCli, tempHome } from '../helpers/server';

const BASE = 1_790_000_000_000; // sampleEntry(i).ts = BASE + i * 1000

describe('pruneAudit', () => {
  it('signs a prune checkpoint at the cut, deletes through it, records audit.prune; the rest verifies', async () => {
    const t = await makeAuditLog({ entries: 1500 });
    try {
      const cutRow = (await t.audit.storage.range(700, 700))[0]!;
      const recorded: Record<string, unknown>[] = [];
      const r = await pruneAudit(t.audit, BASE + 700 * 1000 + 1, {
        newest: 'refuse',
        record: async (d) => {
          recorded.push(d);
          await t.audit.append({ ts: BASE + 10_000_000, action: 'audit.prune', actor: { type: 'system', id: null, name: 't' }, outcome: { status: null, success: true, error: null }, details: d });
        },
      });
      expect(r).toEqual({ status: 'pruned', cut: { seq: 700, hash: cutRow.hash }, deleted: 700 });
      expect(recorded).toEqual([{ before: new Date(BASE + 700 * 1000 + 1).toISOString(), cut_seq: 700, cut_hash: cutRow.hash, deleted: 700 }]);
      expect(await t.audit.storage.bounds()).toMatchObject({ first: 701, last: 1501, count: 801 });
      const cp = (await t.audit.storage.checkpoints()).filter((c) => c.kind === 'prune');
      expect(cp).toHaveLength(1);
      expect(cp[0]).toMatchObject({ size: 700, headHash: cutRow.hash });
      expect(await t.audit.signer!.verify(cp[0]!.jws)).toMatchObject({ kind: 'prune', size: 700, head_hash: cutRow.hash });
      expect(await t.audit.verify()).toMatchObject({ valid: true, entries_checked: 801 });
      expect(await t.sequential.verify()).toMatchObject({ valid: true, entries_checked: 801 });
      // Nothing older is left: a second pass does nothing.
      expect(await pruneAudit(t.audit, BASE + 700 * 1000 + 1, { newest: 'refuse', record: async () => {} })).toEqual({ status: 'nothing' });
    } finally {
      t.close();
    }
  });

  it('never cuts away the head: the CLI form refuses, the timer form keeps the newest entry', async () => {
    const t = await makeAuditLog({ entries: 50 });
    try {
      const later = BASE + 10_000_000;
      expect(await pruneAudit(t.audit, later, { newest: 'refuse', record: async () => {} })).toEqual({ status: 'refused', why: 'newest', reason: null, firstInvalidSeq: null });
      expect((await t.audit.storage.bounds()).count).toBe(50);
      const r = await pruneAudit(t.audit, later, { newest: 'keep-head', record: async () => {} });
      expect(r).toMatchObject({ status: 'pruned', cut: { seq: 49 }, deleted: 49 });
      expect(await t.audit.storage.bounds()).toMatchObject({ first: 50, last: 50 });
      expect(await t.audit.verify()).toMatchObject({ valid: true, entries_checked: 1 });
      // One entry left: nothing more to take.
      expect(await pruneAudit(t.audit, later, { newest: 'keep-head', record: async () => {} })).toEqual({ status: 'nothing' });
    } finally {
      t.close();
    }
  });

  it('refuses a log that does not verify (a prune never launders tampering), and the CLI says so', async () => {
    const t = await makeAuditLog({ entries: 300 });
    t.db.prepare("UPDATE audit_log SET entry = replace(entry, '\"success\":true', '\"success\":false') WHERE seq = 123").run();
    const r = await pruneAudit(t.audit, BASE + 200 * 1000, { newest: 'refuse', record: async () => {} });
    expect(r).toEqual({ status: 'refused', why: 'invalid', reason: 'hash_mismatch', firstInvalidSeq: 123 });
    expect((await t.audit.storage.bounds()).count).toBe(300);
    expect((await t.audit.storage.checkpoints()).some((c) => c.kind === 'prune')).toBe(false);
    t.close();
    const cli = await runCli(['enterprise', 'audit', 'prune', '--before', new Date(BASE + 200 * 1000).toISOString()], { LOKI_HOME: t.dir });
    expect(cli.code).toBe(1);
    expect(cli.stderr).toBe('loki: refusing to prune: the log does not verify (hash_mismatch at seq 123)\n');
  });

  it('computes the cut from days', () => {
    expect(retentionCutoff(BASE, 30)).toBe(BASE - 30 * DAY_MS);
  });
});

describe('LOKI_AUDIT_RETENTION_DAYS on a real server', () => {
  it('is off by default, once an hour when on', () => {
    const d = { home: '/home/u', cwd: '/w' };
    expect(loadConfig({}, d)).toMatchObject({ auditRetentionDays: null, auditRetentionIntervalMs: 3_600_000 });
    expect(loadConfig({ LOKI_AUDIT_RETENTION_DAYS: '90' }, d)).toMatchObject({ auditRetentionDays: 90 });
  });

  it('validates its settings (exit 2, one line naming the variable)', async () => {
    for (const [name, value, allowed] of [
      ['LOKI_AUDIT_RETENTION_DAYS', '0', 'an integer from 1 to 36500'],
      ['LOKI_AUDIT_RETENTION_DAYS', 'forever', 'an integer from 1 to 36500'],
      ['LOKI_AUDIT_RETENTION_INTERVAL_S', '0.5', 'an integer from 1 to 86400'],
    ]) {
      const r = await runCli(['dashboard', '--port', String(await freePort())], { LOKI_HOME: tempHome(), [name!]: value! });
      expect(r.code).toBe(2);
      expect(r.stderr).toBe(`loki: ${name}="${value}" is invalid: expected ${allowed}\n`);
    }
  });

  it('prunes entries older than the retention behind a signed cut, on its timer; the log verifies afterwards', async () => {
    let now = Date.now();
    const home = tempHome('loki-retention-');
    const port = await freePort();
    const config = loadConfig(
      { LOKI_HOME: home, LOKI_DASHBOARD_PORT: String(port), LOKI_AUDIT_RETENTION_DAYS: '30', LOKI_AUDIT_RETENTION_INTERVAL_S: '1' },
      { home, cwd: home },
    );
    expect(config).toMatchObject({ auditRetentionDays: 30, auditRetentionIntervalMs: 1000 });
    const logger = captureLogger();
    const s = await startServer(config, { logger, now: () => now });
    let stopped = false;
    try {
      const get = async (n: number, tag: string) => {
        for (let i = 0; i < n; i++) expect((await fetch(`${s.url}/api/status`, { headers: { 'X-Request-Id': `${tag}-${String(i).padStart(4, '0')}` } })).status).toBe(200);
      };
      const t0 = now;
      await get(30, 'old-batch');
      now = t0 + 10 * DAY_MS;
      await get(10, 'mid-batch');
      await s.runtime.audit.drain();
      expect((await s.runtime.audit.storage.tip()).seq).toBe(40);
      const oldTip = (await s.runtime.audit.storage.range(30, 30))[0]!;
      expect(JSON.parse(oldTip.entry)).toMatchObject({ request: { id: 'old-batch-0029' } });
      // 35 days on (cut-off t0 + 5 days): the first batch is past 30 days, the second is not.
      now = t0 + 35 * DAY_MS;
      const rows = await until(async () => {
        const r = await s.runtime.audit.query({ afterSeq: 0, limit: 100, action: 'audit.prune' });
        return r.length ? r : null;
      });
      const prune = JSON.parse(rows[0]!.entry) as AuditEntry;
      expect(prune).toMatchObject({
        action: 'audit.prune',
        actor: { type: 'system', name: 'audit-retention' },
        outcome: { success: true },
        details: { via: 'retention', retention_days: 30, cut_seq: 30, cut_hash: oldTip.hash, deleted: 30, before: new Date(t0 + 5 * DAY_MS).toISOString() },
      });
      expect(await s.runtime.audit.storage.bounds()).toMatchObject({ first: 31 });
      const cps = (await s.runtime.audit.storage.checkpoints()).filter((c) => c.kind === 'prune');
      expect(cps.map((c) => [c.size, c.headHash])).toEqual([[30, oldTip.hash]]);
      expect(await s.runtime.audit.signer!.verify(cps[0]!.jws)).toMatchObject({ kind: 'prune', size: 30, head_hash: oldTip.hash });
      // Later passes find nothing more to prune.
      await new Promise((r) => setTimeout(r, 2_200));
      expect(await s.runtime.audit.query({ afterSeq: 0, limit: 100, action: 'audit.prune' })).toHaveLength(1);
      expect(logger.lines.filter((l) => l.level === 'error')).toEqual([]);
      expect(logger.lines.filter((l) => l.msg === 'audit retention pruned').map((l) => l.fields)).toEqual([{ deleted: 30, cut_seq: 30, retention_days: 30 }]);
      await s.stop();
      stopped = true;
      const v = await runCli(['enterprise', 'audit', 'verify', '--json'], { LOKI_HOME: home });
      expect(v.code).toBe(0);
      expect(JSON.parse(v.stdout)).toMatchObject({ valid: true });
    } finally {
      if (!stopped) await s.stop();
    }
  });

  it('refuses to prune a tampered log, says so in the log and the chain, and deletes nothing', async () => {
    let now = Date.now();
    const home = tempHome('loki-retention-');
    const config = loadConfig(
      { LOKI_HOME: home, LOKI_DASHBOARD_PORT: String(await freePort()), LOKI_AUDIT_RETENTION_DAYS: '1', LOKI_AUDIT_RETENTION_INTERVAL_S: '1' },
      { home, cwd: home },
    );
    const logger = captureLogger();
    const s = await startServer(config, { logger, now: () => now });
    try {
      for (let i = 0; i < 5; i++) await fetch(`${s.url}/api/status`);
      await s.runtime.audit.drain();
      s.runtime.db.prepare("UPDATE audit_log SET entry = replace(entry, '\"success\":true', '\"success\":false') WHERE seq = 2").run();
      now += 3 * DAY_MS;
      const rows = await until(async () => {
        const r = await s.runtime.audit.query({ afterSeq: 0, limit: 100, action: 'audit.prune_refused' });
        return r.length ? r : null;
      });
      expect(JSON.parse(rows[0]!.entry)).toMatchObject({ outcome: { success: false, error: 'hash_mismatch' }, details: { reason: 'hash_mismatch', first_invalid_seq: 2, retention_days: 1 } });
      expect((await s.runtime.audit.storage.bounds()).first).toBe(1);
      expect(logger.lines.some((l) => l.level === 'error' && l.msg === 'audit retention refused: the log does not verify')).toBe(true);
    } finally {
      await s.stop();
    }
  });
});

async function until<T>(f: () => Promise<T | null>, ms = 15_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 50));
  }
}

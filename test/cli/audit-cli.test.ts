import { spawn } from 'node:child_process';
import { cpSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { makeAuditLog, sampleEntry } from '../helpers/audit';
import { LOKI_BIN, runCli, tempHome } from '../helpers/server';

const LEGACY = new URL('../../../shared/fixtures/loki-mode-legacy/', import.meta.url).pathname;

describe('loki enterprise audit (CLI on the database)', () => {
  let home: string;
  beforeAll(async () => {
    const t = await makeAuditLog({ entries: 1500 });
    home = t.dir;
    t.close();
  });

  it('verify: exit 0 and a one-line summary; --json gives the report', async () => {
    const r = await runCli(['enterprise', 'audit', 'verify'], { LOKI_HOME: home });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^audit log valid: 150\d entries checked, head [0-9a-f]{64}, checkpoint at 1000\n$/);
    const j = await runCli(['enterprise', 'audit', 'verify', '--json'], { LOKI_HOME: home });
    expect(JSON.parse(j.stdout)).toMatchObject({ valid: true, first_invalid_seq: null, reason: null, checkpoint: { size: 1000 } });
  });

  it('checkpoint and pubkey print what an auditor saves', async () => {
    const cp = await runCli(['enterprise', 'audit', 'checkpoint'], { LOKI_HOME: home });
    expect(cp.code).toBe(0);
    expect(JSON.parse(cp.stdout)).toMatchObject({ size: 1000, head_hash: expect.stringMatching(/^[0-9a-f]{64}$/) });
    const pk = await runCli(['enterprise', 'audit', 'pubkey'], { LOKI_HOME: home });
    expect(JSON.parse(pk.stdout)).toMatchObject({ kty: 'OKP', crv: 'Ed25519', alg: 'EdDSA' });
    expect(JSON.parse(pk.stdout)).not.toHaveProperty('d');
  });

  it('export (0600) verifies offline; a tampered or truncated export fails with exit 1', async () => {
    const out = path.join(tempHome(), 'audit.jsonl');
    const e = await runCli(['enterprise', 'audit', 'export', '--out', out], { LOKI_HOME: home });
    expect(e.code).toBe(0);
    expect(e.stdout).toMatch(/^exported 150\d entries to /);
    expect(statSync(out).mode & 0o777).toBe(0o600);
    const ok = await runCli(['enterprise', 'audit', 'verify', '--file', out, '--json'], { LOKI_HOME: tempHome() });
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ valid: true });

    const lines = readFileSync(out, 'utf8').split('\n');
    const tampered = path.join(tempHome(), 'tampered.jsonl');
    const i = lines.findIndex((l) => l.includes('"seq":321,'));
    lines[i] = lines[i]!.replace('user-', 'evil-');
    writeFileSync(tampered, lines.join('\n'));
    const bad = await runCli(['enterprise', 'audit', 'verify', '--file', tampered, '--json'], { LOKI_HOME: tempHome() });
    expect(bad.code).toBe(1);
    expect(JSON.parse(bad.stdout)).toMatchObject({ valid: false, first_invalid_seq: 321, reason: 'hash_mismatch' });

    const truncated = path.join(tempHome(), 'truncated.jsonl');
    const text = readFileSync(out, 'utf8');
    writeFileSync(truncated, text.slice(0, Math.floor(text.length / 2)));
    const t = await runCli(['enterprise', 'audit', 'verify', '--file', truncated], { LOKI_HOME: tempHome() });
    expect(t.code).toBe(1);
    expect(t.stdout).toMatch(/^audit log INVALID: malformed_export: line \d+ is not valid JSON \(truncated or corrupt export\)/);
    expect(t.stderr).not.toContain('    at ');
  });

  it('a checkpoint file with a bad signature → exit 1 with the reason; a missing export → exit 2', async () => {
    const cp = JSON.parse((await runCli(['enterprise', 'audit', 'checkpoint'], { LOKI_HOME: home })).stdout);
    const file = path.join(tempHome(), 'cp.json');
    writeFileSync(file, JSON.stringify({ ...cp, jws: `${cp.jws.slice(0, -4)}AAAA` }));
    const r = await runCli(['enterprise', 'audit', 'verify', '--checkpoint', file, '--json'], { LOKI_HOME: home });
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stdout)).toMatchObject({ valid: false, reason: 'bad_checkpoint_signature' });
    const m = await runCli(['enterprise', 'audit', 'verify', '--file', '/nonexistent.jsonl'], { LOKI_HOME: home });
    expect(m.code).toBe(2);
    expect(m.stderr).toBe('loki: no such export file: /nonexistent.jsonl\n');
  });

  it('tamper on the file → verify exits 1 naming the seq', async () => {
    const t = await makeAuditLog({ entries: 300 });
    t.db.prepare('DELETE FROM audit_log WHERE seq = 123').run();
    t.close();
    const r = await runCli(['enterprise', 'audit', 'verify'], { LOKI_HOME: t.dir });
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('audit log INVALID: missing_entry at seq 123 (122 entries checked before it)\n');
  });

  it('tail -n prints the last entries as JSON lines', async () => {
    const r = await runCli(['enterprise', 'audit', 'tail', '-n', '3'], { LOKI_HOME: home });
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines).toHaveLength(3);
    expect(lines[1].seq).toBe(lines[0].seq + 1);
    expect((await runCli(['enterprise', 'audit', 'tail', '-n', 'abc'], { LOKI_HOME: home })).code).toBe(2);
  });

  it('tail -f prints entries as they commit', async () => {
    const t = await makeAuditLog({ entries: 5 });
    const child = spawn(process.execPath, [LOKI_BIN, 'enterprise', 'audit', 'tail', '-n', '1', '-f'], {
      env: { PATH: process.env.PATH ?? '', LOKI_HOME: t.dir, HOME: t.dir },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
    });
    const waitFor = async (pred: () => boolean) => {
      for (let i = 0; i < 100 && !pred(); i++) await new Promise((r) => setTimeout(r, 100));
    };
    await waitFor(() => out.includes('"seq":5,'));
    await t.audit.append({ ...sampleEntry(6), action: 'followed.entry' });
    await waitFor(() => out.includes('followed.entry'));
    child.kill('SIGTERM');
    t.close();
    const seqs = out.trim().split('\n').map((l) => JSON.parse(l).seq);
    expect(seqs).toEqual([5, 6]);
  });

  it('prune --before keeps a signed cut: the rest verifies, appends continue', async () => {
    const t = await makeAuditLog({ entries: 2500 });
    t.close();
    const before = new Date(1_790_000_000_000 + 1200 * 1000).toISOString();
    const r = await runCli(['enterprise', 'audit', 'prune', '--before', before], { LOKI_HOME: t.dir });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^pruned 1199 entries through seq 1199; prune checkpoint signed at [0-9a-f]{64}\n$/);
    const v = await runCli(['enterprise', 'audit', 'verify', '--json'], { LOKI_HOME: t.dir });
    expect(v.code).toBe(0);
    expect(JSON.parse(v.stdout)).toMatchObject({ valid: true, entries_checked: 1302 });
    const bad = await runCli(['enterprise', 'audit', 'prune', '--before', 'last tuesday'], { LOKI_HOME: t.dir });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toBe('loki: --before must be an ISO 8601 date such as 2026-01-31 (got "last tuesday")\n');
  });
});

describe('Loki Mode legacy logs', () => {
  it.each([
    ['single', 500, 1],
    ['rotated', 6000, 3],
  ])('verify-legacy %s: valid, %i entries in %i file(s)', async (dir, n, files) => {
    const r = await runCli(['enterprise', 'audit', 'verify-legacy', `${LEGACY}${dir}`, '--json'], { LOKI_HOME: tempHome() });
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j).toMatchObject({ valid: true, entries_checked: n, first_invalid: null });
    expect(j.files).toHaveLength(files);
  });

  it('one changed byte fails at the right file and line (exit 1)', async () => {
    const dir = tempHome('loki-legacy-');
    cpSync(`${LEGACY}rotated`, dir, { recursive: true });
    const f = path.join(dir, 'audit-2026-11-24.052258.jsonl');
    const lines = readFileSync(f, 'utf8').split('\n');
    lines[99] = lines[99]!.replace('"success": true', '"success": false');
    writeFileSync(f, lines.join('\n'));
    const r = await runCli(['enterprise', 'audit', 'verify-legacy', dir, '--json'], { LOKI_HOME: tempHome() });
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stdout).first_invalid).toMatchObject({ file: 'audit-2026-11-24.052258.jsonl', line: 100 });
  });

  it('import-legacy records the legacy tip hash in the new chain, which verifies', async () => {
    const home = tempHome();
    const v = JSON.parse((await runCli(['enterprise', 'audit', 'verify-legacy', `${LEGACY}single`, '--json'], { LOKI_HOME: home })).stdout);
    const r = await runCli(['enterprise', 'audit', 'import-legacy', `${LEGACY}single`], { LOKI_HOME: home });
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`imported 500 legacy entries; legacy tip ${v.tip_hash} recorded at seq 501\n`);
    const tail = JSON.parse((await runCli(['enterprise', 'audit', 'tail', '-n', '1'], { LOKI_HOME: home })).stdout);
    expect(tail).toMatchObject({ seq: 501, action: 'audit.legacy_import', details: { legacy_tip_hash: v.tip_hash, entries: 500 } });
    expect((await runCli(['enterprise', 'audit', 'verify'], { LOKI_HOME: home })).code).toBe(0);
  });

  it('verify-legacy on a missing directory → exit 2', async () => {
    const r = await runCli(['enterprise', 'audit', 'verify-legacy', '/nonexistent-dir'], { LOKI_HOME: tempHome() });
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('loki: no such directory: /nonexistent-dir\n');
  });
});

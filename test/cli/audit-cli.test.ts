import { spawn } from 'node:child_process';
import { cpSync, existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
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

  it('tail -n --json prints the last entries as JSON lines', async () => {
    const r = await runCli(['enterprise', 'audit', 'tail', '-n', '3', '--json'], { LOKI_HOME: home });
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines).toHaveLength(3);
    expect(lines[1].seq).toBe(lines[0].seq + 1);
    expect(lines[0]).toHaveProperty('hash');
    expect((await runCli(['enterprise', 'audit', 'tail', '-n', 'abc'], { LOKI_HOME: home })).code).toBe(2);
  });

  it('tail -f prints entries as they commit', async () => {
    const t = await makeAuditLog({ entries: 5 });
    const child = spawn(process.execPath, [LOKI_BIN, 'enterprise', 'audit', 'tail', '-n', '1', '-f', '--json'], {
      env: { PATH: process.env.PATH ?? '', LOKI_HOME: t.dir, HOME: t.dir },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
    });
    const waitFor = async (pred: () => boolean) => {
      // The CLI's start-up takes seconds on a busy machine: entry 6 must come after it printed entry 5.
      for (let i = 0; i < 600 && !pred(); i++) await new Promise((r) => setTimeout(r, 100));
    };
    await waitFor(() => out.includes('"seq":5,'));
    await t.audit.append({ ...sampleEntry(6), action: 'followed.entry' });
    await waitFor(() => out.includes('followed.entry'));
    child.kill('SIGTERM');
    t.close();
    const seqs = out.trim().split('\n').map((l) => JSON.parse(l).seq);
    expect(seqs).toEqual([5, 6]);
  }, 180_000);

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

describe('loki enterprise audit tail: readable lines, filters, a closed pipe', () => {
  const when = (i: number) => new Date(sampleEntry(i).ts).toISOString().replace('T', ' ').replace('.000Z', 'Z');

  it('one readable line per entry by default (no JSON), oldest first', async () => {
    const t = await makeAuditLog({ entries: 10 });
    t.close();
    const r = await runCli(['enterprise', 'audit', 'tail', '-n', '2'], { LOKI_HOME: t.dir });
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    const detail = 'nested={"a":true,"b":[1,2,null]}, unicode=ünïcödé ✓';
    expect(r.stdout).toBe(
      `#9  ${when(9)}  http.request  by user-4 (token)  GET /api/status?i=9  token tok_9  200 ok  from 127.0.0.1  i=9, ${detail}\n` +
        `#10  ${when(10)}  http.request  by user-0 (token)  GET /api/status?i=10  token tok_10  200 ok  from 127.0.0.1  i=10, ${detail}\n`,
    );
  });

  it('--action, --actor and --since (ISO or ago) filter; -n counts the matching entries', async () => {
    const t = await makeAuditLog({ entries: 30 });
    await t.audit.append({ ...sampleEntry(31), ts: Date.now() - 60_000, action: 'token.revoke', actor: { type: 'local', id: null, name: 'cli:alice' } });
    await t.audit.drain();
    t.close();
    const seqs = async (...args: string[]) => {
      const r = await runCli(['enterprise', 'audit', 'tail', '--json', ...args], { LOKI_HOME: t.dir });
      expect(r.code, args.join(' ')).toBe(0);
      return r.stdout.trim() ? r.stdout.trim().split('\n').map((l) => JSON.parse(l).seq as number) : [];
    };
    expect(await seqs('--action', 'token.create')).toEqual([7, 14, 21, 28]);
    expect(await seqs('--action', 'token.create', '-n', '2')).toEqual([21, 28]);
    expect(await seqs('--actor', 'user-3', '-n', '3')).toEqual([18, 23, 28]);
    expect(await seqs('--actor', 'user-3', '--action', 'token.create')).toEqual([28]);
    expect(await seqs('--since', new Date(sampleEntry(27).ts).toISOString())).toEqual([27, 28, 29, 30, 31]);
    expect(await seqs('--since', '10m')).toEqual([31]);
    expect(await seqs('--since', '30s')).toEqual([]);
    expect(await seqs('--actor', 'cli:alice', '--since', '2h')).toEqual([31]);
    const none = await runCli(['enterprise', 'audit', 'tail', '--actor', 'nobody'], { LOKI_HOME: t.dir });
    expect(none).toEqual({ code: 0, stdout: '', stderr: 'loki: no audit entries match\n' });
    const bad = await runCli(['enterprise', 'audit', 'tail', '--since', 'yesterday'], { LOKI_HOME: t.dir });
    expect(bad).toEqual({
      code: 2,
      stdout: '',
      stderr: 'loki: --since must be an ISO 8601 time such as 2026-01-31T12:00:00Z, or a time ago such as 10m, 2h or 7d (got "yesterday")\n',
    });
  }, 240_000);

  it('control characters from a request are shown escaped, never sent to the terminal', async () => {
    const t = await makeAuditLog({ entries: 1 });
    await t.audit.append({ ...sampleEntry(2), request: { id: 'r', method: 'GET', path: '/x\u001b]0;pwned\u0007\u001b[2J' } });
    await t.audit.drain();
    t.close();
    const r = await runCli(['enterprise', 'audit', 'tail', '-n', '1'], { LOKI_HOME: t.dir });
    expect(r.stdout).toContain('GET /x\\u001b]0;pwned\\u0007\\u001b[2J  token tok_2');
    expect(r.stdout).not.toMatch(/[\u0000-\u0009\u000b-\u001f]/);
  });

  /** Spawn `loki enterprise audit tail …` with stdout piped; destroy the read end after the first line (as `| head -1` does). */
  function tailIntoClosedPipe(dir: string, args: string[], afterClose?: () => Promise<void>) {
    const child = spawn(process.execPath, [LOKI_BIN, 'enterprise', 'audit', 'tail', ...args], {
      env: { PATH: process.env.PATH ?? '', LOKI_HOME: dir, HOME: dir },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let first = '';
    let stderr = '';
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    child.stdout.on('data', (d: Buffer) => {
      if (first) return;
      first = d.toString().split('\n')[0]!;
      child.stdout.destroy();
      void afterClose?.();
    });
    return new Promise<{ first: string; code: number | null; signal: NodeJS.Signals | null; stderr: string }>((resolve) =>
      child.once('close', (code, signal) => resolve({ first, code, signal, stderr })),
    );
  }

  it('tail -n 1500 --json | head -1: the closed pipe ends it as SIGPIPE ends cat (no EPIPE stack trace)', async () => {
    const t = await makeAuditLog({ entries: 1500 });
    t.close();
    // 1500 JSON lines (~700 kB) cannot all sit in the pipe's buffer: writes after the close fail with EPIPE.
    const r = await tailIntoClosedPipe(t.dir, ['-n', '1500', '--json']);
    expect(JSON.parse(r.first)).toMatchObject({ seq: expect.any(Number) });
    expect(r.stderr).toBe('');
    expect(r).toMatchObject({ code: null, signal: 'SIGPIPE' });
  });

  it('tail -f after the reader is gone: the next entry ends it the same way', async () => {
    const t = await makeAuditLog({ entries: 3 });
    const r = await tailIntoClosedPipe(t.dir, ['-n', '1', '-f'], async () => {
      await new Promise((res) => setTimeout(res, 300));
      await t.audit.append(sampleEntry(4));
    });
    t.close();
    expect(r.first).toMatch(/^#3 {2}/);
    expect(r.stderr).toBe('');
    expect(r).toMatchObject({ code: null, signal: 'SIGPIPE' });
  });
});

describe('loki enterprise audit prove / verify-proof / pubkey --note (C2SP)', () => {
  let home: string;
  let vkey: string;
  let proofFile: string;
  let entry321: string;
  beforeAll(async () => {
    const t = await makeAuditLog({ entries: 600 });
    home = t.dir;
    entry321 = (t.db.prepare('SELECT entry FROM audit_log WHERE seq = 321').pluck().get() as string);
    t.close();
    const pk = await runCli(['enterprise', 'audit', 'pubkey', '--note'], { LOKI_HOME: home });
    expect(pk.code).toBe(0);
    vkey = pk.stdout.trim();
    proofFile = path.join(tempHome(), 'e321.tlog-proof');
  });

  it('pubkey --note prints the note verifier key; checkpoint --note the latest signed note', async () => {
    expect(vkey).toMatch(/^loki\.[a-z0-9.-]+\/audit\+[0-9a-f]{8}\+A[A-Za-z0-9+/]{43}$/);
    const cp = await runCli(['enterprise', 'audit', 'checkpoint', '--note'], { LOKI_HOME: home });
    expect(cp.code).toBe(0);
    const origin = vkey.split('+')[0]!;
    expect(cp.stdout).toMatch(new RegExp(`^${origin.replace(/\./g, '\\.')}\\n\\d+\\n[A-Za-z0-9+/]{43}=\\n\\n— ${origin.replace(/\./g, '\\.')} [A-Za-z0-9+/]+=*\\n$`));
    expect(JSON.parse((await runCli(['enterprise', 'audit', 'checkpoint'], { LOKI_HOME: home })).stdout)).toMatchObject({ note: expect.stringContaining(origin) });
  });

  it('prove writes a tlog-proof (0600) that verify-proof checks offline with only the verifier key', async () => {
    const p = await runCli(['enterprise', 'audit', 'prove', '321', '--out', proofFile], { LOKI_HOME: home });
    expect(p.stderr).toBe('');
    expect(p.code).toBe(0);
    expect(p.stdout).toMatch(new RegExp(`^wrote the proof that entry 321 is in the tree of size \\d+ to ${proofFile.replace(/[/.]/g, '\\$&')}\\n$`));
    expect(statSync(proofFile).mode & 0o777).toBe(0o600);
    const text = readFileSync(proofFile, 'utf8');
    expect(text.startsWith(`c2sp.org/tlog-proof@v1\nextra ${Buffer.from(entry321).toString('base64')}\nindex 320\n`)).toBe(true);
    const nowhere = tempHome();
    const v = await runCli(['enterprise', 'audit', 'verify-proof', proofFile, '--key', vkey], { LOKI_HOME: nowhere });
    expect(v.stderr).toBe('');
    expect(v.code).toBe(0);
    expect(v.stdout).toMatch(new RegExp(`^proof valid: entry 321 is in ${vkey.split('+')[0]!.replace(/\./g, '\\.')} at tree size \\d+ \\(checkpoint signed by `));
    expect(existsSync(path.join(nowhere, 'dashboard'))).toBe(false); // no database touched
    const j = await runCli(['enterprise', 'audit', 'verify-proof', proofFile, '--key', vkey, '--json'], { LOKI_HOME: nowhere });
    expect(JSON.parse(j.stdout)).toMatchObject({ valid: true, reason: null, index: 320, seq: 321, entry: { seq: 321, action: 'http.request' } });
    const entryFile = path.join(nowhere, 'entry.json');
    writeFileSync(entryFile, `${entry321}\n`);
    expect((await runCli(['enterprise', 'audit', 'verify-proof', proofFile, '--key', vkey, '--entry', entryFile], { LOKI_HOME: nowhere })).code).toBe(0);
  });

  it('verify-proof refuses a changed entry, a changed proof, another key (exit 1) and bad input (exit 2)', async () => {
    const nowhere = tempHome();
    const other = path.join(nowhere, 'other.json');
    writeFileSync(other, entry321.replace('"user-1"', '"user-2"'));
    const e = await runCli(['enterprise', 'audit', 'verify-proof', proofFile, '--key', vkey, '--entry', other], { LOKI_HOME: nowhere });
    expect(e.code).toBe(1);
    expect(e.stdout).toMatch(/^proof INVALID: inclusion_failed: the entry is not at index 320 of the tree of size \d+ \(the given entry differs from the one in the proof\)\n$/);
    const lines = readFileSync(proofFile, 'utf8').split('\n');
    lines[3] = Buffer.alloc(32, 7).toString('base64');
    const bad = path.join(nowhere, 'bad.tlog-proof');
    writeFileSync(bad, lines.join('\n'));
    const b = await runCli(['enterprise', 'audit', 'verify-proof', bad, '--key', vkey], { LOKI_HOME: nowhere });
    expect(b.code).toBe(1);
    expect(b.stdout).toMatch(/^proof INVALID: inclusion_failed: the entry is not at index 320 of the tree of size \d+\n$/);
    const otherKey = 'loki.example/audit+ba0e4c3d+AXbsFqMNI+HFiOK7EdpROrdMiWsQ7fI3ZuIJ9JfCl9RY';
    const k = await runCli(['enterprise', 'audit', 'verify-proof', proofFile, '--key', otherKey], { LOKI_HOME: nowhere });
    expect(k.code).toBe(2);
    expect(k.stderr).toBe('loki: --key is not a note verifier key such as name+1a2b3c4d+AbC… (invalid verifier hash)\n');
    const t = await (await import('../../src/audit/tlog/note')).generateNoteKey(vkey.split('+')[0]!);
    const w = await runCli(['enterprise', 'audit', 'verify-proof', proofFile, '--key', t.vkey], { LOKI_HOME: nowhere });
    expect(w.code).toBe(1);
    expect(w.stdout).toBe('proof INVALID: bad_checkpoint: checkpoint: note has no verifiable signatures\n');
    writeFileSync(bad, 'c2sp.org/tlog-proof@v1\nindex 01\n');
    const m = await runCli(['enterprise', 'audit', 'verify-proof', bad, '--key', vkey], { LOKI_HOME: nowhere });
    expect(m.code).toBe(2);
    expect(m.stderr).toBe(`loki: ${bad} is not a c2sp.org/tlog-proof@v1 file (line 2: expected "index N" (a decimal without leading zeroes))\n`);
    const n = await runCli(['enterprise', 'audit', 'verify-proof', '/nonexistent.tlog-proof', '--key', vkey], { LOKI_HOME: nowhere });
    expect(n.code).toBe(2);
    expect(n.stderr).toBe("loki: cannot read /nonexistent.tlog-proof: ENOENT: no such file or directory, open '/nonexistent.tlog-proof'\n");
    expect(n.stderr).not.toContain('    at ');
  });

  it('prove: bad SEQ, an entry beyond the log, an existing file → exit 2 with one line', async () => {
    const a = await runCli(['enterprise', 'audit', 'prove', 'abc', '--out', path.join(tempHome(), 'x')], { LOKI_HOME: home });
    expect(a).toMatchObject({ code: 2, stderr: 'loki: SEQ must be an entry\'s sequence number, a whole number from 1 (got "abc")\n' });
    const b = await runCli(['enterprise', 'audit', 'prove', '999999', '--out', path.join(tempHome(), 'x')], { LOKI_HOME: home });
    expect(b.code).toBe(2);
    expect(b.stderr).toMatch(/^loki: there is no entry 999999: the log has \d+ entries\n$/);
    const c = await runCli(['enterprise', 'audit', 'prove', '5', '--out', proofFile], { LOKI_HOME: home });
    expect(c).toMatchObject({ code: 2, stderr: `loki: cannot create ${proofFile}: file exists\n` });
    const h = await runCli(['enterprise', 'audit', 'prove', '--help'], { LOKI_HOME: home });
    expect(h.code).toBe(0);
    expect(h.stdout).toContain('Usage: loki enterprise audit prove [options] <seq>');
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
    const tail = JSON.parse((await runCli(['enterprise', 'audit', 'tail', '-n', '1', '--json'], { LOKI_HOME: home })).stdout);
    expect(tail).toMatchObject({ seq: 501, action: 'audit.legacy_import', details: { legacy_tip_hash: v.tip_hash, entries: 500 } });
    expect((await runCli(['enterprise', 'audit', 'verify'], { LOKI_HOME: home })).code).toBe(0);
  });

  it('verify-legacy on a missing directory → exit 2', async () => {
    const r = await runCli(['enterprise', 'audit', 'verify-legacy', '/nonexistent-dir'], { LOKI_HOME: tempHome() });
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('loki: no such directory: /nonexistent-dir\n');
  });
});

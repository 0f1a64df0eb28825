/**
 * A verifier nobody here wrote: the Go program (x/mod sumdb/note + sumdb/tlog,
 * standard library, none of this project's code) reads a running server's
 * checkpoint, tiles and entry bundles over HTTP, verifies the note with
 * note.Open, checks tlog.CheckRecord of random entries and tlog.CheckTree
 * between two checkpoints taken 1,000 entries apart, checks the server's own
 * proof endpoints, and checks a .tlog-proof made by the CLI.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { formatCheckpoint, generateNoteKey, signNote } from '../../src/audit/tlog/note';
import { sha256, utf8 } from '../../src/audit/tlog/sha256';
import { sampleEntry } from '../helpers/audit';
import { runCli, startTestServer, type TestServer, tempHome } from '../helpers/server';
import { makeToken } from '../helpers/tokens';
import { buildVerifier, describeGo, runVerifier } from './go';

const probe = await buildVerifier();

describeGo('the Go verifier against a running server', probe, (bin) => {
  let s: TestServer;
  let token: string;
  let vkey: string;
  let oldNote: string;
  const dir = tempHome('loki-go-http-');

  async function appendUpTo(n: number) {
    const tip = (await s.runtime.audit.storage.tip()).seq;
    await Promise.all(Array.from({ length: n - tip }, (_, i) => s.runtime.audit.append(sampleEntry(tip + i + 1))));
    await s.runtime.audit.drain();
  }
  async function checkpointNote() {
    const r = await s.req('/api/enterprise/audit/tlog/checkpoint', { token });
    expect(r.status).toBe(200);
    return r.text();
  }

  beforeAll(async () => {
    s = await startTestServer({ LOKI_ENTERPRISE_AUTH: 'true' });
    token = (await makeToken(s, 'go-auditor', 'auditor')).token;
    const pk = await runCli(['enterprise', 'audit', 'pubkey', '--note'], { LOKI_HOME: s.home });
    expect(pk.code).toBe(0);
    vkey = pk.stdout.trim();
    expect(vkey).toBe(s.runtime.audit.tlog!.vkey);
    await appendUpTo(1200);
    oldNote = await checkpointNote();
    expect(oldNote.split('\n')[1]).toBe('1000');
    await appendUpTo(2100);
    expect((await checkpointNote()).split('\n')[1]).toBe('2000');
  });
  afterAll(async () => {
    await s?.stop();
  });

  it('verifies note, tiles, random inclusions, consistency 1,000 → 2,000, the proof endpoints and a CLI .tlog-proof', async () => {
    const oldFile = path.join(dir, 'old.note');
    writeFileSync(oldFile, oldNote);
    const proofFile = path.join(dir, 'entry-1234.tlog-proof');
    const p = await runCli(['enterprise', 'audit', 'prove', '1234', '--out', proofFile], { LOKI_HOME: s.home });
    expect(p.stderr).toBe('');
    expect(p.code).toBe(0);
    const r = await runVerifier(bin, ['http', `${s.url}/api/enterprise/audit/tlog`, vkey, oldFile, '40', '11', proofFile], { env: { TLOG_TOKEN: token } });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out).toMatchObject({
      checkpoint_content_type: 'text/plain; charset=utf-8',
      origin: vkey.split('+')[0],
      size: 2000,
      records_checked: 40,
      consistent_from: 1000,
      server_proofs: 'ok',
      proof_file: { ok: true, origin: vkey.split('+')[0], index: 1233, size: 2000 },
    });
    expect(JSON.parse(out.proof_file.entry)).toMatchObject({ seq: 1234, action: 'http.request' });
    expect(out.tiles_fetched).toBeGreaterThan(5);
  });

  it('refuses the server’s checkpoint under another key, and a proof under another key', async () => {
    const other = await generateNoteKey(vkey.split('+')[0]!);
    const oldFile = path.join(dir, 'old2.note');
    writeFileSync(oldFile, oldNote);
    const r = await runVerifier(bin, ['http', `${s.url}/api/enterprise/audit/tlog`, other.vkey, oldFile, '2', '1'], { env: { TLOG_TOKEN: token } });
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('tlog-verify: checkpoint: note has no verifiable signatures\n');
    const proofFile = path.join(dir, 'entry-7.tlog-proof');
    expect((await runCli(['enterprise', 'audit', 'prove', '7', '--out', proofFile], { LOKI_HOME: s.home })).code).toBe(0);
    const g = await runVerifier(bin, ['proof', proofFile, other.vkey]);
    expect(g).toMatchObject({ code: 1, stderr: 'tlog-verify: note has no verifiable signatures\n' });
    const ok = await runVerifier(bin, ['proof', proofFile, vkey]);
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ ok: true, index: 6 });
  });

  it('first run without a saved checkpoint, then saving one; a log behind or beside what was saved is refused', async () => {
    const base = `${s.url}/api/enterprise/audit/tlog`;
    const first = await runVerifier(bin, ['http', base, vkey, '-', '5', '3'], { env: { TLOG_TOKEN: token } });
    expect(first.code).toBe(0);
    expect(JSON.parse(first.stdout)).toMatchObject({ size: 2000, records_checked: 5, consistent_from: null, server_proofs: 'ok' });
    const saved = await runVerifier(bin, ['checkpoint', base, vkey], { env: { TLOG_TOKEN: token } });
    expect(saved.code).toBe(0);
    expect(saved.stdout).toBe(await checkpointNote());
    // What the auditor saw before, signed by the log's key: a larger tree, or another tree of the same size.
    const tlog = s.runtime.audit.tlog!;
    for (const [size, why] of [
      [5000, 'tlog-verify: the log\'s checkpoint (size 2000) is older than the saved one (size 5000): the log was rolled back\n'],
      [2000, 'tlog-verify: the log\'s checkpoint and the saved one have the same size 2000 and different roots: the log was forked\n'],
    ] as const) {
      const f = path.join(dir, `seen-${size}.note`);
      writeFileSync(f, await signNote(formatCheckpoint({ origin: tlog.origin, size, rootHash: sha256(utf8('another tree')) }), [tlog.signer]));
      expect(await runVerifier(bin, ['http', base, vkey, f, '2', '1'], { env: { TLOG_TOKEN: token } })).toMatchObject({ code: 2, stderr: why });
    }
  });
});

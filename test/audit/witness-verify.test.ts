/**
 * `verify --witness-key`: a checkpoint note must carry a valid C2SP
 * tlog-cosignature by each given witness, on a saved note (--checkpoint) or on
 * the newest stored note the witnesses cosigned (cosignatures stored beside the
 * notes in audit_witness_cosignatures, as the server's witness pusher stores them).
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cosign, generateCosignatureKey, noteVerifier, parseCheckpoint, signatureLine } from '../../src/audit/tlog/note';
import { toBase64 } from '../../src/audit/tlog/sha256';
import { cosignedNoteReader } from '../../src/db/sqlite-witness';
import { runCli, tempHome } from '../helpers/server';
import { makeNodeLog, type NodeLog } from './tlog-helpers';

let log: NodeLog;
let witness: { skey: string; vkey: string };
let note2000: string;
let cosig: string;

function storeCosignature(note: string, line: string, vkey: string) {
  const c = parseCheckpoint(note.slice(0, note.indexOf('\n\n') + 1));
  log.db
    .prepare('INSERT INTO audit_witness_cosignatures (witness_key, origin, size, root_hash, timestamp, signature, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)')
    .run(vkey, c.origin, c.size, toBase64(c.rootHash), 1_767_225_600, line, Date.now());
}

const verify = async (witnesses: string[], external?: string) =>
  log.audit.verify({ witnesses: await Promise.all(witnesses.map(noteVerifier)), cosignedNote: cosignedNoteReader(log.db), external: external ?? null });

beforeAll(async () => {
  log = await makeNodeLog(2500);
  witness = await generateCosignatureKey('witness.test/w1');
  note2000 = log.db.prepare('SELECT note FROM audit_checkpoints WHERE size = 2000').pluck().get() as string;
  cosig = signatureLine(await cosign(note2000.slice(0, note2000.indexOf('\n\n') + 1), witness.skey, 1_767_225_600)).trimEnd();
});
afterAll(async () => {
  await log.close();
});

describe('witness cosignatures', () => {
  it('none stored → witness_cosignature_missing', async () => {
    expect(await verify([witness.vkey])).toMatchObject({ valid: false, reason: 'witness_cosignature_missing', first_invalid_seq: null });
  });

  it('a stored cosignature on the note at 2,000 → valid; the result names the witnessed checkpoint', async () => {
    storeCosignature(note2000, cosig, witness.vkey);
    const r = await verify([witness.vkey]);
    expect(r).toMatchObject({ valid: true, checkpoint: { size: 2000 } });
    expect(r.checkpoint!.note).toBe(`${note2000}${cosig}\n`);
    const other = await generateCosignatureKey('witness.test/w2');
    expect(await verify([witness.vkey, other.vkey])).toMatchObject({ valid: false, reason: 'witness_cosignature_missing' });
  });

  it('a saved note must carry the cosignature itself; a changed cosignature → bad_witness_cosignature', async () => {
    expect(await verify([witness.vkey], `${note2000}${cosig}\n`)).toMatchObject({ valid: true, checkpoint: { size: 2000 } });
    expect(await verify([witness.vkey], note2000)).toMatchObject({ valid: false, reason: 'witness_cosignature_missing' });
    const raw = Buffer.from(cosig.split(' ').pop()!, 'base64');
    raw[raw.length - 1]! ^= 1;
    const forged = `${cosig.slice(0, cosig.lastIndexOf(' '))} ${raw.toString('base64')}`;
    expect(await verify([witness.vkey], `${note2000}${forged}\n`)).toMatchObject({ valid: false, reason: 'bad_witness_cosignature', first_invalid_seq: 2000 });
  });

  it('the CLI: verify --witness-key with the stored cosignature, and with a saved cosigned note', async () => {
    const r = await runCli(['enterprise', 'audit', 'verify', '--json', '--witness-key', witness.vkey], { LOKI_HOME: log.home });
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ valid: true, checkpoint: { size: 2000 } });
    const f = path.join(tempHome(), 'cosigned.note');
    writeFileSync(f, `${note2000}${cosig}\n`);
    expect((await runCli(['enterprise', 'audit', 'verify', '--checkpoint', f, '--witness-key', witness.vkey], { LOKI_HOME: log.home })).code).toBe(0);
    const bad = await runCli(['enterprise', 'audit', 'verify', '--witness-key', log.audit.tlog!.vkey], { LOKI_HOME: log.home });
    expect(bad).toMatchObject({ code: 2, stderr: 'loki: --witness-key must be a cosignature verifier key (signature type 0x04)\n' });
  });
});

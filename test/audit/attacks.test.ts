/**
 * Each attack of issue 11's "Why", done on a real database file (as someone with
 * write access to $LOKI_HOME would), and what `loki enterprise audit verify`
 * says about it: the exact reason, position and exit code. Where the database
 * alone cannot tell (an exact earlier state, a log replaced together with its
 * keys), the test shows which outside evidence catches it.
 */
import { cpSync, existsSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { beforeAll, describe, expect, it } from 'vitest';
import { runCli, tempHome } from '../helpers/server';
import { appendSamples, makeNodeLog, openNodeLog } from './tlog-helpers';

// biome-ignore lint/suspicious/noExplicitAny: JSON report
type Json = any;

let base: string;
let vkey: string;
let savedAt2500: string;

/** A copy of the 2,500-entry log (checkpoints at 0, 1,000 and 2,000) to attack. */
function victim(): { home: string; db: Database.Database; keys: { signing: string; note: string } } {
  const home = tempHome('loki-attack-');
  cpSync(base, home, { recursive: true });
  const dir = path.join(home, 'dashboard');
  return { home, db: new Database(path.join(dir, 'loki.db')), keys: { signing: path.join(dir, 'audit-signing-key'), note: path.join(dir, 'audit-note-key') } };
}

async function verify(home: string, ...args: string[]) {
  const r = await runCli(['enterprise', 'audit', 'verify', '--json', ...args], { LOKI_HOME: home });
  return { code: r.code, stderr: r.stderr, json: r.stdout ? (JSON.parse(r.stdout) as Json) : null };
}

/** What an attacker who knows about the tree does: rebuild the tiles from the entries that are left. */
async function rebuildTree(home: string) {
  const db = new Database(path.join(home, 'dashboard', 'loki.db'));
  db.prepare('DELETE FROM audit_tiles').run();
  db.close();
  const log = await openNodeLog(home);
  await log.close();
}

function saveNote(text: string): string {
  const f = path.join(tempHome('loki-auditor-'), 'checkpoint.note');
  writeFileSync(f, text);
  return f;
}

beforeAll(async () => {
  const log = await makeNodeLog(2500);
  vkey = log.audit.tlog!.vkey;
  // The auditor saved the signed tree head at 2,500 (e.g. from GET …/tlog/checkpoint, or syslog).
  savedAt2500 = (await log.audit.signNoteAt(2500))!;
  base = log.home;
  await log.close();
  const clean = await verify(base);
  expect(clean).toMatchObject({ code: 0, json: { valid: true, entries_checked: 2500, checkpoint: { size: 2000 } } });
});

describe('attacks on the database file', () => {
  it('the tail after the last checkpoint deleted → truncated (the tree still has the leaves)', async () => {
    const v = victim();
    v.db.prepare('DELETE FROM audit_log WHERE seq > 2000').run();
    v.db.close();
    expect(await verify(v.home)).toMatchObject({ code: 1, json: { valid: false, reason: 'truncated', first_invalid_seq: 2001, entries_checked: 2000 } });
  });

  it('… and the tree rebuilt as well: an exact earlier state, caught by a saved checkpoint', async () => {
    const v = victim();
    v.db.prepare('DELETE FROM audit_log WHERE seq > 2000').run();
    v.db.close();
    await rebuildTree(v.home);
    expect(await verify(v.home)).toMatchObject({ code: 0, json: { valid: true, entries_checked: 2000 } });
    expect(await verify(v.home, '--checkpoint', saveNote(savedAt2500))).toMatchObject({
      code: 1,
      json: { valid: false, reason: 'truncated', first_invalid_seq: 2001, checkpoint: { size: 2500, note: savedAt2500 } },
    });
  });

  it('every entry and checkpoint deleted → truncated at 1; with the tree gone too → genesis_checkpoint_missing', async () => {
    const v = victim();
    v.db.prepare('DELETE FROM audit_log').run();
    v.db.prepare('DELETE FROM audit_checkpoints').run();
    expect(await verify(v.home)).toMatchObject({ code: 1, json: { valid: false, reason: 'truncated', first_invalid_seq: 1, entries_checked: 0 } });
    v.db.prepare('DELETE FROM audit_tiles').run();
    v.db.close();
    const r = await verify(v.home);
    // verify records its own failure; the point is the reason.
    expect(r).toMatchObject({ code: 1, json: { valid: false, reason: 'genesis_checkpoint_missing', first_invalid_seq: null } });
  });

  it('truncated to an older checkpoint with the newer checkpoints deleted → truncated', async () => {
    const v = victim();
    v.db.prepare('DELETE FROM audit_log WHERE seq > 1000').run();
    v.db.prepare('DELETE FROM audit_checkpoints WHERE size > 1000').run();
    v.db.close();
    expect(await verify(v.home)).toMatchObject({ code: 1, json: { valid: false, reason: 'truncated', first_invalid_seq: 1001, entries_checked: 1000 } });
  });

  it('… with the tree rebuilt too: caught by a saved checkpoint', async () => {
    const v = victim();
    v.db.prepare('DELETE FROM audit_log WHERE seq > 1000').run();
    v.db.prepare('DELETE FROM audit_checkpoints WHERE size > 1000').run();
    v.db.close();
    await rebuildTree(v.home);
    expect(await verify(v.home)).toMatchObject({ code: 0, json: { valid: true, entries_checked: 1000, checkpoint: { size: 1000 } } });
    expect(await verify(v.home, '--checkpoint', saveNote(savedAt2500))).toMatchObject({ code: 1, json: { valid: false, reason: 'truncated', first_invalid_seq: 1001 } });
  });

  it('truncated and then grown again (other entries appended) → the tree shows the fork; rebuilt → a saved checkpoint shows it', async () => {
    const v = victim();
    v.db.prepare('DELETE FROM audit_log WHERE seq > 1000').run();
    v.db.prepare('DELETE FROM audit_checkpoints WHERE size > 1000').run();
    v.db.close();
    const log = await openNodeLog(v.home);
    await appendSamples(log, 5001, 6600); // the server keeps running: 1,600 new entries, new checkpoints
    await log.close();
    expect(await verify(v.home)).toMatchObject({ code: 1, json: { valid: false, reason: 'tree_mismatch', first_invalid_seq: 1001 } });
    await rebuildTree(v.home);
    expect(await verify(v.home, '--checkpoint', saveNote(savedAt2500))).toMatchObject({ code: 1, json: { valid: false, reason: 'checkpoint_mismatch', first_invalid_seq: 2500 } });
  });

  it('the signing key deleted: verify never creates a key (exit 2, naming the file)', async () => {
    const v = victim();
    v.db.close();
    rmSync(v.keys.signing);
    const r = await runCli(['enterprise', 'audit', 'verify'], { LOKI_HOME: v.home });
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(
      `loki: the audit signing key ${v.keys.signing} does not exist; verify never creates a key (restore the file, or verify an export with --file and --pubkey)\n`,
    );
    expect(existsSync(v.keys.signing)).toBe(false);
    const w = victim();
    w.db.close();
    rmSync(w.keys.note);
    const n = await runCli(['enterprise', 'audit', 'verify'], { LOKI_HOME: w.home });
    expect(n.code).toBe(2);
    expect(n.stderr).toBe(
      `loki: the audit note key ${w.keys.note} does not exist but the log has checkpoint notes; verify never creates a key (restore the file, or pass the saved verifier key with --key)\n`,
    );
    expect(existsSync(w.keys.note)).toBe(false);
    // The auditor's saved verifier key is enough to check the notes without the file.
    expect(await verify(w.home, '--key', vkey)).toMatchObject({ code: 0, json: { valid: true } });
  });

  it('rewritten from scratch with new keys → self-consistent, but the saved verifier key or checkpoint refuses it', async () => {
    const v = victim();
    v.db.prepare('DELETE FROM audit_log').run();
    v.db.prepare('DELETE FROM audit_checkpoints').run();
    v.db.prepare('DELETE FROM audit_tiles').run();
    v.db.close();
    rmSync(v.keys.signing);
    rmSync(v.keys.note);
    const log = await openNodeLog(v.home); // new keys, new genesis
    await appendSamples(log, 1, 2500);
    await log.close();
    expect(await verify(v.home)).toMatchObject({ code: 0, json: { valid: true, entries_checked: 2500 } });
    expect(await verify(v.home, '--key', vkey)).toMatchObject({ code: 1, json: { valid: false, reason: 'bad_checkpoint_signature', first_invalid_seq: 0 } });
    expect(await verify(v.home, '--checkpoint', saveNote(savedAt2500))).toMatchObject({ code: 1, json: { valid: false, reason: 'bad_checkpoint_signature', first_invalid_seq: null } });
  });
});

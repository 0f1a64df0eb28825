import { afterEach, describe, expect, it } from 'vitest';
import { canonicalEntry, GENESIS_HASH } from '../../src/audit/chain';
import { sha256Hex } from '../../src/db/sqlite-audit';
import { makeAuditLog, sampleEntry, type TestAudit } from '../helpers/audit';

let t: TestAudit | null = null;
afterEach(() => {
  t?.close();
  t = null;
});

function row(db: TestAudit['db'], seq: number) {
  return db.prepare('SELECT seq, entry, prev_hash AS prevHash, hash FROM audit_log WHERE seq = ?').get(seq) as {
    seq: number;
    entry: string;
    prevHash: string;
    hash: string;
  };
}

async function bothVerify(x: TestAudit, external?: string) {
  const par = await x.audit.verify({ external: external ?? null });
  const seq = await x.sequential.verify({ external: external ?? null });
  expect(seq).toEqual(par);
  return par;
}

describe('the audit chain', () => {
  it('links every entry: hash = sha256(prev_hash ‖ canonical entry), genesis 64 zeros', async () => {
    t = await makeAuditLog({ entries: 3 });
    const r1 = row(t.db, 1);
    expect(r1.prevHash).toBe(GENESIS_HASH);
    expect(r1.entry).toBe(canonicalEntry(1, sampleEntry(1)));
    expect(r1.hash).toBe(sha256Hex(GENESIS_HASH + r1.entry));
    const r2 = row(t.db, 2);
    expect(r2.prevHash).toBe(r1.hash);
    expect(r2.hash).toBe(sha256Hex(r1.hash + r2.entry));
    expect(r1.entry.startsWith('{"seq":1,"ts":1790000001000,"action":"http.request","resource":{"type":"token","id":"tok_1"},')).toBe(true);
    // details keys sorted recursively
    expect(r1.entry).toContain('"details":{"i":1,"nested":{"a":true,"b":[1,2,null]},"unicode":"ünïcödé ✓"}');
  });

  it('verifies a clean log of 2,500 entries with checkpoints every 1,000', async () => {
    t = await makeAuditLog({ entries: 2500 });
    const r = await bothVerify(t);
    expect(r).toMatchObject({ valid: true, entries_checked: 2500, first_invalid_seq: null, reason: null, last_hash: row(t.db, 2500).hash });
    expect(r.checkpoint).toMatchObject({ size: 2000, kind: 'periodic', verified: true });
    expect(t.db.prepare('SELECT size FROM audit_checkpoints ORDER BY size').all()).toEqual([{ size: 1000 }, { size: 2000 }]);
  });

  describe('tampering done directly on the SQLite file is caught at the exact position', () => {
    it('a modified row → hash_mismatch at that seq', async () => {
      t = await makeAuditLog({ entries: 2500 });
      t.db.prepare("UPDATE audit_log SET entry = replace(entry, '\"success\":true', '\"success\":false') WHERE seq = 1234").run();
      expect(await bothVerify(t)).toMatchObject({ valid: false, first_invalid_seq: 1234, reason: 'hash_mismatch', entries_checked: 1233 });
    });

    it('a modified stored hash → hash_mismatch there', async () => {
      t = await makeAuditLog({ entries: 1500 });
      t.db.prepare("UPDATE audit_log SET hash = '0' || substr(hash, 2) WHERE seq = 42").run();
      const r = await bothVerify(t);
      expect(r.first_invalid_seq).toBe(42);
      expect(r.reason).toMatch(/^(hash_mismatch|chain_broken)$/);
    });

    it('a deleted row → missing_entry at its seq', async () => {
      t = await makeAuditLog({ entries: 2500 });
      t.db.prepare('DELETE FROM audit_log WHERE seq = 700').run();
      expect(await bothVerify(t)).toMatchObject({ valid: false, first_invalid_seq: 700, reason: 'missing_entry', entries_checked: 699 });
    });

    it('an inserted row (later rows shifted, the forged one hashed correctly) → chain_broken right after it', async () => {
      t = await makeAuditLog({ entries: 2500 });
      const rows = t.db.prepare('SELECT seq FROM audit_log WHERE seq >= 800 ORDER BY seq DESC').all() as { seq: number }[];
      const shift = t.db.prepare('UPDATE audit_log SET seq = seq + 1 WHERE seq = ?');
      t.db.transaction(() => {
        for (const r of rows) shift.run(r.seq);
      })();
      const prev = row(t.db, 799).hash;
      const entry = canonicalEntry(800, { ...sampleEntry(800), action: 'forged.entry' });
      t.db.prepare('INSERT INTO audit_log (seq, entry, prev_hash, hash) VALUES (800, ?, ?, ?)').run(entry, prev, sha256Hex(prev + entry));
      // The Merkle tree still holds the original leaf 800: caught at the forged row itself.
      expect(await bothVerify(t)).toMatchObject({ valid: false, first_invalid_seq: 800, reason: 'tree_mismatch', entries_checked: 799 });
      // With the tree rebuilt as well, the chain still breaks right after it.
      t.db.prepare('DELETE FROM audit_tiles').run();
      await t.audit.storage.syncTree();
      expect(await bothVerify(t)).toMatchObject({ valid: false, first_invalid_seq: 801, reason: 'chain_broken', entries_checked: 800 });
    });

    it('two rows swapped (reordered) → chain_broken at the first', async () => {
      t = await makeAuditLog({ entries: 2500 });
      const a = row(t.db, 900);
      const b = row(t.db, 901);
      const put = t.db.prepare('UPDATE audit_log SET entry = ?, prev_hash = ?, hash = ? WHERE seq = ?');
      t.db.transaction(() => {
        put.run(b.entry, b.prevHash, b.hash, 900);
        put.run(a.entry, a.prevHash, a.hash, 901);
      })();
      expect(await bothVerify(t)).toMatchObject({ valid: false, first_invalid_seq: 900, reason: 'chain_broken', entries_checked: 899 });
    });

    it("a row carrying another row's entry, re-hashed → seq_mismatch", async () => {
      t = await makeAuditLog({ entries: 50 });
      const r10 = row(t.db, 10);
      const r11 = row(t.db, 11);
      // Put entry 10's text into row 11, linked and hashed correctly, and re-link the rest.
      const forgedHash = sha256Hex(r11.prevHash + r10.entry);
      t.db.prepare('UPDATE audit_log SET entry = ?, hash = ? WHERE seq = 11').run(r10.entry, forgedHash);
      let prev = forgedHash;
      for (let s = 12; s <= 50; s++) {
        const r = row(t.db, s);
        const h = sha256Hex(prev + r.entry);
        t.db.prepare('UPDATE audit_log SET prev_hash = ?, hash = ? WHERE seq = ?').run(prev, h, s);
        prev = h;
      }
      expect(await bothVerify(t)).toMatchObject({ valid: false, first_invalid_seq: 11, reason: 'seq_mismatch' });
    });

    it('a truncated tail (shorter than the latest checkpoint) → truncated', async () => {
      t = await makeAuditLog({ entries: 2500 });
      t.db.prepare('DELETE FROM audit_log WHERE seq > 1500').run();
      expect(await bothVerify(t)).toMatchObject({ valid: false, first_invalid_seq: 1501, reason: 'truncated', entries_checked: 1500 });
    });

    it('a checkpoint with a bad signature → bad_checkpoint_signature', async () => {
      t = await makeAuditLog({ entries: 2500 });
      const cp = t.db.prepare('SELECT id, jws FROM audit_checkpoints WHERE size = 2000').get() as { id: number; jws: string };
      const sig = cp.jws.split('.')[2]!;
      const bad = `${cp.jws.slice(0, -sig.length)}${sig[0] === 'A' ? 'B' : 'A'}${sig.slice(1)}`;
      t.db.prepare('UPDATE audit_checkpoints SET jws = ? WHERE id = ?').run(bad, cp.id);
      expect(await bothVerify(t)).toMatchObject({ valid: false, first_invalid_seq: 2000, reason: 'bad_checkpoint_signature' });
    });

    it('a checkpoint whose stored head was edited → bad_checkpoint_signature', async () => {
      t = await makeAuditLog({ entries: 1200 });
      t.db.prepare("UPDATE audit_checkpoints SET head_hash = '00' || substr(head_hash, 3) WHERE size = 1000").run();
      expect(await bothVerify(t)).toMatchObject({ valid: false, first_invalid_seq: 1000, reason: 'bad_checkpoint_signature' });
    });

    it('a fully rewritten log is caught with a checkpoint the auditor saved earlier', async () => {
      t = await makeAuditLog({ entries: 2500 });
      const saved = (t.db.prepare('SELECT jws FROM audit_checkpoints WHERE size = 2000').get() as { jws: string }).jws;
      // The attacker rewrites history from seq 1, recomputes every hash and drops the stored checkpoints.
      const rows = t.db.prepare('SELECT seq, entry FROM audit_log ORDER BY seq').all() as { seq: number; entry: string }[];
      let prev = '0'.repeat(64);
      const put = t.db.prepare('UPDATE audit_log SET entry = ?, prev_hash = ?, hash = ? WHERE seq = ?');
      t.db.transaction(() => {
        for (const r of rows) {
          const entry = r.seq === 5 ? r.entry.replace('"user-0"', '"someone-else"') : r.entry;
          const hash = sha256Hex(prev + entry);
          put.run(entry, prev, hash, r.seq);
          prev = hash;
        }
        t!.db.prepare('DELETE FROM audit_checkpoints').run();
      })();
      // The Merkle tree still holds the old leaves: caught where the history changed.
      expect(await bothVerify(t)).toMatchObject({ valid: false, first_invalid_seq: 5, reason: 'tree_mismatch' });
      // An attacker who rebuilds the tree too leaves a self-consistent log (without outside proof).
      t.db.prepare('DELETE FROM audit_tiles').run();
      await t.audit.storage.syncTree();
      expect((await bothVerify(t)).valid).toBe(true);
      expect(await bothVerify(t, saved)).toMatchObject({ valid: false, first_invalid_seq: 2000, reason: 'checkpoint_mismatch' });
    });

    it('a forged external checkpoint (signed by another key) is refused', async () => {
      t = await makeAuditLog({ entries: 100 });
      const other = await makeAuditLog({ entries: 100 });
      const foreign = (await other.audit.checkpoint('manual'))!.jws;
      other.close();
      expect(await bothVerify(t, foreign)).toMatchObject({ valid: false, reason: 'bad_checkpoint_signature' });
    });
  });

  it('prune keeps proof: the rest still verifies and tampering in it is still caught', async () => {
    t = await makeAuditLog({ entries: 2500 });
    const cut = (await t.audit.storage.lastSeqBefore(1_790_000_000_000 + 1200 * 1000))!;
    expect(cut.seq).toBe(1199);
    await t.audit.checkpoint('prune', cut);
    expect(await t.audit.storage.deleteThrough(cut.seq)).toBe(1199);
    expect(await bothVerify(t)).toMatchObject({ valid: true, entries_checked: 1301 });
    // appends continue on the chain
    await t.audit.append(sampleEntry(9999));
    expect(await bothVerify(t)).toMatchObject({ valid: true, entries_checked: 1302 });
    t.db.prepare("UPDATE audit_log SET entry = replace(entry, 'user-', 'evil-') WHERE seq = 1800").run();
    expect(await bothVerify(t)).toMatchObject({ valid: false, first_invalid_seq: 1800, reason: 'hash_mismatch' });
  });

  it('a deleted head (rows before the first remaining one) without a prune checkpoint → prune_checkpoint_missing', async () => {
    t = await makeAuditLog({ entries: 300 });
    t.db.prepare('DELETE FROM audit_log WHERE seq <= 100').run();
    expect(await bothVerify(t)).toMatchObject({ valid: false, first_invalid_seq: 101, reason: 'prune_checkpoint_missing' });
  });
});

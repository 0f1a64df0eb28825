/**
 * The Merkle tree and C2SP checkpoints of the live audit log (SQLite and D1
 * storages): the tree grows with the entries in the same transaction, old
 * databases are backfilled at open, tiles survive a prune, checkpoint notes
 * carry the tree's root, and verification checks all of it.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { AuditLog } from '../../src/audit/log';
import { createPgNodeAudit } from '../../src/audit/node-audit';
import type { AuditStorage } from '../../src/audit/storage';
import { migrate, openSqlite } from '../../src/db/sqlite';
import { loadConfig } from '../../src/env';
import { tempHome } from '../helpers/server';
import { nodeSha256, nodeTreeHasher } from '../../src/audit/node-tlog';
import { syslogCheckpointMessage } from '../../src/audit/node-audit';
import { pruneAudit } from '../../src/audit/retention';
import { checkRecord, checkTree, defaultHasher, proveRecord, proveTree, treeHasher } from '../../src/audit/tlog/merkle';
import { generateNoteKey, noteSigner, noteVerifier, openCheckpoint } from '../../src/audit/tlog/note';
import { sha256, toBase64, utf8 } from '../../src/audit/tlog/sha256';
import { treeRootAt, verifyStorage } from '../../src/audit/verify';
import { createD1AuditStorage, webCryptoRangeChecker } from '../../src/db/d1-audit';
import { createSqliteAuditStorage } from '../../src/db/sqlite-audit';
import { sampleEntry } from '../helpers/audit';
import { createFakeD1 } from '../helpers/fake-d1';
import { appendSamples, expectedTiles, makeNodeLog, type NodeLog, openNodeLog, storedTiles } from './tlog-helpers';

let log: NodeLog | null = null;
afterEach(async () => {
  await log?.close();
  log = null;
});

describe('the tree of the live log (SQLite)', () => {
  it('node:crypto and the plain TypeScript hasher agree', () => {
    const b = utf8('ünïcödé ✓'.repeat(50));
    expect(toBase64(nodeSha256(b))).toBe(toBase64(sha256(b)));
    expect(toBase64(nodeTreeHasher.leafOfText('ünïcödé ✓'))).toBe(toBase64(defaultHasher.recordHash(utf8('ünïcödé ✓'))));
    expect(toBase64(treeHasher(nodeSha256).nodeHash(b.subarray(0, 32), b.subarray(32, 64)))).toBe(toBase64(defaultHasher.nodeHash(b.subarray(0, 32), b.subarray(32, 64))));
  });

  it('a checkpoint due at a multiple of 1,000 is written even when a larger size was signed in between (another server\'s timer)', async () => {
    const home = tempHome('loki-tlog-');
    const config = loadConfig({ LOKI_HOME: home }, { home, cwd: home });
    const db = openSqlite(config.dbPath);
    migrate(db);
    try {
      const real = createSqliteAuditStorage(db);
      const storage: AuditStorage = {
        ...real,
        async appendBatch(inputs) {
          const tips = await real.appendBatch(inputs);
          // Between this batch's commit and its due checkpoint, another server signs size 1005.
          if (tips.some((t) => t.seq === 1000)) await real.insertCheckpoint({ kind: 'periodic', size: 1005, headHash: 'f'.repeat(64), time: Date.now(), jws: 'other', note: null });
          return tips;
        },
      };
      const { audit } = await createPgNodeAudit(config, storage);
      await Promise.all(Array.from({ length: 1000 }, (_, i) => audit.append(sampleEntry(i + 1))));
      await audit.drain();
      expect(db.prepare("SELECT size FROM audit_checkpoints WHERE kind = 'periodic' ORDER BY id").pluck().all()).toEqual([1005, 1000]);
    } finally {
      db.close();
    }
  });

  it('the served tree size is read again only past the largest size seen, and a memoised root equals the recomputed one', async () => {
    log = await makeNodeLog(300);
    expect(await log.audit.treeSizeFor(1)).toBe(300);
    await appendSamples(log, 301, 512);
    // 512 was never seen: the tree is read again (and grows); 300 was: no new read.
    expect(await log.audit.treeSizeFor(300)).toBe(300);
    expect(await log.audit.treeSizeFor(301)).toBe(512);
    for (const size of [1, 300, 511, 512]) {
      const expected = toBase64(await treeRootAt(log.audit.storage, size));
      expect(toBase64(await log.audit.rootAt(size))).toBe(expected);
      expect(toBase64(await log.audit.rootAt(size))).toBe(expected);
    }
  });

  it('grows with the entries: tiles equal the tree recomputed from the stored entries; notes every 1,000 and a genesis note', async () => {
    log = await makeNodeLog(2345);
    expect(storedTiles(log.db)).toEqual(expectedTiles(log.db));
    expect(await log.audit.storage.treeStatus()).toEqual({ size: 2345, logSize: 2345, state: 'complete' });
    const cps = log.db.prepare('SELECT kind, size, note FROM audit_checkpoints ORDER BY id').all() as { kind: string; size: number; note: string }[];
    expect(cps.map((c) => [c.kind, c.size])).toEqual([
      ['genesis', 0],
      ['periodic', 1000],
      ['periodic', 2000],
    ]);
    const tlog = log.audit.tlog!;
    expect(tlog.origin).toMatch(/^loki\.[a-z0-9.-]+\/audit$/);
    expect(tlog.vkey.startsWith(`${tlog.origin}+`)).toBe(true);
    const v = await noteVerifier(tlog.vkey);
    const genesis = await openCheckpoint(cps[0]!.note, [v], tlog.origin);
    expect(genesis.checkpoint).toMatchObject({ size: 0, rootHash: sha256() }); // RFC 6962's empty tree
    for (const cp of cps.slice(1)) {
      const { checkpoint } = await openCheckpoint(cp.note, [v], tlog.origin);
      expect(toBase64(checkpoint.rootHash)).toBe(toBase64(await treeRootAt(log.audit.storage, cp.size)));
    }
    // Proofs from the stored tiles check against the notes.
    const read = (idx: number[]) => log!.audit.storage.readHashes(idx);
    const r2000 = await treeRootAt(log.audit.storage, 2000);
    const r1000 = await treeRootAt(log.audit.storage, 1000);
    for (const i of [0, 1, 255, 256, 999, 1999]) {
      const entry = (log.db.prepare('SELECT entry FROM audit_log WHERE seq = ?').pluck().get(i + 1) as string);
      checkRecord(await proveRecord(2000, i, read), 2000, r2000, i, defaultHasher.recordHash(utf8(entry)));
    }
    checkTree(await proveTree(2000, 1000, read), 2000, r2000, 1000, r1000);
    expect(await log.audit.verify()).toMatchObject({ valid: true, entries_checked: 2345, tree: { size: 2345, state: 'complete', root: toBase64(await treeRootAt(log.audit.storage, 2345)) } });
  });

  it('sends the full note text to syslog for each checkpoint', async () => {
    log = await makeNodeLog(10);
    const cp = (await log.audit.checkpoint('manual'))!;
    const msg = syslogCheckpointMessage({ origin: 'x', size: cp.size, head_hash: cp.headHash, time: cp.time, kind: 'manual', note: cp.note });
    expect(msg.message).toBe(cp.note);
    expect(msg.message).toMatch(new RegExp(`^${log.audit.tlog!.origin.replace(/\./g, '\\.')}\\n10\\n[A-Za-z0-9+/]{43}=\\n\\n— `));
  });

  it('an old database (entries, no tree) is backfilled at open and then verifies; LOKI_AUDIT_ORIGIN names the log', async () => {
    log = await makeNodeLog(3000);
    const before = storedTiles(log.db);
    log.db.prepare('DELETE FROM audit_tiles').run();
    log.db.prepare('UPDATE audit_checkpoints SET note = NULL').run();
    expect(await log.audit.storage.treeStatus()).toEqual({ size: 0, logSize: 3000, state: 'behind' });
    const home = log.home;
    await log.close();
    log = await openNodeLog(home, { LOKI_AUDIT_ORIGIN: 'audit.example.com/loki' });
    expect(storedTiles(log.db)).toEqual(before);
    expect(log.audit.tlog!.origin).toBe('audit.example.com/loki');
    expect(await log.audit.verify()).toMatchObject({ valid: true, entries_checked: 3000 });
    const cp = (await log.audit.checkpoint('manual'))!;
    expect(cp.note!.startsWith('audit.example.com/loki\n3000\n')).toBe(true);
  });

  it('a log pruned before the tree existed keeps working without a tree (no notes), and says so', async () => {
    log = await makeNodeLog(600);
    await log.audit.checkpoint('prune', { seq: 300, hash: (log.db.prepare('SELECT hash FROM audit_log WHERE seq = 300').pluck().get() as string) });
    log.db.prepare('DELETE FROM audit_log WHERE seq <= 300').run();
    log.db.prepare('DELETE FROM audit_tiles').run();
    log.db.prepare('UPDATE audit_checkpoints SET note = NULL').run(); // made before notes existed
    const home = log.home;
    await log.close();
    log = await openNodeLog(home);
    expect(await log.audit.storage.treeStatus()).toEqual({ size: 0, logSize: 600, state: 'unavailable' });
    await appendSamples(log, 601, 610);
    expect((await log.audit.checkpoint('manual'))!.note).toBeNull();
    expect(await log.audit.verify()).toMatchObject({ valid: true, entries_checked: 310, tree: { size: 0, state: 'unavailable' } });
  });

  it('tiles survive a prune: the rest verifies, proofs for remaining entries still check, notes continue', async () => {
    log = await makeNodeLog(2500);
    const r = await pruneAudit(log.audit, 1_790_000_000_000 + 1300 * 1000, { newest: 'refuse', record: async () => {} });
    expect(r).toMatchObject({ status: 'pruned', deleted: 1299 });
    expect(storedTiles(log.db).size).toBe(expectedTilesCount(2500));
    await appendSamples(log, 2501, 2600);
    const cp = (await log.audit.checkpoint('manual'))!;
    expect(cp.size).toBe(2600);
    expect(await log.audit.verify()).toMatchObject({ valid: true, entries_checked: 1301, tree: { size: 2600, state: 'complete' } });
    const root = await treeRootAt(log.audit.storage, 2600);
    const entry = log.db.prepare('SELECT entry FROM audit_log WHERE seq = 2000').pluck().get() as string;
    checkRecord(await proveRecord(2600, 1999, (i) => log!.audit.storage.readHashes(i)), 2600, root, 1999, defaultHasher.recordHash(utf8(entry)));
    // A changed tile in the pruned part is still caught (full tiles against their parents).
    log.db.prepare("UPDATE audit_tiles SET hashes = zeroblob(8192) WHERE level = 0 AND idx = 1").run();
    expect(await log.audit.verify()).toMatchObject({ valid: false, reason: 'tree_mismatch', first_invalid_seq: 257 });
  });
});

function expectedTilesCount(n: number): number {
  let count = 0;
  for (let level = 0; Math.floor(n / 256 ** level) > 0; level++) count += Math.ceil(Math.floor(n / 256 ** level) / 256);
  return count;
}

describe('tampering with the tree or the notes on the database file', () => {
  it('a changed leaf hash → tree_mismatch at its seq (both checkers); a changed upper tile → at the first leaf it covers', async () => {
    log = await makeNodeLog(1300);
    const seq = createSqliteAuditStorage(log.db);
    const sequential = new AuditLog({ storage: seq, enabled: true, signer: log.audit.signer, tlog: log.audit.tlog, verification: { sha256: (s) => Buffer.from(nodeSha256(utf8(s))).toString('hex') } });
    log.db.prepare('UPDATE audit_tiles SET hashes = CAST(substr(hashes, 1, 32*77) || zeroblob(32) || substr(hashes, 32*78+1) AS BLOB) WHERE level = 0 AND idx = 2').run();
    const want = { valid: false, reason: 'tree_mismatch', first_invalid_seq: 2 * 256 + 77 + 1, entries_checked: 2 * 256 + 77 };
    expect(await log.audit.verify()).toMatchObject(want);
    expect(await sequential.verify()).toMatchObject(want);
    log.db.prepare('DELETE FROM audit_tiles').run();
    await log.audit.storage.syncTree();
    log.db.prepare('UPDATE audit_tiles SET hashes = CAST(zeroblob(32) || substr(hashes, 33) AS BLOB) WHERE level = 1 AND idx = 0').run();
    expect(await log.audit.verify()).toMatchObject({ valid: false, reason: 'tree_mismatch', first_invalid_seq: 1 });
  });

  it('a deleted tile → tree_mismatch where it was; a tile store that is no tree → damaged, appends go on without it', async () => {
    log = await makeNodeLog(700);
    const tile0 = log.db.prepare('SELECT hashes FROM audit_tiles WHERE level = 0 AND idx = 0').pluck().get() as Buffer;
    log.db.prepare('DELETE FROM audit_tiles WHERE level = 0 AND idx = 0').run();
    expect(await log.audit.verify()).toMatchObject({ valid: false, reason: 'tree_mismatch', first_invalid_seq: 1, entries_checked: 0 });
    log.db.prepare('INSERT INTO audit_tiles (level, idx, hashes) VALUES (0, 0, ?)').run(tile0);
    log.db.prepare('DELETE FROM audit_tiles WHERE level = 1').run();
    expect((await log.audit.storage.treeStatus()).state).toBe('damaged');
    await appendSamples(log, 701, 710);
    expect((await log.audit.storage.treeStatus()).size).toBe(700);
    expect(await log.audit.verify()).toMatchObject({ valid: false, reason: 'tree_mismatch', first_invalid_seq: null });
  });

  it('a note whose root was re-signed by another key → bad_checkpoint_signature; a note for another tree → checkpoint_mismatch', async () => {
    log = await makeNodeLog(1500);
    const other = await generateNoteKey(log.audit.tlog!.origin);
    const id = log.db.prepare("SELECT id FROM audit_checkpoints WHERE size = 1000").pluck().get() as number;
    const { signNote, formatCheckpoint } = await import('../../src/audit/tlog/note');
    const forged = await signNote(formatCheckpoint({ origin: log.audit.tlog!.origin, size: 1000, rootHash: sha256(utf8('x')) }), [await noteSigner(other.skey)]);
    log.db.prepare('UPDATE audit_checkpoints SET note = ? WHERE id = ?').run(forged, id);
    expect(await log.audit.verify()).toMatchObject({ valid: false, reason: 'bad_checkpoint_signature', first_invalid_seq: 1000 });
    const wrongRoot = await signNote(formatCheckpoint({ origin: log.audit.tlog!.origin, size: 1000, rootHash: sha256(utf8('x')) }), [log.audit.tlog!.signer]);
    log.db.prepare('UPDATE audit_checkpoints SET note = ? WHERE id = ?').run(wrongRoot, id);
    expect(await log.audit.verify()).toMatchObject({ valid: false, reason: 'checkpoint_mismatch', first_invalid_seq: 1000 });
  });

  it('a note for a smaller tree stored after one for a larger tree is fine (writers race); every pair of notes is consistent', async () => {
    log = await makeNodeLog(1500);
    const head = log.db.prepare('SELECT hash FROM audit_log WHERE seq = 500').pluck().get() as string;
    const note = await log.audit.signNoteAt(500);
    const jws = await log.audit.signer!.sign({ origin: log.audit.signer!.origin, size: 500, head_hash: head, time: Date.now(), kind: 'periodic' });
    await log.audit.storage.insertCheckpoint({ kind: 'periodic', size: 500, headHash: head, time: Date.now(), jws, note });
    expect(await log.audit.verify()).toMatchObject({ valid: true, checkpoint: { size: 1000 } });
  });
});

describe('the tree in the D1 storage (Workers)', () => {
  it('builds the same tiles as SQLite, in the same batch as the entries', async () => {
    const fake = createFakeD1();
    const d1 = createD1AuditStorage(fake);
    log = await makeNodeLog(0);
    const sqlite = log.audit.storage;
    for (const batch of [1, 300, 1, 254, 400]) {
      const start = (await d1.tip()).seq;
      const inputs = Array.from({ length: batch }, (_, k) => sampleEntry(start + k + 1));
      await d1.appendBatch(inputs);
      await sqlite.appendBatch(inputs);
    }
    expect(storedTiles(fake.sqlite)).toEqual(storedTiles(log.db));
    expect(storedTiles(fake.sqlite)).toEqual(expectedTiles(fake.sqlite));
    expect(await d1.treeStatus()).toEqual({ size: 956, logSize: 956, state: 'complete' });
    const v = await verifyStorage(d1, { signer: null, external: null, rangeChecker: webCryptoRangeChecker(d1) });
    expect(v).toMatchObject({ valid: true, entries_checked: 956, tree: { size: 956, state: 'complete' } });
    expect(toBase64(await treeRootAt(d1, 956))).toBe(toBase64(await treeRootAt(sqlite, 956)));
    // Proofs read through the D1 tile reader.
    const root = await treeRootAt(d1, 956);
    const entry = fake.sqlite.prepare('SELECT entry FROM audit_log WHERE seq = 700').pluck().get() as string;
    checkRecord(await proveRecord(956, 699, (i) => d1.readHashes(i)), 956, root, 699, defaultHasher.recordHash(utf8(entry)));
    fake.sqlite.prepare('UPDATE audit_tiles SET hashes = CAST(zeroblob(32) || substr(hashes, 33) AS BLOB) WHERE level = 0 AND idx = 1').run();
    expect(await verifyStorage(d1, { signer: null, external: null, rangeChecker: webCryptoRangeChecker(d1) })).toMatchObject({ valid: false, reason: 'tree_mismatch', first_invalid_seq: 257 });
  });

  it('two isolates appending concurrently keep one tree; a lagging tree catches up inside appends', async () => {
    const fake = createFakeD1();
    const a = createD1AuditStorage(fake, { backoffMs: () => Math.random() * 2 });
    const b = createD1AuditStorage(fake, { backoffMs: () => Math.random() * 2 });
    await Promise.all(Array.from({ length: 80 }, (_, i) => (i % 2 ? a : b).appendBatch([sampleEntry(i)])));
    expect(fake.failures.length).toBeGreaterThan(0);
    expect(storedTiles(fake.sqlite)).toEqual(expectedTiles(fake.sqlite));
    fake.sqlite.prepare('DELETE FROM audit_tiles').run();
    expect(await a.treeStatus()).toEqual({ size: 0, logSize: 80, state: 'behind' });
    await a.appendBatch([sampleEntry(81)]);
    expect(await a.treeStatus()).toEqual({ size: 81, logSize: 81, state: 'complete' });
    expect(storedTiles(fake.sqlite)).toEqual(expectedTiles(fake.sqlite));
  });
});

describe('notes from a log built with explicit keys', () => {
  it('signNoteAt signs any size the tree covers, and nothing beyond it', async () => {
    log = await makeNodeLog(300);
    expect(await log.audit.signNoteAt(301)).toBeNull();
    const n = (await log.audit.signNoteAt(256))!;
    const { checkpoint } = await openCheckpoint(n, [await noteVerifier(log.audit.tlog!.vkey)]);
    expect(checkpoint.size).toBe(256);
    expect(toBase64(checkpoint.rootHash)).toBe(toBase64(await treeRootAt(log.audit.storage, 256)));
  });
});

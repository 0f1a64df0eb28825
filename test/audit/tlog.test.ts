/**
 * The pure transparency-log modules (src/audit/tlog): SHA-256, RFC 6962 tree
 * and proofs, tiles, signed notes, checkpoints, cosignatures, tlog-proof files.
 * Known vectors come from Go's own tests (sumdb/note) and RFC/FIPS; the Go
 * cross-checks are in test/tlog-verify.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  checkRecord,
  checkTree,
  defaultHasher,
  type Hash,
  maxpow2,
  proveRecord,
  proveTree,
  splitStoredHashIndex,
  storedHashCount,
  storedHashes,
  storedHashIndex,
  TlogError,
  treeHash,
  treeHasher,
} from '../../src/audit/tlog/merkle';
import {
  cosign,
  formatCheckpoint,
  generateCosignatureKey,
  generateNoteKey,
  InvalidSignatureError,
  keyHash,
  NoteError,
  noteSigner,
  noteVerifier,
  openCheckpoint,
  openNote,
  parseCheckpoint,
  signatureLine,
  signNote,
  UnverifiedNoteError,
  verifierKeyOf,
  verifyCosignature,
} from '../../src/audit/tlog/note';
import { formatTlogProof, ProofFormatError, ProofVerifyError, parseTlogProof, verifyTlogProof } from '../../src/audit/tlog/proof-file';
import { fromBase64, sha256, toBase64, toHex, utf8 } from '../../src/audit/tlog/sha256';
import {
  appendLeaves,
  edgeTiles,
  formatEntryBundle,
  newTiles,
  parseEntryBundle,
  parseTilePath,
  readTileData,
  TilePathError,
  tileHashReader,
  tileInTree,
  tilePath,
} from '../../src/audit/tlog/tiles';

const nodeSha = (...parts: Uint8Array[]) => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return new Uint8Array(h.digest());
};

/** An in-memory stored-hash log of records "record <i>\n" (as Go's tests build them). */
async function memLog(n: number, data = (i: number) => utf8(`record ${i}\n`)) {
  const stored: Hash[] = [];
  const read = (idx: number[]) => idx.map((x) => stored[x]!);
  for (let i = 0; i < n; i++) stored.push(...(await storedHashes(i, data(i), read)));
  return { stored, read };
}

describe('sha256 (plain TypeScript)', () => {
  it.each([
    ['', 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'],
    ['abc', 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad'],
    ['abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq', '248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1'],
  ])('FIPS 180 vector %j', (msg, hex) => {
    expect(toHex(sha256(utf8(msg)))).toBe(hex);
  });

  it('agrees with node:crypto on every length from 0 to 300 and on split input', () => {
    for (let n = 0; n <= 300; n++) {
      const b = new Uint8Array(n).map((_, i) => (i * 31 + n) & 0xff);
      expect(toHex(sha256(b))).toBe(toHex(nodeSha(b)));
      expect(toHex(sha256(b.subarray(0, n >> 1), b.subarray(n >> 1)))).toBe(toHex(nodeSha(b)));
    }
  });
});

describe('RFC 6962 tree (port of sumdb/tlog)', () => {
  it('hashes leaves and nodes with the 0x00 / 0x01 prefixes', () => {
    const leaf = defaultHasher.recordHash(utf8('x'));
    expect(toHex(leaf)).toBe(toHex(nodeSha(new Uint8Array([0]), utf8('x'))));
    expect(toHex(defaultHasher.nodeHash(leaf, leaf))).toBe(toHex(nodeSha(new Uint8Array([1]), leaf, leaf)));
    expect(toHex(treeHasher(nodeSha).recordHash(utf8('x')))).toBe(toHex(leaf));
  });

  it('stored hash indexes match Go (StoredHashIndex, SplitStoredHashIndex, StoredHashCount)', () => {
    // Go: tlog_test.go TestSplitStoredHashIndex checks the round trip; layout for 8 records:
    // 0:(0,0) 1:(0,1) 2:(1,0) 3:(0,2) 4:(0,3) 5:(1,1) 6:(2,0) 7:(0,4)
    const layout = [
      [0, 0],
      [0, 1],
      [1, 0],
      [0, 2],
      [0, 3],
      [1, 1],
      [2, 0],
      [0, 4],
    ];
    layout.forEach(([l, n], i) => {
      expect(storedHashIndex(l!, n!)).toBe(i);
      expect(splitStoredHashIndex(i)).toEqual([l, n]);
    });
    for (let x = 0; x < 5000; x++) {
      const [l, n] = splitStoredHashIndex(x);
      expect(storedHashIndex(l, n)).toBe(x);
    }
    expect([1, 2, 3, 4, 5, 8, 1000].map(storedHashCount)).toEqual([1, 3, 4, 7, 8, 15, 1994]);
    expect(maxpow2(5)).toEqual([4, 2]);
    expect(maxpow2(8)).toEqual([4, 2]);
    expect(maxpow2(9)).toEqual([8, 3]);
    // The clz32 fast path against Go's loop, including around 2^32.
    const goMaxpow2 = (n: number): [number, number] => {
      let l = 0;
      while (2 ** (l + 1) < n) l++;
      return [2 ** l, l];
    };
    for (const n of [1, 2, 3, 4, 7, 65, 255, 256, 257, 2 ** 31, 2 ** 31 + 1, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1, 2 ** 40 + 3]) expect(maxpow2(n)).toEqual(goMaxpow2(n));
    for (let n = 1; n < 5000; n++) expect(maxpow2(n)).toEqual(goMaxpow2(n));
    // Beyond 32 bits (no 32-bit bitwise operators anywhere).
    const big = 2 ** 40 + 12345;
    expect(splitStoredHashIndex(storedHashIndex(3, big))).toEqual([3, big]);
  });

  it('the tree hash of records 0..n-1 equals the RFC 6962 recursive definition', async () => {
    const n = 70;
    const leaves = Array.from({ length: n }, (_, i) => defaultHasher.recordHash(utf8(`record ${i}\n`)));
    const mth = (lo: number, hi: number): Hash => {
      if (hi - lo === 1) return leaves[lo]!;
      const [k] = maxpow2(hi - lo);
      return defaultHasher.nodeHash(mth(lo, lo + k), mth(lo + k, hi));
    };
    const { read } = await memLog(n);
    for (let s = 1; s <= n; s++) expect(toHex(await treeHash(s, read))).toBe(toHex(mth(0, s)));
    expect(toHex(await treeHash(0, read))).toBe('0'.repeat(64));
  });

  it('every inclusion and consistency proof checks; any changed byte fails with proof_failed', async () => {
    const n = 37;
    const { read } = await memLog(n);
    const roots = await Promise.all(Array.from({ length: n + 1 }, (_, s) => treeHash(s, read)));
    for (let t = 1; t <= n; t++) {
      for (let i = 0; i < t; i++) {
        const p = await proveRecord(t, i, read);
        checkRecord(p, t, roots[t]!, i, defaultHasher.recordHash(utf8(`record ${i}\n`)));
      }
      for (let m = 1; m <= t; m++) checkTree(await proveTree(t, m, read), t, roots[t]!, m, roots[m]!);
    }
    const p = await proveRecord(n, 5, read);
    p[1] = p[1]!.slice();
    p[1]![0]! ^= 1;
    expect(() => checkRecord(p, n, roots[n]!, 5, defaultHasher.recordHash(utf8('record 5\n')))).toThrow(
      expect.objectContaining({ code: 'proof_failed', message: 'invalid transparency proof' }),
    );
    expect(() => checkRecord(p.slice(0, -1), n, roots[n]!, 5, defaultHasher.recordHash(utf8('record 5\n')))).toThrow(TlogError);
    expect(() => checkRecord([], n, roots[n]!, n, roots[n]!)).toThrow(expect.objectContaining({ code: 'invalid_input' }));
    const tp = await proveTree(n, 20, read);
    expect(() => checkTree(tp, n, roots[n]!, 20, roots[19]!)).toThrow(expect.objectContaining({ code: 'proof_failed' }));
  });
});

describe('tiles (tlog-tiles, height 8)', () => {
  it.each([
    [{ H: 8, L: 0, N: 0, W: 256 }, 'tile/0/000'],
    [{ H: 8, L: 0, N: 1234067, W: 256 }, 'tile/0/x001/x234/067'],
    [{ H: 8, L: 2, N: 1000, W: 7 }, 'tile/2/x001/000.p/7'],
    [{ H: 8, L: -1, N: 5, W: 255 }, 'tile/entries/005.p/255'],
    [{ H: 8, L: 63, N: 999, W: 1 }, 'tile/63/999.p/1'],
  ])('%o ⇄ %s', (tile, path) => {
    expect(tilePath(tile)).toBe(path);
    expect(parseTilePath(path)).toEqual(tile);
  });

  it.each([
    'tile/0/0',
    'tile/0/0000',
    'tile/00/000',
    'tile/64/000',
    'tile/-1/000',
    'tile/0/001/002',
    'tile/0/x001',
    'tile/0/x000/001',
    'tile/0/000.p/256',
    'tile/0/000.p/0',
    'tile/0/000.p/07',
    'tile/0/000.p/',
    'tile/0/000.p',
    'tile/entries',
    'tile/data/000',
    'tile/8/0/000',
    'tiles/0/000',
    'tile/0/000/',
  ])('refuses %s', (path) => {
    expect(() => parseTilePath(path)).toThrow(TilePathError);
  });

  it('newTiles lists the spec example: size 70,000 → 273 full + 112 partial level 0, 1 full + 17 level 1, 1 level 2', () => {
    const tiles = newTiles(8, 0, 70_000);
    const edge = (L: number) => tiles.filter((t) => t.L === L && t.W < 256).pop();
    expect(tiles.filter((t) => t.L === 0 && t.W === 256)).toHaveLength(273);
    expect(edge(0)).toEqual({ H: 8, L: 0, N: 273, W: 112 });
    expect(tiles.filter((t) => t.L === 1 && t.W === 256)).toHaveLength(1);
    expect(edge(1)).toEqual({ H: 8, L: 1, N: 1, W: 17 });
    expect(edge(2)).toEqual({ H: 8, L: 2, N: 0, W: 1 });
    expect(tileInTree({ H: 8, L: 1, N: 1, W: 17 }, 70_000)).toBe(true);
    expect(tileInTree({ H: 8, L: 1, N: 1, W: 18 }, 70_000)).toBe(false);
    expect(tileInTree({ H: 8, L: 0, N: 273, W: 256 }, 70_000)).toBe(false);
    expect(tileInTree({ H: 8, L: 0, N: 272, W: 200 }, 70_000)).toBe(false);
    expect(edgeTiles(70_000)).toEqual([
      { level: 0, n: 273, width: 112 },
      { level: 1, n: 1, width: 17 },
      { level: 2, n: 0, width: 1 },
    ]);
  });

  it('tiles built incrementally equal ReadTileData over stored hashes, and serve every stored hash', async () => {
    const n = 256 * 3 + 77;
    const { read, stored } = await memLog(n);
    const rows = new Map<string, Uint8Array>();
    let size = 0;
    // Append in uneven batches, as group commit does.
    for (const batch of [1, 255, 1, 300, 10, 200]) {
      const leaves = Array.from({ length: Math.min(batch, n - size) }, (_, k) => defaultHasher.recordHash(utf8(`record ${size + k}\n`)));
      const edge = new Map(edgeTiles(size).map((e) => [e.level, rows.get(`${e.level}/${e.n}`) ?? new Uint8Array()]));
      const r = appendLeaves(size, edge, leaves);
      for (const row of r.rows) rows.set(`${row.level}/${row.n}`, row.data);
      size = r.size;
    }
    size += 0;
    const rest = Array.from({ length: n - size }, (_, k) => defaultHasher.recordHash(utf8(`record ${size + k}\n`)));
    const edge = new Map(edgeTiles(size).map((e) => [e.level, rows.get(`${e.level}/${e.n}`) ?? new Uint8Array()]));
    for (const row of appendLeaves(size, edge, rest).rows) rows.set(`${row.level}/${row.n}`, row.data);
    for (const t of newTiles(8, 0, n)) {
      const want = await readTileData(t, read);
      const have = rows.get(`${t.L}/${t.N}`)!;
      expect(toHex(have.subarray(0, t.W * 32))).toBe(toHex(want));
    }
    const reader = tileHashReader((l, k) => rows.get(`${l}/${k}`) ?? null);
    const all = Array.from({ length: stored.length }, (_, i) => i);
    expect(reader(all).map(toHex)).toEqual(stored.map(toHex));
  });

  it('entry bundles: big-endian uint16 lengths', () => {
    const b = formatEntryBundle([utf8('a'), utf8(''), new Uint8Array(300).fill(7)]);
    expect(Array.from(b.subarray(0, 6))).toEqual([0, 1, 0x61, 0, 0, 1]);
    expect(b[6]).toBe(0x2c);
    expect(parseEntryBundle(b).map((e) => e.length)).toEqual([1, 0, 300]);
    expect(() => parseEntryBundle(b.subarray(0, b.length - 1))).toThrow('entry 2 runs past the end of the bundle');
    expect(() => formatEntryBundle([new Uint8Array(65536)])).toThrow('entry 0 is 65536 bytes, more than an entry bundle can hold (65535)');
  });
});

describe('signed notes (Go sumdb/note vectors)', () => {
  const skey = 'PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz';
  const vkey = 'PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW';
  const enochKey = 'EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop';
  const text = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
  const peterSig = '— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n';
  const enochSig = '— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n';

  it('signs exactly as Go (Ed25519 is deterministic)', async () => {
    const s = await noteSigner(skey);
    expect(s.keyId).toBe(0xc74f20a3);
    expect(await signNote(text, [s])).toBe(`${text}\n${peterSig}`);
    expect(await verifierKeyOf(skey)).toBe(vkey);
    // An old signature by the same key is replaced; others are kept.
    expect(await signNote(text, [s], [{ name: 'PeterNeumann', keyId: 0xc74f20a3, base64: 'BADSIGN=' }])).toBe(`${text}\n${peterSig}`);
    await expect(signNote('abc', [s])).rejects.toMatchObject({ code: 'malformed_note' });
  });

  it('opens as Go does: known keys verified, unknown kept aside, errors typed', async () => {
    const peter = await noteVerifier(vkey);
    const enoch = await noteVerifier(enochKey);
    const one = await openNote(`${text}\n${peterSig}${enochSig}`, [peter]);
    expect(one.text).toBe(text);
    expect(one.sigs.map((s) => s.name)).toEqual(['PeterNeumann']);
    expect(one.unverifiedSigs.map((s) => [s.name, s.keyId])).toEqual([['EnochRoot', 0xaf0cfe78]]);
    expect((await openNote(`${text}\n${peterSig}${enochSig}`, [peter, enoch])).sigs).toHaveLength(2);
    const none = await openNote(`${text}\n${peterSig}${enochSig}`, []).catch((e) => e);
    expect(none).toBeInstanceOf(UnverifiedNoteError);
    expect(none.message).toBe('note has no verifiable signatures');
    expect(none.note.unverifiedSigs).toHaveLength(2);
    await expect(openNote(`${text}\n${enochSig}`, [enoch, peter, enoch])).rejects.toMatchObject({ code: 'ambiguous_key', message: 'ambiguous key EnochRoot+af0cfe78' });
    await expect(openNote(`${text}\n${peterSig.repeat(101)}`, [peter])).rejects.toMatchObject({ code: 'malformed_note' });
    const bad = await openNote(`${text}\n${peterSig.slice(0, 60)}ABCD${peterSig.slice(60)}`, [peter]).catch((e) => e);
    expect(bad).toBeInstanceOf(InvalidSignatureError);
    expect(bad.message).toBe('invalid signature for key PeterNeumann+c74f20a3');
    // Duplicates of a verified signature are skipped; duplicated unknown lines kept once.
    const dup = await openNote(`${text}\n${peterSig}${peterSig}${enochSig}${enochSig}`, [peter]);
    expect(dup.sigs).toHaveLength(1);
    expect(dup.unverifiedSigs).toHaveLength(1);
    for (const msg of [
      text,
      `${text}\n`,
      `${text}\n${peterSig.slice(0, -1)}`,
      `\x01${text}\n${peterSig}`,
      `${text}\n— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=`,
      `${text}\n${peterSig}Unexpected line.\n`,
    ]) {
      await expect(openNote(msg, [peter])).rejects.toMatchObject({ code: 'malformed_note', message: 'malformed note' });
    }
    await expect(openNote(new Uint8Array([0xff, ...utf8(`${text}\n${peterSig}`)]), [peter])).rejects.toMatchObject({ code: 'malformed_note' });
  });

  it('refuses mangled verifier keys (Go TestNewVerifier)', async () => {
    await expect(noteVerifier('PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==')).rejects.toBeInstanceOf(NoteError);
    await expect(noteVerifier('PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW')).rejects.toMatchObject({ code: 'unknown_algorithm' });
    const b = [...vkey];
    for (let i = 0; i < b.length; i += 3) {
      const m = [...b];
      m[i] = String.fromCharCode(m[i]!.charCodeAt(0) + 1);
      await expect(noteVerifier(m.join(''))).rejects.toBeInstanceOf(NoteError);
    }
    await expect(noteVerifier(vkey.slice(0, -4))).rejects.toBeInstanceOf(NoteError);
  });

  it('key id = SHA-256(name ‖ 0x0A ‖ 0x01 ‖ key)[:4]; generated keys sign and verify', async () => {
    const pub = fromBase64(vkey.split('+')[2]!)!;
    expect(keyHash('PeterNeumann', pub)).toBe(0xc74f20a3);
    const k = await generateNoteKey('loki.example/audit');
    expect(k.vkey).toMatch(/^loki\.example\/audit\+[0-9a-f]{8}\+A[A-Za-z0-9+/]{43}$/); // base64(0x01 ‖ 32 bytes)
    expect(k.skey).toMatch(/^PRIVATE\+KEY\+loki\.example\/audit\+[0-9a-f]{8}\+A[A-Za-z0-9+/]{43}$/);
    expect(fromBase64(k.vkey.split('+').slice(2).join('+'))![0]).toBe(0x01);
    const msg = await signNote('hello\n', [await noteSigner(k.skey)]);
    expect((await openNote(msg, [await noteVerifier(k.vkey)])).text).toBe('hello\n');
    await expect(generateNoteKey('bad name')).rejects.toMatchObject({ code: 'invalid_signer' });
  });
});

describe('checkpoints and cosignatures', () => {
  const root = sha256(utf8('root'));

  it('formats and parses C2SP tlog-checkpoint bodies strictly', () => {
    const body = formatCheckpoint({ origin: 'loki.example/audit', size: 1234, rootHash: root });
    expect(body).toBe(`loki.example/audit\n1234\n${toBase64(root)}\n`);
    expect(parseCheckpoint(body)).toEqual({ origin: 'loki.example/audit', size: 1234, rootHash: root, extensions: [] });
    expect(parseCheckpoint(`${body}ext one\n`).extensions).toEqual(['ext one']);
    for (const bad of [
      body.slice(0, -1),
      `loki\n01\n${toBase64(root)}\n`,
      `loki\n-1\n${toBase64(root)}\n`,
      `\n1\n${toBase64(root)}\n`,
      'loki\n1\nAAAA\n',
      'loki\n1\n',
      `${body}\n`,
    ]) {
      expect(() => parseCheckpoint(bad)).toThrow(expect.objectContaining({ code: 'malformed_checkpoint' }));
    }
  });

  it('openCheckpoint checks signature and origin', async () => {
    const k = await generateNoteKey('loki.example/audit');
    const body = formatCheckpoint({ origin: 'loki.example/audit', size: 7, rootHash: root });
    const msg = await signNote(body, [await noteSigner(k.skey)]);
    const v = await noteVerifier(k.vkey);
    expect((await openCheckpoint(msg, [v], 'loki.example/audit')).checkpoint.size).toBe(7);
    await expect(openCheckpoint(msg, [v], 'other/audit')).rejects.toMatchObject({ code: 'malformed_checkpoint' });
  });

  it('cosignature/v1: timestamped Ed25519 over "cosignature/v1\\ntime T\\n" ‖ body, type 0x04 key ids', async () => {
    const log = await generateNoteKey('loki.example/audit');
    const w = await generateCosignatureKey('witness.example/w1');
    expect(w.vkey).toMatch(/^witness\.example\/w1\+[0-9a-f]{8}\+B[A-P][A-Za-z0-9+/]{42}$/); // base64(0x04 ‖ 32 bytes)
    const body = formatCheckpoint({ origin: 'loki.example/audit', size: 7, rootHash: root });
    const sig = await cosign(body, w.skey, 1_700_000_000);
    const raw = fromBase64(sig.base64)!;
    expect(raw.length).toBe(4 + 8 + 64);
    expect(Array.from(raw.subarray(4, 12))).toEqual([0, 0, 0, 0, 0x65, 0x53, 0xf1, 0x00]);
    const wv = await noteVerifier(w.vkey);
    expect(await verifyCosignature(body, signatureLine(sig), wv)).toBe(1_700_000_000);
    expect(await verifyCosignature(body, sig.base64, w.vkey)).toBe(1_700_000_000);
    await expect(verifyCosignature(body.replace('\n7\n', '\n8\n'), sig.base64, wv)).rejects.toBeInstanceOf(InvalidSignatureError);
    // As a line on the log's note: openNote verifies both and reports the timestamp.
    const msg = (await signNote(body, [await noteSigner(log.skey)])) + signatureLine(sig);
    const opened = await openNote(msg, [await noteVerifier(log.vkey), wv]);
    expect(opened.sigs.map((s) => [s.name, s.timestamp])).toEqual([
      ['loki.example/audit', undefined],
      ['witness.example/w1', 1_700_000_000],
    ]);
    // A note key cannot be used to cosign, nor a cosignature key to sign notes.
    await expect(cosign(body, log.skey, 1)).rejects.toMatchObject({ code: 'unknown_algorithm' });
    await expect(noteSigner(w.skey)).rejects.toMatchObject({ code: 'unknown_algorithm' });
  });
});

describe('tlog-proof files', () => {
  it('round-trips and verifies offline; a changed entry, index or signature fails with its reason', async () => {
    const n = 300;
    const { read } = await memLog(n);
    const k = await generateNoteKey('loki.example/audit');
    const rootHash = await treeHash(n, read);
    const cp = await signNote(formatCheckpoint({ origin: 'loki.example/audit', size: n, rootHash }), [await noteSigner(k.skey)]);
    const proof = await proveRecord(n, 123, read);
    const entry = utf8('record 123\n');
    const text = formatTlogProof({ extra: entry, index: 123, proof, checkpoint: cp });
    expect(text.startsWith(`c2sp.org/tlog-proof@v1\nextra ${toBase64(entry)}\nindex 123\n${toBase64(proof[0]!)}\n`)).toBe(true);
    expect(text.endsWith(`\n\n${cp}`)).toBe(true);
    const parsed = parseTlogProof(text);
    expect(parsed).toEqual({ extra: entry, index: 123, proof, checkpoint: cp });
    const v = [await noteVerifier(k.vkey)];
    const ok = await verifyTlogProof(parsed, { verifiers: v, origin: 'loki.example/audit' });
    expect(ok.checkpoint.size).toBe(n);
    await expect(verifyTlogProof(parsed, { verifiers: v, entry: utf8('record 124\n') })).rejects.toMatchObject({
      reason: 'inclusion_failed',
      message: 'the entry is not at index 123 of the tree of size 300 (the given entry differs from the one in the proof)',
    });
    await expect(verifyTlogProof({ ...parsed, index: 124 }, { verifiers: v })).rejects.toMatchObject({ reason: 'inclusion_failed' });
    await expect(verifyTlogProof({ ...parsed, index: 300 }, { verifiers: v })).rejects.toMatchObject({ reason: 'index_out_of_range' });
    await expect(verifyTlogProof({ ...parsed, extra: null }, { verifiers: v })).rejects.toMatchObject({ reason: 'no_entry' });
    await expect(verifyTlogProof(parsed, { verifiers: v, origin: 'x' })).rejects.toMatchObject({ reason: 'wrong_origin' });
    const other = await generateNoteKey('loki.example/audit');
    const e = await verifyTlogProof(parsed, { verifiers: [await noteVerifier(other.vkey)] }).catch((x) => x);
    expect(e).toBeInstanceOf(ProofVerifyError);
    expect(e).toMatchObject({ reason: 'bad_checkpoint', message: 'checkpoint: note has no verifiable signatures' });
    // no extra line
    expect(parseTlogProof(formatTlogProof({ extra: null, index: 0, proof: [], checkpoint: cp })).extra).toBeNull();
  });

  it.each([
    ['c2sp.org/tlog-proof@v2\nindex 0\n\nx\n', 'line 1: expected "c2sp.org/tlog-proof@v1"'],
    ['c2sp.org/tlog-proof@v1\nindex 01\n\nx\n', 'line 2: expected "index N" (a decimal without leading zeroes)'],
    ['c2sp.org/tlog-proof@v1\nextra !!\nindex 0\n\nx\n', 'line 2: the extra data is not base64'],
    ['c2sp.org/tlog-proof@v1\nindex 0\nAAAA\n\nx\n', 'line 3: an inclusion proof line is not a base64 SHA-256 hash'],
    ['c2sp.org/tlog-proof@v1\nindex 0', 'line 3: missing the empty line before the checkpoint'],
    ['c2sp.org/tlog-proof@v1\nindex 0\n\n', 'line 4: missing the checkpoint'],
  ])('refuses a malformed file %#', (text, message) => {
    expect(() => parseTlogProof(text)).toThrow(new ProofFormatError(message));
  });
});

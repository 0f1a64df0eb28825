import { cp, mkdtemp, readFile, rename, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  LegacyAuditError,
  type LegacyEntry,
  pyFloatRepr,
  pythonCanonicalJson,
  readLegacyEntries,
  verifyLegacyDir,
} from '../../src/audit/legacy';

const FIXTURES = resolve(import.meta.dirname, '../../../shared/fixtures/loki-mode-legacy');
const SINGLE_FILE = 'audit-2026-11-24.jsonl';
const ROTATED = ['audit-2026-11-24.052257.jsonl', 'audit-2026-11-24.052258.jsonl', 'audit-2026-11-24.jsonl'];

const temps: string[] = [];
afterEach(async () => {
  await Promise.all(temps.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

async function copyFixture(name: 'single' | 'rotated'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `loki-legacy-${name}-`));
  temps.push(dir);
  await cp(join(FIXTURES, name), dir, { recursive: true });
  return dir;
}

/** Rewrite one line (1-based) of a file; `fn` returns the new line, or null to delete it. */
async function editLine(path: string, line: number, fn: (text: string) => string | null): Promise<void> {
  const lines = (await readFile(path, 'utf8')).split('\n');
  const next = fn(lines[line - 1]!);
  if (next === null) lines.splice(line - 1, 1);
  else lines[line - 1] = next;
  await writeFile(path, lines.join('\n'));
}

/** Change exactly one byte of `text`, at the first occurrence of `needle` (offset within it). */
function flipByte(text: string, needle: string, offset = 0, to?: string): string {
  const at = text.indexOf(needle);
  expect(at, `line must contain ${needle}`).toBeGreaterThanOrEqual(0);
  const i = at + offset;
  const ch = text[i]!;
  const repl = to ?? (ch === 'a' ? 'b' : 'a');
  expect(repl).not.toBe(ch);
  return text.slice(0, i) + repl + text.slice(i + 1);
}

describe('Python json.dumps(sort_keys=True) reproduction', () => {
  it('formats floats like Python repr', () => {
    // Expected values printed by CPython 3: json.dumps(json.loads(lexeme))
    const cases: Array<[number, string]> = [
      [1e-5, '1e-05'],
      [1e16, '1e+16'],
      [1e15, '1000000000000000.0'],
      [1, '1.0'],
      [-0, '-0.0'],
      [0.1, '0.1'],
      [0.0001, '0.0001'],
      [1e22, '1e+22'],
      [Number('123456789.123456789'), '123456789.12345679'],
      [5e-324, '5e-324'],
      [1.7976931348623157e308, '1.7976931348623157e+308'],
      [-1.5e-7, '-1.5e-07'],
      [Number.POSITIVE_INFINITY, 'Infinity'],
      [Number.NaN, 'NaN'],
    ];
    for (const [x, py] of cases) expect(pyFloatRepr(x)).toBe(py);
  });

  it('keeps the int/float distinction of the source text', () => {
    expect(pythonCanonicalJson('[1, 1.0, 1e2, -0, -0.0, 123456789012345678901234567890, 1E400]')).toBe(
      '[1, 1.0, 100.0, 0, -0.0, 123456789012345678901234567890, Infinity]',
    );
  });

  it('escapes strings and sorts keys by code point like Python', () => {
    const input =
      '{"z": "\\u00e9\\ud83d\\ude00\\u0000\\u001f\\u007f\\b\\f\\n\\r\\t\\"\\\\\\/", "a": {"b": 1, "B": 2, "\\u00e9": 3, "\\ud83d\\ude00": 4, "\\uffff": 5}, "m": [], "n": {}}';
    // CPython: "\uffff" (U+FFFF) sorts before "\ud83d\ude00" (U+1F600), unlike UTF-16 order.
    expect(pythonCanonicalJson(input)).toBe(
      '{"a": {"B": 2, "b": 1, "\\u00e9": 3, "\\uffff": 5, "\\ud83d\\ude00": 4}, "m": [], "n": {}, "z": "\\u00e9\\ud83d\\ude00\\u0000\\u001f\\u007f\\b\\f\\n\\r\\t\\"\\\\/"}',
    );
    // Raw UTF-8 input gives the same bytes as escaped input.
    expect(pythonCanonicalJson('{"k": "café 😀"}')).toBe('{"k": "caf\\u00e9 \\ud83d\\ude00"}');
  });

  it('keeps the last of duplicate keys and refuses what json.loads refuses', () => {
    expect(pythonCanonicalJson('{"a": 1, "a": 2}')).toBe('{"a": 2}');
    for (const bad of ['{"a": 1', '{"a": 01}', '{"a": "x\ty"}', '{"a": 1} x', "{'a': 1}", '{"a": "\\x"}', '']) {
      expect(() => pythonCanonicalJson(bad), bad).toThrow();
    }
  });
});

describe('verifyLegacyDir on the Loki Mode fixtures', () => {
  it('verifies the single-file log', async () => {
    const r = await verifyLegacyDir(join(FIXTURES, 'single'));
    expect(r).toEqual({
      valid: true,
      files: [SINGLE_FILE],
      entries_checked: 500,
      first_invalid: null,
      tip_hash: 'd185c1f3a6c46dd1205b57b3aa18e2fbd3699cc50a4022706f50f7db25cb5b41',
    });
  });

  it('verifies the rotated log, ordering files by chain linkage', async () => {
    const r = await verifyLegacyDir(join(FIXTURES, 'rotated'));
    expect(r.valid).toBe(true);
    expect(r.files).toEqual(ROTATED);
    expect(r.entries_checked).toBe(6000);
    expect(r.tip_hash).toBe('2b4a3896cbe388c06c38cf72957bb1acf747a623e99f1a7b657ddbad468f7c19');
  });

  it('does not rely on file names: renamed files still link in chain order', async () => {
    const dir = await copyFixture('rotated');
    // Name order is now the reverse of chain order.
    await rename(join(dir, ROTATED[0]!), join(dir, 'audit-c.jsonl'));
    await rename(join(dir, ROTATED[1]!), join(dir, 'audit-b.jsonl'));
    await rename(join(dir, ROTATED[2]!), join(dir, 'audit-a.jsonl'));
    const r = await verifyLegacyDir(dir);
    expect(r.valid).toBe(true);
    expect(r.files).toEqual(['audit-c.jsonl', 'audit-b.jsonl', 'audit-a.jsonl']);
    expect(r.entries_checked).toBe(6000);
  });

  it('ignores files that are not Loki Mode audit logs', async () => {
    const dir = await copyFixture('single');
    await writeFile(join(dir, 'notes.jsonl'), '{"not": "audit"}\n');
    expect((await verifyLegacyDir(dir)).valid).toBe(true);
  });
});

describe('verifyLegacyDir finds tampering at the exact file and line', () => {
  it('one byte changed in details', async () => {
    const dir = await copyFixture('single');
    await editLine(join(dir, SINGLE_FILE), 250, (l) => flipByte(l, '"path": "/api/status"', 10, 'b'));
    const r = await verifyLegacyDir(dir);
    expect(r.valid).toBe(false);
    expect(r.first_invalid).toMatchObject({ file: SINGLE_FILE, line: 250, reason: expect.stringContaining('hash mismatch') });
    expect(r.entries_checked).toBe(249);
  });

  it('one byte changed in a unicode escape of details', async () => {
    const dir = await copyFixture('single');
    // caf\u00e9 → caf\u00e8: still valid JSON, different text
    await editLine(join(dir, SINGLE_FILE), 242, (l) => flipByte(l, '\\u00e9', 5, '8'));
    expect((await verifyLegacyDir(dir)).first_invalid).toMatchObject({ file: SINGLE_FILE, line: 242 });
  });

  it('a float respelled (15e-1) still verifies; a float changed to an int does not', async () => {
    const dir = await copyFixture('single');
    // 15e-1 reads as the float 1.5, which Python prints as 1.5: the hash still matches.
    await editLine(join(dir, SINGLE_FILE), 243, (l) => l.replace('"f": 1.5', '"f": 15e-1'));
    expect((await verifyLegacyDir(dir)).valid).toBe(true);
    // An int where a float was changes the bytes json.dumps prints.
    await editLine(join(dir, SINGLE_FILE), 244, (l) => l.replace('"f": 1.5', '"f": 2'));
    expect((await verifyLegacyDir(dir)).first_invalid).toMatchObject({ file: SINGLE_FILE, line: 244 });
  });

  it('one byte changed in a stored hash', async () => {
    const dir = await copyFixture('single');
    await editLine(join(dir, SINGLE_FILE), 100, (l) => {
      const i = l.indexOf('"_integrity_hash": "') + 30;
      return l.slice(0, i) + (l[i] === '0' ? '1' : '0') + l.slice(i + 1);
    });
    const r = await verifyLegacyDir(dir);
    expect(r.first_invalid).toMatchObject({ file: SINGLE_FILE, line: 100 });
    expect(r.entries_checked).toBe(99);
  });

  it('a deleted line is reported at the line that now stands in its place', async () => {
    const dir = await copyFixture('single');
    await editLine(join(dir, SINGLE_FILE), 300, () => null);
    const r = await verifyLegacyDir(dir);
    expect(r.first_invalid).toMatchObject({ file: SINGLE_FILE, line: 300, reason: expect.stringContaining('hash mismatch') });
  });

  it('two swapped lines', async () => {
    const dir = await copyFixture('single');
    const path = join(dir, SINGLE_FILE);
    const lines = (await readFile(path, 'utf8')).split('\n');
    [lines[409], lines[410]] = [lines[410]!, lines[409]!];
    await writeFile(path, lines.join('\n'));
    expect((await verifyLegacyDir(dir)).first_invalid).toMatchObject({ file: SINGLE_FILE, line: 410 });
  });

  it('a truncated last line', async () => {
    const dir = await copyFixture('single');
    const path = join(dir, SINGLE_FILE);
    const text = await readFile(path, 'utf8');
    await writeFile(path, text.slice(0, text.length - 40));
    const r = await verifyLegacyDir(dir);
    expect(r.first_invalid).toMatchObject({ file: SINGLE_FILE, line: 500, reason: expect.stringContaining('malformed JSON') });
    expect(r.entries_checked).toBe(499);
  });

  it('a line that is not valid UTF-8', async () => {
    const dir = await copyFixture('single');
    const path = join(dir, SINGLE_FILE);
    const buf = await readFile(path);
    let at = 0;
    for (let line = 1; line < 7; line++) at = buf.indexOf(0x0a, at) + 1;
    buf[at + 20] = 0xff; // inside line 7's timestamp
    await writeFile(path, buf);
    expect((await verifyLegacyDir(dir)).first_invalid).toMatchObject({ file: SINGLE_FILE, line: 7, reason: 'line is not valid UTF-8' });
  });

  it('a line without _integrity_hash', async () => {
    const dir = await copyFixture('single');
    await editLine(join(dir, SINGLE_FILE), 5, (l) => l.replace(/, "_integrity_hash": "[0-9a-f]{64}"/, ''));
    expect((await verifyLegacyDir(dir)).first_invalid).toMatchObject({ file: SINGLE_FILE, line: 5, reason: 'missing _integrity_hash' });
  });

  it('one byte changed in the middle rotated file', async () => {
    const dir = await copyFixture('rotated');
    await editLine(join(dir, ROTATED[1]!), 1234, (l) => flipByte(l, '"user_agent": "curl/8.0"', 16, 'd'));
    const r = await verifyLegacyDir(dir);
    expect(r.first_invalid).toMatchObject({ file: ROTATED[1], line: 1234 });
    expect(r.files).toEqual(ROTATED);
    expect(r.entries_checked).toBe(2736 + 1233);
  });

  it('the first line of a later rotated file', async () => {
    const dir = await copyFixture('rotated');
    await editLine(join(dir, ROTATED[2]!), 1, (l) => flipByte(l, '"user_agent": "curl/8.0"', 16, 'd'));
    const r = await verifyLegacyDir(dir);
    expect(r.first_invalid).toMatchObject({ file: ROTATED[2], line: 1, reason: expect.stringContaining(`end of ${ROTATED[1]}`) });
    expect(r.entries_checked).toBe(2736 + 2738);
  });

  it('the last line of the first rotated file deleted: the next file no longer links', async () => {
    const dir = await copyFixture('rotated');
    await editLine(join(dir, ROTATED[0]!), 2736, () => null);
    const r = await verifyLegacyDir(dir);
    expect(r.first_invalid).toMatchObject({ file: ROTATED[1], line: 1, reason: expect.stringContaining(`end of ${ROTATED[0]}`) });
    expect(r.entries_checked).toBe(2735);
    expect(r.files).toEqual(ROTATED);
  });

  it('the oldest rotated file deleted', async () => {
    const dir = await copyFixture('rotated');
    await unlink(join(dir, ROTATED[0]!));
    const r = await verifyLegacyDir(dir);
    expect(r.first_invalid).toMatchObject({ file: ROTATED[1], line: 1, reason: expect.stringContaining('genesis') });
    expect(r.entries_checked).toBe(0);
  });

  it('a copied file forks the chain', async () => {
    const dir = await copyFixture('rotated');
    await cp(join(dir, ROTATED[1]!), join(dir, 'audit-2026-11-24.999999.jsonl'));
    const r = await verifyLegacyDir(dir);
    expect(r.valid).toBe(false);
    expect(r.first_invalid?.reason).toContain('fork');
  });

  it('a tail cut exactly at a line boundary still verifies (Loki Mode kept no checkpoint)', async () => {
    const dir = await copyFixture('single');
    const path = join(dir, SINGLE_FILE);
    const lines = (await readFile(path, 'utf8')).split('\n');
    await writeFile(path, `${lines.slice(0, 400).join('\n')}\n`);
    const r = await verifyLegacyDir(dir);
    expect(r.valid).toBe(true);
    expect(r.entries_checked).toBe(400);
  });
});

describe('readLegacyEntries', () => {
  it('yields every entry in chain order with its hash and predecessor', async () => {
    const entries: LegacyEntry[] = [];
    for await (const e of readLegacyEntries(join(FIXTURES, 'rotated'))) entries.push(e);
    expect(entries).toHaveLength(6000);
    expect(entries[0]!.prev_hash).toBe('0'.repeat(64));
    for (let i = 1; i < entries.length; i++) expect(entries[i]!.prev_hash).toBe(entries[i - 1]!.hash);
    expect(entries[2736]).toMatchObject({ file: ROTATED[1], line: 1 });
    expect(entries[5999]!.hash).toBe('2b4a3896cbe388c06c38cf72957bb1acf747a623e99f1a7b657ddbad468f7c19');
    const first = entries[0]!.entry;
    expect(first).not.toHaveProperty('_integrity_hash');
    expect(Object.keys(first)).toEqual([
      'timestamp',
      'action',
      'resource_type',
      'resource_id',
      'user_id',
      'token_id',
      'ip_address',
      'user_agent',
      'success',
      'error',
      'details',
    ]);
    expect(entries.find((e) => (e.entry.details as { note?: string }).note)?.entry.details).toEqual({
      prd: './prd.md',
      note: 'café ✓ "quoted"',
    });
  });

  it('throws LegacyAuditError at the first tampered entry', async () => {
    const dir = await copyFixture('single');
    await editLine(join(dir, SINGLE_FILE), 42, (l) => flipByte(l, '"action": "', 11, 'X'));
    let seen = 0;
    const run = async () => {
      for await (const _ of readLegacyEntries(dir)) seen++;
    };
    const err = await run().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LegacyAuditError);
    expect((err as LegacyAuditError).invalid).toMatchObject({ file: SINGLE_FILE, line: 42 });
    expect(seen).toBe(41);
  });
});

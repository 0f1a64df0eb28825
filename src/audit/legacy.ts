/**
 * Byte-exact verification of Loki Mode's JSONL audit logs (`dashboard/audit.py`).
 *
 * Loki Mode's chain rule: for each line, with `_integrity_hash` removed,
 *   _integrity_hash = sha256_hex(prev_hash + json.dumps(entry, sort_keys=True, default=str))
 * genesis `prev_hash` = 64 zeros, and a rotated file continues the chain of the
 * file it was rotated from. Reproducing those bytes means reproducing Python:
 * `ensure_ascii` escapes, `", "` / `": "` separators, keys sorted by code point,
 * and Python's int/float distinction and float repr, which `JSON.parse` loses.
 * So lines are parsed here by a small parser that re-serialises every value the
 * way Python's `json.dumps` would print what `json.loads` read.
 */
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { GENESIS_HASH } from './chain';

export interface LegacyInvalid {
  /** File name (inside the directory) of the first entry that fails. */
  file: string;
  /** 1-based line number in that file. */
  line: number;
  reason: string;
}

export interface LegacyVerifyResult {
  valid: boolean;
  /** Files in chain order (files that could not be linked follow, by name). */
  files: string[];
  /** Entries whose hash was verified before the first failure. */
  entries_checked: number;
  first_invalid: LegacyInvalid | null;
  /** The last verified `_integrity_hash` (genesis if none). */
  tip_hash: string;
}

export interface LegacyEntry {
  file: string;
  line: number;
  /** The entry as Loki Mode wrote it, without `_integrity_hash`. */
  entry: Record<string, unknown>;
  hash: string;
  prev_hash: string;
}

export class LegacyAuditError extends Error {
  constructor(readonly invalid: LegacyInvalid) {
    super(`${invalid.file}:${invalid.line}: ${invalid.reason}`);
    this.name = 'LegacyAuditError';
  }
}

/** Loki Mode names its logs `audit-YYYY-MM-DD.jsonl`, rotated to `audit-YYYY-MM-DD.HHMMSS.jsonl`. */
const LOG_FILE = /^audit-.*\.jsonl$/;
const HASH_FIELD = '_integrity_hash';
const MAX_DEPTH = 512;

// ---------------------------------------------------------------------------
// Python json.loads → json.dumps(sort_keys=True) in one pass
// ---------------------------------------------------------------------------

class PyJsonError extends Error {}

interface Parsed {
  /** What Python's json.dumps(..., sort_keys=True) prints for this value. */
  py: string;
  /** The value as a plain JS value (for import). */
  value: unknown;
}

const SHORT_ESCAPES: Record<string, string> = {
  '"': '\\"',
  '\\': '\\\\',
  '\n': '\\n',
  '\r': '\\r',
  '\t': '\\t',
  '\b': '\\b',
  '\f': '\\f',
};

/** Python `json.dumps` string output with `ensure_ascii=True` (per UTF-16 unit, as Python splits astral chars into surrogate pairs). */
export function pyJsonString(s: string): string {
  let out = '"';
  let start = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x20 && c <= 0x7e && c !== 0x22 && c !== 0x5c) continue;
    out += s.slice(start, i) + (SHORT_ESCAPES[s[i]!] ?? `\\u${c.toString(16).padStart(4, '0')}`);
    start = i + 1;
  }
  return out + s.slice(start) + '"';
}

/** Python `repr(float)`: shortest round-trip digits, exponent form when the exponent is < -4 or >= 16. */
export function pyFloatRepr(x: number): string {
  if (Number.isNaN(x)) return 'NaN';
  if (x === Number.POSITIVE_INFINITY) return 'Infinity';
  if (x === Number.NEGATIVE_INFINITY) return '-Infinity';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const sign = x < 0 ? '-' : '';
  // JS and Python both print the shortest digit string that round-trips; only the layout differs.
  const s = String(Math.abs(x));
  const e = s.indexOf('e');
  const mantissa = e >= 0 ? s.slice(0, e) : s;
  const exp10 = e >= 0 ? Number(s.slice(e + 1)) : 0;
  const dot = mantissa.indexOf('.');
  const intPart = dot >= 0 ? mantissa.slice(0, dot) : mantissa;
  let digits = intPart + (dot >= 0 ? mantissa.slice(dot + 1) : '');
  let decpt = intPart.length + exp10; // value = 0.<digits> × 10^decpt
  const lead = digits.length - digits.replace(/^0+/, '').length;
  digits = digits.slice(lead).replace(/0+$/, '');
  decpt -= lead;
  if (decpt <= -4 || decpt > 16) {
    const exp = decpt - 1;
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    return `${sign}${m}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
  }
  if (decpt <= 0) return `${sign}0.${'0'.repeat(-decpt)}${digits}`;
  if (decpt >= digits.length) return `${sign}${digits}${'0'.repeat(decpt - digits.length)}.0`;
  return `${sign}${digits.slice(0, decpt)}.${digits.slice(decpt)}`;
}

const HAS_SURROGATE = /[\ud800-\udfff]/;

/** Python sorts str keys by code point; JS `<` compares UTF-16 units, which differs only around surrogates. */
function compareCodePoints(a: string, b: string): number {
  if (!HAS_SURROGATE.test(a) && !HAS_SURROGATE.test(b)) return a < b ? -1 : a > b ? 1 : 0;
  const ca = Array.from(a, (ch) => ch.codePointAt(0)!);
  const cb = Array.from(b, (ch) => ch.codePointAt(0)!);
  for (let i = 0; i < Math.min(ca.length, cb.length); i++) {
    if (ca[i] !== cb[i]) return ca[i]! - cb[i]!;
  }
  return ca.length - cb.length;
}

const NUMBER = /-?(?:0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?/y;

/** A JSON parser with Python `json.loads` semantics (NaN/Infinity accepted, last duplicate key wins). */
class PyJsonParser {
  private i = 0;
  constructor(private readonly s: string) {}

  parseDocument(): { members: Map<string, Parsed> } | Parsed {
    this.ws();
    const v = this.s[this.i] === '{' ? { members: this.members(0) } : this.value(0);
    this.ws();
    if (this.i !== this.s.length) this.fail('extra data');
    return v;
  }

  private fail(msg: string): never {
    throw new PyJsonError(`${msg} at column ${this.i + 1}`);
  }

  private ws(): void {
    const s = this.s;
    while (this.i < s.length) {
      const c = s.charCodeAt(this.i);
      if (c !== 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) break;
      this.i++;
    }
  }

  private value(depth: number): Parsed {
    if (depth > MAX_DEPTH) this.fail('nesting too deep');
    const s = this.s;
    const c = s[this.i];
    if (c === '"') {
      const str = this.string();
      return { py: pyJsonString(str), value: str };
    }
    if (c === '{') return dumpObject(this.members(depth + 1));
    if (c === '[') return this.array(depth + 1);
    if (s.startsWith('null', this.i)) return this.literal(4, 'null', null);
    if (s.startsWith('true', this.i)) return this.literal(4, 'true', true);
    if (s.startsWith('false', this.i)) return this.literal(5, 'false', false);
    if (s.startsWith('NaN', this.i)) return this.literal(3, 'NaN', Number.NaN);
    if (s.startsWith('Infinity', this.i)) return this.literal(8, 'Infinity', Number.POSITIVE_INFINITY);
    if (s.startsWith('-Infinity', this.i)) return this.literal(9, '-Infinity', Number.NEGATIVE_INFINITY);
    NUMBER.lastIndex = this.i;
    const m = NUMBER.exec(s);
    if (!m) this.fail('expecting value');
    this.i += m[0].length;
    if (m[1] === undefined && m[2] === undefined) {
      // Python int: arbitrary precision, printed as read ("-0" reads as 0).
      const lexeme = m[0] === '-0' ? '0' : m[0];
      return { py: lexeme, value: Number(lexeme) };
    }
    const x = Number(m[0]);
    return { py: pyFloatRepr(x), value: x };
  }

  private literal(len: number, py: string, value: unknown): Parsed {
    this.i += len;
    return { py, value };
  }

  private array(depth: number): Parsed {
    this.i++; // [
    const py: string[] = [];
    const value: unknown[] = [];
    this.ws();
    if (this.s[this.i] === ']') {
      this.i++;
      return { py: '[]', value };
    }
    for (;;) {
      this.ws();
      const v = this.value(depth);
      py.push(v.py);
      value.push(v.value);
      this.ws();
      const c = this.s[this.i++];
      if (c === ']') return { py: `[${py.join(', ')}]`, value };
      if (c !== ',') this.fail("expecting ',' delimiter");
    }
  }

  private members(depth: number): Map<string, Parsed> {
    this.i++; // {
    const out = new Map<string, Parsed>();
    this.ws();
    if (this.s[this.i] === '}') {
      this.i++;
      return out;
    }
    for (;;) {
      this.ws();
      if (this.s[this.i] !== '"') this.fail('expecting property name enclosed in double quotes');
      const key = this.string();
      this.ws();
      if (this.s[this.i++] !== ':') this.fail("expecting ':' delimiter");
      this.ws();
      out.set(key, this.value(depth));
      this.ws();
      const c = this.s[this.i++];
      if (c === '}') return out;
      if (c !== ',') this.fail("expecting ',' delimiter");
    }
  }

  private string(): string {
    const s = this.s;
    this.i++; // opening quote
    let out = '';
    let start = this.i;
    for (;;) {
      if (this.i >= s.length) this.fail('unterminated string');
      const c = s.charCodeAt(this.i);
      if (c === 0x22) {
        out += s.slice(start, this.i++);
        return out;
      }
      if (c < 0x20) this.fail('invalid control character in string');
      if (c !== 0x5c) {
        this.i++;
        continue;
      }
      out += s.slice(start, this.i);
      const e = s[this.i + 1];
      this.i += 2;
      switch (e) {
        case '"':
        case '\\':
        case '/':
          out += e;
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          const hex = s.slice(this.i, this.i + 4);
          if (!/^[0-9a-fA-F]{4}$/.test(hex)) this.fail('invalid \\uXXXX escape');
          // Python joins an escaped surrogate pair into one code point; in UTF-16 that is the same two units.
          out += String.fromCharCode(Number.parseInt(hex, 16));
          this.i += 4;
          break;
        }
        default:
          this.i--;
          this.fail('invalid escape');
      }
      start = this.i;
    }
  }
}

function dumpObject(members: Map<string, Parsed>): Parsed {
  const keys = [...members.keys()].sort(compareCodePoints);
  const value: Record<string, unknown> = {};
  const parts: string[] = [];
  for (const [k, v] of members) {
    // defineProperty: a "__proto__" key is data, not a prototype change.
    Object.defineProperty(value, k, { value: v.value, enumerable: true, writable: true, configurable: true });
  }
  for (const k of keys) parts.push(`${pyJsonString(k)}: ${members.get(k)!.py}`);
  return { py: `{${parts.join(', ')}}`, value };
}

/**
 * `json.dumps(json.loads(text), sort_keys=True, default=str)` as Python prints it.
 * Throws on text Python's `json.loads` would refuse.
 */
export function pythonCanonicalJson(text: string): string {
  const doc = new PyJsonParser(text).parseDocument();
  return 'members' in doc ? dumpObject(doc.members).py : doc.py;
}

// ---------------------------------------------------------------------------
// Lines and files
// ---------------------------------------------------------------------------

type LineCheck =
  | { ok: true; stored: string; canonical: string; entry: Record<string, unknown> }
  | { ok: false; reason: string };

const utf8 = new TextDecoder('utf-8', { fatal: true });

function parseLine(bytes: Uint8Array): LineCheck {
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    return { ok: false, reason: 'line is not valid UTF-8' };
  }
  let doc: ReturnType<PyJsonParser['parseDocument']>;
  try {
    doc = new PyJsonParser(text).parseDocument();
  } catch (err) {
    if (err instanceof PyJsonError) return { ok: false, reason: `malformed JSON (${err.message}); truncated or edited line` };
    throw err;
  }
  if (!('members' in doc)) return { ok: false, reason: 'line is not a JSON object' };
  const stored = doc.members.get(HASH_FIELD);
  if (!stored) return { ok: false, reason: `missing ${HASH_FIELD}` };
  if (typeof stored.value !== 'string' || !/^[0-9a-f]{64}$/.test(stored.value)) {
    return { ok: false, reason: `${HASH_FIELD} is not a 64-character lowercase hex string` };
  }
  doc.members.delete(HASH_FIELD);
  const { py, value } = dumpObject(doc.members);
  return { ok: true, stored: stored.value, canonical: py, entry: value as Record<string, unknown> };
}

function chainHash(prev: string, canonical: string): string {
  return createHash('sha256').update(prev).update(canonical).digest('hex');
}

interface RawLine {
  line: number;
  bytes: Uint8Array;
}

/** Non-blank lines with their 1-based numbers. Loki Mode writes `json.dumps(entry) + "\n"`. */
function splitLines(buf: Buffer): RawLine[] {
  const out: RawLine[] = [];
  let start = 0;
  let n = 0;
  while (start <= buf.length) {
    let end = buf.indexOf(0x0a, start);
    if (end < 0) end = buf.length;
    n++;
    let stop = end;
    if (stop > start && buf[stop - 1] === 0x0d) stop--;
    const bytes = buf.subarray(start, stop);
    if (bytes.some((b) => b !== 0x20 && b !== 0x09)) out.push({ line: n, bytes });
    start = end + 1;
  }
  return out;
}

interface FileInfo {
  name: string;
  /** The first entry, if it parses: what it needs to link it to its predecessor. */
  first: { line: number; stored: string; canonical: string } | null;
  firstLine: number;
  /** The stored hash of the last line, if it parses. */
  lastStored: string | null;
  empty: boolean;
}

async function readLogFile(dir: string, name: string): Promise<RawLine[]> {
  return splitLines(await readFile(join(dir, name)));
}

async function describe(dir: string, name: string): Promise<FileInfo> {
  const lines = await readLogFile(dir, name);
  const head = lines[0];
  const tail = lines[lines.length - 1];
  const first = head ? parseLine(head.bytes) : null;
  const last = tail ? parseLine(tail.bytes) : null;
  return {
    name,
    first: first?.ok && head ? { line: head.line, stored: first.stored, canonical: first.canonical } : null,
    firstLine: head?.line ?? 1,
    lastStored: last?.ok ? last.stored : null,
    empty: lines.length === 0,
  };
}

function chainsFrom(info: FileInfo, prev: string): boolean {
  return info.first !== null && chainHash(prev, info.first.canonical) === info.first.stored;
}

// ---------------------------------------------------------------------------
// The walk: link files, verify every line, yield entries in chain order
// ---------------------------------------------------------------------------

async function* walkChain(dir: string): AsyncGenerator<LegacyEntry, LegacyVerifyResult, undefined> {
  const names = (await readdir(dir, { withFileTypes: true }))
    .filter((d) => d.isFile() && LOG_FILE.test(d.name))
    .map((d) => d.name)
    .sort();
  const infos = (await Promise.all(names.map((n) => describe(dir, n)))).filter((f) => !f.empty);

  const ordered: string[] = [];
  let remaining = infos;
  let tip = GENESIS_HASH;
  let checked = 0;
  const result = (first_invalid: LegacyInvalid | null): LegacyVerifyResult => ({
    valid: first_invalid === null,
    files: [...ordered, ...remaining.map((f) => f.name)],
    entries_checked: checked,
    first_invalid,
    tip_hash: tip,
  });

  while (remaining.length > 0) {
    const next = remaining.filter((f) => chainsFrom(f, tip));
    if (next.length !== 1) return result(unlinked(remaining, next, tip, ordered));
    const file = next[0]!;
    remaining = remaining.filter((f) => f !== file);
    ordered.push(file.name);

    for (const raw of await readLogFile(dir, file.name)) {
      const parsed = parseLine(raw.bytes);
      if (!parsed.ok) return result({ file: file.name, line: raw.line, reason: parsed.reason });
      if (chainHash(tip, parsed.canonical) !== parsed.stored) {
        return result({
          file: file.name,
          line: raw.line,
          reason: 'hash mismatch: this entry was modified, or the entry before it was changed, removed or reordered',
        });
      }
      yield { file: file.name, line: raw.line, entry: parsed.entry, hash: parsed.stored, prev_hash: tip };
      tip = parsed.stored;
      checked++;
    }
  }
  return result(null);
}

/** Why no single file continues the chain from `tip`, blamed on the first line of the most likely culprit. */
function unlinked(remaining: FileInfo[], candidates: FileInfo[], tip: string, ordered: string[]): LegacyInvalid {
  const after = ordered.length > 0 ? `the end of ${ordered[ordered.length - 1]}` : 'genesis';
  if (candidates.length > 1) {
    const second = candidates[1]!;
    return {
      file: second.name,
      line: second.firstLine,
      reason: `chain fork: ${candidates.map((c) => c.name).join(' and ')} both continue from ${after}`,
    };
  }
  // The head of what is left: a file that no other remaining file leads into.
  const heads = remaining.filter((f) => !remaining.some((g) => g !== f && g.lastStored !== null && chainsFrom(f, g.lastStored)));
  const culprit = heads[0] ?? remaining[0]!;
  if (culprit.first === null) {
    return { file: culprit.name, line: culprit.firstLine, reason: 'first entry is malformed, so the file cannot be linked into the chain' };
  }
  const why =
    tip === GENESIS_HASH
      ? 'no file starts the chain from genesis (the oldest file was modified or deleted)'
      : `first entry does not continue from ${after} (an entry or file is missing, or this entry was modified)`;
  return { file: culprit.name, line: culprit.firstLine, reason: why };
}

/**
 * Verify a directory of Loki Mode audit logs (`audit-*.jsonl`), ordering rotated
 * files by chain linkage. Stops at the first entry that fails. A tail cut cleanly
 * at a line boundary cannot be detected: Loki Mode kept no checkpoint.
 */
export async function verifyLegacyDir(dir: string): Promise<LegacyVerifyResult> {
  const walk = walkChain(dir);
  for (;;) {
    const step = await walk.next();
    if (step.done) return step.value;
  }
}

/**
 * The verified entries in chain order, for import. Throws `LegacyAuditError` at
 * the first entry that fails, after yielding the ones before it, so import them
 * in one transaction (or run `verifyLegacyDir` first).
 */
export async function* readLegacyEntries(dir: string): AsyncGenerator<LegacyEntry, LegacyVerifyResult, undefined> {
  const result = yield* walkChain(dir);
  if (result.first_invalid) throw new LegacyAuditError(result.first_invalid);
  return result;
}

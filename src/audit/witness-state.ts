/**
 * The witness's state directory (Node):
 *
 *   <dir>/                     0700
 *     witness-key              0600  the cosigner key, PRIVATE+KEY+<name>+<id>+base64(0x04 ‖ seed)
 *     witnessed-logs           0600  the logs it cosigns for: `ORIGIN VKEY` per line (optional)
 *     logs/<sha256(origin)>.json 0600  the latest cosigned checkpoint per log
 *     lock                     0600  pid of the witness using the directory
 *
 * A log's state file is replaced atomically and durably (write a temporary
 * file, fsync it, rename it over the old one, fsync the directory) before the
 * witness answers, so a cosignature it gave is never forgotten by a crash or a
 * restart. A state file that does not parse stops the witness instead of
 * letting it start over from nothing (which would let a rolled-back log be
 * cosigned again).
 */
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs';
import path from 'node:path';
import { ensurePrivateDir } from '../db/sqlite';
import { ALG_COSIGNATURE_V1, generateCosignatureKey, isValidKeyName, NoteError, verifierKeyOf } from './tlog/note';
import { fromBase64 } from './tlog/sha256';
import type { WitnessLogState, WitnessStateStore } from './witness';

export const WITNESS_KEY_FILE = 'witness-key';

/** A problem with the state directory; `exitCode` 2 for what the operator must fix, 1 for a busy directory. */
export class WitnessStateError extends Error {
  constructor(
    message: string,
    readonly exitCode: 1 | 2 = 2,
  ) {
    super(message);
    this.name = 'WitnessStateError';
  }
}

export function originHash(origin: string): string {
  return createHash('sha256').update(origin, 'utf8').digest('hex');
}

function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Write `data` to a new file (never overwriting: `flag` 'wx'), fsynced, mode 0600. */
function writeNew(file: string, data: string): void {
  const fd = openSync(file, 'wx', 0o600);
  try {
    writeSync(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Replace `file` atomically and durably. */
export function writeDurable(file: string, data: string): void {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    writeNew(tmp, data);
    renameSync(tmp, file);
  } catch (err) {
    try {
      unlinkSync(tmp);
    } catch {
      // already renamed or never created
    }
    throw err;
  }
  fsyncDir(dir);
}

function checkPrivate(file: string): void {
  const mode = statSync(file).mode & 0o777;
  if (mode & 0o077) throw new WitnessStateError(`${file} is mode ${mode.toString(8)}; expected 600 (chmod 600 ${file})`);
}

/** The default key name: `<host name>/loki-witness` (a key name has no spaces and no '+'). */
export function defaultWitnessName(hostname: string): string {
  const name = `${hostname.replace(/[^A-Za-z0-9._-]/g, '') || 'localhost'}/loki-witness`;
  return name;
}

function checkKey(file: string, skey: string): Promise<string> {
  return verifierKeyOf(skey).then(
    (vkey) => {
      // name+keyid+base64: the key is everything after the second '+' (base64 has '+' too).
      const key64 = vkey.split('+').slice(2).join('+');
      if (fromBase64(key64)?.[0] !== ALG_COSIGNATURE_V1) throw new WitnessStateError(`${file} is not a witness key: not a cosignature key (type 0x04)`);
      return vkey;
    },
    (err) => {
      if (err instanceof NoteError) throw new WitnessStateError(`${file} is not a witness key: ${err.message}`);
      throw err;
    },
  );
}

/**
 * Create the witness's cosigner key in `<dir>/witness-key` (0600, directory
 * 0700). An existing key is never replaced: it is kept when `name` is omitted
 * or matches, refused otherwise.
 */
export async function createWitnessKey(dir: string, name: string | undefined, defaultName: string): Promise<{ skey: string; vkey: string; created: boolean; file: string }> {
  const file = path.join(dir, WITNESS_KEY_FILE);
  ensurePrivateDir(dir);
  if (existsSync(file)) {
    const have = await loadWitnessKey(dir);
    const haveName = have.vkey.split('+')[0];
    if (name !== undefined && haveName !== name) {
      throw new WitnessStateError(`${file} already holds the key of witness ${JSON.stringify(haveName)}, not ${JSON.stringify(name)}; a witness key is never replaced`);
    }
    return { ...have, created: false, file };
  }
  const keyName = name ?? defaultName;
  if (!isValidKeyName(keyName)) throw new WitnessStateError(`--name ${JSON.stringify(keyName)} is not a valid key name (no spaces, no "+")`);
  const { skey, vkey } = await generateCosignatureKey(keyName);
  try {
    writeNew(file, `${skey}\n`);
    fsyncDir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return { ...(await loadWitnessKey(dir)), created: false, file };
    throw err;
  }
  return { skey, vkey, created: true, file };
}

/** The witness's cosigner key from `<dir>/witness-key` (must exist, mode 0600). */
export async function loadWitnessKey(dir: string): Promise<{ skey: string; vkey: string }> {
  const file = path.join(dir, WITNESS_KEY_FILE);
  if (!existsSync(file)) throw new WitnessStateError(`no witness key in ${file}; create one with \`loki audit witness init --state ${dir}\``);
  checkPrivate(file);
  const skey = readFileSync(file, 'utf8').trim();
  return { skey, vkey: await checkKey(file, skey) };
}

/**
 * `<dir>/witnessed-logs`: the logs this witness cosigns for, one per line,
 * `ORIGIN VKEY` or `VKEY` (the origin is then the key's name); `#` comments.
 */
export const WITNESSED_LOGS_FILE = 'witnessed-logs';

export function readWitnessedLogsFile(file: string): { line: number; text: string }[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new WitnessStateError(`cannot read ${file}: ${code ?? (err as Error).message}`);
  }
  const out: { line: number; text: string }[] = [];
  for (const [i, line] of text.split('\n').entries()) {
    const t = line.replace(/#.*$/, '').trim();
    if (t) out.push({ line: i + 1, text: t });
  }
  return out;
}

/** Add lines (already validated) to `<dir>/witnessed-logs`, skipping ones already there; atomic and durable. */
export function addWitnessedLogs(dir: string, entries: string[]): string[] {
  const file = path.join(dir, WITNESSED_LOGS_FILE);
  const have = existsSync(file) ? readFileSync(file, 'utf8') : '# logs this witness cosigns for: ORIGIN VKEY (or VKEY: origin = key name)\n';
  const known = new Set(have.split('\n').map((l) => l.replace(/#.*$/, '').trim().replace(/\s+/g, ' ')));
  const added = entries.filter((e, i) => !known.has(e) && entries.indexOf(e) === i);
  if (added.length > 0) writeDurable(file, `${have.endsWith('\n') ? have : `${have}\n`}${added.map((e) => `${e}\n`).join('')}`);
  return added;
}

/** Take `<dir>/lock` for this process; a live other witness on the directory is refused. */
export function lockStateDir(dir: string): () => void {
  ensurePrivateDir(dir);
  const file = path.join(dir, 'lock');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeNew(file, `${process.pid}\n`);
      return () => {
        try {
          if (readFileSync(file, 'utf8').trim() === String(process.pid)) unlinkSync(file);
        } catch {
          // gone already
        }
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const pid = Number(readFileSync(file, 'utf8').trim());
    if (Number.isSafeInteger(pid) && pid > 0 && pid !== process.pid && alive(pid)) {
      throw new WitnessStateError(`the state directory ${dir} is in use by another witness (pid ${pid})`, 1);
    }
    unlinkSync(file); // left by a witness that is gone
  }
  throw new WitnessStateError(`cannot lock the state directory ${dir}`, 1);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function parseState(file: string, text: string): WitnessLogState {
  const bad = (why: string) =>
    new WitnessStateError(`witness state file ${file} is corrupt (${why}); refusing to start rather than forget what was cosigned`);
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw bad('not JSON');
  }
  const s = v as Partial<WitnessLogState>;
  if (typeof s.origin !== 'string' || s.origin === '') throw bad('no origin');
  if (typeof s.size !== 'number' || !Number.isSafeInteger(s.size) || s.size < 0) throw bad('no valid size');
  if (typeof s.root !== 'string' || fromBase64(s.root)?.length !== 32) throw bad('no valid root');
  if (typeof s.checkpoint !== 'string' || typeof s.time !== 'number') throw bad('no checkpoint');
  if (path.basename(file) !== `${originHash(s.origin)}.json`) throw bad('the file name is not the hash of its origin');
  return { origin: s.origin, size: s.size, root: s.root, checkpoint: s.checkpoint, time: s.time };
}

/** The per-origin state files, read once; `put` replaces one file durably. */
export function fileWitnessStore(dir: string): WitnessStateStore & { all(): WitnessLogState[] } {
  const logsDir = path.join(dir, 'logs');
  mkdirSync(logsDir, { recursive: true, mode: 0o700 });
  const states = new Map<string, WitnessLogState>();
  for (const name of readdirSync(logsDir)) {
    const file = path.join(logsDir, name);
    if (name.startsWith('.') && name.includes('.tmp-')) {
      unlinkSync(file); // a write that never reached its rename
      continue;
    }
    if (!name.endsWith('.json')) continue;
    const s = parseState(file, readFileSync(file, 'utf8'));
    states.set(s.origin, s);
  }
  return {
    get: (origin) => states.get(origin) ?? null,
    put(state) {
      writeDurable(path.join(logsDir, `${originHash(state.origin)}.json`), `${JSON.stringify(state)}\n`);
      states.set(state.origin, { ...state });
    },
    all: () => [...states.values()],
  };
}

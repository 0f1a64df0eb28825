/**
 * The transparency log's note key (Node): an Ed25519 signed-note key in
 * `$LOKI_HOME/dashboard/audit-note-key` (mode 0600), next to the JWS signing key,
 * holding the signer key string `PRIVATE+KEY+<origin>+<key id>+<base64>`. The
 * server creates it on first use (exclusively: never overwriting one another
 * process just made); verification never creates it.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, linkSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TlogSigner } from './log';
import { generateNoteKey, NoteError, noteSigner, noteVerifier, verifierKeyOf } from './tlog/note';

export const NOTE_KEY_FILE = 'audit-note-key';
export const SIGNING_KEY_FILE = 'audit-signing-key';

export function keyPaths(dbPath: string): { signing: string; note: string } {
  const dir = path.dirname(dbPath);
  return { signing: path.join(dir, SIGNING_KEY_FILE), note: path.join(dir, NOTE_KEY_FILE) };
}

/** `loki.<host name>/audit`, the host name reduced to what a key name may hold. */
export function defaultOrigin(hostname = os.hostname()): string {
  const host = hostname.toLowerCase().replace(/[^a-z0-9.-]+/g, '-').replace(/^-+|-+$/g, '') || 'localhost';
  return `loki.${host}/audit`;
}

export class NoteKeyError extends Error {}

/**
 * Load the note key; create it when missing and `create` is set, named after
 * `origin` (LOKI_AUDIT_ORIGIN) or `loki.<host>/audit`. The checkpoints' origin
 * line is `origin` when set, else the key's name (stable across host renames).
 * Null when the file is missing and not created.
 */
export async function loadNoteKey(file: string, origin: string | null, opts: { create: boolean }): Promise<{ tlog: TlogSigner; created: boolean } | null> {
  let created = false;
  if (!existsSync(file)) {
    if (!opts.create) return null;
    const { skey } = await generateNoteKey(origin ?? defaultOrigin());
    // Written whole to a private temporary file, then linked into place: link()
    // never replaces a key another process just made, and no process ever reads
    // a half-written one.
    const tmp = `${file}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
    const fd = openSync(tmp, 'wx', 0o600);
    try {
      writeSync(fd, `${skey}\n`);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    try {
      linkSync(tmp, file);
      created = true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    } finally {
      unlinkSync(tmp);
    }
  }
  const skey = readFileSync(file, 'utf8').trim();
  try {
    const signer = await noteSigner(skey);
    const vkey = await verifierKeyOf(skey);
    return { tlog: { origin: origin ?? signer.name, signer, verifier: await noteVerifier(vkey), vkey }, created };
  } catch (err) {
    // Never echo the file's content: it is the private key.
    if (err instanceof NoteError) throw new NoteKeyError(`the note key in ${file} is not a valid Ed25519 signer key (${err.code})`);
    throw err;
  }
}

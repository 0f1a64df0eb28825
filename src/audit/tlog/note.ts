/**
 * C2SP signed-note (Ed25519, signature type 0x01), tlog-checkpoint bodies and
 * tlog-cosignature (timestamped Ed25519, type 0x04). Runtime-free: Ed25519 is
 * Web Crypto (`crypto.subtle`, Node ≥ 20 and Workers), key ids use the
 * synchronous SHA-256 in ./sha256. Semantics follow the spec and Go's
 * golang.org/x/mod/sumdb/note (Open, Sign, NewVerifier, NewSigner, GenerateKey).
 *
 *   verifier key  <name>+<hex key id>+base64(type ‖ public key)
 *   signer key    PRIVATE+KEY+<name>+<hex key id>+base64(type ‖ 32-byte seed)
 *   key id        first 4 bytes (big-endian) of SHA-256(name ‖ 0x0A ‖ type ‖ public key)
 *   signature     — <name> base64(key id ‖ signature)
 */
import { concatBytes, fromBase64, sha256, toBase64, utf8 } from './sha256';

export const ALG_ED25519 = 0x01;
export const ALG_COSIGNATURE_V1 = 0x04;

/** Verifiers refuse a note with more signature lines than this (the spec requires at least 16). */
export const MAX_SIGNATURES = 100;

export type NoteErrorCode =
  | 'malformed_note'
  | 'unverified_note'
  | 'invalid_signature'
  | 'ambiguous_key'
  | 'malformed_key'
  | 'unknown_algorithm'
  | 'invalid_key_hash'
  | 'invalid_signer'
  | 'malformed_checkpoint'
  | 'malformed_cosignature';

export class NoteError extends Error {
  constructor(
    readonly code: NoteErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'NoteError';
  }
}

/** No signature by a known key (the note's other signatures are in `note`). */
export class UnverifiedNoteError extends NoteError {
  constructor(readonly note: Note) {
    super('unverified_note', 'note has no verifiable signatures');
    this.name = 'UnverifiedNoteError';
  }
}

/** A signature by a known key failed to verify. */
export class InvalidSignatureError extends NoteError {
  constructor(
    readonly keyName: string,
    readonly keyId: number,
  ) {
    super('invalid_signature', `invalid signature for key ${keyName}+${hex8(keyId)}`);
    this.name = 'InvalidSignatureError';
  }
}

export interface NoteVerifier {
  readonly name: string;
  readonly keyId: number;
  /** The signature type byte of the key (0x01 note signature, 0x04 cosignature). */
  readonly type: number;
  /** The verifier key string. */
  readonly vkey: string;
  verify(msg: Uint8Array, sig: Uint8Array): Promise<boolean>;
}

export interface NoteSigner {
  readonly name: string;
  readonly keyId: number;
  sign(msg: Uint8Array): Promise<Uint8Array>;
}

export interface NoteSignature {
  name: string;
  keyId: number;
  /** base64(key id ‖ signature), as on the signature line. */
  base64: string;
  /** For a verified tlog-cosignature: its timestamp (POSIX seconds). */
  timestamp?: number;
}

export interface Note {
  /** The note text, ending in a newline (what is signed). */
  text: string;
  sigs: NoteSignature[];
  unverifiedSigs: NoteSignature[];
}

const hex8 = (n: number) => n.toString(16).padStart(8, '0');
const SIG_PREFIX = '— ';
const SPACE = /[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]/;
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

export function isValidKeyName(name: string): boolean {
  // Non-empty, no Unicode space (Go's unicode.IsSpace), no '+', no lone surrogate (invalid UTF-8).
  return name !== '' && !SPACE.test(name) && !name.includes('+') && !LONE_SURROGATE.test(name);
}

/** The key id: first 4 bytes, big-endian, of SHA-256(name ‖ "\n" ‖ key), key = type byte ‖ public key. */
export function keyHash(name: string, key: Uint8Array): number {
  const sum = sha256(utf8(name), new Uint8Array([0x0a]), key);
  return ((sum[0]! << 24) | (sum[1]! << 16) | (sum[2]! << 8) | sum[3]!) >>> 0;
}

function chop(s: string, sep: string): [string, string] {
  const i = s.indexOf(sep);
  return i < 0 ? [s, ''] : [s.slice(0, i), s.slice(i + sep.length)];
}

const HEX8 = /^[0-9a-fA-F]{8}$/;
const PKCS8_ED25519_PREFIX = new Uint8Array([0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20]);
const ED25519 = { name: 'Ed25519' } as const;
/** Web Crypto wants ArrayBuffer-backed views; ours always are. */
const bs = (u: Uint8Array) => u as Uint8Array<ArrayBuffer>;

async function importPublic(pub: Uint8Array): Promise<CryptoKey> {
  return crypto.subtle.importKey('raw', bs(pub), ED25519, false, ['verify']);
}

async function importSeed(seed: Uint8Array): Promise<{ key: CryptoKey; pub: Uint8Array }> {
  const key = await crypto.subtle.importKey('pkcs8', bs(concatBytes(PKCS8_ED25519_PREFIX, seed)), ED25519, true, ['sign']);
  const jwk = await crypto.subtle.exportKey('jwk', key);
  const pub = fromBase64Url(jwk.x ?? '');
  if (pub?.length !== 32) throw new NoteError('malformed_key', 'cannot derive the Ed25519 public key');
  return { key, pub };
}

function fromBase64Url(s: string): Uint8Array | null {
  const b = s.replace(/-/g, '+').replace(/_/g, '/');
  return fromBase64(b + '='.repeat((4 - (b.length % 4)) % 4));
}

async function ed25519Verify(key: CryptoKey, msg: Uint8Array, sig: Uint8Array): Promise<boolean> {
  if (sig.length !== 64) return false;
  try {
    return await crypto.subtle.verify(ED25519, key, bs(sig), bs(msg));
  } catch {
    return false;
  }
}

/** The message a v1 cosignature signs: `cosignature/v1\ntime <t>\n` ‖ checkpoint body. */
export function cosignatureMessage(body: string | Uint8Array, timestamp: number): Uint8Array {
  const b = typeof body === 'string' ? utf8(body) : body;
  return concatBytes(utf8(`cosignature/v1\ntime ${timestamp}\n`), b);
}

function checkTimestamp(t: number): void {
  if (!Number.isSafeInteger(t) || t < 0) throw new NoteError('malformed_cosignature', `cosignature timestamp ${t} is not a non-negative integer`);
}

/**
 * A verifier from a verifier key string (Go's NewVerifier). Type 0x01 keys
 * verify note signatures; type 0x04 keys verify tlog-cosignature/v1
 * cosignatures (the signature is u64 timestamp ‖ Ed25519 signature).
 */
export async function noteVerifier(vkey: string): Promise<NoteVerifier> {
  const [name, rest] = chop(vkey, '+');
  const [hash16, key64] = chop(rest, '+');
  const key = fromBase64(key64);
  if (!HEX8.test(hash16) || !key || !isValidKeyName(name) || key.length === 0) throw new NoteError('malformed_key', 'malformed verifier id');
  const keyId = Number.parseInt(hash16, 16) >>> 0;
  if (keyId !== keyHash(name, key)) throw new NoteError('invalid_key_hash', 'invalid verifier hash');
  const type = key[0]!;
  const pub = key.subarray(1);
  if (type !== ALG_ED25519 && type !== ALG_COSIGNATURE_V1) throw new NoteError('unknown_algorithm', 'unknown verifier algorithm');
  if (pub.length !== 32) throw new NoteError('malformed_key', 'malformed verifier id');
  const ck = await importPublic(pub);
  if (type === ALG_ED25519) {
    return { name, keyId, type, vkey, verify: (msg, sig) => ed25519Verify(ck, msg, sig) };
  }
  return {
    name,
    keyId,
    type,
    vkey,
    async verify(msg, sig) {
      if (sig.length !== 8 + 64) return false;
      const t = new DataView(sig.buffer, sig.byteOffset, 8).getBigUint64(0);
      if (t > BigInt(Number.MAX_SAFE_INTEGER)) return false;
      return ed25519Verify(ck, cosignatureMessage(msg, Number(t)), sig.subarray(8));
    },
  };
}

interface ParsedSkey {
  name: string;
  keyId: number;
  type: number;
  key: CryptoKey;
  pub: Uint8Array;
}

async function parseSkey(skey: string): Promise<ParsedSkey> {
  const [priv1, r1] = chop(skey, '+');
  const [priv2, r2] = chop(r1, '+');
  const [name, r3] = chop(r2, '+');
  const [hash16, key64] = chop(r3, '+');
  const key = fromBase64(key64);
  if (priv1 !== 'PRIVATE' || priv2 !== 'KEY' || !HEX8.test(hash16) || !key || !isValidKeyName(name) || key.length === 0) {
    throw new NoteError('malformed_key', 'malformed signer key');
  }
  const type = key[0]!;
  if (type !== ALG_ED25519 && type !== ALG_COSIGNATURE_V1) throw new NoteError('unknown_algorithm', 'unknown signer algorithm');
  if (key.length !== 33) throw new NoteError('malformed_key', 'malformed signer key');
  const { key: ck, pub } = await importSeed(key.subarray(1));
  const keyId = Number.parseInt(hash16, 16) >>> 0;
  if (keyId !== keyHash(name, concatBytes(new Uint8Array([type]), pub))) throw new NoteError('invalid_key_hash', 'invalid signer key hash');
  return { name, keyId, type, key: ck, pub };
}

/** A note signer from a `PRIVATE+KEY+…` string of type 0x01 (Go's NewSigner). */
export async function noteSigner(skey: string): Promise<NoteSigner> {
  const p = await parseSkey(skey);
  if (p.type !== ALG_ED25519) throw new NoteError('unknown_algorithm', 'not an Ed25519 note signing key (type 0x01)');
  return {
    name: p.name,
    keyId: p.keyId,
    sign: async (msg) => new Uint8Array(await crypto.subtle.sign(ED25519, p.key, bs(msg))),
  };
}

/** The verifier key string of a signer key (type preserved). */
export async function verifierKeyOf(skey: string): Promise<string> {
  const p = await parseSkey(skey);
  return `${p.name}+${hex8(p.keyId)}+${toBase64(concatBytes(new Uint8Array([p.type]), p.pub))}`;
}

async function generate(name: string, type: number): Promise<{ skey: string; vkey: string }> {
  if (!isValidKeyName(name)) throw new NoteError('invalid_signer', `invalid key name ${JSON.stringify(name)}`);
  const pair = (await crypto.subtle.generateKey(ED25519, true, ['sign', 'verify'])) as CryptoKeyPair;
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey('pkcs8', pair.privateKey));
  const seed = pkcs8.subarray(pkcs8.length - 32);
  const pub = new Uint8Array(await crypto.subtle.exportKey('raw', pair.publicKey));
  const t = new Uint8Array([type]);
  const id = hex8(keyHash(name, concatBytes(t, pub)));
  return {
    skey: `PRIVATE+KEY+${name}+${id}+${toBase64(concatBytes(t, seed))}`,
    vkey: `${name}+${id}+${toBase64(concatBytes(t, pub))}`,
  };
}

/** A new Ed25519 note key (Go's GenerateKey): signer and verifier key strings. */
export function generateNoteKey(name: string): Promise<{ skey: string; vkey: string }> {
  return generate(name, ALG_ED25519);
}

/** A new Ed25519 cosigner key (type 0x04, C2SP tlog-cosignature). */
export function generateCosignatureKey(name: string): Promise<{ skey: string; vkey: string }> {
  return generate(name, ALG_COSIGNATURE_V1);
}

export function signatureLine(sig: Pick<NoteSignature, 'name' | 'base64'>): string {
  return `${SIG_PREFIX}${sig.name} ${sig.base64}\n`;
}

/**
 * Sign a note text (which must end in a newline) with each signer: the text, a
 * blank line, then one signature line per signer (Go's Sign, new note).
 * `keep` lists signatures already on the note to carry over (after new ones
 * are skipped for keys that sign now).
 */
export async function signNote(text: string, signers: NoteSigner[], keep: NoteSignature[] = []): Promise<string> {
  if (!text.endsWith('\n')) throw new NoteError('malformed_note', 'malformed note: the text must end in a newline');
  checkNoteBytes(utf8(text));
  const msg = utf8(text);
  let sigs = '';
  const have = new Set<string>();
  for (const s of signers) {
    if (!isValidKeyName(s.name)) throw new NoteError('invalid_signer', 'invalid signer');
    have.add(`${s.name}+${s.keyId}`);
    const sig = await s.sign(msg);
    const id = new Uint8Array(4);
    new DataView(id.buffer).setUint32(0, s.keyId);
    sigs += signatureLine({ name: s.name, base64: toBase64(concatBytes(id, sig)) });
  }
  let kept = '';
  for (const s of keep) {
    if (!isValidKeyName(s.name)) throw new NoteError('malformed_note', 'malformed note');
    if (have.has(`${s.name}+${s.keyId}`)) continue;
    const raw = fromBase64(s.base64);
    if (!raw || raw.length < 4 || new DataView(raw.buffer, raw.byteOffset, 4).getUint32(0) !== s.keyId) throw new NoteError('malformed_note', 'malformed note');
    kept += signatureLine(s);
  }
  return `${text}\n${kept}${sigs}`;
}

function checkNoteBytes(b: Uint8Array): void {
  // Valid UTF-8 and no control character other than newline.
  for (const x of b) if (x < 0x20 && x !== 0x0a) throw new NoteError('malformed_note', 'malformed note');
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(b);
  } catch {
    throw new NoteError('malformed_note', 'malformed note');
  }
}

/**
 * Open a signed note (Go's note.Open): check its form, verify every signature
 * by a known key (name and key id both match), ignore the others. Throws
 * NoteError('malformed_note'), InvalidSignatureError (a known key's signature
 * fails), NoteError('ambiguous_key'), or UnverifiedNoteError (no known key signed).
 */
export async function openNote(msg: string | Uint8Array, verifiers: NoteVerifier[]): Promise<Note> {
  const bytes = typeof msg === 'string' ? utf8(msg) : msg;
  checkNoteBytes(bytes);
  const s = new TextDecoder().decode(bytes);
  const split = s.lastIndexOf('\n\n');
  if (split < 0) throw new NoteError('malformed_note', 'malformed note');
  const text = s.slice(0, split + 1);
  let sigs = s.slice(split + 2);
  if (sigs.length === 0 || !sigs.endsWith('\n')) throw new NoteError('malformed_note', 'malformed note');
  const textBytes = utf8(text);
  const note: Note = { text, sigs: [], unverifiedSigs: [] };
  const known = new Map<string, NoteVerifier[]>();
  for (const v of verifiers) {
    const k = `${v.name}+${v.keyId}`;
    known.set(k, [...(known.get(k) ?? []), v]);
  }
  const seen = new Set<string>();
  const seenUnverified = new Set<string>();
  let numSig = 0;
  while (sigs.length > 0) {
    const i = sigs.indexOf('\n');
    let line = sigs.slice(0, i);
    sigs = sigs.slice(i + 1);
    if (!line.startsWith(SIG_PREFIX)) throw new NoteError('malformed_note', 'malformed note');
    line = line.slice(SIG_PREFIX.length);
    const [name, b64] = chop(line, ' ');
    const sig = fromBase64(b64);
    if (!sig || !isValidKeyName(name) || b64 === '' || sig.length < 5) throw new NoteError('malformed_note', 'malformed note');
    const keyId = new DataView(sig.buffer, sig.byteOffset, 4).getUint32(0);
    const body = sig.subarray(4);
    if (++numSig > MAX_SIGNATURES) throw new NoteError('malformed_note', 'malformed note: too many signatures');
    const k = `${name}+${keyId}`;
    const candidates = known.get(k);
    if (!candidates) {
      if (seenUnverified.has(line)) continue;
      seenUnverified.add(line);
      note.unverifiedSigs.push({ name, keyId, base64: b64 });
      continue;
    }
    if (candidates.length > 1) throw new NoteError('ambiguous_key', `ambiguous key ${name}+${hex8(keyId)}`);
    const v = candidates[0]!;
    if (seen.has(k)) continue;
    seen.add(k);
    if (!(await v.verify(textBytes, body))) throw new InvalidSignatureError(name, keyId);
    const entry: NoteSignature = { name, keyId, base64: b64 };
    if (v.type === ALG_COSIGNATURE_V1) entry.timestamp = Number(new DataView(body.buffer, body.byteOffset, 8).getBigUint64(0));
    note.sigs.push(entry);
  }
  if (note.sigs.length === 0) throw new UnverifiedNoteError(note);
  return note;
}

// ---------------------------------------------------------------------------
// tlog-checkpoint

export interface Checkpoint {
  origin: string;
  size: number;
  rootHash: Uint8Array;
  /** Extension lines (opaque, non-empty), if any. */
  extensions?: string[];
}

/** The checkpoint note text: origin, decimal size, base64 root hash, extension lines; each ending in a newline. */
export function formatCheckpoint(c: Checkpoint): string {
  if (c.origin === '' || /[\n]/.test(c.origin)) throw new NoteError('malformed_checkpoint', 'the origin must be a non-empty line');
  if (!Number.isSafeInteger(c.size) || c.size < 0) throw new NoteError('malformed_checkpoint', `invalid tree size ${c.size}`);
  if (c.rootHash.length !== 32) throw new NoteError('malformed_checkpoint', 'the root hash must be 32 bytes');
  for (const e of c.extensions ?? []) if (e === '' || e.includes('\n')) throw new NoteError('malformed_checkpoint', 'extension lines must be non-empty lines');
  return `${c.origin}\n${c.size}\n${toBase64(c.rootHash)}\n${(c.extensions ?? []).map((e) => `${e}\n`).join('')}`;
}

/** Parse a checkpoint note text (not the signatures: open the note first). */
export function parseCheckpoint(text: string): Checkpoint & { extensions: string[] } {
  const bad = (why: string) => new NoteError('malformed_checkpoint', `malformed checkpoint: ${why}`);
  if (!text.endsWith('\n')) throw bad('the text must end in a newline');
  const lines = text.slice(0, -1).split('\n');
  if (lines.length < 3) throw bad('fewer than three lines');
  const [origin, sizeLine, rootLine, ...extensions] = lines as [string, string, string, ...string[]];
  if (origin === '') throw bad('empty origin');
  if (!/^(?:0|[1-9][0-9]*)$/.test(sizeLine) || !Number.isSafeInteger(Number(sizeLine))) throw bad('the tree size is not a decimal without leading zeroes');
  const rootHash = fromBase64(rootLine);
  if (rootHash?.length !== 32) throw bad('the root hash is not 32 bytes of base64');
  if (extensions.some((e) => e === '')) throw bad('empty extension line');
  return { origin, size: Number(sizeLine), rootHash, extensions };
}

/** Open a signed checkpoint with the log's verifier and parse it; `origin`, when given, must match. */
export async function openCheckpoint(msg: string | Uint8Array, verifiers: NoteVerifier[], origin?: string): Promise<{ note: Note; checkpoint: Checkpoint & { extensions: string[] } }> {
  const note = await openNote(msg, verifiers);
  const checkpoint = parseCheckpoint(note.text);
  if (origin !== undefined && checkpoint.origin !== origin) {
    throw new NoteError('malformed_checkpoint', `checkpoint origin ${JSON.stringify(checkpoint.origin)} is not the expected ${JSON.stringify(origin)}`);
  }
  return { note, checkpoint };
}

// ---------------------------------------------------------------------------
// tlog-cosignature/v1 (Ed25519, type 0x04)

/** A cosigner from a `PRIVATE+KEY+<name>+<id>+base64(0x04 ‖ seed)` key; `now()` gives POSIX seconds. */
export async function cosigner(skey: string, now: () => number = () => Math.floor(Date.now() / 1000)): Promise<NoteSigner> {
  const p = await parseSkey(skey);
  if (p.type !== ALG_COSIGNATURE_V1) throw new NoteError('unknown_algorithm', 'not a cosignature key (type 0x04)');
  return {
    name: p.name,
    keyId: p.keyId,
    async sign(msg) {
      const t = now();
      checkTimestamp(t);
      const sig = new Uint8Array(await crypto.subtle.sign(ED25519, p.key, bs(cosignatureMessage(msg, t))));
      const ts = new Uint8Array(8);
      new DataView(ts.buffer).setBigUint64(0, BigInt(t));
      return concatBytes(ts, sig);
    },
  };
}

/**
 * Cosign a checkpoint body (the note text, ending in a newline) at `time`
 * (POSIX seconds). Returns the signature; `signatureLine(sig)` is the line to
 * add to the note.
 */
export async function cosign(checkpointBody: string, skey: string, time: number): Promise<NoteSignature & { timestamp: number }> {
  checkTimestamp(time);
  parseCheckpoint(checkpointBody);
  const s = await cosigner(skey, () => time);
  const sig = await s.sign(utf8(checkpointBody));
  const id = new Uint8Array(4);
  new DataView(id.buffer).setUint32(0, s.keyId);
  return { name: s.name, keyId: s.keyId, base64: toBase64(concatBytes(id, sig)), timestamp: time };
}

/**
 * Verify one cosignature over a checkpoint body. `sig` is a signature line
 * (`— name base64`, with or without the newline) or its base64 part. Returns the
 * timestamp; throws NoteError('malformed_cosignature') for a line that is not
 * this cosigner's (name or key id differ, wrong length) and InvalidSignatureError
 * when the signature does not verify.
 */
export async function verifyCosignature(checkpointBody: string, sig: string, verifier: NoteVerifier | string): Promise<number> {
  const v = typeof verifier === 'string' ? await noteVerifier(verifier) : verifier;
  if (v.type !== ALG_COSIGNATURE_V1) throw new NoteError('unknown_algorithm', 'not a cosignature verifier key (type 0x04)');
  let b64 = sig.replace(/\n$/, '');
  if (b64.startsWith(SIG_PREFIX)) {
    const [name, rest] = chop(b64.slice(SIG_PREFIX.length), ' ');
    if (name !== v.name) throw new NoteError('malformed_cosignature', `cosignature by ${JSON.stringify(name)}, not ${JSON.stringify(v.name)}`);
    b64 = rest;
  }
  const raw = fromBase64(b64);
  if (!raw || raw.length !== 4 + 8 + 64) throw new NoteError('malformed_cosignature', 'malformed cosignature');
  const keyId = new DataView(raw.buffer, raw.byteOffset, 4).getUint32(0);
  if (keyId !== v.keyId) throw new NoteError('malformed_cosignature', `cosignature key id ${hex8(keyId)} is not ${hex8(v.keyId)}`);
  if (!(await v.verify(utf8(checkpointBody), raw.subarray(4)))) throw new InvalidSignatureError(v.name, v.keyId);
  return Number(new DataView(raw.buffer, raw.byteOffset + 4, 8).getBigUint64(0));
}

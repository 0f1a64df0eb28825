/**
 * A C2SP tlog-witness (c2sp.org/tlog-witness): the `add-checkpoint` logic.
 * Runtime-free; the state store and the clock are passed in (the Node witness
 * process persists to its state directory, see ./witness-state).
 *
 * For each log it knows (origin + the log's note verifier keys) the witness
 * keeps the latest checkpoint it cosigned. It cosigns (C2SP tlog-cosignature/v1,
 * Ed25519, type 0x04) a new checkpoint only when the client's `old` size is the
 * size it holds and the consistency proof from that size holds, so it never
 * goes backwards and never cosigns a fork. Checking and persisting are one
 * step per origin (a queue), and the new state is durable before the answer.
 *
 *   200  one cosignature line                     (text/plain; charset=utf-8)
 *   400  malformed request, old > checkpoint size
 *   403  no valid signature from a key trusted for the origin
 *   404  unknown origin
 *   409  old size is not the size the witness holds; body "<size>\n" (text/x.tlog.size)
 *   422  consistency proof fails, non-empty proof from 0, same size with another
 *        root, size 0 with a root other than the empty tree's
 */
import { checkTree, EMPTY_TREE_ROOT, HASH_SIZE, type Hash, TlogError } from './tlog/merkle';
import {
  ALG_ED25519,
  cosign,
  type Checkpoint,
  InvalidSignatureError,
  NoteError,
  type NoteVerifier,
  openNote,
  parseCheckpoint,
  signatureLine,
  signNote,
  UnverifiedNoteError,
  verifierKeyOf,
} from './tlog/note';
import { bytesEqual, fromBase64, toBase64 } from './tlog/sha256';

/** The most consistency proof lines a client may send (the spec's limit). */
export const MAX_PROOF_LINES = 63;
/** Request bodies beyond this are refused (a checkpoint with 100 signatures is far smaller). */
export const MAX_ADD_CHECKPOINT_BYTES = 64 * 1024;
export const TLOG_SIZE_CONTENT_TYPE = 'text/x.tlog.size';

/** What the witness holds for one log: the latest checkpoint it cosigned. */
export interface WitnessLogState {
  origin: string;
  size: number;
  /** base64 root hash of that tree. */
  root: string;
  /** That checkpoint with the log's verified signatures and this witness's cosignature (for monitors). */
  checkpoint: string;
  /** POSIX seconds of the cosignature. */
  time: number;
}

/** Durable per-origin state. `put` must be atomic and durable when it returns. */
export interface WitnessStateStore {
  get(origin: string): WitnessLogState | null;
  put(state: WitnessLogState): void | Promise<void>;
}

export interface WitnessedLog {
  origin: string;
  /** The log's note verifiers (type 0x01). */
  verifiers: NoteVerifier[];
}

export interface WitnessResponse {
  status: 200 | 400 | 403 | 404 | 409 | 413 | 422;
  contentType: string;
  body: string;
  /** For the witness's own log line. */
  info: { origin?: string; old?: number; size?: number; reason: string };
}

export interface WitnessOptions {
  /** The cosigner key, `PRIVATE+KEY+<name>+<id>+base64(0x04 ‖ seed)`. */
  skey: string;
  logs: WitnessedLog[];
  store: WitnessStateStore;
  /** POSIX seconds (default: the wall clock). */
  now?: () => number;
}

const TEXT = 'text/plain; charset=utf-8';
const DECIMAL = /^(?:0|[1-9][0-9]*)$/;

function reply(status: WitnessResponse['status'], reason: string, info: Omit<WitnessResponse['info'], 'reason'> = {}): WitnessResponse {
  return { status, contentType: TEXT, body: `${reason}\n`, info: { ...info, reason } };
}

export interface ParsedAddCheckpoint {
  old: number;
  proof: Hash[];
  /** The signed checkpoint note, verbatim. */
  note: string;
}

export class AddCheckpointFormatError extends Error {}

/** Parse an add-checkpoint request body: `old N`, proof lines, an empty line, the checkpoint note. */
export function parseAddCheckpoint(body: string): ParsedAddCheckpoint {
  const bad = (why: string) => new AddCheckpointFormatError(why);
  const nl = body.indexOf('\n');
  if (nl < 0) throw bad('the body has no "old" line');
  const m = /^old (.*)$/.exec(body.slice(0, nl));
  if (!m || !DECIMAL.test(m[1]!) || !Number.isSafeInteger(Number(m[1]))) throw bad('the first line must be "old <size>" (a decimal without leading zeroes)');
  const old = Number(m[1]);
  const proof: Hash[] = [];
  let rest = body.slice(nl + 1);
  for (;;) {
    const i = rest.indexOf('\n');
    if (i < 0) throw bad('missing the empty line before the checkpoint');
    const line = rest.slice(0, i);
    rest = rest.slice(i + 1);
    if (line === '') break;
    if (proof.length === MAX_PROOF_LINES) throw bad(`more than ${MAX_PROOF_LINES} consistency proof lines`);
    const h = fromBase64(line);
    if (!h || h.length !== HASH_SIZE) throw bad(`consistency proof line ${proof.length + 1} is not a base64 SHA-256 hash`);
    proof.push(h);
  }
  if (rest === '') throw bad('missing the checkpoint');
  return { old, proof, note: rest };
}

/** The request body for add-checkpoint (what a log sends). */
export function formatAddCheckpoint(old: number, proof: Hash[], note: string): string {
  if (!Number.isSafeInteger(old) || old < 0) throw new AddCheckpointFormatError(`invalid old size ${old}`);
  if (proof.length > MAX_PROOF_LINES) throw new AddCheckpointFormatError(`more than ${MAX_PROOF_LINES} consistency proof lines`);
  return `old ${old}\n${proof.map((h) => `${toBase64(h)}\n`).join('')}\n${note}`;
}

export class Witness {
  readonly name: string;
  private readonly logs = new Map<string, WitnessedLog>();
  private readonly queues = new Map<string, Promise<unknown>>();
  private readonly now: () => number;

  private constructor(
    private readonly opts: WitnessOptions,
    name: string,
    readonly vkey: string,
  ) {
    this.name = name;
    this.now = opts.now ?? (() => Math.floor(Date.now() / 1000));
    for (const l of opts.logs) {
      const have = this.logs.get(l.origin);
      this.logs.set(l.origin, { origin: l.origin, verifiers: [...(have?.verifiers ?? []), ...l.verifiers] });
    }
  }

  static async create(opts: WitnessOptions): Promise<Witness> {
    const vkey = await verifierKeyOf(opts.skey);
    for (const l of opts.logs) {
      for (const v of l.verifiers) if (v.type !== ALG_ED25519) throw new NoteError('unknown_algorithm', `log key ${v.vkey} is not an Ed25519 note key (type 0x01)`);
    }
    // Fails early on a key of the wrong type (cosign would, on the first request).
    await cosign(`check\n0\n${toBase64(EMPTY_TREE_ROOT)}\n`, opts.skey, 1);
    return new Witness(opts, vkey.split('+')[0]!, vkey);
  }

  get origins(): string[] {
    return [...this.logs.keys()];
  }

  /** The latest cosigned checkpoint for an origin (monitoring), or null. */
  latest(origin: string): WitnessLogState | null {
    return this.logs.has(origin) ? this.opts.store.get(origin) : null;
  }

  /** Handle one add-checkpoint request body. Never throws for client errors. */
  async addCheckpoint(body: Uint8Array | string): Promise<WitnessResponse> {
    let text: string;
    if (typeof body === 'string') text = body;
    else {
      if (body.length > MAX_ADD_CHECKPOINT_BYTES) return reply(413, 'request body too large');
      try {
        text = new TextDecoder('utf-8', { fatal: true }).decode(body);
      } catch {
        return reply(400, 'the body is not UTF-8');
      }
    }
    if (text.length > MAX_ADD_CHECKPOINT_BYTES) return reply(413, 'request body too large');
    let req: ParsedAddCheckpoint;
    try {
      req = parseAddCheckpoint(text);
    } catch (err) {
      if (err instanceof AddCheckpointFormatError) return reply(400, err.message);
      throw err;
    }
    // The origin picks the keys: read it from the note text before verifying.
    const split = req.note.lastIndexOf('\n\n');
    let cp: Checkpoint;
    try {
      if (split < 0) throw new NoteError('malformed_note', 'malformed note');
      cp = parseCheckpoint(req.note.slice(0, split + 1));
    } catch (err) {
      if (err instanceof NoteError) return reply(400, err.message, { old: req.old });
      throw err;
    }
    const info = { origin: cp.origin, old: req.old, size: cp.size };
    const log = this.logs.get(cp.origin);
    if (!log) return reply(404, 'unknown log origin', info);
    let noteText: string;
    let logSigs: Awaited<ReturnType<typeof openNote>>['sigs'];
    try {
      const note = await openNote(req.note, log.verifiers);
      noteText = note.text;
      logSigs = note.sigs;
    } catch (err) {
      if (err instanceof UnverifiedNoteError) return reply(403, 'no signature by a key trusted for this origin', info);
      if (err instanceof InvalidSignatureError) return reply(403, 'a signature by a key trusted for this origin does not verify', info);
      if (err instanceof NoteError) return reply(400, err.message, info);
      throw err;
    }
    if (req.old > cp.size) return reply(400, `old size ${req.old} is larger than the checkpoint size ${cp.size}`, info);
    return this.serial<WitnessResponse>(cp.origin, async () => {
      const cur = this.opts.store.get(cp.origin);
      const curSize = cur?.size ?? 0;
      if (req.old !== curSize) {
        return { status: 409, contentType: TLOG_SIZE_CONTENT_TYPE, body: `${curSize}\n`, info: { ...info, reason: `old size ${req.old} is not the witnessed size ${curSize}` } };
      }
      if (cp.size === 0 && !bytesEqual(cp.rootHash, EMPTY_TREE_ROOT)) return reply(422, 'a checkpoint of size 0 must have the empty tree root', info);
      if (req.old === 0) {
        if (req.proof.length !== 0) return reply(422, 'old size 0 takes no consistency proof', info);
      } else {
        const curRoot = cur ? fromBase64(cur.root) : null;
        if (!curRoot || curRoot.length !== HASH_SIZE) throw new Error(`witness state for ${cp.origin} has no valid root`);
        if (req.old === cp.size && !bytesEqual(curRoot, cp.rootHash)) return reply(422, `same size ${cp.size} with a different root hash`, info);
        try {
          checkTree(req.proof, cp.size, cp.rootHash, req.old, curRoot);
        } catch (err) {
          if (err instanceof TlogError) return reply(422, `the consistency proof from ${req.old} to ${cp.size} does not verify`, info);
          throw err;
        }
      }
      const time = Math.max(this.now(), 1, cur ? cur.time : 0);
      const sig = await cosign(noteText, this.opts.skey, time);
      const line = signatureLine(sig);
      const stored = await signNote(noteText, [], [...logSigs, sig]);
      await this.opts.store.put({ origin: cp.origin, size: cp.size, root: toBase64(cp.rootHash), checkpoint: stored, time });
      return { status: 200, contentType: TEXT, body: line, info: { ...info, reason: 'cosigned' } } satisfies WitnessResponse;
    });
  }

  /** Run `fn` after every earlier call for the same origin (check-and-persist is atomic per origin). */
  private serial<T>(origin: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.queues.get(origin) ?? Promise.resolve();
    const run = prev.then(fn, fn);
    const tail = run.catch(() => {});
    this.queues.set(origin, tail);
    void tail.then(() => {
      if (this.queues.get(origin) === tail) this.queues.delete(origin);
    });
    return run;
  }
}

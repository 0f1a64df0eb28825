/**
 * The C2SP tlog-witness (`loki audit witness serve`, a real process on
 * loopback with its own state directory) and the server's background pusher
 * (LOKI_AUDIT_WITNESSES): cosignatures on consistent checkpoints only; 409 with
 * the size it holds for a rolled-back or stale one; 422 for a fork; 403/404 for
 * a key or log it does not know; its state survives a restart (SIGTERM and
 * SIGKILL); the pusher stores verified cosignatures and /api/status reports
 * each witness.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Hash, proveTree, storedHashes, treeHash } from '../../src/audit/tlog/merkle';
import { formatCheckpoint, generateCosignatureKey, generateNoteKey, type NoteSigner, noteSigner, noteVerifier, openNote, signNote, verifyCosignature } from '../../src/audit/tlog/note';
import { toBase64, utf8 } from '../../src/audit/tlog/sha256';
import { treeRootAt } from '../../src/audit/verify';
import { formatAddCheckpoint } from '../../src/audit/witness';
import { type CosignatureRecord, type CosignatureStore, createWitnessPusher } from '../../src/audit/witness-client';
import { cosignedNoteReader, createSqliteCosignatureStore } from '../../src/db/sqlite-witness';
import { ConfigError, loadConfig } from '../../src/env';
import { sampleEntry } from '../helpers/audit';
import { until } from '../helpers/process';
import { freePort, LOKI_BIN, runCli, startTestServer, type TestServer, tempHome } from '../helpers/server';

// biome-ignore lint/suspicious/noExplicitAny: JSON bodies in assertions
type Json = any;

const ORIGIN = 'example.test/log';
const WITNESS_NAME = 'witness.test/w1';

/** A real RFC 6962 tree built with the tlog modules (leaf i = `${prefix} entry i`). */
class Tree {
  private stored: Hash[] = [];
  size = 0;
  constructor(private readonly prefix: string) {}
  private read = (idx: number[]) => idx.map((i) => this.stored[i]!);
  async grow(to: number): Promise<this> {
    for (; this.size < to; this.size++) this.stored.push(...(await storedHashes(this.size, utf8(`${this.prefix} entry ${this.size}`), this.read)));
    return this;
  }
  root(n = this.size): Promise<Hash> {
    return treeHash(n, this.read);
  }
  proof(oldSize: number, newSize = this.size): Promise<Hash[]> {
    return proveTree(newSize, oldSize, this.read);
  }
  async note(signer: NoteSigner, n = this.size, origin = ORIGIN): Promise<string> {
    return signNote(formatCheckpoint({ origin, size: n, rootHash: await this.root(n) }), [signer]);
  }
}

interface WitnessProc {
  child: ChildProcess;
  url: string;
  started: Json;
  output(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const children = new Set<ChildProcess>();

/** `loki audit witness serve` as a real process; resolves with its start-up JSON line. */
async function spawnWitness(state: string, port = 0, extra: string[] = []): Promise<WitnessProc> {
  const child = spawn(process.execPath, [LOKI_BIN, 'audit', 'witness', 'serve', '--state', state, '--host', '127.0.0.1', '--port', String(port), '--json', ...extra], {
    env: { PATH: process.env.PATH ?? '', HOME: state, LOKI_HOME: state },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => {
    out += d;
  });
  child.stderr!.on('data', (d) => {
    err += d;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      children.delete(child);
      resolve({ code, signal });
    }),
  );
  const line = await until(
    'the witness start-up line',
    async () => {
      if (child.exitCode !== null) throw new Error(`witness exited ${child.exitCode}: ${err}`);
      const i = out.indexOf('\n');
      return i < 0 ? null : out.slice(0, i);
    },
    30_000,
  );
  const started = JSON.parse(line) as Json;
  return { child, url: started.url, started, output: () => err, exited };
}

async function stopWitness(w: WitnessProc, signal: 'SIGTERM' | 'SIGKILL' = 'SIGTERM') {
  w.child.kill(signal); // our own child, by its pid
  return w.exited;
}

async function addCheckpoint(url: string, body: string) {
  const r = await fetch(`${url}/add-checkpoint`, { method: 'POST', body, headers: { 'Content-Type': 'text/plain' } });
  return { status: r.status, type: r.headers.get('Content-Type'), body: await r.text() };
}

const bodyOf = (note: string) => note.slice(0, note.lastIndexOf('\n\n') + 1);

describe('loki audit witness serve (a real process)', () => {
  let state: string;
  let logSkey: string;
  let logVkey: string;
  let log: NoteSigner;
  let witnessVkey: string;
  let w: WitnessProc;
  const tree = new Tree('real');

  beforeAll(async () => {
    state = path.join(tempHome('loki-witness-'), 'state');
    ({ skey: logSkey, vkey: logVkey } = await generateNoteKey(ORIGIN));
    log = await noteSigner(logSkey);
    const init = await runCli(['audit', 'witness', 'init', '--state', state, '--name', WITNESS_NAME, '--log', `${ORIGIN} ${logVkey}`, '--json'], {
      LOKI_HOME: state,
    });
    expect(init.stderr).toBe('');
    expect(init.code).toBe(0);
    const j = JSON.parse(init.stdout) as Json;
    expect(j).toMatchObject({ state_dir: state, created: true, logs_added: [`${ORIGIN} ${logVkey}`] });
    witnessVkey = j.verifier_key;
    w = await spawnWitness(state);
  });

  afterAll(async () => {
    for (const c of children) c.kill('SIGKILL');
    rmSync(path.dirname(state), { recursive: true, force: true });
  });

  it('init made a 0600 key in a 0700 directory; pubkey prints its verifier key', async () => {
    expect(statSync(state).mode & 0o777).toBe(0o700);
    expect(statSync(path.join(state, 'witness-key')).mode & 0o777).toBe(0o600);
    expect(witnessVkey).toMatch(/^witness\.test\/w1\+[0-9a-f]{8}\+[A-Za-z0-9+/]{44}$/);
    const pub = await runCli(['audit', 'witness', 'pubkey', '--state', state], { LOKI_HOME: state });
    expect(pub).toEqual({ code: 0, stdout: `${witnessVkey}\n`, stderr: '' });
    expect(w.started).toEqual({ url: w.url, name: WITNESS_NAME, verifier_key: witnessVkey, state_dir: state, logs: [{ origin: ORIGIN, size: 0 }] });
  });

  it('cosigns the first checkpoint (old 0, no proof) with a tlog-cosignature that verifies', async () => {
    await tree.grow(5);
    const note = await tree.note(log);
    const before = Math.floor(Date.now() / 1000);
    const r = await addCheckpoint(w.url, formatAddCheckpoint(0, [], note));
    expect(r.status).toBe(200);
    expect(r.type).toBe('text/plain; charset=utf-8');
    expect(r.body).toMatch(/^— witness\.test\/w1 [A-Za-z0-9+/=]+\n$/);
    const ts = await verifyCosignature(bodyOf(note), r.body, witnessVkey);
    expect(ts).toBeGreaterThanOrEqual(before);
    expect(ts).toBeLessThanOrEqual(Math.floor(Date.now() / 1000));
    // The note plus the returned line opens with both keys (what a client does).
    const n = await openNote(`${note}${r.body}`, [await noteVerifier(logVkey), await noteVerifier(witnessVkey)]);
    expect(n.sigs.map((s) => s.name)).toEqual([ORIGIN, WITNESS_NAME]);
  });

  it('cosigns a newer checkpoint with a consistency proof from the size it holds', async () => {
    await tree.grow(12);
    const note = await tree.note(log);
    const r = await addCheckpoint(w.url, formatAddCheckpoint(5, await tree.proof(5), note));
    expect(r.status).toBe(200);
    await verifyCosignature(bodyOf(note), r.body, witnessVkey);
  });

  it('refuses a rolled-back checkpoint (a smaller tree) with 409 and the size it holds', async () => {
    const old = await tree.note(log, 8);
    for (const body of [formatAddCheckpoint(0, [], old), formatAddCheckpoint(5, await tree.proof(5, 8), old)]) {
      expect(await addCheckpoint(w.url, body)).toEqual({ status: 409, type: 'text/x.tlog.size', body: '12\n' });
    }
    // An old size beyond the checkpoint is malformed (400), not a conflict.
    expect((await addCheckpoint(w.url, formatAddCheckpoint(12, [], old))).status).toBe(400);
  });

  it('refuses a forked checkpoint: same size other root → 422; a bigger fork → 422 (proof fails); from a stale size → 409', async () => {
    const fork = await new Tree('forked').grow(20);
    const same = await fork.note(log, 12);
    const r1 = await addCheckpoint(w.url, formatAddCheckpoint(12, [], same));
    expect(r1).toEqual({ status: 422, type: 'text/plain; charset=utf-8', body: 'same size 12 with a different root hash\n' });
    const bigger = await fork.note(log, 20);
    const r2 = await addCheckpoint(w.url, formatAddCheckpoint(12, await fork.proof(12, 20), bigger));
    expect(r2).toEqual({ status: 422, type: 'text/plain; charset=utf-8', body: 'the consistency proof from 12 to 20 does not verify\n' });
    // The honest tree's proof with the forked root fails too.
    await tree.grow(20);
    const r3 = await addCheckpoint(w.url, formatAddCheckpoint(12, await tree.proof(12, 20), bigger));
    expect(r3.status).toBe(422);
    expect(await addCheckpoint(w.url, formatAddCheckpoint(5, await fork.proof(5, 20), bigger))).toEqual({ status: 409, type: 'text/x.tlog.size', body: '12\n' });
  });

  it('403 for a checkpoint signed by a key it does not trust for the origin, 404 for an unknown origin, 400 for a malformed body', async () => {
    const other = await noteSigner((await generateNoteKey(ORIGIN)).skey);
    const r = await addCheckpoint(w.url, formatAddCheckpoint(12, await tree.proof(12, 20), await tree.note(other, 20)));
    expect(r).toEqual({ status: 403, type: 'text/plain; charset=utf-8', body: 'no signature by a key trusted for this origin\n' });
    // A signature line with the trusted key's name and id that does not verify: 403 as well.
    const good = await tree.note(log, 20);
    const tampered = good.replace(/(— \S+ )(\S{8})(\S)/, (_m, a: string, id: string, c: string) => `${a}${id}${c === 'A' ? 'B' : 'A'}`);
    expect((await addCheckpoint(w.url, formatAddCheckpoint(12, await tree.proof(12, 20), tampered))).status).toBe(403);
    const stranger = await noteSigner((await generateNoteKey('stranger.test/log')).skey);
    const r404 = await addCheckpoint(w.url, formatAddCheckpoint(0, [], await tree.note(stranger, 3, 'stranger.test/log')));
    expect(r404).toEqual({ status: 404, type: 'text/plain; charset=utf-8', body: 'unknown log origin\n' });
    expect((await addCheckpoint(w.url, `old 01\n\n${good}`)).status).toBe(400);
    expect((await addCheckpoint(w.url, `old 12\nnot-base64!\n\n${good}`)).status).toBe(400);
    expect((await fetch(`${w.url}/add-checkpoint`)).status).toBe(405);
  });

  it('serves the latest cosigned checkpoint for monitors at /<sha256(origin)>/checkpoint', async () => {
    const hash = createHash('sha256').update(ORIGIN).digest('hex');
    const r = await fetch(`${w.url}/${hash}/checkpoint`);
    expect(r.status).toBe(200);
    const n = await openNote(await r.text(), [await noteVerifier(logVkey), await noteVerifier(witnessVkey)]);
    expect(n.text).toBe(formatCheckpoint({ origin: ORIGIN, size: 12, rootHash: await tree.root(12) }));
    expect(n.sigs.map((s) => s.name).sort()).toEqual([ORIGIN, WITNESS_NAME].sort());
    expect((await fetch(`${w.url}/${'0'.repeat(64)}/checkpoint`)).status).toBe(404);
  });

  it('a restart (SIGTERM) keeps its state: it still refuses the rollback and knows size 12', async () => {
    expect(await stopWitness(w)).toEqual({ code: 0, signal: null });
    const files = readdirSync(path.join(state, 'logs'));
    expect(files).toEqual([`${createHash('sha256').update(ORIGIN).digest('hex')}.json`]);
    expect(statSync(path.join(state, 'logs', files[0]!)).mode & 0o777).toBe(0o600);
    expect(JSON.parse(readFileSync(path.join(state, 'logs', files[0]!), 'utf8'))).toMatchObject({ origin: ORIGIN, size: 12, root: toBase64(await tree.root(12)) });
    w = await spawnWitness(state);
    expect(w.started.logs).toEqual([{ origin: ORIGIN, size: 12 }]);
    expect(await addCheckpoint(w.url, formatAddCheckpoint(0, [], await tree.note(log, 8)))).toEqual({ status: 409, type: 'text/x.tlog.size', body: '12\n' });
    const fork = await new Tree('forked').grow(12);
    expect((await addCheckpoint(w.url, formatAddCheckpoint(12, [], await fork.note(log, 12)))).status).toBe(422);
    const r = await addCheckpoint(w.url, formatAddCheckpoint(12, await tree.proof(12, 20), await tree.note(log, 20)));
    expect(r.status).toBe(200);
  });

  it('after SIGKILL (no clean shutdown) it still holds the last size it answered 200 for', async () => {
    expect(await stopWitness(w, 'SIGKILL')).toEqual({ code: null, signal: 'SIGKILL' });
    w = await spawnWitness(state);
    expect(w.started.logs).toEqual([{ origin: ORIGIN, size: 20 }]);
    expect(await addCheckpoint(w.url, formatAddCheckpoint(12, await tree.proof(12, 20), await tree.note(log, 20)))).toEqual({
      status: 409,
      type: 'text/x.tlog.size',
      body: '20\n',
    });
  });

  it('a second witness on the same state directory is refused (exit 1, one line)', async () => {
    const r = await runCli(['audit', 'witness', 'serve', '--state', state, '--port', '0'], { LOKI_HOME: state });
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(new RegExp(`^loki: the state directory ${state} is in use by another witness \\(pid ${w.child.pid}\\)\\n$`));
  });
});

/** An in-memory cosignature store (what the server keeps in audit_witness_cosignatures). */
function memStore(initial: CosignatureRecord[] = []): CosignatureStore & { rows: CosignatureRecord[] } {
  const rows = [...initial];
  return {
    rows,
    latest: (key, origin) =>
      rows.filter((r) => r.witnessKey === key && (origin === undefined || r.origin === origin)).sort((x, y) => y.size - x.size)[0] ?? null,
    save: (r) => {
      rows.push(r);
    },
  };
}

describe('the witness pusher against a real witness process', () => {
  const PORIGIN = 'pusher.test/log';
  let home: string;
  let state: string;
  let port: number;
  let url: string;
  let wkey: string;
  let log: NoteSigner;
  const tree = new Tree('pushed');
  const fast = { initialMs: 100, maxMs: 400 };

  beforeAll(async () => {
    home = tempHome('loki-witness-');
    state = path.join(home, 'state');
    const k = await generateNoteKey(PORIGIN);
    log = await noteSigner(k.skey);
    const init = await runCli(['audit', 'witness', 'init', '--state', state, '--name', 'witness.test/p', '--log', `${PORIGIN} ${k.vkey}`, '--json'], {
      LOKI_HOME: home,
    });
    expect(init.code).toBe(0);
    wkey = (JSON.parse(init.stdout) as Json).verifier_key;
    port = await freePort();
    url = `http://127.0.0.1:${port}`;
  });
  afterAll(async () => {
    for (const c of children) c.kill('SIGKILL');
    rmSync(home, { recursive: true, force: true });
  });

  it('retries with backoff while the witness is down, never blocking the caller, then stores a verified cosignature', async () => {
    const store = memStore();
    const pusher = createWitnessPusher({ witnesses: [{ url, vkey: wkey }], proof: (o, n) => tree.proof(o, n), store, backoff: fast });
    await tree.grow(10);
    const note = await tree.note(log, 10, PORIGIN);
    const t0 = Date.now();
    pusher.onCheckpoint(note); // returns at once
    expect(Date.now() - t0).toBeLessThan(50);
    const down = await until('two failed attempts', async () => (pusher.status()[0]!.consecutive_failures >= 2 ? pusher.status()[0]! : null));
    expect(down).toMatchObject({ url, last_cosigned_size: null, pending_size: 10, last_error: 'cannot reach the witness: ECONNREFUSED' });
    await spawnWitness(state, port);
    const up = await until('the cosignature', async () => (pusher.status()[0]!.last_cosigned_size === 10 ? pusher.status()[0]! : null));
    expect(up).toMatchObject({ url, verifier_key: wkey, last_cosigned_size: 10, witness_size: 10, pending_size: null, last_error: null, last_error_at: null, consecutive_failures: 0 });
    expect(store.rows).toHaveLength(1);
    const row = store.rows[0]!;
    expect(row).toMatchObject({ witnessKey: wkey, origin: PORIGIN, size: 10, rootHash: toBase64(await tree.root(10)) });
    expect(await verifyCosignature(bodyOf(note), row.signature, wkey)).toBe(row.timestamp);
    expect(up.last_cosigned_at).toBe(new Date(row.timestamp * 1000).toISOString());
    await pusher.close();
  });

  it('pushes only the newest of several checkpoints, with the consistency proof from the size the witness acknowledged', async () => {
    const store = memStore();
    const pusher = createWitnessPusher({ witnesses: [{ url, vkey: wkey }], proof: (o, n) => tree.proof(o, n), store, backoff: fast });
    await tree.grow(30);
    // A fresh store knows nothing: the first push says old 0, the witness answers 409 "10", the retry proves 10 → 30.
    const notes = await Promise.all([20, 25, 30, 15].map((n) => tree.note(log, n, PORIGIN)));
    // Handed over in one go: the worker wakes up to the newest (30); 15 is older than what is pending.
    for (const note of notes) pusher.onCheckpoint(note);
    expect(pusher.status()[0]).toMatchObject({ pending_size: 30 });
    await pusher.idle();
    expect(store.rows.map((r) => r.size)).toEqual([30]);
    expect(store.rows.at(-1)).toMatchObject({ size: 30, rootHash: toBase64(await tree.root(30)) });
    expect(pusher.status()[0]).toMatchObject({ last_cosigned_size: 30, witness_size: 30, pending_size: null, last_error: null });
    await pusher.close();
  });

  it('a rolled-back log (a backup with a smaller tree) cannot get a cosignature: 409 with the larger size, recorded as the error', async () => {
    const store = memStore();
    const pusher = createWitnessPusher({ witnesses: [{ url, vkey: wkey }], proof: (o, n) => tree.proof(o, n), store, backoff: fast });
    pusher.onCheckpoint(await tree.note(log, 25, PORIGIN));
    await pusher.idle();
    expect(store.rows).toEqual([]);
    expect(pusher.status()[0]).toMatchObject({
      last_cosigned_size: null,
      witness_size: 30,
      pending_size: null,
      last_error: `the witness holds size 30 of ${PORIGIN}, beyond this checkpoint (size 25): the log is behind what was cosigned`,
      consecutive_failures: 1,
    });
    await pusher.close();
  });

  it('a forked log (other entries, a larger tree) cannot get a cosignature: 409, then 422 on the proof from 30', async () => {
    const fork = await new Tree('forked').grow(40);
    const store = memStore();
    const pusher = createWitnessPusher({ witnesses: [{ url, vkey: wkey }], proof: (o, n) => fork.proof(o, n), store, backoff: fast });
    pusher.onCheckpoint(await fork.note(log, 40, PORIGIN));
    await pusher.idle();
    expect(store.rows).toEqual([]);
    expect(pusher.status()[0]).toMatchObject({
      last_cosigned_size: null,
      pending_size: null,
      last_error: 'HTTP 422: the consistency proof from 30 to 40 does not verify',
      consecutive_failures: 1,
    });
    // The honest log carries on.
    await tree.grow(40);
    const honest = createWitnessPusher({
      witnesses: [{ url, vkey: wkey }],
      proof: (o, n) => tree.proof(o, n),
      store: memStore([{ witnessKey: wkey, origin: PORIGIN, size: 30, rootHash: '', timestamp: 0, signature: '', receivedAt: 0 }]),
    });
    honest.onCheckpoint(await tree.note(log, 40, PORIGIN));
    await honest.idle();
    expect(honest.status()[0]).toMatchObject({ last_cosigned_size: 40, last_error: null });
    await honest.close();
    await pusher.close();
  });
});

describe('the server pushes its checkpoint notes to LOKI_AUDIT_WITNESSES and reports them in /api/status', () => {
  let home: string;
  let state: string;
  let s: TestServer;
  let w: WitnessProc;
  let wkey: string;
  let origin: string;
  let logVkey: string;
  let sign: NoteSigner;

  /** A new checkpoint with a note of the server's tree, stored as the server stores them. */
  async function checkpointNote(): Promise<{ size: number; note: string }> {
    const audit = s.runtime.audit;
    if (audit.tlog) {
      const cp = await audit.checkpoint('manual');
      return { size: cp!.size, note: cp!.note! };
    }
    const tip = await audit.storage.tip();
    const note = await signNote(formatCheckpoint({ origin, size: tip.seq, rootHash: await treeRootAt(audit.storage, tip.seq, audit.hasher) }), [sign]);
    const body = { origin: audit.signer!.origin, size: tip.seq, head_hash: tip.hash, time: Date.now(), kind: 'manual' };
    await audit.storage.insertCheckpoint({ kind: 'manual', size: tip.seq, headHash: tip.hash, time: body.time, jws: await audit.signer!.sign(body), note });
    return { size: tip.seq, note };
  }

  async function appendEntries(n: number) {
    for (let i = 0; i < n; i++) await s.runtime.audit.append(sampleEntry(i));
  }

  beforeAll(async () => {
    home = tempHome('loki-witness-');
    state = path.join(home, 'witness');
    const init = await runCli(['audit', 'witness', 'init', '--state', state, '--name', 'witness.test/s', '--json'], { LOKI_HOME: home });
    expect(init.code).toBe(0);
    wkey = (JSON.parse(init.stdout) as Json).verifier_key;
    const port = await freePort();
    s = await startTestServer({ LOKI_HOME: home, LOKI_AUDIT_WITNESSES: `http://127.0.0.1:${port}/=${wkey}` });
    // The log key: the server's own note key once it has one, else a test key whose notes are stored like the server's.
    const tl = s.runtime.audit.tlog;
    if (tl) {
      ({ origin, vkey: logVkey } = tl);
      sign = tl.signer;
    } else {
      origin = 'loki.test/audit';
      const k = await generateNoteKey(origin);
      logVkey = k.vkey;
      sign = await noteSigner(k.skey);
    }
    w = await spawnWitness(state, port, ['--log', `${origin} ${logVkey}`]);
  });
  afterAll(async () => {
    await s?.stop();
    for (const c of children) c.kill('SIGKILL');
    rmSync(home, { recursive: true, force: true });
  });

  it('cosignatures are stored (verified) and /api/status shows each witness', async () => {
    await appendEntries(7);
    const first = await checkpointNote();
    await until('the first cosignature', async () => (s.runtime.witnessPusher!.status()[0]!.last_cosigned_size === first.size ? true : null));
    await appendEntries(300);
    const second = await checkpointNote();
    await until('the second cosignature', async () => (s.runtime.witnessPusher!.status()[0]!.last_cosigned_size === second.size ? true : null));

    const rows = s.runtime.db
      .prepare('SELECT witness_key AS witnessKey, origin, size, root_hash AS rootHash, timestamp, signature FROM audit_witness_cosignatures ORDER BY size')
      .all() as CosignatureRecord[];
    expect(rows.map((r) => [r.witnessKey, r.origin, r.size])).toEqual([
      [wkey, origin, first.size],
      [wkey, origin, second.size],
    ]);
    for (const [r, cp] of [
      [rows[0]!, first],
      [rows[1]!, second],
    ] as const) {
      expect(await verifyCosignature(bodyOf(cp.note), r.signature, wkey)).toBe(r.timestamp);
    }
    // The stored note with the stored cosignatures added opens with the log key and the witness key.
    const cosigned = await cosignedNoteReader(s.runtime.db)({ note: second.note });
    const n = await openNote(cosigned!, [await noteVerifier(logVkey), await noteVerifier(wkey)]);
    expect(n.sigs.map((x) => x.name)).toEqual([origin, 'witness.test/s']);
    expect(createSqliteCosignatureStore(s.runtime.db).latest(wkey)).toMatchObject({ size: second.size, origin });

    const status = (await (await s.req('/api/status')).json()) as Json;
    expect(status.witnesses).toEqual([
      {
        url: `http://127.0.0.1:${new URL(w.url).port}`,
        verifier_key: wkey,
        last_cosigned_size: second.size,
        last_cosigned_at: new Date(rows[1]!.timestamp * 1000).toISOString(),
        witness_size: second.size,
        pending_size: null,
        last_attempt_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
        last_error: null,
        last_error_at: null,
        consecutive_failures: 0,
      },
    ]);
    // The witness agrees: it holds the second checkpoint.
    const mon = await fetch(`${w.url}/${createHash('sha256').update(origin).digest('hex')}/checkpoint`);
    expect(bodyOf(await mon.text())).toBe(bodyOf(second.note));
  });
});

describe('loki audit witness: usage errors', () => {
  it('serve without a key, init with another name, a bad --log: exit 2 with one line', async () => {
    const home = tempHome('loki-witness-');
    const state = path.join(home, 's');
    const noKey = await runCli(['audit', 'witness', 'serve', '--state', state, '--log', `${ORIGIN} ${(await generateNoteKey(ORIGIN)).vkey}`], { LOKI_HOME: home });
    expect(noKey).toEqual({
      code: 2,
      stdout: '',
      stderr: `loki: no witness key in ${state}/witness-key; create one with \`loki audit witness init --state ${state}\`\n`,
    });
    const pub = await runCli(['audit', 'witness', 'pubkey', '--state', state], { LOKI_HOME: home });
    expect(pub.code).toBe(2);
    expect((await runCli(['audit', 'witness', 'init', '--state', state, '--name', 'a.test/w'], { LOKI_HOME: home })).code).toBe(0);
    const again = await runCli(['audit', 'witness', 'init', '--state', state, '--name', 'b.test/w'], { LOKI_HOME: home });
    expect(again).toEqual({
      code: 2,
      stdout: '',
      stderr: `loki: ${state}/witness-key already holds the key of witness "a.test/w", not "b.test/w"; a witness key is never replaced\n`,
    });
    const noLogs = await runCli(['audit', 'witness', 'serve', '--state', state], { LOKI_HOME: home });
    expect(noLogs).toEqual({
      code: 2,
      stdout: '',
      stderr: `loki: no log to witness: give --log "ORIGIN VKEY", or list the logs in ${state}/witnessed-logs (loki audit witness init --log …)\n`,
    });
    const badLog = await runCli(['audit', 'witness', 'serve', '--state', state, '--log', 'nope'], { LOKI_HOME: home });
    expect(badLog.code).toBe(2);
    expect(badLog.stderr).toBe('loki: --log "nope": "nope" is not a note verifier key (malformed verifier id); expected NAME+KEYID+BASE64, optionally after the origin\n');
    const cosKey = (await runCli(['audit', 'witness', 'pubkey', '--state', state], { LOKI_HOME: home })).stdout.trim();
    const notLogKey = await runCli(['audit', 'witness', 'serve', '--state', state, '--log', cosKey], { LOKI_HOME: home });
    expect(notLogKey.stderr).toBe(`loki: --log ${JSON.stringify(cosKey)}: ${cosKey} is not a log's Ed25519 note key (type 0x01)\n`);
    const port = await runCli(['audit', 'witness', 'serve', '--state', state, '--port', '70000'], { LOKI_HOME: home });
    expect(port).toEqual({ code: 2, stdout: '', stderr: 'loki: --port must be an integer from 0 to 65535 (got "70000")\n' });
    rmSync(home, { recursive: true, force: true });
    // Ten CLI processes one after another: on a loaded 2-core host each can take several seconds to start.
  }, 180_000);
});

describe('LOKI_AUDIT_WITNESSES', () => {
  const defaults = { home: '/tmp', cwd: '/tmp' };
  const allowed =
    'URL=VERIFIERKEY entries separated by spaces or commas: an http(s) URL without "=" and the witness\'s cosignature verifier key (NAME+KEYID+BASE64, type 0x04; `loki audit witness pubkey` prints it)';
  let a: string;
  let b: string;
  let logKey: string;
  beforeAll(async () => {
    a = (await generateCosignatureKey('w.test/a')).vkey;
    b = (await generateCosignatureKey('w.test/b')).vkey;
    logKey = (await generateNoteKey('w.test/log')).vkey;
  });

  it('parses URL=VERIFIERKEY entries separated by spaces or commas', () => {
    expect(loadConfig({}, defaults).auditWitnesses).toEqual([]);
    const c = loadConfig({ LOKI_AUDIT_WITNESSES: ` http://127.0.0.1:9/w/=${a},\n https://w.example=${b} ` }, defaults);
    expect(c.auditWitnesses).toEqual([
      { url: 'http://127.0.0.1:9/w', vkey: a },
      { url: 'https://w.example', vkey: b },
    ]);
  });

  it('refuses a bad entry with one line naming the variable and the entry', () => {
    const bad = (v: string) => {
      try {
        loadConfig({ LOKI_AUDIT_WITNESSES: v }, defaults);
      } catch (err) {
        expect(err).toBeInstanceOf(ConfigError);
        return (err as Error).message;
      }
      throw new Error(`accepted ${v}`);
    };
    expect(bad('http://127.0.0.1:9')).toBe(`LOKI_AUDIT_WITNESSES="http://127.0.0.1:9" is invalid: expected ${allowed}`);
    expect(bad(`ftp://x=${a}`)).toBe(`LOKI_AUDIT_WITNESSES="ftp://x=${a}" is invalid: expected ${allowed}`);
    // A log's note key (type 0x01) is not a witness key; nor is one with a wrong key id.
    expect(bad(`http://x=${logKey}`)).toBe(`LOKI_AUDIT_WITNESSES="http://x=${logKey}" is invalid: expected ${allowed}`);
    const wrongId = a.replace(/\+([0-9a-f]{8})\+/, (_m, id: string) => `+${id === '00000000' ? '00000001' : '00000000'}+`);
    expect(bad(`http://x=${wrongId}`)).toBe(`LOKI_AUDIT_WITNESSES="http://x=${wrongId}" is invalid: expected ${allowed}`);
    expect(bad(`http://x=${a} http://y=${a}`)).toBe(`LOKI_AUDIT_WITNESSES="http://y=${a}" is invalid: expected ${allowed}, each witness key once`);
  });

  it('a bad value stops `loki dashboard` with exit 2 and one line', async () => {
    const home = tempHome('loki-witness-');
    const r = await runCli(['dashboard'], { LOKI_HOME: home, LOKI_AUDIT_WITNESSES: `http://127.0.0.1:9=${a.slice(0, -2)}` });
    expect(r).toEqual({ code: 2, stdout: '', stderr: `loki: LOKI_AUDIT_WITNESSES="http://127.0.0.1:9=${a.slice(0, -2)}" is invalid: expected ${allowed}\n` });
    rmSync(home, { recursive: true, force: true });
  });
});

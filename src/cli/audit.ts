import { closeSync, existsSync, openSync, readFileSync, writeSync } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import type { AuditEntry, VerifyResult } from '../audit/chain';
import { ExportFormatError, verifyExport } from '../audit/export';
import { importLegacyAudit, verifyLegacyDirCli } from '../audit/legacy-cli';
import { entryFromRow } from '../audit/log';
import { keyPaths } from '../audit/note-key';
import { pruneAudit } from '../audit/retention';
import { proveRecord } from '../audit/tlog/merkle';
import { NoteError, type NoteVerifier, noteVerifier } from '../audit/tlog/note';
import { formatTlogProof, ProofFormatError, ProofVerifyError, parseTlogProof, verifyTlogProof } from '../audit/tlog/proof-file';
import { utf8 } from '../audit/tlog/sha256';
import { type ExternalCheckpoint, looksLikeNote } from '../audit/verify';
import { sha256Hex } from '../db/sqlite-audit';
import { cosignedNoteReader } from '../db/sqlite-witness';
import { configOrExit } from '../node';
import { cliActor, fail, openLocal, recordCli, terminalSafe } from './common';

/** A saved checkpoint: a JWS, a C2SP note (kept byte for byte), or the JSON `checkpoint` prints (jws and/or note). */
function readCheckpointFile(file: string): ExternalCheckpoint {
  let raw: string;
  try {
    raw = readFileSync(file, 'utf8');
  } catch (err) {
    fail(`cannot read checkpoint file ${file}: ${(err as Error).message}`);
  }
  const text = raw.trim();
  if (text.startsWith('{')) {
    try {
      const obj = JSON.parse(text) as { jws?: unknown; note?: unknown; checkpoint?: { jws?: unknown; note?: unknown } };
      const jws = obj.jws ?? obj.checkpoint?.jws;
      const note = obj.note ?? obj.checkpoint?.note;
      if (typeof jws === 'string' || typeof note === 'string') {
        return { jws: typeof jws === 'string' ? jws : null, note: typeof note === 'string' ? note : null };
      }
    } catch {
      // fall through
    }
    fail(`checkpoint file ${file} holds no "jws" or "note"`);
  }
  // A note's text ends in a newline that is part of what is signed.
  if (looksLikeNote(raw)) return { note: raw.endsWith('\n') ? raw : `${raw}\n` };
  return { jws: text };
}

/** A note verifier key given on the command line: the `name+id+key` string, or a file holding it. */
async function readVerifierKey(value: string, option: string): Promise<NoteVerifier> {
  let vkey = value.trim();
  if (!/^[^+\s]+\+[0-9a-fA-F]{8}\+/.test(vkey) && existsSync(vkey)) {
    try {
      vkey = readFileSync(vkey, 'utf8').trim();
    } catch (err) {
      fail(`cannot read ${option} file ${value}: ${(err as Error).message}`);
    }
  }
  try {
    return await noteVerifier(vkey);
  } catch (err) {
    if (err instanceof NoteError) fail(`${option} is not a note verifier key such as name+1a2b3c4d+AbC… (${err.message})`);
    throw err;
  }
}

function printVerify(result: VerifyResult, json: boolean | undefined): void {
  if (json) {
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    return;
  }
  if (result.valid) {
    process.stdout.write(
      `audit log valid: ${result.entries_checked} entries checked, head ${result.last_hash}${result.checkpoint ? `, checkpoint at ${result.checkpoint.size}` : ''}\n`,
    );
  } else {
    process.stdout.write(`audit log INVALID: ${result.reason} at seq ${result.first_invalid_seq ?? '-'} (${result.entries_checked} entries checked before it)\n`);
  }
}

function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

function parseCount(v: string): number {
  if (!/^\d{1,6}$/.test(v) || Number(v) < 1) fail(`-n must be a whole number from 1 to 999999 (got "${v}")`);
  return Number(v);
}

function parseDate(v: string): number {
  const ms = /^\d+$/.test(v) ? Number(v) : Date.parse(v);
  if (!Number.isFinite(ms)) fail(`--before must be an ISO 8601 date such as 2026-01-31 (got "${v}")`);
  return ms;
}

/** `--since`: an ISO 8601 time, or a time ago such as 30s, 10m, 2h, 7d. */
export function parseSince(v: string, now: number): number {
  const ago = /^(\d{1,9})([smhdw])$/.exec(v.trim());
  if (ago) return now - Number(ago[1]) * { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }[ago[2] as 's' | 'm' | 'h' | 'd' | 'w'];
  const ms = /^\d{4}-\d\d-\d\d/.test(v) ? Date.parse(v) : Number.NaN;
  if (!Number.isFinite(ms)) fail(`--since must be an ISO 8601 time such as 2026-01-31T12:00:00Z, or a time ago such as 10m, 2h or 7d (got "${v}")`);
  return ms;
}

/** `k=v, k=v` of an entry's details, short. */
function detailsText(details: Record<string, unknown> | null | undefined): string {
  if (!details) return '';
  const parts = Object.entries(details)
    .filter(([k]) => k !== 'via')
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`);
  const text = parts.join(', ');
  return text.length > 160 ? `${text.slice(0, 159)}…` : text;
}

/**
 * One audit entry as a line a person reads:
 * `#42  2026-01-31 12:00:00Z  token.create  by cli:alice  token tok_… ok  name=ci, role=viewer`.
 */
export function auditLine(e: AuditEntry): string {
  const when = new Date(e.ts).toISOString().replace('T', ' ').replace(/\.\d{3}Z$/, 'Z');
  const actor = e.actor.name || e.actor.id || e.actor.type;
  const parts = [`#${e.seq}`, when, e.action, `by ${actor}${e.actor.type && e.actor.name ? ` (${e.actor.type})` : ''}`];
  if (e.request) parts.push(`${e.request.method} ${e.request.path}`);
  if (e.resource) parts.push(`${e.resource.type}${e.resource.id ? ` ${e.resource.id}` : ''}`);
  const status = e.outcome.status !== null ? `${e.outcome.status} ` : '';
  parts.push(e.outcome.success ? `${status}ok` : `${status}FAILED${e.outcome.error ? `: ${e.outcome.error}` : ''}`);
  if (e.client?.ip) parts.push(`from ${e.client.ip}`);
  const details = detailsText(e.details as Record<string, unknown> | null);
  if (details) parts.push(details);
  return terminalSafe(parts.join('  '));
}

function parseSeq(v: string): number {
  if (!/^[1-9]\d{0,14}$/.test(v)) fail(`SEQ must be an entry's sequence number, a whole number from 1 (got "${v}")`);
  return Number(v);
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** Create `file` (mode 0600, never overwriting) and write `text`. */
function writeNew(file: string, text: string): void {
  let fd: number;
  try {
    fd = openSync(file, 'wx', 0o600);
  } catch (err) {
    fail(`cannot create ${file}: ${(err as NodeJS.ErrnoException).code === 'EEXIST' ? 'file exists' : (err as Error).message}`);
  }
  try {
    writeSync(fd, text);
  } finally {
    closeSync(fd);
  }
}

export function auditCommands(enterprise: Command): void {
  const audit = enterprise.command('audit').description('the tamper-evident audit log');

  audit
    .command('verify')
    .description('verify the chain, the Merkle tree and every checkpoint (exit 0 valid, 1 tampered, 2 error)')
    .option('--json', 'print the result as JSON')
    .option('--checkpoint <file>', 'a checkpoint saved earlier (JWS, C2SP note, or `checkpoint` JSON): detects a rolled-back or rewritten log')
    .option('--file <export.jsonl>', 'verify an exported file offline instead of the database')
    .option('--pubkey <jwk.json>', "with --file: the public key to trust (default: the export header's)")
    .option('--key <verifier>', "the log's note verifier key to trust (name+id+key, or a file holding it) instead of its own key file")
    .option('--witness-key <verifier>', 'require a valid cosignature by this witness (name+id+key of type 0x04) on the checkpoint; repeatable', collect, [])
    .action(async (o: { json?: boolean; checkpoint?: string; file?: string; pubkey?: string; key?: string; witnessKey: string[] }) => {
      const external = o.checkpoint ? readCheckpointFile(o.checkpoint) : null;
      const pinned = o.key ? await readVerifierKey(o.key, '--key') : null;
      const witnesses: NoteVerifier[] = [];
      for (const w of o.witnessKey) witnesses.push(await readVerifierKey(w, '--witness-key'));
      if (witnesses.some((w) => w.type !== 0x04)) fail('--witness-key must be a cosignature verifier key (signature type 0x04)');
      let result: VerifyResult;
      if (o.file) {
        if (!existsSync(o.file)) fail(`no such export file: ${o.file}`);
        let jwk = null;
        if (o.pubkey) {
          try {
            jwk = JSON.parse(readFileSync(o.pubkey, 'utf8'));
          } catch (err) {
            fail(`cannot read public key ${o.pubkey}: ${(err as Error).message}`);
          }
        }
        if (witnesses.length > 0) fail('--witness-key works on the database; for an export, verify its checkpoint note with --checkpoint');
        try {
          result = await verifyExport(o.file, { external, publicJwk: jwk, noteKey: pinned?.vkey ?? null, sha256: sha256Hex });
        } catch (err) {
          if (err instanceof ExportFormatError) {
            const r: VerifyResult = { valid: false, entries_checked: 0, first_invalid_seq: null, reason: `malformed_export: ${err.message}`, last_hash: '', checkpoint: null };
            printVerify(r, o.json);
            process.exit(1);
          }
          fail(`cannot verify ${o.file}: ${(err as Error).message}`);
        }
      } else {
        // Verification never creates a key: a missing one is an error naming the file.
        const config = configOrExit();
        const keys = keyPaths(config.dbPath);
        if (config.auditEnabled && !existsSync(keys.signing)) {
          fail(`the audit signing key ${keys.signing} does not exist; verify never creates a key (restore the file, or verify an export with --file and --pubkey)`);
        }
        const ctx = await openLocal({ createKeys: false, syncTree: false });
        try {
          const hasNotes = (await ctx.audit.storage.latestNote()) !== null;
          const verifier = pinned ?? ctx.audit.tlog?.verifier ?? null;
          if (config.auditEnabled && !verifier && hasNotes) {
            fail(`the audit note key ${keys.note} does not exist but the log has checkpoint notes; verify never creates a key (restore the file, or pass the saved verifier key with --key)`);
          }
          // Cosignatures the server received from its witnesses are stored beside the notes.
          const cosignedNote = witnesses.length > 0 ? cosignedNoteReader(ctx.db) : undefined;
          result = await ctx.audit.verify({ external, witnesses, noteVerifier: verifier, cosignedNote });
          if (!result.valid) {
            await recordCli(ctx, 'audit.verify_failed', {
              success: false,
              error: String(result.reason),
              details: { first_invalid_seq: result.first_invalid_seq, reason: result.reason },
            }).catch(() => {});
          }
        } finally {
          await ctx.close();
        }
      }
      printVerify(result, o.json);
      process.exit(result.valid ? 0 : 1);
    });

  audit
    .command('prove')
    .description('write a C2SP tlog-proof that entry SEQ is in the log (its inclusion proof, the entry and a signed checkpoint)')
    .argument('<seq>', "the entry's sequence number")
    .requiredOption('--out <file.tlog-proof>', 'output file (must not exist)')
    .option('--json', 'print {seq, tree_size, file} as JSON')
    .action(async (seqArg: string, o: { out: string; json?: boolean }) => {
      const seq = parseSeq(seqArg);
      if (existsSync(o.out)) fail(`cannot create ${o.out}: file exists`);
      const ctx = await openLocal();
      try {
        await ctx.audit.drain();
        const storage = ctx.audit.storage;
        const tip = await storage.tip();
        if (seq > tip.seq) fail(`there is no entry ${seq}: the log has ${tip.seq} entries`);
        const row = (await storage.range(seq, seq))[0];
        if (!row) fail(`entry ${seq} was pruned: a proof needs the entry itself`);
        const tree = await storage.treeStatus();
        if (tree.size < seq || tree.state === 'damaged') fail(`the Merkle tree does not cover entry ${seq} (${tree.state}, ${tree.size} leaves); run loki enterprise audit verify`);
        let cp = await storage.latestNote();
        if (!cp || cp.size < seq) cp = await ctx.audit.checkpoint('manual');
        if (!cp?.note) fail('no checkpoint note could be signed (audit disabled, or no note key)');
        const proof = await proveRecord(cp.size, seq - 1, (idx) => storage.readHashes(idx), ctx.audit.hasher);
        writeNew(o.out, formatTlogProof({ extra: utf8(row.entry), index: seq - 1, proof, checkpoint: cp.note }));
        await recordCli(ctx, 'audit.prove', { details: { seq, tree_size: cp.size, file: path.resolve(o.out) } });
        if (o.json) printJson({ seq, tree_size: cp.size, file: path.resolve(o.out) });
        else process.stdout.write(`wrote the proof that entry ${seq} is in the tree of size ${cp.size} to ${o.out}\n`);
      } finally {
        await ctx.close();
      }
    });

  audit
    .command('verify-proof')
    .description('check a .tlog-proof offline, without the database (exit 0 valid, 1 invalid, 2 error)')
    .argument('<file>', 'a C2SP tlog-proof file')
    .requiredOption('--key <verifier>', "the log's note verifier key (name+id+key, or a file holding it)")
    .option('--entry <file>', 'the entry to check, as its canonical text (default: the entry carried in the proof)')
    .option('--json', 'print the result as JSON')
    .action(async (file: string, o: { key: string; entry?: string; json?: boolean }) => {
      let text: string;
      try {
        text = readFileSync(file, 'utf8');
      } catch (err) {
        fail(`cannot read ${file}: ${(err as Error).message}`);
      }
      let proof: ReturnType<typeof parseTlogProof>;
      try {
        proof = parseTlogProof(text);
      } catch (err) {
        if (err instanceof ProofFormatError) fail(`${file} is not a c2sp.org/tlog-proof@v1 file (${err.message})`);
        throw err;
      }
      const verifier = await readVerifierKey(o.key, '--key');
      let entry: Uint8Array | null = null;
      if (o.entry) {
        try {
          // An entry saved to a file may have gained a final newline; entries never end in one.
          entry = utf8(readFileSync(o.entry, 'utf8').replace(/\n$/, ''));
        } catch (err) {
          fail(`cannot read --entry file ${o.entry}: ${(err as Error).message}`);
        }
      }
      const out = (r: Record<string, unknown>, human: string, code: number): never => {
        process.stdout.write(o.json ? `${JSON.stringify(r, null, 2)}\n` : `${human}\n`);
        process.exit(code);
      };
      try {
        const v = await verifyTlogProof(proof, { verifiers: [verifier], entry });
        const entryText = new TextDecoder().decode(v.entry);
        const seq = v.index + 1;
        const base = { origin: v.checkpoint.origin, tree_size: v.checkpoint.size, index: v.index, seq };
        if (!entryText.startsWith(`{"seq":${seq},`)) {
          out({ valid: false, reason: 'entry_seq_mismatch', ...base }, `proof INVALID: entry_seq_mismatch: the entry at index ${v.index} does not say seq ${seq}`, 1);
        }
        out(
          { valid: true, reason: null, ...base, entry: JSON.parse(entryText) },
          `proof valid: entry ${seq} is in ${v.checkpoint.origin} at tree size ${v.checkpoint.size} (checkpoint signed by ${verifier.name})`,
          0,
        );
      } catch (err) {
        if (err instanceof ProofVerifyError) out({ valid: false, reason: err.reason, message: err.message, index: proof.index, seq: proof.index + 1 }, `proof INVALID: ${err.reason}: ${err.message}`, 1);
        throw err;
      }
    });

  audit
    .command('tail')
    .description('print the latest entries, one readable line each (--json: the raw entries); -f follows new entries as they commit')
    .option('-n, --lines <n>', 'how many entries', parseCount, 20)
    .option('-f, --follow', 'keep printing entries as they are committed')
    .option('--action <action>', 'only entries of this action (e.g. token.create, http.request, auth.failure)')
    .option('--actor <name>', "only entries by this actor name (e.g. cli:alice, a token's name)")
    .option('--since <time>', 'only entries from this time on: ISO 8601 (2026-01-31T12:00Z) or ago (30s, 10m, 2h, 7d)', (v) => parseSince(v, Date.now()))
    .option('--json', 'print each entry as its JSON line (with hash and prev_hash)')
    .action(async (o: { lines: number; follow?: boolean; action?: string; actor?: string; since?: number; json?: boolean }) => {
      const ctx = await openLocal({ signer: false, syncTree: false });
      const filters = { action: o.action, actor: o.actor, since: o.since };
      const print = (rows: Awaited<ReturnType<typeof ctx.audit.query>>) => {
        let text = '';
        for (const r of rows) {
          const e = entryFromRow(r);
          text += `${o.json ? JSON.stringify(e) : auditLine(e)}\n`;
        }
        if (text) process.stdout.write(text);
      };
      const rows = (await ctx.audit.query({ afterSeq: 0, limit: o.lines, order: 'desc', ...filters })).reverse();
      print(rows);
      if (rows.length === 0 && !o.json && !o.follow) process.stderr.write(`loki: no audit entries${o.action || o.actor || o.since !== undefined ? ' match' : ' yet'}\n`);
      let last = rows.length ? rows[rows.length - 1]!.seq : 0;
      if (!o.follow) {
        await ctx.close();
        return;
      }
      if (last === 0) last = (await ctx.audit.storage.tip()).seq;
      const stop = () => {
        void ctx.close().then(() => process.exit(0));
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
      for (;;) {
        const more = await ctx.audit.query({ afterSeq: last, limit: 500, ...filters });
        print(more);
        if (more.length) last = more[more.length - 1]!.seq;
        if (more.length < 500) await new Promise((r) => setTimeout(r, 200));
      }
    });

  audit
    .command('export')
    .description('write the log with its checkpoints and Merkle tree as JSONL (mode 0600), verifiable offline')
    .requiredOption('--out <file>', 'output file (must not exist)')
    .option('--json', 'print {file, entries} as JSON')
    .action(async (o: { out: string; json?: boolean }) => {
      const ctx = await openLocal();
      let fd: number;
      try {
        fd = openSync(o.out, 'wx', 0o600);
      } catch (err) {
        await ctx.close();
        fail(`cannot create ${o.out}: ${(err as NodeJS.ErrnoException).code === 'EEXIST' ? 'file exists' : (err as Error).message}`);
      }
      try {
        await ctx.audit.checkpoint('manual');
        const signer = ctx.audit.signer;
        const header = {
          type: 'header',
          format: 'loki-audit-export/1',
          origin: signer?.origin ?? null,
          public_jwk: signer ? await signer.publicJwk() : null,
          note_vkey: ctx.audit.tlog?.vkey ?? null,
          exported_at: new Date().toISOString(),
        };
        writeSync(fd, `${JSON.stringify(header)}\n`);
        let after = 0;
        let n = 0;
        for (;;) {
          const rows = await ctx.audit.query({ afterSeq: after, limit: 5000 });
          if (rows.length === 0) break;
          let chunk = '';
          for (const r of rows) chunk += `${JSON.stringify({ type: 'entry', seq: r.seq, entry: r.entry, prev_hash: r.prevHash, hash: r.hash })}\n`;
          writeSync(fd, chunk);
          after = rows[rows.length - 1]!.seq;
          n += rows.length;
        }
        for (const cp of await ctx.audit.storage.checkpoints()) {
          writeSync(fd, `${JSON.stringify({ type: 'checkpoint', kind: cp.kind, size: cp.size, head_hash: cp.headHash, time: cp.time, jws: cp.jws, note: cp.note })}\n`);
        }
        // The Merkle tree's tiles: they carry the tree over entries a prune removed.
        for (let level = 0; level < 8; level++) {
          const tiles = await ctx.audit.storage.tileRange(level, 0, Number.MAX_SAFE_INTEGER);
          if (tiles.length === 0) break;
          let chunk = '';
          for (const t of tiles) chunk += `${JSON.stringify({ type: 'tile', level, n: t.n, hashes: Buffer.from(t.data).toString('base64') })}\n`;
          writeSync(fd, chunk);
        }
        closeSync(fd);
        await recordCli(ctx, 'audit.export', { details: { file: path.resolve(o.out), entries: n } });
        if (o.json) printJson({ file: path.resolve(o.out), entries: n });
        else process.stdout.write(`exported ${n} entries to ${o.out}\n`);
      } finally {
        await ctx.close();
      }
    });

  audit
    .command('checkpoint')
    .description('print the latest signed checkpoint (save it: verify --checkpoint detects a rollback or rewrite)')
    .option('--new', 'sign a fresh checkpoint of the current head first')
    .option('--note', 'print only the C2SP checkpoint note (the signed tree head)')
    .option('--json', 'print JSON (the default; with --note: {note})')
    .action(async (o: { new?: boolean; note?: boolean; json?: boolean }) => {
      const ctx = await openLocal(o.new ? {} : { signer: false, syncTree: false });
      try {
        if (o.new) await ctx.audit.checkpoint('manual');
        if (o.note) {
          const cp = await ctx.audit.storage.latestNote();
          if (!cp?.note) fail('no checkpoint note yet (the server signs one at start and every 1,000 entries; or use --new)', 1);
          if (o.json) printJson({ note: cp.note });
          else process.stdout.write(cp.note);
          return;
        }
        const cp = await ctx.audit.storage.latestCheckpoint();
        if (!cp) fail('no checkpoint yet (the log has no entries)', 1);
        process.stdout.write(`${JSON.stringify({ kind: cp.kind, size: cp.size, head_hash: cp.headHash, time: cp.time, jws: cp.jws, note: cp.note })}\n`);
      } finally {
        await ctx.close();
      }
    });

  audit
    .command('pubkey')
    .description('print the public key (JWK) that verifies checkpoints; --note: the C2SP note verifier key')
    .option('--note', 'print the note verifier key (name+id+key) that tlog clients and verify-proof use')
    .option('--json', 'print JSON (the JWK is JSON already; with --note: {note_vkey})')
    .action(async (o: { note?: boolean; json?: boolean }) => {
      const ctx = await openLocal();
      try {
        const signer = ctx.audit.signer;
        if (!signer) fail('audit is disabled (LOKI_AUDIT_DISABLED)');
        if (o.note) {
          if (!ctx.audit.tlog) fail('no note key');
          if (o.json) printJson({ note_vkey: ctx.audit.tlog.vkey });
          else process.stdout.write(`${ctx.audit.tlog.vkey}\n`);
          return;
        }
        process.stdout.write(`${JSON.stringify(await signer.publicJwk())}\n`);
      } finally {
        await ctx.close();
      }
    });

  audit
    .command('prune')
    .description('delete entries before a date, keeping a signed checkpoint at the cut so the rest still verifies')
    .requiredOption('--before <date>', 'ISO 8601 date; entries older than this are deleted')
    .option('--json', 'print {status, deleted, cut_seq, cut_hash} as JSON')
    .action(async (o: { before: string; json?: boolean }) => {
      const before = parseDate(o.before);
      const ctx = await openLocal();
      try {
        const r = await pruneAudit(ctx.audit, before, { newest: 'refuse', record: (details) => recordCli(ctx, 'audit.prune', { details }) });
        if (r.status === 'refused' && r.why === 'invalid') fail(`refusing to prune: the log does not verify (${r.reason} at seq ${r.firstInvalidSeq})`, 1);
        if (r.status === 'refused') fail('refusing to prune the newest entry: the cut would leave no head to link to', 1);
        if (o.json) printJson(r.status === 'nothing' ? { status: 'nothing', deleted: 0, cut_seq: null, cut_hash: null } : { status: r.status, deleted: r.deleted, cut_seq: r.cut.seq, cut_hash: r.cut.hash });
        else if (r.status === 'nothing') process.stdout.write('nothing to prune\n');
        else process.stdout.write(`pruned ${r.deleted} entries through seq ${r.cut.seq}; prune checkpoint signed at ${r.cut.hash}\n`);
      } finally {
        await ctx.close();
      }
    });

  audit
    .command('verify-legacy')
    .description('verify Loki Mode JSONL audit logs byte-exactly (exit 0 valid, 1 tampered, 2 error)')
    .argument('<dir>', 'directory holding audit-*.jsonl')
    .option('--json', 'print JSON')
    .action(async (dir: string, o: { json?: boolean }) => {
      process.exit(await verifyLegacyDirCli(dir, Boolean(o.json)));
    });

  audit
    .command('import-legacy')
    .description('import Loki Mode JSONL audit logs, recording the legacy tip hash in the new chain')
    .argument('<dir>', 'directory holding audit-*.jsonl')
    .option('--json', 'print {imported, tip_hash, marker_seq} as JSON')
    .action(async (dir: string, o: { json?: boolean }) => {
      const ctx = await openLocal();
      try {
        const r = await importLegacyAudit(ctx.audit, dir, cliActor());
        if (o.json) printJson({ imported: r.imported, tip_hash: r.tipHash, marker_seq: r.markerSeq });
        else process.stdout.write(`imported ${r.imported} legacy entries; legacy tip ${r.tipHash} recorded at seq ${r.markerSeq}\n`);
      } catch (err) {
        fail((err as Error).message, 1);
      } finally {
        await ctx.close();
      }
    });
}

import { openSync, readFileSync, writeSync, closeSync, existsSync } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import type { VerifyResult } from '../audit/chain';
import { ExportFormatError, verifyExport } from '../audit/export';
import { entryFromRow } from '../audit/log';
import { importLegacyAudit, verifyLegacyDirCli } from '../audit/legacy-cli';
import { pruneAudit } from '../audit/retention';
import { sha256Hex } from '../db/sqlite-audit';
import { cliActor, fail, openLocal, recordCli } from './common';

function readCheckpointFile(file: string): string {
  let text: string;
  try {
    text = readFileSync(file, 'utf8').trim();
  } catch (err) {
    fail(`cannot read checkpoint file ${file}: ${(err as Error).message}`);
  }
  if (text.startsWith('{')) {
    try {
      const obj = JSON.parse(text) as { jws?: unknown; checkpoint?: { jws?: unknown } };
      const jws = obj.jws ?? obj.checkpoint?.jws;
      if (typeof jws === 'string') return jws;
    } catch {
      // fall through
    }
    fail(`checkpoint file ${file} holds no "jws"`);
  }
  return text;
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

function parseCount(v: string): number {
  if (!/^\d{1,6}$/.test(v) || Number(v) < 1) fail(`-n must be a whole number from 1 to 999999 (got "${v}")`);
  return Number(v);
}

function parseDate(v: string): number {
  const ms = /^\d+$/.test(v) ? Number(v) : Date.parse(v);
  if (!Number.isFinite(ms)) fail(`--before must be an ISO 8601 date such as 2026-01-31 (got "${v}")`);
  return ms;
}

export function auditCommands(enterprise: Command): void {
  const audit = enterprise.command('audit').description('the tamper-evident audit log');

  audit
    .command('verify')
    .description('verify the chain and checkpoints (exit 0 valid, 1 tampered, 2 error)')
    .option('--json', 'print the result as JSON')
    .option('--checkpoint <file>', 'a checkpoint (JWS) saved earlier: detects a rewritten log')
    .option('--file <export.jsonl>', 'verify an exported file offline instead of the database')
    .option('--pubkey <jwk.json>', 'with --file: the public key to trust (default: the export header\'s)')
    .action(async (o: { json?: boolean; checkpoint?: string; file?: string; pubkey?: string }) => {
      const external = o.checkpoint ? readCheckpointFile(o.checkpoint) : null;
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
        try {
          result = await verifyExport(o.file, { external, publicJwk: jwk, sha256: sha256Hex });
        } catch (err) {
          if (err instanceof ExportFormatError) {
            const r: VerifyResult = { valid: false, entries_checked: 0, first_invalid_seq: null, reason: `malformed_export: ${err.message}`, last_hash: '', checkpoint: null };
            printVerify(r, o.json);
            process.exit(1);
          }
          fail(`cannot verify ${o.file}: ${(err as Error).message}`);
        }
      } else {
        const ctx = await openLocal();
        try {
          result = await ctx.audit.verify({ external });
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
    .command('tail')
    .description('print the latest entries; -f follows new entries as they commit')
    .option('-n, --lines <n>', 'how many entries', parseCount, 20)
    .option('-f, --follow', 'keep printing entries as they are committed')
    .action(async (o: { lines: number; follow?: boolean }) => {
      const ctx = await openLocal({ signer: false });
      const rows = (await ctx.audit.query({ afterSeq: 0, limit: o.lines, order: 'desc' })).reverse();
      let last = 0;
      for (const r of rows) {
        process.stdout.write(`${JSON.stringify(entryFromRow(r))}\n`);
        last = r.seq;
      }
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
        const more = await ctx.audit.query({ afterSeq: last, limit: 500 });
        for (const r of more) {
          process.stdout.write(`${JSON.stringify(entryFromRow(r))}\n`);
          last = r.seq;
        }
        if (more.length < 500) await new Promise((r) => setTimeout(r, 200));
      }
    });

  audit
    .command('export')
    .description('write the log with its checkpoints as JSONL (mode 0600), verifiable offline')
    .requiredOption('--out <file>', 'output file (must not exist)')
    .action(async (o: { out: string }) => {
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
          writeSync(fd, `${JSON.stringify({ type: 'checkpoint', kind: cp.kind, size: cp.size, head_hash: cp.headHash, time: cp.time, jws: cp.jws })}\n`);
        }
        closeSync(fd);
        await recordCli(ctx, 'audit.export', { details: { file: path.resolve(o.out), entries: n } });
        process.stdout.write(`exported ${n} entries to ${o.out}\n`);
      } finally {
        await ctx.close();
      }
    });

  audit
    .command('checkpoint')
    .description('print the latest signed checkpoint (save it: verify --checkpoint detects a rewrite)')
    .option('--new', 'sign a fresh checkpoint of the current head first')
    .action(async (o: { new?: boolean }) => {
      const ctx = await openLocal();
      try {
        if (o.new) await ctx.audit.checkpoint('manual');
        const cp = await ctx.audit.storage.latestCheckpoint();
        if (!cp) fail('no checkpoint yet (the log has no entries)', 1);
        process.stdout.write(`${JSON.stringify({ kind: cp.kind, size: cp.size, head_hash: cp.headHash, time: cp.time, jws: cp.jws })}\n`);
      } finally {
        await ctx.close();
      }
    });

  audit
    .command('pubkey')
    .description('print the public key (JWK) that verifies checkpoints')
    .action(async () => {
      const ctx = await openLocal();
      try {
        const signer = ctx.audit.signer;
        if (!signer) fail('audit is disabled (LOKI_AUDIT_DISABLED)');
        process.stdout.write(`${JSON.stringify(await signer.publicJwk())}\n`);
      } finally {
        await ctx.close();
      }
    });

  audit
    .command('prune')
    .description('delete entries before a date, keeping a signed checkpoint at the cut so the rest still verifies')
    .requiredOption('--before <date>', 'ISO 8601 date; entries older than this are deleted')
    .action(async (o: { before: string }) => {
      const before = parseDate(o.before);
      const ctx = await openLocal();
      try {
        const r = await pruneAudit(ctx.audit, before, { newest: 'refuse', record: (details) => recordCli(ctx, 'audit.prune', { details }) });
        if (r.status === 'refused' && r.why === 'invalid') fail(`refusing to prune: the log does not verify (${r.reason} at seq ${r.firstInvalidSeq})`, 1);
        if (r.status === 'refused') fail('refusing to prune the newest entry: the cut would leave no head to link to', 1);
        if (r.status === 'nothing') process.stdout.write('nothing to prune\n');
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
    .action(async (dir: string) => {
      const ctx = await openLocal();
      try {
        const r = await importLegacyAudit(ctx.audit, dir, cliActor());
        process.stdout.write(`imported ${r.imported} legacy entries; legacy tip ${r.tipHash} recorded at seq ${r.markerSeq}\n`);
      } catch (err) {
        fail((err as Error).message, 1);
      } finally {
        await ctx.close();
      }
    });
}

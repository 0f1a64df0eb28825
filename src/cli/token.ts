import type { Command } from 'commander';
import { importLegacyTokens } from '../auth/legacy-import';
import { createToken, parseExpiresDays, publicToken, revokeToken, TokenInputError } from '../auth/token-service';
import { cliActor, fail, openLocal, recordCli } from './common';

function parseExpiresOption(v: string): number {
  try {
    const n = parseExpiresDays(v);
    if (n === null) throw new TokenInputError('missing');
    return n;
  } catch {
    fail(`--expires must be a whole number of days from 1 to 3650 (got "${v}")`);
  }
}

export function tokenCommands(enterprise: Command): void {
  const token = enterprise.command('token').description('manage API tokens (works directly on the database; no server needed)');

  token
    .command('generate')
    .description('create a token; its secret is printed once')
    .argument('<name>', 'a unique name (1-255 characters)')
    .option('--role <role>', 'admin, operator, viewer, auditor or worker', 'viewer')
    .option('--scopes <list>', 'comma-separated subset of the role\'s scopes')
    .option('--expires <days>', 'expire after this many days (1-3650)', parseExpiresOption)
    .option('--worker-id <id>', 'for --role worker (required): the only worker id the token may claim under')
    .option('--json', 'print JSON')
    .action(async (name: string, o: { role: string; scopes?: string; expires?: number; workerId?: string; json?: boolean }) => {
      const ctx = await openLocal();
      try {
        const { record, plaintext } = await createToken(
          ctx.store.tokens,
          { name, role: o.role, scopes: o.scopes?.split(',').map((s) => s.trim()).filter(Boolean), expiresDays: o.expires, workerId: o.workerId, createdBy: cliActor().name },
          Date.now(),
        );
        await recordCli(ctx, 'token.create', {
          resource: { type: 'token', id: record.id },
          details: { name: record.name, role: record.role, scopes: record.scopes, expires_at: record.expiresAt, worker_id: record.workerId },
        });
        await ctx.store.events.insert('token_created', null, { id: record.id, name: record.name, role: record.role }, Date.now());
        if (o.json) {
          process.stdout.write(`${JSON.stringify({ ...publicToken(record), token: plaintext }, null, 2)}\n`);
        } else {
          process.stdout.write(
            `Created token ${record.name} (${record.id}), role ${record.role}, scopes ${record.scopes.join(',')}${record.expiresAt ? `, expires ${new Date(record.expiresAt).toISOString()}` : ''}\n\n  ${plaintext}\n\nStore it now: it is not shown again.\n`,
          );
        }
      } catch (err) {
        if (err instanceof TokenInputError) fail(err.message, err.kind === 'conflict' ? 1 : 2);
        throw err;
      } finally {
        await ctx.close();
      }
    });

  token
    .command('list')
    .description('list tokens (never their secrets)')
    .option('--all', 'include revoked tokens')
    .option('--json', 'print JSON')
    .action(async (o: { all?: boolean; json?: boolean }) => {
      const ctx = await openLocal({ signer: false });
      try {
        const list = (await ctx.store.tokens.list(Boolean(o.all))).map(publicToken);
        if (o.json) {
          process.stdout.write(`${JSON.stringify(list, null, 2)}\n`);
          return;
        }
        if (list.length === 0) {
          process.stdout.write('no tokens\n');
          return;
        }
        const rows = list.map((t) => [t.id, t.name, t.role, t.scopes.join(','), t.status, t.expires_at ?? '-', t.last_used_at ?? '-']);
        const head = ['ID', 'NAME', 'ROLE', 'SCOPES', 'STATUS', 'EXPIRES', 'LAST USED'];
        const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
        for (const r of [head, ...rows]) process.stdout.write(`${r.map((v, i) => String(v).padEnd(widths[i]!)).join('  ')}\n`);
      } finally {
        await ctx.close();
      }
    });

  token
    .command('revoke')
    .description('revoke a token by id or name (takes effect on the next request)')
    .argument('<id-or-name>')
    .option('--json', 'print the revoked token as JSON (never its secret)')
    .action(async (idOrName: string, o: { json?: boolean }) => {
      const ctx = await openLocal();
      try {
        const t = await revokeToken(ctx.store.tokens, idOrName, Date.now());
        await recordCli(ctx, 'token.revoke', { resource: { type: 'token', id: t.id }, details: { name: t.name } });
        await ctx.store.events.insert('token_revoked', null, { id: t.id, name: t.name }, Date.now());
        if (o.json) process.stdout.write(`${JSON.stringify(publicToken(t), null, 2)}\n`);
        else process.stdout.write(`Revoked token ${t.name} (${t.id})\n`);
      } catch (err) {
        if (err instanceof TokenInputError) fail(err.message, 1);
        throw err;
      } finally {
        await ctx.close();
      }
    });

  token
    .command('import-legacy')
    .description("import a Loki Mode tokens.json (salted and unsalted hashes, revocations, expiry, roles)")
    .argument('<path>', 'path to tokens.json')
    .option('--json', 'print JSON')
    .action(async (file: string, o: { json?: boolean }) => {
      const ctx = await openLocal();
      try {
        const result = await importLegacyTokens(ctx.store.tokens, file, Date.now());
        await recordCli(ctx, 'token.import_legacy', { details: { file, imported: result.imported.map((t) => t.name), skipped: result.skipped } });
        if (o.json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
        else {
          for (const t of result.imported) process.stdout.write(`imported ${t.name} (${t.role}${t.revoked ? ', revoked' : ''})\n`);
          for (const s of result.skipped) process.stdout.write(`skipped ${s.name}: ${s.reason}\n`);
          process.stdout.write(`${result.imported.length} imported, ${result.skipped.length} skipped\n`);
        }
      } catch (err) {
        fail((err as Error).message);
      } finally {
        await ctx.close();
      }
    });
}

/**
 * Create a token in the Workers deployment's D1 database (the Node CLI's
 * `loki enterprise token generate` works on the SQLite file; a Worker has none).
 * Same validation and record as the CLI (src/auth/token-service.ts): only the
 * SHA-256 goes to D1, the plaintext is printed once. The first admin token of a
 * deployment is made this way.
 *
 *   npx tsx scripts/workerd-token.ts NAME [--role R] [--scopes a,b] [--expires DAYS]
 *                                    [--remote | --persist-to DIR] [--json]
 *
 * Default target: the local D1 of `wrangler dev`. Exit 2 on bad input.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { createToken, TokenInputError } from '../src/auth/token-service';
import type { TokenRecord, TokenStore } from '../src/db/store';

const ROOT = path.resolve(import.meta.dirname, '..');
const WRANGLER = path.join(ROOT, 'node_modules/wrangler/bin/wrangler.js');

/** An SQLite string literal: quotes doubled (SQLite has no backslash escapes). */
const text = (v: string | null) => (v === null ? 'NULL' : `'${v.replaceAll("'", "''")}'`);
const int = (v: number | null) => (v === null ? 'NULL' : String(Math.trunc(v)));

function insertSql(t: TokenRecord): string {
  return (
    'INSERT INTO tokens (id, name, hash, legacy_salt, role, scopes, created_at, expires_at, last_used_at, revoked_at, created_by, source) VALUES (' +
    [text(t.id), text(t.name), text(t.hash), text(t.legacySalt), text(t.role), text(JSON.stringify(t.scopes))].join(', ') +
    `, ${int(t.createdAt)}, ${int(t.expiresAt)}, ${int(t.lastUsedAt)}, ${int(t.revokedAt)}, ${text(t.createdBy)}, ${text(t.source)})`
  );
}

/** Captures the record createToken would store; nothing else is called. */
function capturingStore(): TokenStore & { record: TokenRecord | null } {
  const unused = () => Promise.reject(new Error('not available here'));
  const store = {
    record: null as TokenRecord | null,
    async insert(t: TokenRecord) {
      store.record = t;
    },
    findByHash: unused,
    listLegacySalted: unused,
    rehash: unused,
    get: unused,
    list: unused,
    revoke: unused,
    touch: unused,
  };
  return store;
}

function fail(message: string, code: number): never {
  process.stderr.write(`workerd-token: ${message}\n`);
  process.exit(code);
}

const parse = () =>
  parseArgs({
    allowPositionals: true,
    options: {
      role: { type: 'string', default: 'viewer' },
      scopes: { type: 'string' },
      expires: { type: 'string' },
      remote: { type: 'boolean', default: false },
      'persist-to': { type: 'string' },
      json: { type: 'boolean', default: false },
    },
  });

async function main(): Promise<void> {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse();
  } catch (err) {
    fail((err as Error).message, 2);
  }
  const { values, positionals } = parsed;
  if (positionals.length !== 1) fail('usage: workerd-token.ts NAME [--role R] [--scopes a,b] [--expires DAYS] [--remote | --persist-to DIR] [--json]', 2);
  if (values.remote && values['persist-to']) fail('--persist-to applies to the local database only', 2);

  const store = capturingStore();
  let plaintext: string;
  try {
    ({ plaintext } = await createToken(
      store,
      {
        name: positionals[0],
        role: values.role,
        scopes: values.scopes?.split(',').map((s) => s.trim()),
        expiresDays: values.expires,
        createdBy: 'workerd-token',
      },
      Date.now(),
    ));
  } catch (err) {
    if (err instanceof TokenInputError) fail(err.message, 2);
    throw err;
  }
  const record = store.record!;

  const target = values.remote ? ['--remote'] : ['--local', ...(values['persist-to'] ? ['--persist-to', values['persist-to']] : [])];
  const args = [WRANGLER, 'd1', 'execute', 'DB', ...target, '--command', insertSql(record)];
  const env = { ...process.env, CI: 'true', WRANGLER_SEND_METRICS: 'false', WRANGLER_HIDE_BANNER: 'true' };
  const result = await new Promise<{ code: number | null; output: string }>((resolve, reject) => {
    const child = spawn(process.execPath, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d) => {
      output += d;
    });
    child.stderr.on('data', (d) => {
      output += d;
    });
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, output }));
  });
  if (result.code !== 0) {
    if (/UNIQUE constraint failed: tokens\.name/.test(result.output)) fail(`a token named "${record.name}" already exists`, 1);
    fail(`wrangler d1 execute failed:\n${result.output.trim()}`, 1);
  }

  if (values.json) {
    process.stdout.write(`${JSON.stringify({ id: record.id, name: record.name, role: record.role, scopes: record.scopes, token: plaintext })}\n`);
  } else {
    process.stdout.write(`${plaintext}\n`);
    process.stderr.write(`created ${record.role} token "${record.name}" (${record.id}); the token above is shown once\n`);
  }
}

await main();

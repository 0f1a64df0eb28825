import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, startTestServer, type TestServer, tempHome } from '../helpers/server';

const FIXTURE = new URL('../../../shared/fixtures/loki-mode-legacy/single/', import.meta.url).pathname;
const plain = JSON.parse(readFileSync(`${FIXTURE}tokens.plain.json`, 'utf8')) as Record<string, { token: string; role: string | null; revoked?: boolean }>;

/**
 * The fixture as if it had been written just now: every timestamp moved by the same
 * amount, so a token that had 7 days left when Loki Mode wrote it still has them
 * (the fixture's dates are absolute, and the wall clock passes them).
 */
function freshFixture(): string {
  const doc = JSON.parse(readFileSync(`${FIXTURE}tokens.json`, 'utf8')) as { tokens: Record<string, Record<string, unknown>> };
  const created = Object.values(doc.tokens).map((t) => Date.parse(String(t.created_at)));
  const shift = Date.now() - Math.max(...created);
  for (const t of Object.values(doc.tokens)) {
    for (const k of ['created_at', 'expires_at', 'last_used', 'last_used_at', 'revoked_at']) {
      if (typeof t[k] === 'string' && !Number.isNaN(Date.parse(t[k] as string))) t[k] = new Date(Date.parse(t[k] as string) + shift).toISOString();
    }
  }
  const file = path.join(mkdtempSync(path.join(tmpdir(), 'loki-legacy-')), 'tokens.json');
  writeFileSync(file, JSON.stringify(doc, null, 2));
  return file;
}

describe('loki enterprise token import-legacy (Loki Mode tokens.json)', () => {
  let home: string;
  let s: TestServer;
  let tokensFile: string;
  beforeAll(async () => {
    home = tempHome();
    tokensFile = freshFixture();
    const r = await runCli(['enterprise', 'token', 'import-legacy', tokensFile], { LOKI_HOME: home });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('6 imported, 0 skipped');
    s = await startTestServer({ LOKI_HOME: home, LOKI_ENTERPRISE_AUTH: 'true' });
  });
  afterAll(async () => {
    await s?.stop();
  });

  it('lists the imported tokens with their roles, the revoked one as revoked', async () => {
    const r = await runCli(['enterprise', 'token', 'list', '--all', '--json'], { LOKI_HOME: home });
    const list = JSON.parse(r.stdout) as { name: string; role: string; status: string; source: string; worker_id: string | null }[];
    // Legacy tokens predate worker binding: none is bound to a worker id.
    expect(list.every((t) => t.worker_id === null)).toBe(true);
    expect(list.map((t) => [t.name, t.role, t.status, t.source]).sort()).toEqual(
      [
        ['admin-bot', 'admin', 'active', 'legacy'],
        ['compliance', 'auditor', 'active', 'legacy'],
        ['dash-viewer', 'viewer', 'active', 'legacy'],
        ['legacy-scopes', 'operator', 'active', 'legacy'],
        ['ops', 'operator', 'active', 'legacy'],
        ['old-ci', 'operator', 'revoked', 'legacy'],
      ].sort(),
    );
  });

  it.each([
    ['admin-bot', '/api/enterprise/tokens', 200],
    ['ops', '/api/status', 200],
    ['ops', '/api/enterprise/audit', 403],
    ['dash-viewer', '/api/status', 200],
    ['dash-viewer', '/api/enterprise/tokens', 403],
    ['compliance', '/api/enterprise/audit', 200],
    ['legacy-scopes', '/api/status', 200],
    ['old-ci', '/api/status', 401],
  ])('%s (old plaintext) on %s → %i', async (name, path, status) => {
    const r = await s.req(path, { token: plain[name]!.token });
    expect(r.status).toBe(status);
    // A second use goes through the re-hashed fast path and gives the same answer.
    expect((await s.req(path, { token: plain[name]!.token })).status).toBe(status);
  });

  it('a wrong legacy-shaped token is refused', async () => {
    const t = plain['admin-bot']!.token;
    const wrong = `${t.slice(0, -1)}${t.endsWith('A') ? 'B' : 'A'}`;
    expect((await s.req('/api/status', { token: wrong })).status).toBe(401);
  });

  it('importing again skips what is already there', async () => {
    const r = await runCli(['enterprise', 'token', 'import-legacy', tokensFile], { LOKI_HOME: home });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('0 imported, 6 skipped');
  });

  it('a missing or corrupt file is a one-line error, exit 2', async () => {
    const r = await runCli(['enterprise', 'token', 'import-legacy', '/nonexistent/tokens.json'], { LOKI_HOME: tempHome() });
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^loki: /);
  });
});

describe('token CLI bad input', () => {
  it.each(['0', '-1', '1.5', '30d'])('--expires %s → clear error, exit 2', async (v) => {
    const r = await runCli(['enterprise', 'token', 'generate', 'x', '--expires', v], { LOKI_HOME: tempHome() });
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`loki: --expires must be a whole number of days from 1 to 3650 (got "${v}")\n`);
  });

  it('widening scopes is an error', async () => {
    const r = await runCli(['enterprise', 'token', 'generate', 'x', '--role', 'viewer', '--scopes', 'read,write'], { LOKI_HOME: tempHome() });
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('loki: scope "write" is wider than role viewer allows\n');
  });

  it('--role worker needs --worker-id: without it, or with a malformed id, exit 2 and one line; --worker-id is only for the worker role', async () => {
    const home = tempHome();
    const none = await runCli(['enterprise', 'token', 'generate', 'w', '--role', 'worker'], { LOKI_HOME: home });
    expect(none.code).toBe(2);
    expect(none.stderr).toBe('loki: a worker token must be bound to a worker id (worker_id, --worker-id): the protocol refuses it under any other id\n');
    const bad = await runCli(['enterprise', 'token', 'generate', 'w', '--role', 'worker', '--worker-id', 'a b'], { LOKI_HOME: home });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toBe('loki: worker_id must be 1-64 letters, digits, ".", "_" or "-" (got "a b")\n');
    const viewer = await runCli(['enterprise', 'token', 'generate', 'v', '--role', 'viewer', '--worker-id', 'w1'], { LOKI_HOME: home });
    expect(viewer.code).toBe(2);
    expect(viewer.stderr).toBe('loki: worker_id is only for tokens of the worker role\n');
    // Nothing was created by the refused commands.
    expect((await runCli(['enterprise', 'token', 'list', '--all'], { LOKI_HOME: home })).stdout).toBe('no tokens\n');
    const ok = await runCli(['enterprise', 'token', 'generate', 'w', '--role', 'worker', '--worker-id', 'build-1', '--json'], { LOKI_HOME: home });
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ name: 'w', role: 'worker', worker_id: 'build-1', scopes: ['sandbox'], status: 'active' });
  });

  it('generate --json prints the secret once; revoke by name; list hides revoked unless --all', async () => {
    const home = tempHome();
    const g = await runCli(['enterprise', 'token', 'generate', 'ci', '--role', 'operator', '--scopes', 'read', '--expires', '7', '--json'], { LOKI_HOME: home });
    expect(g.code).toBe(0);
    const t = JSON.parse(g.stdout);
    expect(t).toMatchObject({ name: 'ci', role: 'operator', scopes: ['read'], status: 'active' });
    expect(t.token).toMatch(/^loki_[0-9A-Za-z]{46}$/);
    const dup = await runCli(['enterprise', 'token', 'generate', 'ci'], { LOKI_HOME: home });
    expect(dup.code).toBe(1);
    expect(dup.stderr).toBe('loki: a token named "ci" already exists\n');
    expect((await runCli(['enterprise', 'token', 'revoke', 'ci'], { LOKI_HOME: home })).code).toBe(0);
    expect((await runCli(['enterprise', 'token', 'list'], { LOKI_HOME: home })).stdout).toBe('no tokens\n');
    const all = JSON.parse((await runCli(['enterprise', 'token', 'list', '--all', '--json'], { LOKI_HOME: home })).stdout);
    expect(all[0].status).toBe('revoked');
    const again = await runCli(['enterprise', 'token', 'revoke', 'ci'], { LOKI_HOME: home });
    expect(again.code).toBe(1);
    expect(again.stderr).toBe('loki: token "ci" is already revoked\n');
  });
});

/**
 * Upgrading a database made before session policies and worker binding
 * (0000_init only) to 0001: the rows already there keep working where that is safe
 * and are refused where it is not.
 */
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateToken, sha256Hex } from '../../src/auth/tokens';
import { MIGRATIONS_DIR, migrate, openSqlite } from '../../src/db/sqlite';
import { startTestServer, type TestServer, tempHome } from '../helpers/server';
import { makeToken } from '../helpers/tokens';
import { makeWorkspace, tempRoot } from '../sessions/helpers';

// biome-ignore lint/suspicious/noExplicitAny: JSON bodies in assertions
type Json = any;

/** A copy of migrations/ that stops after 0000_init. */
function migrationsUpTo0000(): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'loki-migrations-'));
  mkdirSync(path.join(dir, 'meta'));
  copyFileSync(path.join(MIGRATIONS_DIR, '0000_init.sql'), path.join(dir, '0000_init.sql'));
  const journal = JSON.parse(readFileSync(path.join(MIGRATIONS_DIR, 'meta', '_journal.json'), 'utf8')) as { entries: { tag: string }[] };
  writeFileSync(path.join(dir, 'meta', '_journal.json'), JSON.stringify({ ...journal, entries: journal.entries.filter((e) => e.tag === '0000_init') }));
  return dir;
}

describe('0000 → 0001 (session policies, worker-bound tokens)', () => {
  let home: string;
  let root: string;
  let ws: string;
  let s: TestServer;
  let oldWorker: string;
  const oldSession = 'ses_0123456789abcdef';

  beforeAll(async () => {
    home = tempHome();
    root = tempRoot();
    ws = makeWorkspace(root, 'ws');
    const dir = migrationsUpTo0000();
    const db = openSqlite(path.join(home, 'dashboard', 'loki.db'));
    expect(migrate(db, dir)).toEqual(['0000_init']);
    oldWorker = generateToken();
    const now = Date.now();
    db.prepare(
      "INSERT INTO tokens (id, name, hash, role, scopes, created_at, source) VALUES ('tok_old', 'old-worker', ?, 'worker', '[\"sandbox\"]', ?, 'native')",
    ).run(await sha256Hex(oldWorker), now);
    db.prepare(
      "INSERT INTO sessions (id, workspace, prd, sandbox, status, created_by, created_at) VALUES (?, ?, 'prd.md', 0, 'queued', 'local', ?)",
    ).run(oldSession, ws, now);
    db.close();
    rmSync(dir, { recursive: true, force: true });
    s = await startTestServer({ LOKI_HOME: home, LOKI_WORKSPACE_ROOTS: root, LOKI_ENTERPRISE_AUTH: 'true' });
  });
  afterAll(async () => {
    await s?.stop();
    rmSync(home, { recursive: true, force: true });
    rmSync(root, { recursive: true, force: true });
  });

  it('the server applies the migrations after 0000 only', () => {
    expect(s.runtime.applied).toEqual(['0001_sessions_policy_worker_binding', '0002_audit_tlog', '0003_audit_witness_cosignatures']);
  });

  it('an old worker token is unbound (worker_id null) and refused by the protocol with a clear message', async () => {
    const admin = (await makeToken(s, 'root', 'admin')).token;
    const list = await (await s.req('/api/enterprise/tokens', { token: admin })).json();
    expect((list as Json).tokens.find((t: Json) => t.name === 'old-worker')).toMatchObject({ role: 'worker', worker_id: null, status: 'active' });
    const r = await s.req('/api/sandbox/jobs/claim', {
      method: 'POST',
      token: oldWorker,
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ worker_id: 'w1', wait_ms: 0 }),
    });
    expect(r.status).toBe(403);
    expect(((await r.json()) as Json).error).toMatchObject({
      code: 'forbidden',
      message: 'this token is not bound to a worker id; create the worker token with --worker-id',
    });
  });

  it('an old queued session (no policy) is shown as such and failed at claim, never run', async () => {
    const admin = (await makeToken(s, 'root2', 'admin')).token;
    const before = (await (await s.req(`/api/sessions/${oldSession}`, { token: admin })).json()) as Json;
    expect(before).toMatchObject({ status: 'queued', sandbox: false, host_session: true, policy: null, policy_sha256: null, result: null });
    const bound = (await makeToken(s, 'new-worker', 'worker', { workerId: 'w1' })).token;
    const r = await s.req('/api/sandbox/jobs/claim', {
      method: 'POST',
      token: bound,
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ worker_id: 'w1', wait_ms: 0 }),
    });
    expect(r.status).toBe(204);
    const after = (await (await s.req(`/api/sessions/${oldSession}`, { token: admin })).json()) as Json;
    expect(after).toMatchObject({ status: 'failed', reason: 'the session has no valid stored policy (missing, or not matching its SHA-256); start it again' });
  });
});

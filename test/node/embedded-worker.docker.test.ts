/**
 * One command runs the whole job: `loki dashboard` with LOKI_EMBEDDED_WORKER=on
 * and a real Docker engine runs sandboxed sessions with no separate worker. The
 * embedded worker killed with SIGKILL is restarted; SIGTERM to the server stops
 * the worker first (its running session reported stopped), revokes its token
 * (audited) and leaves no container behind, warm pool included.
 */
import { createHash } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import type Docker from 'dockerode';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { LokiClient } from '../../src/client';
import { OUTPUT_PREFIX } from '../../src/embedded-worker';
import { describeDocker, dockerAvailable } from '../helpers/docker';
import { until } from '../helpers/process';
import { runCli, type SpawnedServer, spawnServer, tempHome } from '../helpers/server';
import { runLoki } from '../helpers/worker';
import { makeWorkspace, providerConfig, tempRoot } from '../sessions/helpers';

const probe = await dockerAvailable();
const WORKER_ID = `embedded-ew-${process.pid}`;

interface EmbeddedStatus {
  state: string;
  reason: string | null;
  pid: number | null;
  restarts: number;
  worker_id: string | null;
}

describeDocker('embedded sandbox worker (LOKI_EMBEDDED_WORKER=on, real engine)', probe, (docker: Docker) => {
  let home: string;
  let root: string;
  let server: SpawnedServer;
  let opsToken: string;
  let client: LokiClient;

  const status = async () => {
    const r = await fetch(`${server.url}/api/status`, { headers: { Authorization: `Bearer ${opsToken}` } });
    expect(r.status).toBe(200);
    return ((await r.json()) as { embedded_worker: EmbeddedStatus }).embedded_worker;
  };
  const workerStarts = () => server.output().split('\n').filter((l) => l.startsWith(OUTPUT_PREFIX) && l.includes('"msg":"sandbox worker started"')).length;
  const containers = () => docker.listContainers({ all: true, filters: { label: [`loki.worker=${WORKER_ID}`] } });
  const db = <T>(fn: (d: Database.Database) => T): T => {
    const d = new Database(path.join(home, 'dashboard', 'loki.db'), { readonly: true });
    try {
      return fn(d);
    } finally {
      d.close();
    }
  };
  const start = (cwd: string, args: string[]) => runLoki(['start', ...args], { cwd, env: { HOME: home, LOKI_HOME: home, LOKI_URL: server.url, LOKI_TOKEN: opsToken } });

  beforeAll(async () => {
    home = tempHome('loki-embedded-home-');
    root = tempRoot('loki-embedded-');
    // Auth on: the worker can only claim with the token the server minted for it.
    server = await spawnServer(
      {
        LOKI_EMBEDDED_WORKER: 'on',
        LOKI_EMBEDDED_WORKER_WARM: '1',
        LOKI_WORKER_ID: 'ew-' + process.pid,
        LOKI_WORKSPACE_ROOTS: root,
        LOKI_ENTERPRISE_AUTH: 'true',
        LOKI_SANDBOX_KILL_GRACE_MS: '1000',
      },
      home,
    );
    const r = await runCli(['enterprise', 'token', 'generate', 'ops', '--role', 'operator', '--json'], { LOKI_HOME: home, HOME: home });
    expect(r.code, r.stderr).toBe(0);
    opsToken = (JSON.parse(r.stdout) as { token: string }).token;
    client = new LokiClient({ url: server.url, token: opsToken });
    await until('the embedded worker to start', async () => workerStarts() === 1, 60_000);
  }, 90_000);

  afterAll(async () => {
    if (server && server.child.exitCode === null && server.child.signalCode === null) {
      server.child.kill('SIGTERM');
      await server.exited;
    }
    const left = await containers();
    for (const c of left) await docker.getContainer(c.Id).remove({ force: true });
    rmSync(root, { recursive: true, force: true });
    rmSync(home, { recursive: true, force: true });
    expect(left.map((c) => c.Id)).toEqual([]);
  });

  it('a sandboxed session runs to success with no separate worker; the token is in the child environment only', async () => {
    const s0 = await status();
    expect(s0).toEqual({ state: 'running', reason: null, pid: expect.any(Number), restarts: 0, worker_id: WORKER_ID });
    // With a warm pool of one (LOKI_EMBEDDED_WORKER_WARM), as the default configuration has one.
    expect(server.output()).toMatch(/^\[embedded-worker\] \{.*"msg":"warm pool","size":1,/m);

    const ws = makeWorkspace(root, 'first', { config: providerConfig(['cat', '{prd}']) });
    const r = await start(ws, ['prd.md', '--sandbox']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('# PRD\nbuild the thing\n');
    const id = /session (ses_[0-9a-f]+)/.exec(r.stderr)![1]!;
    expect(await client.getSession(id)).toMatchObject({ status: 'succeeded', sandbox: true, worker_id: WORKER_ID });

    // The minted token: role worker, bound to the embedded id, created by the server, audited.
    const tok = db((d) => d.prepare("SELECT id, hash, role, worker_id, revoked_at, created_by FROM tokens WHERE created_by = 'system:embedded-worker'").all()) as {
      id: string;
      hash: string;
      role: string;
      worker_id: string;
      revoked_at: number | null;
    }[];
    expect(tok).toHaveLength(1);
    expect(tok[0]).toMatchObject({ role: 'worker', worker_id: WORKER_ID, revoked_at: null });
    const created = db((d) => d.prepare("SELECT entry FROM audit_log WHERE action = 'token.create'").all()) as { entry: string }[];
    expect(created.map((e) => JSON.parse(e.entry))).toContainEqual(
      expect.objectContaining({ actor: { type: 'system', id: null, name: 'embedded-worker' }, resource: { type: 'token', id: tok[0]!.id } }),
    );
    // Its plaintext is in the child's environment (it hashes to the stored hash), never in its argv or the log.
    const environ = readFileSync(`/proc/${s0.pid}/environ`, 'utf8').split('\0');
    const plain = environ.find((v) => v.startsWith('LOKI_WORKER_TOKEN='))!.slice('LOKI_WORKER_TOKEN='.length);
    expect(createHash('sha256').update(plain).digest('hex')).toBe(tok[0]!.hash);
    expect(environ).toContain(`LOKI_WORKER_ID=${WORKER_ID}`);
    expect(environ).toContain(`LOKI_URL=${server.url}`);
    expect(environ.some((v) => v.startsWith('LOKI_TOKEN='))).toBe(false);
    const argv = readFileSync(`/proc/${s0.pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
    expect(argv.slice(1)).toEqual([path.resolve(import.meta.dirname, '../../bin/loki.js'), 'sandbox', 'worker', '--concurrency', '2', '--warm', '1', '--exit-with-parent']);
    expect(server.output()).not.toContain(plain);
  }, 60_000);

  it('SIGKILL of the embedded worker: restarted (restarts 1), and a session still runs', async () => {
    const before = await status();
    process.kill(before.pid!, 'SIGKILL');
    const after = await until(
      'the worker to be restarted',
      async () => {
        const s = await status();
        return s.state === 'running' && s.restarts === 1 && workerStarts() === 2 ? s : null;
      },
      60_000,
    );
    expect(after).toEqual({ state: 'running', reason: null, pid: expect.any(Number), restarts: 1, worker_id: WORKER_ID });
    expect(after.pid).not.toBe(before.pid);
    expect(server.output()).toMatch(/"msg":"embedded sandbox worker stopped; restarting","reason":"the worker was killed by SIGKILL after \d+\.\d s; restarting in 1\.0 s","restarts":0/);

    const ws = makeWorkspace(root, 'second', { config: providerConfig(['/bin/sh', '-c', 'echo after restart']) });
    const r = await start(ws, ['prd.md', '--sandbox']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('after restart\n');
  }, 90_000);

  it('SIGTERM to the server: the worker stops first (its session reported stopped), the token is revoked and audited, no container is left', async () => {
    const ws = makeWorkspace(root, 'long', { config: providerConfig(['/bin/sh', '-c', 'echo up; sleep 60']) });
    const created = await client.createSession({ workspace: ws, prd: 'prd.md', sandbox: true });
    await until('a running container', async () => (await docker.listContainers({ filters: { label: [`loki.session=${created.id}`] } }))[0], 30_000);
    const workerPid = (await status()).pid!;

    server.child.kill('SIGTERM');
    const { code, signal } = await server.exited;
    expect({ code, signal }).toEqual({ code: 0, signal: null });
    expect(() => process.kill(workerPid, 0)).toThrow();

    // Order in the log: the worker stops its session, exits, then the server closes its database.
    const lines = server.output().split('\n');
    const at = (re: RegExp) => lines.findIndex((l) => re.test(l));
    const stopping = at(/^\[embedded-worker\] .*"msg":"stopping sessions","reason":"SIGTERM received","sessions":1/);
    const stopped = at(/"msg":"embedded sandbox worker stopped"/);
    const closed = at(/"msg":"shutdown complete; database closed"/);
    expect(stopping).toBeGreaterThan(-1);
    expect(stopped).toBeGreaterThan(stopping);
    expect(closed).toBeGreaterThan(stopped);

    const session = db((d) => d.prepare('SELECT status, reason FROM sessions WHERE id = ?').get(created.id));
    expect(session).toEqual({ status: 'stopped', reason: 'the worker shut down' });
    const tokens = db((d) => d.prepare("SELECT id, revoked_at FROM tokens WHERE created_by = 'system:embedded-worker'").all()) as { id: string; revoked_at: number | null }[];
    expect(tokens).toHaveLength(1);
    expect(tokens[0]!.revoked_at).toEqual(expect.any(Number));
    const revoked = db((d) => d.prepare("SELECT entry FROM audit_log WHERE action = 'token.revoke'").all()) as { entry: string }[];
    expect(revoked.map((e) => JSON.parse(e.entry))).toEqual([
      expect.objectContaining({
        actor: { type: 'system', id: null, name: 'embedded-worker' },
        resource: { type: 'token', id: tokens[0]!.id },
        details: expect.objectContaining({ reason: 'server shutdown', via: 'embedded-worker' }),
      }),
    ]);
    expect(await containers()).toEqual([]);
  }, 90_000);
});

describeDocker('embedded sandbox worker after a server killed with SIGKILL', probe, (docker: Docker) => {
  it('the next start revokes the token the killed server left (audited), so its orphaned worker stops; the new worker runs', async () => {
    const home = tempHome('loki-embedded-kill-');
    const id = `ek-${process.pid}`;
    const env = { LOKI_EMBEDDED_WORKER: 'on', LOKI_EMBEDDED_WORKER_WARM: '0', LOKI_WORKER_ID: id, LOKI_ENTERPRISE_AUTH: 'true' };
    const started = (s: SpawnedServer) => s.output().split('\n').some((l) => l.startsWith(OUTPUT_PREFIX) && l.includes('"msg":"sandbox worker started"'));
    const first = await spawnServer(env, home);
    let second: SpawnedServer | null = null;
    try {
      await until('the first embedded worker', async () => started(first), 60_000);
      const orphan = Number(/"msg":"embedded sandbox worker started".*?"pid":(\d+)/.exec(first.output())![1]);
      const leftToken = /"token_id":"(tok_[0-9a-f]+)"/.exec(first.output())![1]!;
      first.child.kill('SIGKILL');
      await first.exited;
      expect(() => process.kill(orphan, 0)).not.toThrow();

      second = await spawnServer({ ...env, LOKI_DASHBOARD_PORT: String(first.port) }, home);
      await until('the second embedded worker', async () => started(second!), 60_000);
      expect(second.output()).toContain(`"msg":"revoked an embedded worker token left by a previous run","token_id":"${leftToken}"`);
      // The orphan's next claim is refused (or it already died writing to its closed log pipe).
      await until('the orphaned worker to exit', async () => {
        try {
          process.kill(orphan, 0);
          return false;
        } catch {
          return true;
        }
      }, 40_000);
      const d = new Database(path.join(home, 'dashboard', 'loki.db'), { readonly: true });
      try {
        const rows = d.prepare("SELECT id, revoked_at FROM tokens WHERE created_by = 'system:embedded-worker' ORDER BY created_at").all() as { id: string; revoked_at: number | null }[];
        expect(rows).toHaveLength(2);
        expect(rows[0]).toEqual({ id: leftToken, revoked_at: expect.any(Number) });
        expect(rows[1]!.revoked_at).toBeNull();
        const audit = (d.prepare("SELECT entry FROM audit_log WHERE action = 'token.revoke'").all() as { entry: string }[]).map((e) => JSON.parse(e.entry));
        expect(audit).toEqual([
          expect.objectContaining({ resource: { type: 'token', id: leftToken }, details: expect.objectContaining({ reason: 'left by a previous run' }) }),
        ]);
      } finally {
        d.close();
      }
    } finally {
      if (second && second.child.exitCode === null) {
        second.child.kill('SIGTERM');
        await second.exited;
      }
      const left = await docker.listContainers({ all: true, filters: { label: [`loki.worker=embedded-${id}`] } });
      for (const c of left) await docker.getContainer(c.Id).remove({ force: true });
      rmSync(home, { recursive: true, force: true });
      expect(left).toEqual([]);
    }
  }, 180_000);
});

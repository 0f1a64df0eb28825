import { existsSync, statSync } from 'node:fs';
import { request } from 'node:http';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { spawnServer } from '../helpers/server';

/** Start a POST whose body is sent in two parts; resolves with the response status. */
function slowPost(port: number): { sendRest(): void; done: Promise<number> } {
  const body = JSON.stringify({ name: 'in-flight', role: 'viewer' });
  const req = request({
    host: '127.0.0.1',
    port,
    method: 'POST',
    path: '/api/enterprise/tokens',
    headers: { Host: `127.0.0.1:${port}`, 'Content-Type': 'application/json', 'Content-Length': String(body.length) },
  });
  const done = new Promise<number>((resolve, reject) => {
    req.on('response', (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
  });
  req.write(body.slice(0, 5));
  return { sendRest: () => req.end(body.slice(5)), done };
}

describe('signals on a real server process', () => {
  // Also with the audit writer thread: waiting on its idle (unref'd) thread once ended the process before the database was closed.
  it.each([
    ['', {}],
    [' (audit writer thread)', { LOKI_AUDIT_WRITER_THREAD: 'true' }],
  ])('SIGTERM%s: stops accepting, lets the in-flight request finish, closes the database, exits 0', async (_, env) => {
    const srv = await spawnServer(env);
    const inflight = slowPost(srv.port);
    await new Promise((r) => setTimeout(r, 200));
    srv.child.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 300));
    // New connections are refused while the in-flight one drains.
    await expect(fetch(`${srv.url}/health`)).rejects.toThrow();
    inflight.sendRest();
    expect(await inflight.done).toBe(201);
    const { code, signal } = await srv.exited;
    expect(signal).toBeNull();
    expect(code).toBe(0);
    expect(srv.output()).toContain('shutdown complete; database closed');
    // A clean close checkpoints and removes the WAL; the file passes an integrity check.
    const dbPath = `${srv.home}/dashboard/loki.db`;
    expect(existsSync(`${dbPath}-wal`) ? statSync(`${dbPath}-wal`).size : 0).toBe(0);
    const db = new Database(dbPath, { readonly: true });
    expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
    expect((db.prepare('SELECT count(*) AS n FROM tokens WHERE name = ?').get('in-flight') as { n: number }).n).toBe(1);
    // The shutdown wrote a signed checkpoint of the final head.
    const cp = db.prepare("SELECT size FROM audit_checkpoints WHERE kind = 'shutdown'").get() as { size: number } | undefined;
    const tip = db.prepare('SELECT max(seq) AS m FROM audit_log').get() as { m: number };
    expect(cp?.size).toBe(tip.m);
    db.close();
  });

  it('SIGINT behaves the same', async () => {
    const srv = await spawnServer();
    srv.child.kill('SIGINT');
    expect(await srv.exited).toEqual({ code: 0, signal: null });
  });

  it('a second signal exits 130 at once', async () => {
    const srv = await spawnServer({ LOKI_SHUTDOWN_TIMEOUT_MS: '60000' });
    const inflight = slowPost(srv.port);
    inflight.done.catch(() => {});
    await new Promise((r) => setTimeout(r, 200));
    srv.child.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 300));
    const t0 = Date.now();
    srv.child.kill('SIGTERM');
    const { code } = await srv.exited;
    expect(code).toBe(130);
    expect(Date.now() - t0).toBeLessThan(5000);
  });

  it('the shutdown deadline closes a request that never finishes, then exits 0', async () => {
    const srv = await spawnServer({ LOKI_SHUTDOWN_TIMEOUT_MS: '500' });
    const inflight = slowPost(srv.port);
    inflight.done.catch(() => {});
    await new Promise((r) => setTimeout(r, 200));
    srv.child.kill('SIGTERM');
    expect(await srv.exited).toEqual({ code: 0, signal: null });
    expect(srv.output()).toContain('shutdown deadline reached');
  });
});

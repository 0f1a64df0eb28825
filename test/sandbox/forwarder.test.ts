/**
 * loki-forward's pool mode (`-control`) on the host, with a real Unix socket standing
 * in for the worker: it listens at once, dials the control socket, runs exactly the
 * command of the launch message with its environment entries added, and exits with
 * the command's code; a closed control socket or a signal before the launch ends it
 * with 0 and nothing run; bad launch messages and flag misuse are refused.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../helpers/server';

const REPO = path.resolve(import.meta.dirname, '../..');
const FORWARDER = path.join(REPO, '.tmp', 'loki-forward');

describe('loki-forward -control (pool mode)', () => {
  let dir: string;
  let n = 0;
  beforeAll(() => {
    const built = spawnSync(path.join(REPO, 'scripts', 'forwarder', 'build.sh'), [], { encoding: 'utf8', timeout: 110_000 });
    if (built.status !== 0) throw new Error(`forwarder build failed: ${built.stderr}`);
    dir = mkdtempSync(path.join(os.tmpdir(), 'loki-fwd-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** A control socket, the forwarder dialling it, and the connection once it arrives. */
  async function pooled(): Promise<{ child: ChildProcess; conn: net.Socket; out: () => string; err: () => string; exited: Promise<number | null> }> {
    const sock = path.join(dir, `control-${++n}.sock`);
    const server = net.createServer();
    const conn = new Promise<net.Socket>((r) => server.once('connection', r));
    await new Promise<void>((r) => server.listen(sock, r));
    const port = await freePort();
    const child = spawn(FORWARDER, ['-listen', `127.0.0.1:${port}`, '-socket', path.join(dir, 'no-proxy.sock'), '-control', sock], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', BASE_ONLY: 'from-the-container', SHARED: 'container' },
    });
    let out = '';
    let err = '';
    child.stdout!.on('data', (d) => {
      out += d;
    });
    child.stderr!.on('data', (d) => {
      err += d;
    });
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    const c = await conn;
    server.close();
    return { child, conn: c, out: () => out, err: () => err, exited };
  }

  it('runs the launch message: argv as given, the session env over the container env, its exit code', async () => {
    const f = await pooled();
    f.conn.end(`${JSON.stringify({ argv: ['/bin/sh', '-c', 'echo "$BASE_ONLY $SHARED $SESSION"; pwd; exit 7'], env: ['SHARED=session', 'SESSION=yes'], dir })}\n`);
    expect(await f.exited).toBe(7);
    expect(f.out()).toBe(`from-the-container session yes\n${dir}\n`);
    expect(f.err()).toBe('');
  });

  it('exits 0 without running anything when the control socket closes, or on a signal, before the launch', async () => {
    const closed = await pooled();
    closed.conn.destroy();
    expect(await closed.exited).toBe(0);
    expect(closed.out()).toBe('');

    const bystander = spawn('sleep', ['30'], { stdio: 'ignore' });
    const signalled = await pooled();
    signalled.child.kill('SIGTERM');
    expect(await signalled.exited).toBe(0);
    await new Promise((r) => setTimeout(r, 200));
    expect(bystander.exitCode).toBeNull();
    expect(bystander.signalCode).toBeNull();
    bystander.kill('SIGKILL');
  });

  it('refuses a launch message that is not one (exit 126, one line)', async () => {
    const f = await pooled();
    f.conn.end('{"argv": [], "dir": "/"}\n');
    expect(await f.exited).toBe(126);
    expect(f.err()).toMatch(/^loki-forward: control socket .*control-\d+\.sock: not a launch message\n$/);
  });

  it('refuses a command together with -control', () => {
    const r = spawnSync(FORWARDER, ['-control', '/x.sock', '--', 'true'], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toBe('loki-forward: -control takes no command\n');
  });
});

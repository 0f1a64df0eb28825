/**
 * loki-forward's `-wait` mode outside a container: it listens and, on SIGTERM,
 * exits without passing the signal on. (Inside a pool container, a non-root child
 * of the container's init, it passes it to the agent: pool.docker.test.ts.) Run on
 * a host as root, a kill(-1) would reach every process on the machine.
 */
import { spawn, spawnSync } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';

const REPO = path.resolve(import.meta.dirname, '../..');
const FORWARDER = path.join(REPO, '.tmp', 'loki-forward');

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

describe('loki-forward -wait on a host', () => {
  beforeAll(() => {
    const built = spawnSync(path.join(REPO, 'scripts', 'forwarder', 'build.sh'), [], { encoding: 'utf8', timeout: 110_000 });
    if (built.status !== 0) throw new Error(`forwarder build failed: ${built.stderr}`);
  });

  it('exits 0 on SIGTERM and signals nothing else', async () => {
    const bystander = spawn('sleep', ['30'], { stdio: 'ignore' });
    const port = await freePort();
    const fwd = spawn(FORWARDER, ['-listen', `127.0.0.1:${port}`, '-socket', '/nonexistent/egress.sock', '-wait'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    fwd.stderr!.on('data', (d) => {
      stderr += d;
    });
    // Listening although the socket does not exist yet (a pool container's case).
    for (let i = 0; i < 100; i++) {
      const ok = await new Promise<boolean>((r) => {
        const c = net.connect(port, '127.0.0.1');
        c.once('connect', () => {
          c.destroy();
          r(true);
        });
        c.once('error', () => r(false));
      });
      if (ok) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    const exited = new Promise<number | null>((r) => fwd.once('exit', (code) => r(code)));
    fwd.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(stderr).toBe('');
    await new Promise((r) => setTimeout(r, 200));
    expect(bystander.exitCode).toBeNull();
    expect(bystander.signalCode).toBeNull();
    bystander.kill('SIGKILL');
  });

  it('refuses a command with -wait', () => {
    const r = spawnSync(FORWARDER, ['-wait', '--', 'true'], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toBe('loki-forward: -wait takes no command\n');
  });
});

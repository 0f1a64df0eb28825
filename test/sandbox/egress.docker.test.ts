/**
 * The egress allowlist end to end with the real engine and no Docker network: a
 * `NetworkMode: none` container (uid 1000, no capabilities, read-only root) whose
 * only way out is `loki-forward` on 127.0.0.1:3128, piping to the session's proxy
 * over the bind-mounted Unix socket. busybox wget reaches an allowed origin on the
 * host, is refused a name that is not listed, and cannot reach the host directly.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type Docker from 'dockerode';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type EgressDecision, startEgressProxy } from '../../src/sandbox/egress';
import { describeDocker, dockerAvailable, SANDBOX_IMAGE } from '../helpers/docker';
import { until } from '../helpers/process';

const probe = await dockerAvailable();
const REPO = path.resolve(import.meta.dirname, '../..');
const FORWARDER = path.join(REPO, '.tmp', 'loki-forward');

/** An HTTP origin on all of the host's addresses: only the container's missing network keeps it from being reached directly. */
async function origin(): Promise<{ server: net.Server; port: number; paths: string[]; received: number; sent: number }> {
  const paths: string[] = [];
  const counts = { received: 0, sent: 0 };
  const server = net.createServer((s) => {
    s.on('error', () => undefined);
    let buf = '';
    s.setEncoding('latin1');
    s.on('data', (d: string) => {
      buf += d;
      counts.received += Buffer.byteLength(d, 'latin1');
      if (!buf.includes('\r\n\r\n')) return;
      s.removeAllListeners('data');
      const p = buf.split(' ')[1] ?? '';
      paths.push(p);
      const text = `origin says hello to ${p}\n`;
      const answer = `HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: ${text.length}\r\nConnection: close\r\n\r\n${text}`;
      counts.sent += Buffer.byteLength(answer);
      s.end(answer);
    });
  });
  await new Promise<void>((r) => server.listen(0, '0.0.0.0', r));
  return {
    server,
    port: (server.address() as net.AddressInfo).port,
    paths,
    get received() {
      return counts.received;
    },
    get sent() {
      return counts.sent;
    },
  };
}

/** A non-loopback IPv4 address of this host (what a container on a bridge would use to reach it). */
function hostAddress(): string {
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return '198.51.100.1';
}

/** Split a non-TTY log stream into stdout and stderr. */
function demux(buf: Buffer): { stdout: string; stderr: string } {
  let stdout = '';
  let stderr = '';
  for (let i = 0; i + 8 <= buf.length; ) {
    const len = buf.readUInt32BE(i + 4);
    const text = buf.subarray(i + 8, i + 8 + len).toString('utf8');
    if (buf[i] === 2) stderr += text;
    else stdout += text;
    i += 8 + len;
  }
  return { stdout, stderr };
}

async function networkIds(docker: Docker): Promise<string[]> {
  return (await docker.listNetworks()).map((n) => n.Id).sort();
}

describeDocker('egress allowlist through loki-forward in a container without a network', probe, (docker: Docker) => {
  let dir: string;
  let web: Awaited<ReturnType<typeof origin>>;
  let networksBefore: string[];

  beforeAll(async () => {
    const built = spawnSync(path.join(REPO, 'scripts', 'forwarder', 'build.sh'), [], { encoding: 'utf8', timeout: 110_000 });
    if (built.status !== 0) throw new Error(`forwarder build failed: ${built.stderr}`);
    dir = mkdtempSync(path.join(os.tmpdir(), 'loki-egress-docker-'));
    web = await origin();
    networksBefore = await networkIds(docker);
  });
  afterAll(async () => {
    await new Promise<void>((r) => web?.server.close(() => r()));
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  async function run(cmd: string[], binds: string[]): Promise<{ code: number; stdout: string; stderr: string; networks: string[] }> {
    const container = await docker.createContainer({
      Image: SANDBOX_IMAGE,
      Cmd: cmd,
      User: '1000:1000',
      Env: ['http_proxy=http://127.0.0.1:3128', 'HTTP_PROXY=http://127.0.0.1:3128', 'https_proxy=http://127.0.0.1:3128', 'HTTPS_PROXY=http://127.0.0.1:3128', 'NO_PROXY=localhost,127.0.0.1', 'no_proxy=localhost,127.0.0.1'],
      HostConfig: {
        NetworkMode: 'none',
        CapDrop: ['ALL'],
        SecurityOpt: ['no-new-privileges:true'],
        ReadonlyRootfs: true,
        Binds: [`${FORWARDER}:/opt/loki/loki-forward:ro`, ...binds],
        LogConfig: { Type: 'json-file', Config: {} },
      },
    });
    try {
      await container.start();
      const status = (await container.wait()) as { StatusCode: number };
      const info = await container.inspect();
      const logs = await container.logs({ stdout: true, stderr: true });
      return { code: status.StatusCode, ...demux(logs), networks: Object.keys(info.NetworkSettings.Networks ?? {}) };
    } finally {
      await container.remove({ force: true });
      await expect(docker.getContainer(container.id).inspect()).rejects.toMatchObject({ statusCode: 404 });
    }
  }

  it('lets wget reach the allowed origin, answers 403 for another name, and leaves no direct route', async () => {
    const decisions: EgressDecision[] = [];
    const socketDir = path.join(dir, 'egress');
    const proxy = await startEgressProxy({
      socketPath: path.join(socketDir, 'egress.sock'),
      allow: [`allowed.test:${web.port}`],
      privateDestinations: [`127.0.0.1:${web.port}`],
      onDecision: (d) => decisions.push(d),
      resolve: async (host) => (host === 'allowed.test' ? ['127.0.0.1'] : Promise.reject(new Error('ENOTFOUND'))),
    });
    const direct = hostAddress();
    const script = [
      'cd /tmp',
      `echo "== allowed"; wget -q -O - http://allowed.test:${web.port}/hello; echo "rc=$?"`,
      `echo "== denied"; wget -q -O - http://denied.test:${web.port}/secret; echo "rc=$?"`,
      `echo "== direct"; wget -q -Y off -O - http://${direct}:${web.port}/direct; echo "rc=$?"`,
      `echo "== loopback"; wget -q -Y off -O - http://127.0.0.1:${web.port}/loopback; echo "rc=$?"`,
      'exit 3',
    ].join('\n');
    try {
      const r = await run(
        ['/opt/loki/loki-forward', '-listen', '127.0.0.1:3128', '-socket', '/run/loki/egress.sock', '--', '/bin/sh', '-c', script],
        [`${socketDir}:/run/loki:ro`],
      );
      // The agent's exit code is the container's.
      expect(r.code).toBe(3);
      expect(r.networks).toEqual(['none']);
      const section = (name: string) => r.stdout.split(`== ${name}\n`)[1]?.split('== ')[0] ?? '';
      expect(section('allowed')).toBe(`origin says hello to /hello\nrc=0\n`);
      expect(section('denied')).toBe('rc=1\n');
      expect(r.stderr).toContain('403 Forbidden');
      expect(section('direct')).toMatch(/rc=[1-9]/);
      expect(r.stderr).toMatch(/Network is unreachable/);
      expect(section('loopback')).toMatch(/rc=[1-9]/);
      expect(r.stderr).toMatch(/Connection refused/);
      // Only the proxied request reached the origin.
      expect(web.paths).toEqual(['/hello']);
      await until('both decisions', async () => decisions.length === 2);
      // Byte counts are what the origin received and sent.
      expect(decisions).toEqual([
        {
          decision: 'allowed',
          host: 'allowed.test',
          port: web.port,
          rule: `allowlist:allowed.test:${web.port}`,
          address: '127.0.0.1',
          bytesUp: web.received,
          bytesDown: web.sent,
          method: 'HTTP',
        },
        { decision: 'denied', host: 'denied.test', port: web.port, rule: 'not_allowlisted', method: 'HTTP' },
      ]);
    } finally {
      await proxy.close();
    }
    expect(existsSync(socketDir)).toBe(false);
    expect(await networkIds(docker)).toEqual(networksBefore);
  });

  it('exits 126 without running the agent when the proxy socket is missing', async () => {
    const empty = path.join(dir, 'empty');
    spawnSync('mkdir', ['-m', '0755', '-p', empty]);
    const r = await run(
      ['/opt/loki/loki-forward', '-listen', '127.0.0.1:3128', '-socket', '/run/loki/egress.sock', '--', '/bin/sh', '-c', 'echo agent ran'],
      [`${empty}:/run/loki:ro`],
    );
    expect(r.code).toBe(126);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^loki-forward: egress socket \/run\/loki\/egress\.sock is missing: [^\n]*\n$/);
    expect(await networkIds(docker)).toEqual(networksBefore);
  });
});

/**
 * gVisor (`runsc`, registered by scripts/docker-up.sh) under the sandbox's full
 * hardening, through dockerode: the container really runs on gVisor's kernel, the
 * bind-mounted workspace (a loop-mounted ext4, like a session's worktree) takes
 * writes, the memory limit kills a hog (exit 137), and the root filesystem stays
 * read-only. In CI the runtime must be registered; elsewhere the suite is skipped.
 */
import { spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { release, tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import type Docker from 'dockerode';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type DockerProbe, describeDocker, dockerAvailable, expectedHostConfig, SANDBOX_IMAGE } from '../helpers/docker';

const RUNTIME = 'runsc';
const LABEL = 'loki.test';
const LABEL_VALUE = `runsc-${process.pid}`;
const MEMORY = 256 * 1024 ** 2;

async function runscProbe(): Promise<DockerProbe> {
  const probe = await dockerAvailable();
  if (!probe.ok) return probe;
  const info = (await probe.docker.info()) as { Runtimes?: Record<string, unknown> };
  if (!info.Runtimes?.[RUNTIME]) {
    return { ok: false, reason: `Docker runtime ${RUNTIME} is not registered (run scripts/docker-up.sh)` };
  }
  return probe;
}

const probe = await runscProbe();

interface Ran {
  id: string;
  output: string;
  exitCode: number | null;
  oomKilled: boolean;
  hostConfig: Docker.ContainerInspectInfo['HostConfig'];
}

describeDocker('gVisor (runsc) runtime with the sandbox hardening', probe, (docker: Docker) => {
  let dir: string;
  let workspace: string;
  let loopMounted = false;

  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'loki-runsc-'));
    workspace = path.join(dir, 'ws');
    mkdirSync(workspace);
    // Session worktrees are loop-mounted ext4 filesystems; mount one when we can.
    if (process.getuid?.() === 0) {
      const img = path.join(dir, 'ws.img');
      const ok = (cmd: string, args: string[]) => spawnSync(cmd, args, { stdio: 'ignore' }).status === 0;
      loopMounted =
        ok('truncate', ['-s', '16M', img]) && ok('mkfs.ext4', ['-q', '-F', img]) && ok('mount', ['-o', 'loop', img, workspace]);
      chownSync(workspace, 1000, 1000);
    }
  });

  afterAll(async () => {
    const left = await docker.listContainers({ all: true, filters: { label: [`${LABEL}=${LABEL_VALUE}`] } });
    for (const c of left) await docker.getContainer(c.Id).remove({ force: true });
    if (loopMounted) spawnSync('umount', [workspace], { stdio: 'ignore' });
    rmSync(dir, { recursive: true, force: true });
  });

  /** Create, attach (logging is off, as in the runner), start, wait, inspect, remove. */
  async function run(cmd: string[], memoryBytes = MEMORY): Promise<Ran> {
    const hostConfig = {
      ...expectedHostConfig({ workspace, memoryBytes, nanoCpus: 1e9, runtime: RUNTIME }),
      LogConfig: { Type: 'none', Config: {} },
    };
    const container = await docker.createContainer({
      Image: SANDBOX_IMAGE,
      Cmd: cmd,
      User: '1000:1000',
      WorkingDir: '/workspace',
      Labels: { [LABEL]: LABEL_VALUE },
      AttachStdout: true,
      AttachStderr: true,
      Tty: false,
      HostConfig: hostConfig,
    });
    try {
      const stream = (await container.attach({ stream: true, stdout: true, stderr: true })) as NodeJS.ReadableStream;
      const sink = new PassThrough();
      const chunks: Buffer[] = [];
      sink.on('data', (c: Buffer) => chunks.push(c));
      const drained = new Promise<void>((resolve) => {
        stream.on('end', resolve);
        stream.on('close', resolve);
      });
      docker.modem.demuxStream(stream, sink, sink);
      await container.start();
      await container.wait({ condition: 'not-running' });
      await Promise.race([drained, new Promise((r) => setTimeout(r, 1_000))]);
      let info = await container.inspect();
      // Docker records an OOM kill from an event of its own that can land after the exit.
      for (let i = 0; i < 10 && info.State.ExitCode === 137 && !info.State.OOMKilled; i++) {
        await new Promise((r) => setTimeout(r, 100));
        info = await container.inspect();
      }
      return {
        id: container.id,
        output: Buffer.concat(chunks).toString('utf8'),
        exitCode: info.State.ExitCode ?? null,
        oomKilled: info.State.OOMKilled === true,
        hostConfig: info.HostConfig,
      };
    } finally {
      await container.remove({ force: true }).catch(() => undefined);
    }
  }

  it('runs on gVisor with the hardening intact; the workspace takes writes, / does not', async () => {
    const script = [
      'echo "release=$(uname -r)"',
      'echo "version=$(cat /proc/version)"',
      'echo "dmesg=$(dmesg 2>&1 | head -n 1)"',
      'echo "uid=$(id -u):$(id -g)"',
      'echo "pid1=$(tr "\\0" " " </proc/1/cmdline)"',
      'echo "rootmount=$(awk \'$2 == "/" { print $4 }\' /proc/mounts)"',
      'echo from-gvisor >/workspace/out.txt && echo workspace=ok',
      'if touch /rootfs-probe 2>/dev/null; then echo root=writable; else echo root=refused; fi',
      'printf "#!/bin/sh\\necho ran\\n" >/tmp/x.sh && chmod +x /tmp/x.sh',
      'if /tmp/x.sh >/dev/null 2>&1; then echo tmpexec=yes; else echo tmpexec=no; fi',
    ].join('; ');
    const r = await run(['/bin/sh', '-c', script]);
    const field = (k: string) => new RegExp(`^${k}=(.*)$`, 'm').exec(r.output)?.[1] ?? '';

    expect(r.exitCode, r.output).toBe(0);
    expect(r.hostConfig).toMatchObject({ ...expectedHostConfig({ workspace, memoryBytes: MEMORY, nanoCpus: 1e9, runtime: RUNTIME }) });
    expect(r.hostConfig.Runtime).toBe('runsc');

    // gVisor's own kernel, not the host's.
    expect(field('release')).not.toBe('');
    expect(field('release')).not.toBe(release());
    expect(field('version')).not.toContain(release());
    expect(field('dmesg')).toMatch(/gVisor/);

    expect(field('uid')).toBe('1000:1000');
    expect(field('pid1')).toMatch(/docker-init/);
    expect(field('rootmount').split(',')).toContain('ro');
    expect(field('root')).toBe('refused');
    expect(field('tmpexec')).toBe('no');

    expect(field('workspace')).toBe('ok');
    const out = path.join(workspace, 'out.txt');
    expect(existsSync(out)).toBe(true);
    expect(readFileSync(out, 'utf8')).toBe('from-gvisor\n');
    expect(statSync(out).uid).toBe(1000);
  });

  it('a memory hog over the limit is killed (exit 137)', async () => {
    // gVisor's own sandbox process counts against the limit: at 16 MiB it was sometimes
    // killed while starting (runtime create failed, exit 137), before the hog ran.
    const r = await run(['tail', '/dev/zero'], 96 * 1024 ** 2);
    expect(r.hostConfig.Runtime).toBe('runsc');
    expect(r.exitCode).toBe(137);
    // Usually State.OOMKilled is true as well, but not always: now and then (about 1 run
    // in 20 here) the host's OOM killer picks a gVisor process (the sentry, "exe") over
    // the workload, the shim just disconnects, and Docker records no OOM. Under runsc an
    // exit 137 the worker did not cause has to count as out-of-memory.
    expect(typeof r.oomKilled).toBe('boolean');
  });
});

/**
 * The warm pool against the real engine: containers started ahead of time with the
 * sandbox's HostConfig, a session attached to one by `docker exec` (its worktree
 * bound in through the slot's mount), the same outcomes as a fresh container
 * (output, commit, exit code, timeout, stop, OOM, egress), refilling, a session
 * whose policy differs getting a fresh container, and nothing left after `close`.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type Docker from 'dockerode';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { mountsUnder } from '../../src/sandbox/mounts';
import { checkWorkspaceMount, LABEL_POOL, WarmPool } from '../../src/sandbox/pool';
import { runSession, type SessionHooks, type SessionResult } from '../../src/sandbox/runner';
import type { SessionPolicy } from '../../src/sessions/api';
import { describeDocker, dockerAvailable, expectedHostConfig } from '../helpers/docker';
import { sessionPolicy } from '../sessions/helpers';

const probe = await dockerAvailable();
const REPO = path.resolve(import.meta.dirname, '../..');
const FORWARDER = path.join(REPO, '.tmp', 'loki-forward');
const WORKER = `pool-worker-${process.pid}`;
const MiB = 1024 ** 2;

function policy(command: string[], patch: Partial<SessionPolicy> = {}): SessionPolicy {
  return sessionPolicy(command, { memory_bytes: 64 * MiB, nano_cpus: 1e9, timeout_seconds: 30, disk_bytes: 64 * MiB, ...patch });
}

function git(cwd: string, args: string[]): string {
  const r = spawnSync('git', ['-c', 'user.name=t', '-c', 'user.email=t@localhost', ...args], { cwd, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`git ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

interface Run {
  result: SessionResult;
  out: string[];
  err: string[];
  events: { type: string; data: Record<string, unknown> }[];
}

describeDocker('the warm pool', probe, (docker: Docker) => {
  let home: string;
  let repo: string;
  let pool: WarmPool;
  let counter = 0;
  const logged: string[] = [];
  const logger = {
    info: (m: string) => logged.push(`info ${m}`),
    warn: (m: string) => logged.push(`warn ${m}`),
    error: (m: string, f?: Record<string, unknown>) => logged.push(`error ${m} ${JSON.stringify(f)}`),
  };

  const poolContainers = async () =>
    (await docker.listContainers({ all: true, filters: { label: [`loki.worker=${WORKER}`, `${LABEL_POOL}=1`] } })).map((c) => c.Id).sort();

  beforeAll(async () => {
    const built = spawnSync(path.join(REPO, 'scripts', 'forwarder', 'build.sh'), [], { encoding: 'utf8', timeout: 110_000 });
    if (built.status !== 0) throw new Error(`forwarder build failed: ${built.stderr}`);
    home = mkdtempSync(path.join(os.tmpdir(), 'loki-pool-home-'));
    repo = mkdtempSync(path.join(os.tmpdir(), 'loki-pool-repo-'));
    git(repo, ['init', '-q', '-b', 'main']);
    writeFileSync(path.join(repo, 'prd.md'), '# Pool PRD\n');
    git(repo, ['add', '.']);
    git(repo, ['commit', '-qm', 'base']);
    pool = new WarmPool({
      docker,
      size: 2,
      template: policy(['true']),
      workerId: WORKER,
      root: path.join(home, 'pool'),
      forwarderPath: FORWARDER,
      context: { home },
      logger,
    });
    pool.fill();
    await pool.whenFilled();
  });

  afterAll(async () => {
    await pool?.close();
    const left = await docker.listContainers({ all: true, filters: { label: [`loki.worker=${WORKER}`] } });
    for (const c of left) await docker.getContainer(c.Id).remove({ force: true });
    rmSync(home, { recursive: true, force: true });
    rmSync(repo, { recursive: true, force: true });
    expect(left.map((c) => c.Id)).toEqual([]);
  });

  async function run(command: string[], patch: Partial<SessionPolicy> = {}, signal?: AbortSignal): Promise<Run> {
    const out: string[] = [];
    const err: string[] = [];
    const events: Run['events'] = [];
    const hooks: SessionHooks = {
      onOutput: (stream, line) => (stream === 'stdout' ? out : err).push(line),
      onEvent: (type, data) => events.push({ type, data }),
      signal,
    };
    const result = await runSession(
      {
        sessionId: `p${++counter}-${process.pid}`,
        workerId: WORKER,
        workspace: repo,
        prdRelative: 'prd.md',
        policy: policy(command, patch),
        budgetUsd: null,
        env: { ANTHROPIC_API_KEY: 'pool-provider-key' },
      },
      hooks,
      { docker, home, killGraceMs: 1_000, worktreeRoot: path.join(home, 'worktrees'), forwarderPath: FORWARDER, pool },
    );
    return { result, out, err, events };
  }

  it('starts 2 containers ahead of time with the sandbox HostConfig and a slave-propagated workspace', async () => {
    const ids = await poolContainers();
    expect(ids).toHaveLength(2);
    expect(pool.stats()).toEqual({ ready: 2, in_use: 0, creating: 0, size: 2 });
    for (const id of ids) {
      const info = await docker.getContainer(id).inspect();
      expect(info.State.Running).toBe(true);
      expect(info.Config.User).toBe('1000:1000');
      expect(info.Config.Env).toEqual(expect.arrayContaining(['HOME=/tmp']));
      expect(info.Config.Env!.some((e) => e.startsWith('ANTHROPIC_API_KEY'))).toBe(false);
      expect(info.Config.Cmd).toEqual(['/opt/loki/loki-forward', '-listen', '127.0.0.1:3128', '-socket', '/run/loki/egress.sock', '-control', '/run/loki/control.sock']);
      const slot = info.Config.Labels!['loki.session']!;
      const hc = info.HostConfig;
      const expected = expectedHostConfig({ workspace: path.join(home, 'pool', slot, 'work'), memoryBytes: 64 * MiB, nanoCpus: 1e9 });
      expect({ ...hc, Binds: undefined }).toMatchObject({ ...expected, Binds: undefined });
      expect(hc.Binds).toEqual([
        `${path.join(home, 'pool', slot, 'work')}:/workspace:rw,rslave`,
        `${path.join(home, 'pool', slot, 'egress')}:/run/loki:ro`,
        `${FORWARDER}:/opt/loki/loki-forward:ro`,
      ]);
    }
  });

  it('runs a session in a pooled container: output, commit, removal, refill', async () => {
    const before = await poolContainers();
    const r = await run(['/bin/sh', '-c', 'echo pooled > made-in-pool.txt; id -u; cat prd.md; echo "key=$ANTHROPIC_API_KEY"'], { env_allowlist: ['ANTHROPIC_API_KEY'] });
    expect(r.result).toMatchObject({ outcome: 'succeeded', exitCode: 0, pooled: true });
    expect(before).toContain(r.result.containerId);
    expect(r.out).toEqual(['1000', '# Pool PRD', 'key=[REDACTED]']);
    expect(r.events.find((e) => e.type === 'container_created')?.data).toMatchObject({ container_id: r.result.containerId, pooled: true });
    const commit = r.result.result!.commit!;
    expect(git(repo, ['show', `${commit}:made-in-pool.txt`])).toBe('pooled\n');
    expect(git(repo, ['rev-parse', `refs/heads/loki/session-p${counter}-${process.pid}`]).trim()).toBe(commit);
    // The used container is gone, the slot unmounted, and the pool made a new one.
    await expect(docker.getContainer(r.result.containerId!).inspect()).rejects.toMatchObject({ statusCode: 404 });
    await pool.whenFilled();
    const after = await poolContainers();
    expect(after).toHaveLength(2);
    expect(after).not.toContain(r.result.containerId);
    expect(readdirSync(path.join(home, 'pool'))).toHaveLength(2);
    expect(mountsUnder(path.join(home, 'worktrees'))).toEqual([]);
  });

  it('reports the exit code, a timeout and a stop like a fresh container', async () => {
    const failed = await run(['/bin/sh', '-c', 'echo bad >&2; exit 3']);
    expect(failed.result).toMatchObject({ outcome: 'failed', exitCode: 3, pooled: true });
    expect(failed.err).toEqual(['bad']);
    await pool.whenFilled();

    const t0 = Date.now();
    const timedOut = await run(['/bin/sh', '-c', 'trap "" TERM; sleep 60 & wait $!; sleep 60'], { timeout_seconds: 1 });
    expect(timedOut.result).toMatchObject({ outcome: 'timed_out', pooled: true });
    expect(Date.now() - t0).toBeLessThan(15_000);
    await pool.whenFilled();

    const ac = new AbortController();
    const stopping = run(['/bin/sh', '-c', 'echo started; sleep 60'], {}, ac.signal);
    setTimeout(() => ac.abort('stop'), 800);
    const stopped = await stopping;
    expect(stopped.result).toMatchObject({ outcome: 'stopped', pooled: true });
    expect(stopped.out).toEqual(['started']);
    await pool.whenFilled();
  });

  it('gives the agent no writable host directory under its worktree (the slot\'s work/ seen through /proc/1/cwd)', async () => {
    // The container's init and forwarder started in the slot's work/ before the worktree
    // was mounted over it, and keep it as their working directory.
    const r = await run(['/bin/sh', '-c', 'ls -d /proc/1/cwd/ >/dev/null && (echo x > /proc/1/cwd/escaped && echo wrote || echo refused); (mkdir /proc/1/cwd/d && echo made || echo refused)']);
    expect(r.result).toMatchObject({ outcome: 'succeeded', pooled: true });
    expect(r.out).toEqual(['refused', 'refused']);
    await pool.whenFilled();
  });

  it('leaves nothing mounted when the pool root lies on a shared mount (as / does under systemd)', async () => {
    const shared = mkdtempSync(path.join(os.tmpdir(), 'loki-pool-shared-'));
    const mount = (...args: string[]) => {
      const m = spawnSync('mount', args, { encoding: 'utf8' });
      if (m.status !== 0) throw new Error(`mount ${args.join(' ')}: ${m.stderr}`);
    };
    mount('--bind', shared, shared);
    mount('--make-shared', shared);
    const sharedPool = new WarmPool({ docker, size: 1, template: policy(['true']), workerId: WORKER, root: path.join(shared, 'pool'), forwarderPath: FORWARDER, context: { home }, logger });
    try {
      sharedPool.fill();
      await sharedPool.whenFilled();
      const errors: unknown[] = [];
      const result = await runSession(
        { sessionId: `ps-${process.pid}`, workerId: WORKER, workspace: repo, prdRelative: 'prd.md', policy: policy(['/bin/sh', '-c', 'echo shared > shared.txt']), budgetUsd: null, env: {} },
        { onOutput: () => undefined, onEvent: (type, data) => (type === 'session_error' ? errors.push(data) : undefined) },
        { docker, home, killGraceMs: 1_000, worktreeRoot: path.join(shared, 'worktrees'), forwarderPath: FORWARDER, pool: sharedPool },
      );
      expect(result).toMatchObject({ outcome: 'succeeded', pooled: true });
      expect(errors).toEqual([]);
      await sharedPool.close();
      // Only the bind made above is left: no slot, no copy of the worktree on the parent.
      expect(mountsUnder(shared)).toEqual([shared]);
      expect(readdirSync(path.join(shared, 'pool'))).toEqual([]);
    } finally {
      await sharedPool.close().catch(() => undefined);
      for (const mp of mountsUnder(shared) ?? []) spawnSync('umount', ['-l', mp]);
      rmSync(shared, { recursive: true, force: true });
    }
  });

  it('removes a taken container the agent never started in (stopped while its slot was being prepared)', async () => {
    const ac = new AbortController();
    const take = pool.take.bind(pool);
    let taken: string | null = null;
    pool.take = (p: SessionPolicy) => {
      const slot = take(p);
      taken = slot?.containerId ?? null;
      ac.abort('shutdown');
      return slot;
    };
    try {
      const r = await run(['/bin/sh', '-c', 'echo never'], {}, ac.signal);
      expect(r.result.outcome).toBe('stopped');
    } finally {
      pool.take = take;
    }
    expect(taken).not.toBeNull();
    await expect(docker.getContainer(taken!).inspect()).rejects.toMatchObject({ statusCode: 404 });
    expect(pool.stats().in_use).toBe(0);
    await pool.whenFilled();
    expect(mountsUnder(path.join(home, 'pool'))!.filter((m) => m.endsWith('/work'))).toEqual([]);
    expect(await poolContainers()).toHaveLength(2);
  });

  it('reports a memory hog in a pooled container as oom_killed', async () => {
    const r = await run(['/bin/tail', '/dev/zero']);
    expect(r.result).toMatchObject({ outcome: 'oom_killed', exitCode: 137, pooled: true });
    expect(r.events.find((e) => e.type === 'container_exited')?.data).toMatchObject({ oom_killed: true });
    await pool.whenFilled();
  });

  it('reaches an allowed destination through the session proxy in the slot, and nothing else', async () => {
    const seen: string[] = [];
    const server = net.createServer((s) => {
      s.once('data', (d) => {
        seen.push(d.toString('latin1').split(' ')[1] ?? '');
        s.end('HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\npooled');
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as net.AddressInfo).port;
    try {
      const r = await run(
        ['/bin/sh', '-c', `wget -q -O - http://127.0.0.1:${port}/through-pool; echo; wget -q -O - http://example.invalid/ 2>&1 || echo refused`],
        { egress: [`127.0.0.1:${port}`] },
      );
      expect(r.result).toMatchObject({ outcome: 'succeeded', pooled: true });
      expect(r.out).toEqual(['pooled', 'wget: server returned error: HTTP/1.1 403 Forbidden', 'refused']);
      expect(seen).toEqual(['/through-pool']);
      const decisions = r.events.filter((e) => e.type === 'egress').map((e) => [e.data.decision, e.data.host, e.data.port]);
      expect(decisions).toEqual(expect.arrayContaining([['allowed', '127.0.0.1', port], ['denied', 'example.invalid', 80]]));
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
      await pool.whenFilled();
    }
  });

  it('gives a session whose policy differs a fresh container and leaves the pool alone', async () => {
    const before = await poolContainers();
    const r = await run(['/bin/sh', '-c', 'echo fresh'], { memory_bytes: 96 * MiB });
    expect(r.result).toMatchObject({ outcome: 'succeeded', exitCode: 0 });
    expect(r.result.pooled).toBeUndefined();
    expect(before).not.toContain(r.result.containerId);
    expect(await poolContainers()).toEqual(before);
    expect(pool.stats().ready).toBe(2);
  });

  it('refuses to start an agent in a container that does not see the session worktree', async () => {
    const slot = pool.take(policy(['true']))!;
    expect(slot).not.toBeNull();
    try {
      // Nothing was mounted onto the slot: the container would run the agent on an empty directory.
      expect(() => checkWorkspaceMount(slot, repo)).toThrow(/^the warm container does not see the session's worktree at \/workspace/);
    } finally {
      await pool.release(slot);
    }
    await pool.whenFilled();
  });

  it('is refused for a gVisor default policy (gVisor does not see mounts made after its start)', () => {
    expect(
      () => new WarmPool({ docker, size: 1, template: policy(['true'], { runtime: 'runsc' }), workerId: WORKER, root: path.join(home, 'pool2'), forwarderPath: FORWARDER, context: { home }, logger }),
    ).toThrow('the warm pool needs the runc runtime (the default policy\'s runtime is runsc; gVisor does not see mounts made after its start)');
  });

  it('close removes every pooled container, slot and mount', async () => {
    const root = path.join(home, 'pool');
    await pool.close();
    expect(await poolContainers()).toEqual([]);
    expect(readdirSync(root)).toEqual([]);
    expect(mountsUnder(root)).toEqual([]);
    expect(pool.stats()).toMatchObject({ ready: 0, in_use: 0, creating: 0 });
    expect(existsSync(path.join(home, 'worktrees')) ? readdirSync(path.join(home, 'worktrees')) : []).toEqual([]);
    expect(readFileSync(path.join(repo, 'prd.md'), 'utf8')).toBe('# Pool PRD\n');
  });
});

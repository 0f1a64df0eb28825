/**
 * The sandbox against the real engine: the exact HostConfig, and escape attempts
 * from inside a container. NetworkMode "none" only; nothing leaves loopback.
 */
import { chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os, { tmpdir } from 'node:os';
import path from 'node:path';
import type Docker from 'dockerode';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { containerOptions } from '../../src/sandbox/policy';
import type { SessionPolicy } from '../../src/sessions/api';
import { sessionPolicy } from '../sessions/helpers';
import { removeOrphans, runSession, type SessionHooks, type SessionResult, type SessionSpec, stopAllForWorker } from '../../src/sandbox/runner';
import { describeDocker, dockerAvailable, SANDBOX_IMAGE, expectedHostConfig } from '../helpers/docker';

const probe = await dockerAvailable();
const WORKER = `test-worker-${process.pid}`;
const HOSTILE_PRD = "a b'; rm -rf ~; $(touch /tmp/pwned).md";

let ws: string;
let home: string;
let counter = 0;

function policy(command: string[], patch: Partial<SessionPolicy> = {}): SessionPolicy {
  return sessionPolicy(command, { memory_bytes: 256 * 1024 ** 2, nano_cpus: 1e9, timeout_seconds: 30, disk_bytes: 64 * 1024 ** 2, ...patch });
}

interface Recorded {
  result: SessionResult;
  out: string[];
  err: string[];
  events: { type: string; data: Record<string, unknown> }[];
}

function sh(script: string): string[] {
  return ['/bin/sh', '-c', script];
}

describeDocker('runSession in the Docker sandbox', probe, (docker: Docker) => {
  beforeAll(() => {
    ws = mkdtempSync(path.join(tmpdir(), 'loki-sbx-'));
    home = mkdtempSync(path.join(tmpdir(), 'loki-sbx-home-'));
    writeFileSync(path.join(ws, 'prd.md'), '# PRD\n');
    mkdirSync(path.dirname(path.join(ws, HOSTILE_PRD)), { recursive: true });
    writeFileSync(path.join(ws, HOSTILE_PRD), '# hostile\n');
    // The container runs as uid 1000; let it write the workspace like its owner would.
    if (process.getuid?.() === 0) {
      for (const p of [ws, path.join(ws, 'prd.md')]) chownSync(p, 1000, 1000);
    }
    rmSync('/tmp/pwned', { force: true });
  });

  afterAll(async () => {
    const left = await docker.listContainers({ all: true, filters: { label: [`loki.worker=${WORKER}`] } });
    for (const c of left) await docker.getContainer(c.Id).remove({ force: true });
    rmSync(ws, { recursive: true, force: true });
    rmSync(home, { recursive: true, force: true });
    expect(left.map((c) => c.Id)).toEqual([]);
  });

  async function run(
    command: string[],
    opts: {
      settings?: Partial<SessionPolicy>;
      spec?: Partial<SessionSpec>;
      onEvent?: (type: string, data: Record<string, unknown>) => void;
      signal?: AbortSignal;
    } = {},
  ): Promise<Recorded> {
    const out: string[] = [];
    const err: string[] = [];
    const events: Recorded['events'] = [];
    const hooks: SessionHooks = {
      onOutput: (stream, line) => (stream === 'stdout' ? out : err).push(line),
      onEvent: (type, data) => {
        events.push({ type, data });
        opts.onEvent?.(type, data);
      },
      signal: opts.signal,
    };
    const spec: SessionSpec = {
      sessionId: `s${++counter}`,
      workerId: WORKER,
      workspace: ws,
      prdRelative: 'prd.md',
      policy: policy(command, opts.settings),
      budgetUsd: null,
      env: { ANTHROPIC_API_KEY: 'test-provider-key', LOKI_WORKER_TOKEN: 'loki_workersecretvalue', PATH: '/usr/bin' },
      ...opts.spec,
    };
    const result = await runSession(spec, hooks, { docker, home, killGraceMs: 1_000, worktreeRoot: path.join(home, 'worktrees') });
    return { result, out, err, events };
  }

  async function assertGone(result: SessionResult) {
    expect(result.containerId).toBeTruthy();
    await expect(docker.getContainer(result.containerId!).inspect()).rejects.toMatchObject({ statusCode: 404 });
  }

  it('creates the container with exactly the sandbox HostConfig, and removes it', async () => {
    let inspected: Promise<Docker.ContainerInspectInfo> | undefined;
    const r = await run(sh('sleep 0.3; echo done'), {
      settings: { env_allowlist: ['ANTHROPIC_API_KEY', 'LOKI_WORKER_TOKEN'] },
      onEvent: (type, data) => {
        if (type === 'container_started') inspected = docker.getContainer(String(data.container_id)).inspect();
      },
    });
    expect(r.result).toMatchObject({ outcome: 'succeeded', exitCode: 0 });
    expect(r.out).toEqual(['done']);
    const info = await inspected!;
    const hc = info.HostConfig;
    expect({
      Runtime: hc.Runtime,
      CapDrop: hc.CapDrop,
      CapAdd: hc.CapAdd,
      SecurityOpt: hc.SecurityOpt,
      Privileged: hc.Privileged,
      ReadonlyRootfs: hc.ReadonlyRootfs,
      Tmpfs: hc.Tmpfs,
      NetworkMode: hc.NetworkMode,
      PortBindings: hc.PortBindings,
      PublishAllPorts: hc.PublishAllPorts,
      Memory: hc.Memory,
      MemorySwap: hc.MemorySwap,
      NanoCpus: hc.NanoCpus,
      PidsLimit: hc.PidsLimit,
      Ulimits: hc.Ulimits,
      Binds: hc.Binds,
      AutoRemove: hc.AutoRemove,
      Init: hc.Init,
      LogConfig: hc.LogConfig,
    }).toEqual(expectedHostConfig({ workspace: path.join(home, 'worktrees', 's1', 'fs', 'work'), memoryBytes: 256 * 1024 ** 2, nanoCpus: 1e9 }));
    expect(info.Config.User).toBe('1000:1000');
    expect(info.Config.WorkingDir).toBe('/workspace');
    expect(info.Config.Labels).toMatchObject({ 'loki.session': 's1', 'loki.worker': WORKER });
    expect(info.Config.Env).toContain('ANTHROPIC_API_KEY=test-provider-key');
    expect(info.Config.Env?.some((e) => e.startsWith('LOKI_'))).toBe(false);
    expect(info.NetworkSettings.Ports ?? {}).toEqual({});
    expect(r.events.map((e) => e.type)).toEqual(['worktree_created', 'container_created', 'container_started', 'container_exited', 'container_removed', 'session_result']);
    await assertGone(r.result);
  });

  it('holds against escape attempts from inside', async () => {
    const script = [
      'touch /escape 2>/dev/null && echo root-writable || echo root-readonly',
      'touch /workspace/written && echo workspace-writable',
      'echo "#!/bin/sh" > /tmp/x && chmod +x /tmp/x && (/tmp/x 2>/dev/null && echo tmp-exec || echo tmp-noexec)',
      'echo "ifaces=$(ls /sys/class/net | tr "\\n" " ")"',
      'ip -o link | sed "s/^[0-9]*: \\([^:@]*\\).*/link=\\1/"',
      'echo "uid=$(id -u) gid=$(id -g)"',
      'grep -E "^(NoNewPrivs|CapEff|CapBnd|CapPrm):" /proc/self/status | tr -d "\\t" | tr ":" "="',
      'su -c "id -u" root 2>/dev/null; echo "su-exit=$?"',
      '[ -x /bin/suid/rootshell ] && { /bin/suid/rootshell /bin/id -u 2>/dev/null; echo "rootshell-exit=$?"; } || echo rootshell-missing',
      'echo "nofile=$(ulimit -n)"',
      'env | grep -c LOKI_ | sed "s/^/loki-vars=/"',
    ].join('\n');
    const r = await run(sh(script));
    expect(r.result.outcome).toBe('succeeded');
    expect(r.out).toContain('root-readonly');
    expect(r.out).toContain('workspace-writable');
    expect(r.out).toContain('tmp-noexec');
    expect(r.out).toContain('ifaces=lo ');
    expect(r.out.filter((l) => l.startsWith('link='))).toEqual(['link=lo']);
    expect(r.out).toContain('uid=1000 gid=1000');
    expect(r.out).toContain('NoNewPrivs=1');
    expect(r.out).toContain('CapEff=0000000000000000');
    expect(r.out).toContain('CapBnd=0000000000000000');
    expect(r.out).toContain('su-exit=1');
    expect(r.out).not.toContain('0');
    expect(r.out).toContain('nofile=4096');
    expect(r.out).toContain('loki-vars=0');
    if (process.env.CI === 'true') expect(r.out).not.toContain('rootshell-missing');
    if (!r.out.includes('rootshell-missing')) expect(r.out).toContain('rootshell-exit=1');
    // The write landed in the session's worktree and so in its result, never in the workspace itself.
    expect(existsSync(path.join(ws, 'written'))).toBe(false);
    expect(r.result.result).toMatchObject({ kind: 'copy', filesChanged: 1 });
    expect(r.result.result!.patch).toContain('diff --git a/written b/written\nnew file mode 100644');
    await assertGone(r.result);
  });

  it('control: without no-new-privileges the same setuid binary does gain root (so the test above means something)', async () => {
    const opts = containerOptions(policy(['/bin/suid/rootshell', '/bin/id', '-u']), { sessionId: 'control', workerId: WORKER, workspace: ws, prd: 'prd.md', env: {}, home });
    const hasRootshell = await runProbe(docker, ['/bin/sh', '-c', '[ -x /bin/suid/rootshell ] && echo yes || echo no']);
    if (hasRootshell.trim() !== 'yes') {
      expect(process.env.CI).not.toBe('true');
      return;
    }
    const output = await runProbe(docker, opts.Cmd!, { ...opts.HostConfig, SecurityOpt: [] });
    expect(output.trim()).toBe('0');
  });

  it('passes the hostile PRD name as one argument and executes nothing from it', async () => {
    // `sh -c SCRIPT ARG`: the argument after the script is $0; every argv element is printed in <>.
    const r = await run(['/bin/sh', '-c', 'printf "<%s>\\n" "$0" "$@"; [ -e /tmp/pwned ] && echo PWNED || echo clean', '{prd}'], {
      spec: { prdRelative: HOSTILE_PRD },
    });
    expect(r.result.outcome).toBe('succeeded');
    expect(r.out).toEqual([`<${HOSTILE_PRD}>`, 'clean']);
    const r3 = await run(['/bin/cat', '{prd}'], { spec: { prdRelative: HOSTILE_PRD } });
    expect(r3.out).toEqual(['# hostile']);
    expect(existsSync('/tmp/pwned')).toBe(false);
  });

  it('bounds a fork bomb with the pids limit, and the session still ends', async () => {
    let maxPids = 0;
    let sampling: Promise<void> | undefined;
    // Every process forks forever; PID 1 waits on a sleeper started first, so it keeps its slot.
    const r = await run(sh('sleep 600 & s=$!; f() { while :; do f & done; }; f & wait $s'), {
      settings: { timeout_seconds: 4, nano_cpus: 5e8 },
      onEvent: (type, data) => {
        if (type !== 'container_started') return;
        const id = String(data.container_id);
        sampling = (async () => {
          const pidsFile = `/sys/fs/cgroup/pids/docker/${id}/pids.current`;
          for (let i = 0; i < 12; i++) {
            await new Promise((res) => setTimeout(res, 250));
            try {
              maxPids = Math.max(maxPids, Number(readFileSync(pidsFile, 'utf8').trim()));
            } catch {
              try {
                const top = await docker.getContainer(id).top({ ps_args: '-e' });
                maxPids = Math.max(maxPids, top.Processes?.length ?? 0);
              } catch {
                return;
              }
            }
          }
        })();
      },
    });
    await sampling;
    expect(r.result.outcome).toBe('timed_out');
    expect(maxPids).toBeGreaterThan(50);
    expect(maxPids).toBeLessThanOrEqual(256);
    expect(r.err.some((l) => l.includes("can't fork"))).toBe(true);
    await assertGone(r.result);
  });

  it('reports a memory hog as oom_killed', async () => {
    const r = await run(['/bin/tail', '/dev/zero'], { settings: { memory_bytes: 16 * 1024 ** 2 } });
    expect(r.result.outcome).toBe('oom_killed');
    expect(r.result.exitCode).toBe(137);
    expect(r.events.find((e) => e.type === 'container_exited')?.data).toMatchObject({ oom_killed: true });
    await assertGone(r.result);
  });

  it('times out a sleeper that ignores SIGTERM (SIGKILL after the grace)', async () => {
    const started = Date.now();
    const r = await run(sh('trap "" TERM; sleep 60 & wait $!; sleep 60'), { settings: { timeout_seconds: 1 } });
    expect(r.result.outcome).toBe('timed_out');
    const elapsed = Date.now() - started;
    expect(elapsed).toBeGreaterThanOrEqual(1_900); // 1 s timeout + 1 s grace before SIGKILL
    expect(elapsed).toBeLessThan(10_000);
    await assertGone(r.result);
  });

  it('stops on request: SIGTERM reaches the provider', async () => {
    const ac = new AbortController();
    const r = await run(sh('trap "echo got-term; exit 0" TERM; echo ready; while :; do sleep 0.1; done'), {
      signal: ac.signal,
      onEvent: (type) => {
        if (type === 'container_started') setTimeout(() => ac.abort(), 500);
      },
    });
    expect(r.result.outcome).toBe('stopped');
    expect(r.out).toEqual(['ready', 'got-term']);
    await assertGone(r.result);
  });

  it('stops at the budget', async () => {
    const r = await run(sh('i=0; while :; do i=$((i+1)); echo "{\\"type\\":\\"result\\",\\"total_cost_usd\\":$i}"; sleep 0.05; done'), {
      spec: { budgetUsd: 5 },
    });
    expect(r.result.outcome).toBe('budget_exceeded');
    expect(r.events.filter((e) => e.type.startsWith('budget_')).map((e) => [e.type, e.data])).toEqual([
      ['budget_warning', { spent_usd: 4, limit_usd: 5 }],
      ['budget_exceeded', { spent_usd: 5, limit_usd: 5 }],
    ]);
    await assertGone(r.result);
  });

  it('separates and redacts stdout and stderr', async () => {
    const r = await run(sh('echo out-1; echo err-1 >&2; echo "key sk-ant-abcdefghijklmnopqrst"; printf "no-newline"'));
    expect(r.out).toEqual(['out-1', 'key [REDACTED]', 'no-newline']);
    expect(r.err).toEqual(['err-1']);
  });

  it('fails cleanly on a missing image and on a refused mount', async () => {
    const missing = await run(['true'], { settings: { image: 'loki-sandbox:does-not-exist' } });
    expect(missing.result.outcome).toBe('failed');
    expect(missing.result.error).toMatch(/container create failed/);
    // A policy handed over with a forbidden mount (the server and worker checks
    // were bypassed): the deny rules still refuse it before any container exists.
    const refused = await run(['true'], {
      settings: { mounts: [{ host: '/etc', container: '/e', mode: 'ro' }] },
    });
    expect(refused.result).toMatchObject({ outcome: 'failed', error: expect.stringMatching(/rule etc/) });
    expect(refused.events.map((e) => e.type)).toEqual(['worktree_created', 'setup_failed']);
    expect(existsSync(path.join(home, 'worktrees', `s${counter}`))).toBe(false);
  });

  it('binds a pinned copy of each extra mount: the container reads it, and a symlink planted after the checks leads nowhere', async () => {
    const data = mkdtempSync(path.join(tmpdir(), 'loki-sbx-data-'));
    writeFileSync(path.join(data, 'fact.txt'), 'from the dataset\n');
    chownSync(data, 1000, 1000);
    let binds: string[] = [];
    const r = await run(sh('cat /data/fact.txt; echo x > /data/new.txt 2>/dev/null || echo read-only'), {
      settings: { mounts: [{ host: data, container: '/data', mode: 'ro' }] },
      onEvent: (type, d) => {
        if (type === 'container_created') {
          void docker
            .getContainer(String(d.container_id))
            .inspect()
            .then((info) => {
              binds = info.HostConfig.Binds ?? [];
            });
        }
      },
    });
    expect(r.result.outcome).toBe('succeeded');
    expect(r.out).toEqual(['from the dataset', 'read-only']);
    const id = `s${counter}`;
    expect(binds[1]).toBe(`${path.join(home, 'worktrees', id, 'mounts', '0')}:/data:ro`);
    // The pin is gone with the worktree.
    expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(path.join(home, 'worktrees', id));

    // A policy whose mount path is a symlink (swapped after the worker's checks): refused before any container.
    const link = `${data}-link`;
    const { symlinkSync } = await import('node:fs');
    symlinkSync(data, link);
    const swapped = await run(['true'], { settings: { mounts: [{ host: link, container: '/data', mode: 'ro' }] } });
    expect(swapped.result.outcome).toBe('failed');
    expect(swapped.events.map((e) => e.type)).toEqual(['worktree_created', 'setup_failed']);
    expect(swapped.result.error).toMatch(/ELOOP|changed since it was checked|now resolves to/);
    rmSync(link);
    rmSync(data, { recursive: true, force: true });
  });

  it('a session with runtime runsc runs under gVisor with the same outcomes (pids limit sized for gVisor)', async () => {
    const info = await docker.info();
    if (!Object.keys(info.Runtimes ?? {}).includes('runsc')) {
      expect(process.env.CI).not.toBe('true');
      return;
    }
    let hc: Docker.ContainerInspectInfo['HostConfig'] | undefined;
    const r = await run(sh('uname -r; echo agent > out.txt; exit 3'), {
      settings: { runtime: 'runsc' },
      onEvent: (type, d) => {
        if (type === 'container_started') {
          void docker
            .getContainer(String(d.container_id))
            .inspect()
            .then((i) => {
              hc = i.HostConfig;
            });
        }
      },
    });
    expect(r.result).toMatchObject({ outcome: 'failed', exitCode: 3 });
    expect(r.out[0]).not.toBe(os.release());
    expect(hc).toMatchObject({ Runtime: 'runsc', PidsLimit: 4096, NetworkMode: 'none', ReadonlyRootfs: true });
    expect(r.result.result).toMatchObject({ kind: 'copy', filesChanged: 1 });
  });

  it('removes orphans of this worker and stops all of its containers', async () => {
    const base = containerOptions(policy(['/bin/sleep', '60']), {
      sessionId: 'x',
      workerId: WORKER,
      workspace: ws,
      prd: 'prd.md',
      env: {},
      home,
    });
    const make = (session: string) =>
      docker.createContainer({ ...base, Labels: { 'loki.session': session, 'loki.worker': WORKER } });
    const orphan = await make('dead-session');
    const live = await make('live-session');
    await live.start();
    const removed = await removeOrphans(docker, WORKER, new Set(['live-session']));
    expect(removed).toEqual([orphan.id]);
    await expect(orphan.inspect()).rejects.toMatchObject({ statusCode: 404 });
    const stopped = await stopAllForWorker(docker, WORKER, { graceMs: 500 });
    expect(stopped).toEqual([live.id]);
    expect((await live.inspect()).State.Running).toBe(false);
    expect(await removeOrphans(docker, WORKER, new Set())).toEqual([live.id]);
  });
});

/** Run a one-off container of the sandbox image with `HostConfig`, returning its stdout. */
async function runProbe(docker: Docker, cmd: string[], hostConfig: Docker.HostConfig = {}): Promise<string> {
  const container = await docker.createContainer({
    Image: SANDBOX_IMAGE,
    Cmd: cmd,
    User: '1000:1000',
    Labels: { 'loki.worker': WORKER, 'loki.session': 'probe' },
    HostConfig: { NetworkMode: 'none', CapDrop: ['ALL'], ReadonlyRootfs: true, ...hostConfig, Binds: [], LogConfig: { Type: 'json-file', Config: {} } },
  });
  try {
    await container.start();
    await container.wait();
    const logs = await container.logs({ stdout: true, stderr: false });
    // Non-TTY logs are multiplexed: strip the 8-byte frame headers.
    let out = '';
    for (let i = 0; i + 8 <= logs.length; ) {
      const len = logs.readUInt32BE(i + 4);
      out += logs.subarray(i + 8, i + 8 + len).toString('utf8');
      i += 8 + len;
    }
    return out;
  } finally {
    await container.remove({ force: true });
  }
}

/**
 * A worker killed with pooled sessions running leaves slot mounts under
 * `$LOKI_HOME/pool/<worker id>` (the slot's bind of itself, the session's worktree on
 * its work/). The next run removes them whether or not it has a warm pool of its own
 * (`--warm 0`, no engine, no forwarder): nothing else would, and a worktree left bound
 * there keeps its loop device and deleted disk image for good.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { LokiClient } from '../../src/client';
import { mountsUnder } from '../../src/sandbox/mounts';
import type { OperatorPolicy } from '../../src/sandbox/session-policy';
import { SandboxWorker } from '../../src/sandbox/worker';

const root = process.getuid?.() === 0;
const home = mkdtempSync(path.join(os.tmpdir(), 'loki-pool-stale-'));

function mount(...args: string[]): void {
  const r = spawnSync('mount', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`mount ${args.join(' ')}: ${r.stderr}`);
}

afterAll(() => {
  for (const mp of mountsUnder(home) ?? []) spawnSync('umount', ['-l', mp]);
  rmSync(home, { recursive: true, force: true });
});

describe.skipIf(!root)('stale warm-pool slots (needs root: mounts)', () => {
  it.each([
    ['--warm 0', { warm: 0, docker: null }],
    ['no engine', { warm: 2, docker: null }],
  ] as const)('a worker started with %s removes the slots its previous run left mounted', async (_name, o) => {
    const poolRoot = path.join(home, `pool-${o.warm}`);
    const slot = path.join(poolRoot, 'pool-00112233aabbccdd');
    mkdirSync(path.join(slot), { recursive: true, mode: 0o700 });
    mount('--bind', slot, slot);
    mkdirSync(path.join(slot, 'work'));
    // Stands in for the worktree bound on the slot when the worker was killed.
    mount('-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', path.join(slot, 'work'));
    expect(mountsUnder(poolRoot)).toHaveLength(2);

    const client = {
      url: 'http://127.0.0.1:9',
      claimJob: (_input: unknown, signal?: AbortSignal) =>
        new Promise<null>((resolve) => (signal?.aborted ? resolve(null) : signal?.addEventListener('abort', () => resolve(null), { once: true }))),
      workerSessionIds: async () => [],
    } as unknown as LokiClient;
    const logged: string[] = [];
    const log = (level: string) => (msg: string) => logged.push(`${level} ${msg}`);
    const worker = new SandboxWorker({
      client,
      workerId: 'stale-w',
      concurrency: 1,
      docker: o.docker,
      killGraceMs: 1_000,
      maxOutputBytes: 1024,
      home,
      lokiHome: home,
      operatorPolicy: {} as OperatorPolicy,
      logger: { info: log('info'), warn: log('warn'), error: log('error') },
      warm: o.warm,
      poolRoot,
      worktreeRoot: path.join(home, 'worktrees'),
    });
    const running = worker.run();
    await new Promise((r) => setTimeout(r, 200));
    await worker.shutdown('test', 5_000);
    await running;
    expect(mountsUnder(poolRoot)).toEqual([]);
    expect(existsSync(slot)).toBe(false);
    expect(logged.filter((l) => l.startsWith('warn a stale'))).toEqual([]);
  });
});

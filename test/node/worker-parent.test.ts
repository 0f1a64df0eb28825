/**
 * `loki sandbox worker --exit-with-parent` (the embedded worker): when the server
 * that started it dies without a word (SIGKILL), the worker shuts down by itself
 * instead of running on with a token only the next start would revoke.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { LOKI_BIN, ROOT } from '../helpers/server';

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

async function until(cond: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
  return true;
}

/** A parent process running the worker; resolves once the worker has started. */
async function workerUnderParent(flags: string[]): Promise<{ parent: ChildProcess; pid: number; output: () => string }> {
  const home = mkdtempSync(path.join(os.tmpdir(), 'loki-parent-'));
  const env = { PATH: process.env.PATH ?? '', HOME: home, LOKI_HOME: home, LOKI_URL: 'http://127.0.0.1:9', LOKI_WORKER_TOKEN: 'loki_notarealtoken' };
  const parent = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'test/helpers/parent-of.ts'), process.execPath, LOKI_BIN, 'sandbox', 'worker', '--warm', '0', ...flags], {
    cwd: ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  parent.stdout?.on('data', (d) => {
    out += d;
  });
  parent.stderr?.on('data', (d) => {
    out += d;
  });
  expect(await until(() => /CHILD \d+/.test(out) && out.includes('sandbox worker started'), 30_000)).toBe(true);
  return { parent, pid: Number(/CHILD (\d+)/.exec(out)![1]), output: () => out };
}

describe('a worker whose parent is killed', () => {
  it('with --exit-with-parent: shuts down by itself and says why', async () => {
    const { parent, pid, output } = await workerUnderParent(['--exit-with-parent']);
    parent.kill('SIGKILL');
    expect(await until(() => !alive(pid), 20_000)).toBe(true);
    expect(output()).toContain('the process that started this worker is gone; shutting down');
  });

  it('without it: keeps running (the flag is what stops it)', async () => {
    const { parent, pid } = await workerUnderParent([]);
    parent.kill('SIGKILL');
    try {
      expect(await until(() => !alive(pid), 3_000)).toBe(false);
    } finally {
      process.kill(pid, 'SIGKILL');
    }
  });
});

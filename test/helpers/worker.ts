/**
 * Real sandbox workers and `loki` commands run from a given directory, as
 * separate processes (for `loki start` and for SIGKILL/SIGTERM tests).
 */
import { type Ran, runProcess } from './process';
import { type ChildProcess, spawn } from 'node:child_process';
import os from 'node:os';
import { LOKI_BIN } from './server';

/**
 * The child's environment: only what the test passes, and a HOME that is never the
 * developer's (so `~/.loki`, `~/.loki/policy.yaml` and credentials there are never read).
 */
function childEnv(env: Record<string, string>): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH ?? '', HOME: env.LOKI_HOME ?? os.tmpdir(), ...env };
}

export interface SpawnedWorker {
  child: ChildProcess;
  output(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves when the worker's log contains `pattern`. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<void>;
}

/**
 * Spawn `loki sandbox worker` and wait for its start-up line. Without `--warm` in
 * `args` it runs with `--warm 0` (fresh containers); the warm pool has tests of its own.
 * `opts.startTimeoutMs`: how long to wait for that line (default 20 s); a worker that
 * does not come up is killed.
 */
export async function spawnWorker(env: Record<string, string>, args: string[] = [], opts: { startTimeoutMs?: number } = {}): Promise<SpawnedWorker> {
  const warm = args.includes('--warm') ? [] : ['--warm', '0'];
  const child = spawn(process.execPath, [LOKI_BIN, 'sandbox', 'worker', ...warm, ...args], {
    env: childEnv(env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const onData = (d: Buffer) => {
    out += d.toString();
  };
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const waitFor = async (pattern: RegExp, timeoutMs = 20_000) => {
    const deadline = Date.now() + timeoutMs;
    while (!pattern.test(out)) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`worker exited: ${out}`);
      if (Date.now() > deadline) throw new Error(`worker log never matched ${pattern}: ${out}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const worker = { child, output: () => out, exited, waitFor };
  try {
    await waitFor(/sandbox worker started/, opts.startTimeoutMs);
  } catch (err) {
    // A worker that did not come up is not left running.
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    throw err;
  }
  return worker;
}

/** Run `loki …` in `cwd`; resolves with the exit code and both streams. */
export function runLoki(
  args: string[],
  opts: { env: Record<string, string>; cwd: string; timeoutMs?: number },
): Promise<Ran> {
  return runProcess(process.execPath, [LOKI_BIN, ...args], {
    cwd: opts.cwd,
    env: childEnv(opts.env),
    timeoutMs: opts.timeoutMs,
  });
}

/**
 * A closed pipe ends a short CLI command as SIGPIPE ends `cat` (src/cli/pipe.ts),
 * but never the long-running server: `loki dashboard 2>&1 | tee log` whose reader
 * went away lost the process (killed by SIGPIPE at its next log line, no graceful
 * shutdown, no exit hook for the embedded worker). Its log lines are lost instead.
 */
import { spawn } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { knownStoreEnv, testStoreEnv } from '../helpers/postgres';
import { freePort, LOKI_BIN, tempHome } from '../helpers/server';

describe('loki dashboard with a closed log pipe (real process)', () => {
  const children: { kill: (s: NodeJS.Signals) => boolean }[] = [];
  afterAll(() => {
    for (const c of children) c.kill('SIGKILL');
  });

  it('keeps serving; SIGTERM still ends it gracefully (exit 0)', async () => {
    const home = tempHome('loki-pipe-');
    const port = await freePort();
    const child = spawn(process.execPath, [LOKI_BIN, 'dashboard'], {
      env: {
        PATH: process.env.PATH ?? '',
        HOME: home,
        LOKI_HOME: home,
        LOKI_EMBEDDED_WORKER: 'off',
        ...(await testStoreEnv(home)),
        ...knownStoreEnv(home),
        LOKI_DASHBOARD_PORT: String(port),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    // The reader goes away at once: every log line the server writes meets a closed pipe.
    child.stdout?.destroy();
    child.stderr?.destroy();
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));

    let healthy = false;
    const deadline = Date.now() + 60_000;
    while (!healthy && Date.now() < deadline && child.exitCode === null && child.signalCode === null) {
      healthy = await fetch(`http://127.0.0.1:${port}/health`).then(
        (r) => r.ok,
        () => false,
      );
      if (!healthy) await new Promise((r) => setTimeout(r, 100));
    }
    expect({ healthy, signal: child.signalCode, code: child.exitCode }).toEqual({ healthy: true, signal: null, code: null });
    // Requests (each one an audit entry, a 404 also a log line) do not end it either.
    expect((await fetch(`http://127.0.0.1:${port}/no-such-route`)).status).toBe(404);
    expect((await fetch(`http://127.0.0.1:${port}/health`)).status).toBe(200);

    child.kill('SIGTERM');
    expect(await exited).toEqual({ code: 0, signal: null });
  }, 120_000);
});

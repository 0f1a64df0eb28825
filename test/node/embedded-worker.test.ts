/**
 * The embedded sandbox worker without a Docker engine: the setting, `auto` and
 * `on` against an engine that is not there, `off`, and the supervisor's restart
 * and stop logic on real child processes. The runs with a real engine are in
 * embedded-worker.docker.test.ts.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { embeddedWorkerEnv, OUTPUT_PREFIX, restartDelay, Supervisor } from '../../src/embedded-worker';
import { ConfigError, loadConfig } from '../../src/env';
import { until } from '../helpers/process';
import { captureLogger, ROOT, runCli, type SpawnedServer, spawnServer, tempHome } from '../helpers/server';

const NO_ENGINE = 'unix:///nonexistent/loki-test/docker.sock';
const cfg = (env: Record<string, string>) => loadConfig(env, { home: '/home/u', cwd: '/w' });

describe('LOKI_EMBEDDED_WORKER setting', () => {
  it('defaults to auto; auto, on and off in any case; concurrency and warm default to 2', () => {
    expect(cfg({})).toMatchObject({ embeddedWorker: 'auto', embeddedWorkerConcurrency: 2, embeddedWorkerWarm: 2 });
    expect(cfg({ LOKI_EMBEDDED_WORKER: 'ON' }).embeddedWorker).toBe('on');
    expect(cfg({ LOKI_EMBEDDED_WORKER: ' off ' }).embeddedWorker).toBe('off');
    expect(cfg({ LOKI_EMBEDDED_WORKER_CONCURRENCY: '4', LOKI_EMBEDDED_WORKER_WARM: '0' })).toMatchObject({
      embeddedWorkerConcurrency: 4,
      embeddedWorkerWarm: 0,
    });
  });

  it('anything else is refused naming the variable and the values allowed', () => {
    expect(() => cfg({ LOKI_EMBEDDED_WORKER: 'yes' })).toThrow(ConfigError);
    expect(() => cfg({ LOKI_EMBEDDED_WORKER: 'yes' })).toThrow('LOKI_EMBEDDED_WORKER="yes" is invalid: expected one of auto, on, off');
    expect(() => cfg({ LOKI_EMBEDDED_WORKER_WARM: '33' })).toThrow('LOKI_EMBEDDED_WORKER_WARM="33" is invalid: expected an integer from 0 to 32');
    expect(() => cfg({ LOKI_EMBEDDED_WORKER_CONCURRENCY: '0' })).toThrow(
      'LOKI_EMBEDDED_WORKER_CONCURRENCY="0" is invalid: expected an integer from 1 to 32',
    );
  });

  it('a bad value stops `loki dashboard` with exit 2 and one line', async () => {
    const r = await runCli(['dashboard'], { LOKI_HOME: tempHome(), LOKI_EMBEDDED_WORKER: 'maybe' });
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('loki: LOKI_EMBEDDED_WORKER="maybe" is invalid: expected one of auto, on, off\n');
  });
});

describe('embedded worker without a reachable Docker engine', () => {
  let srv: SpawnedServer | null = null;
  afterEach(async () => {
    if (srv && srv.child.exitCode === null) {
      srv.child.kill('SIGTERM');
      await srv.exited;
    }
    if (srv) rmSync(srv.home, { recursive: true, force: true });
    srv = null;
  });

  const tokenCount = (home: string) => {
    const db = new Database(path.join(home, 'dashboard', 'loki.db'), { readonly: true });
    try {
      return (db.prepare('SELECT count(*) AS n FROM tokens').get() as { n: number }).n;
    } finally {
      db.close();
    }
  };

  it('auto: the server starts, logs one line why there is no worker, and /api/status says why', async () => {
    srv = await spawnServer({ LOKI_EMBEDDED_WORKER: 'auto', DOCKER_HOST: NO_ENGINE });
    const status = (await (await fetch(`${srv.url}/api/status`)).json()) as { embedded_worker: unknown };
    expect(status.embedded_worker).toEqual({
      state: 'unavailable',
      reason: `no Docker engine answers at ${NO_ENGINE} (connect ENOENT /nonexistent/loki-test/docker.sock)`,
      pid: null,
      restarts: 0,
      worker_id: null,
    });
    const lines = srv.output().split('\n').filter((l) => l.includes('embedded'));
    expect(lines).toHaveLength(2);
    expect(JSON.parse(lines[0]!)).toMatchObject({ level: 'warn', msg: 'no embedded sandbox worker', reason: (status.embedded_worker as { reason: string }).reason });
    expect(JSON.parse(lines[1]!)).toMatchObject({ msg: 'loki dashboard listening', embedded_worker: 'unavailable' });
    expect(srv.output()).not.toContain(OUTPUT_PREFIX);
    // No token is minted for a worker that is not started.
    expect(tokenCount(srv.home)).toBe(0);
  });

  it('on: an unreachable engine is a start-up error: exit 2, one line, no database opened', async () => {
    const home = tempHome();
    const r = await runCli(['dashboard'], { LOKI_HOME: home, LOKI_EMBEDDED_WORKER: 'on', DOCKER_HOST: NO_ENGINE });
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(
      `loki: LOKI_EMBEDDED_WORKER=on but no Docker engine answers at ${NO_ENGINE} (connect ENOENT /nonexistent/loki-test/docker.sock)\n`,
    );
    expect(r.stdout).toBe('');
    expect(existsSync(path.join(home, 'dashboard', 'loki.db'))).toBe(false);
    rmSync(home, { recursive: true, force: true });
  });

  it('off (what the test helpers default to): no worker, no token, status says so', async () => {
    srv = await spawnServer();
    const status = (await (await fetch(`${srv.url}/api/status`)).json()) as { embedded_worker: unknown };
    expect(status.embedded_worker).toEqual({ state: 'off', reason: 'LOKI_EMBEDDED_WORKER=off', pid: null, restarts: 0, worker_id: null });
    expect(tokenCount(srv.home)).toBe(0);
  });
});

describe('restart back-off', () => {
  it('doubles from 1 s and stops at 60 s', () => {
    expect([0, 1, 2, 3, 4, 5, 6, 7, 50].map((n) => restartDelay(n))).toEqual([1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000]);
    expect([0, 1, 2, 3].map((n) => restartDelay(n, { initialMs: 50, maxMs: 150, resetAfterMs: 1_000 }))).toEqual([50, 100, 150, 150]);
  });
});

describe('Supervisor on real child processes', () => {
  it('restarts a child that exits, forwards its output prefixed, and stops restarting after stop()', async () => {
    const lines: string[] = [];
    const logger = captureLogger();
    const sup = new Supervisor({
      command: process.execPath,
      args: ['-e', 'process.stdout.write("out line\\n"); process.stderr.write("err line\\nno newline"); process.exit(3)'],
      env: { PATH: process.env.PATH ?? '' },
      logger,
      output: (l) => lines.push(l),
      backoff: { initialMs: 50, maxMs: 100, resetAfterMs: 60_000 },
    });
    sup.start();
    await until('three restarts', async () => sup.restarts >= 3, 20_000);
    await sup.stop();
    const restarts = sup.restarts;
    expect(sup.status()).toEqual({ state: 'off', reason: 'the server is shutting down', pid: null, restarts });
    // Every run's output, each line prefixed; a last line without a newline is kept too.
    expect(lines.filter((l) => l === `${OUTPUT_PREFIX}out line`).length).toBeGreaterThanOrEqual(3);
    expect(lines.filter((l) => l === `${OUTPUT_PREFIX}err line`).length).toBeGreaterThanOrEqual(3);
    expect(lines.filter((l) => l === `${OUTPUT_PREFIX}no newline`).length).toBeGreaterThanOrEqual(3);
    expect(lines.every((l) => l.startsWith(OUTPUT_PREFIX))).toBe(true);
    const warned = logger.lines.filter((l) => l.msg === 'embedded sandbox worker stopped; restarting');
    expect(warned[0]!.fields!.reason).toMatch(/^the worker exited with code 3 after \d+\.\d s; restarting in 0\.1 s$/);
    expect(warned[1]!.fields!.reason).toMatch(/; restarting in 0\.1 s$/);
    await new Promise((r) => setTimeout(r, 300));
    expect(sup.restarts).toBe(restarts);
  });

  it('while waiting to restart, status says restarting and why', async () => {
    const sup = new Supervisor({
      command: process.execPath,
      args: ['-e', 'process.exit(7)'],
      env: { PATH: process.env.PATH ?? '' },
      logger: captureLogger(),
      output: () => {},
      backoff: { initialMs: 60_000, maxMs: 60_000, resetAfterMs: 60_000 },
    });
    sup.start();
    const s = await until('the first exit', async () => (sup.status().state === 'restarting' ? sup.status() : null));
    expect(s).toMatchObject({ state: 'restarting', pid: null, restarts: 0 });
    expect(s.reason).toMatch(/^the worker exited with code 7 after \d+\.\d s; restarting in 60\.0 s$/);
    await sup.stop();
    expect(sup.status().state).toBe('off');
  });

  it('stop(): SIGTERM first; a child that ignores it is killed after the timeout', async () => {
    const logger = captureLogger();
    const lines: string[] = [];
    const sup = new Supervisor({
      command: process.execPath,
      args: ['-e', 'process.on("SIGTERM", () => console.log("got SIGTERM")); console.log("up"); setInterval(() => {}, 1000)'],
      env: { PATH: process.env.PATH ?? '' },
      logger,
      output: (l) => lines.push(l),
      stopTimeoutMs: 500,
    });
    sup.start();
    const pid = sup.pid!;
    await until('the child to be up', async () => lines.includes(`${OUTPUT_PREFIX}up`));
    expect(sup.status()).toEqual({ state: 'running', reason: null, pid, restarts: 0 });
    await sup.stop();
    expect(lines).toContain(`${OUTPUT_PREFIX}got SIGTERM`);
    expect(logger.lines.map((l) => l.msg)).toContain('embedded sandbox worker did not stop in time; killing it');
    expect(() => process.kill(pid, 0)).toThrow();
    expect(sup.restarts).toBe(0);
  });

  it('stop(): a child that exits on SIGTERM is not killed and not restarted', async () => {
    const logger = captureLogger();
    const lines: string[] = [];
    const sup = new Supervisor({
      command: process.execPath,
      args: ['-e', 'process.on("SIGTERM", () => { console.log("bye"); process.exit(0) }); console.log("up"); setInterval(() => {}, 1000)'],
      env: { PATH: process.env.PATH ?? '' },
      logger,
      output: (l) => lines.push(l),
      stopTimeoutMs: 10_000,
    });
    sup.start();
    await until('the child to be up', async () => lines.includes(`${OUTPUT_PREFIX}up`));
    await sup.stop();
    expect(lines).toEqual([`${OUTPUT_PREFIX}up`, `${OUTPUT_PREFIX}bye`]);
    expect(logger.lines).toEqual([]);
    expect(sup.restarts).toBe(0);
  });

  it('a server that exits without stop() (a crash) sends the child SIGTERM on its way out', async () => {
    const dir = tempHome('loki-sup-exit-');
    const marker = path.join(dir, 'child-got');
    const grandchild = `process.on("SIGTERM", () => { require("fs").writeFileSync(${JSON.stringify(marker)}, "SIGTERM"); process.exit(0) }); console.log("up"); setInterval(() => {}, 1000)`;
    const parent = `
      import { Supervisor } from ${JSON.stringify(path.join(ROOT, 'src/embedded-worker.ts'))};
      const sup = new Supervisor({
        command: process.execPath, args: ['-e', ${JSON.stringify(grandchild)}], env: { PATH: process.env.PATH ?? '' },
        logger: { info() {}, warn() {}, error() {} },
        output: (l) => { if (l.endsWith('up')) { console.log('child ' + sup.pid); process.exit(1); } },
      });
      sup.start();`;
    const p = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', parent], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (d) => {
      out += d;
    });
    const code = await new Promise<number | null>((r) => p.once('exit', (c) => r(c)));
    expect(code).toBe(1);
    const pid = Number(/child (\d+)/.exec(out)![1]);
    await until('the child to get SIGTERM and exit', async () => {
      try {
        process.kill(pid, 0);
        return false;
      } catch {
        return true;
      }
    });
    expect(readFileSync(marker, 'utf8')).toBe('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  });
});

describe('the embedded worker environment', () => {
  it('holds its URL, token and id, and none of the server token, the database URL or file', () => {
    const env = embeddedWorkerEnv(
      { PATH: '/usr/bin', LOKI_HOME: '/h', LOKI_TOKEN: 'loki_admin', LOKI_DATABASE_URL: 'postgres://u:pw@db/loki', LOKI_DB: '/h/x.db', LOKI_EMBEDDED_WORKER: 'on' },
      { url: 'http://127.0.0.1:57374', token: 'loki_worker', workerId: 'embedded-h' },
    );
    expect(env).toEqual({ PATH: '/usr/bin', LOKI_HOME: '/h', LOKI_URL: 'http://127.0.0.1:57374', LOKI_WORKER_TOKEN: 'loki_worker', LOKI_WORKER_ID: 'embedded-h' });
  });
});

/**
 * npm run bench:sandbox — sandboxed sessions against the Docker CLI.
 *
 * 1. Start latency: time from `POST /api/sessions` to the session's first stored
 *    output line (server in this process, so the moment the line is committed is
 *    seen exactly; the worker is its own process), against `docker run --rm
 *    --network none loki-sandbox:local <same command>` to its first stdout byte.
 *    Sequential rounds (default 20 each, after 2 warm-ups).
 * 2. Throughput: N sessions (default 20) queued at once through one worker at
 *    concurrency 4: sessions per minute, outcomes, containers and worktrees left behind.
 * 3. Worktrees: for a git repository of 10,000 files, the time to make a session's
 *    private worktree (on its own 10 GiB loop-mounted file system, owned by uid
 *    1000), to commit an agent's change to 10 files onto `loki/session-<id>` in the
 *    repository, and to remove it (--wt-rounds N, default 5).
 *
 * 4. Warm pool: the worker restarted with `--warm 2`; the same start latency with the
 *    session attached to a pooled container (the pool refilled between rounds), against
 *    `docker run --rm` of the same image and command (target: p50 at most 0.6x).
 * 5. gVisor: a session with `runtime: runsc` (fresh container: the pool is runc only)
 *    against `docker run --rm --runtime runsc` (--runsc-rounds N, default 10).
 * 6. Egress: MB/s of a 256 MiB download from a loopback origin through the session
 *    proxy (CONNECT over its Unix socket) and through the in-container forwarder
 *    (loki-forward on a loopback port, piping to the proxy) against a direct loopback
 *    transfer, in one run (target: proxied at least 0.5x direct); --egress-mb N. The
 *    origin and the client are another process (scripts/bench/egress-peer.ts). The
 *    same run also measures a minimal Node CONNECT proxy (a pipe each way, no checks,
 *    no counting) on a Unix socket: the ceiling of any proxy written in Node here.
 *    `--only egress` runs this part alone (no Docker needed).
 *
 * Both 1 and 2 include the worktree step (a two-file workspace). Options: --rounds N,
 * --sessions N, --concurrency N, --files N, --wt-rounds N. Prints JSON.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import net from 'node:net';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import readline from 'node:readline';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import Docker from 'dockerode';
import { LokiClient } from '../../src/client';
import { TERMINAL_STATES } from '../../src/db/store';
import { loadConfig } from '../../src/env';
import { commitWorktree, createWorktree, removeWorktree } from '../../src/sandbox/worktree';
import { type RunningServer, startServer } from '../../src/server';
import { startEgressProxy } from '../../src/sandbox/egress';
import { freePort, numberArg, ROOT } from './lib';

const rounds = numberArg('rounds', 20);
const sessionsCount = numberArg('sessions', 20);
const concurrency = numberArg('concurrency', 4);
const IMAGE = 'loki-sandbox:local';
const COMMAND = ['echo', 'hello from the sandbox'];
const WORKER_ID = `bench-${process.pid}`;
const repoFiles = numberArg('files', 10_000);
const wtRounds = numberArg('wt-rounds', 5);
const runscRounds = numberArg('runsc-rounds', 10);
const egressMb = numberArg('egress-mb', 256);
const WARM = 2;
const FORWARDER = path.join(ROOT, '.tmp', 'loki-forward');

const quiet = { info() {}, warn() {}, error: (msg: string, f?: Record<string, unknown>) => process.stderr.write(`${msg} ${JSON.stringify(f ?? {})}\n`) };

function stats(xs: number[]) {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
  const r = (x: number) => Number(x.toFixed(1));
  return { n: s.length, min: r(s[0]!), p50: r(q(0.5)), p90: r(q(0.9)), max: r(s[s.length - 1]!), mean: r(s.reduce((a, b) => a + b, 0) / s.length) };
}

/** `docker run --rm` (argument array, no shell) → ms to the first stdout byte. */
function dockerRunFirstOutput(runtime = 'runc'): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let first: number | null = null;
    const child = spawn('docker', ['run', '--rm', '--network', 'none', '--runtime', runtime, IMAGE, ...COMMAND], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.once('data', () => {
      first = performance.now() - t0;
    });
    child.stdout.resume();
    let err = '';
    child.stderr.on('data', (d) => {
      err += d;
    });
    child.once('error', reject);
    child.once('close', (code) => (code === 0 && first !== null ? resolve(first) : reject(new Error(`docker run failed (${code}): ${err}`))));
  });
}

function git(cwd: string, args: string[]): void {
  const r = spawnSync('git', ['-c', 'user.name=bench', '-c', 'user.email=bench@localhost', ...args], { cwd, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`git ${args[0]} failed: ${r.stderr}`);
}

/** Worktree create / commit / remove for a repository of `repoFiles` files. */
async function worktreeBench(home: string) {
  const repo = mkdtempSync(path.join(os.tmpdir(), 'loki-bench-wt-repo-'));
  for (let d = 0; d < 100; d++) {
    mkdirSync(path.join(repo, `dir${d}`));
    for (let f = 0; f < repoFiles / 100; f++) writeFileSync(path.join(repo, `dir${d}`, `file${f}.txt`), `content ${d}/${f}\n`.repeat(8));
  }
  git(repo, ['init', '-q', '-b', 'main']);
  git(repo, ['add', '-A']);
  git(repo, ['commit', '-q', '-m', 'base']);
  const create: number[] = [];
  const commit: number[] = [];
  const remove: number[] = [];
  const root = path.join(home, 'bench-worktrees');
  try {
    for (let i = 0; i < wtRounds; i++) {
      const id = `bench${i}`;
      let t = performance.now();
      const wt = await createWorktree({ sessionId: id, workspace: repo, root, diskBytes: 10 * 1024 ** 3, owner: { uid: 1000, gid: 1000 } });
      create.push(performance.now() - t);
      for (let f = 0; f < 10; f++) writeFileSync(path.join(wt.dir, 'dir0', `file${f}.txt`), `changed by the agent ${i}\n`);
      t = performance.now();
      const r = await commitWorktree(wt, { sessionId: id, prd: 'prd.md' });
      commit.push(performance.now() - t);
      if (r.filesChanged !== 10) throw new Error(`expected 10 files changed, got ${r.filesChanged}`);
      t = performance.now();
      await removeWorktree(wt);
      remove.push(performance.now() - t);
    }
  } finally {
    rmSync(repo, { recursive: true, force: true });
  }
  return { files: repoFiles, rounds: wtRounds, create_ms: stats(create), commit_ms: stats(commit), remove_ms: stats(remove) };
}

/**
 * Direct loopback vs through the egress proxy vs through loki-forward → the proxy,
 * in one run. The origin and the client run in another process (egress-peer.ts): the
 * proxy here has a core of its own, as the worker's proxy has beside an agent.
 */
async function egressBench(home: string) {
  const peer = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'scripts', 'bench', 'egress-peer.ts'), String(egressMb)], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const lines = readline.createInterface({ input: peer.stdout! })[Symbol.asyncIterator]();
  const next = async () => {
    const r = await lines.next();
    if (r.done) throw new Error('the egress peer exited');
    if (r.value.startsWith('error')) throw new Error(`egress peer: ${r.value}`);
    return r.value;
  };
  const port = Number(await next());
  const dest = `127.0.0.1:${port}`;
  let decisions = 0;
  const proxy = await startEgressProxy({
    socketPath: path.join(home, 'bench-egress', 'egress.sock'),
    allow: [dest],
    privateDestinations: [dest],
    onDecision: () => {
      decisions++;
    },
  });
  // The ceiling: a CONNECT proxy with nothing but a pipe each way, in this process as ours is.
  const minimalPath = path.join(home, 'bench-egress', 'minimal.sock');
  const minimal = net.createServer((c) => {
    c.on('error', () => undefined);
    c.once('data', () => {
      const up = net.connect(port, '127.0.0.1', () => {
        c.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        up.pipe(c);
        c.pipe(up);
      });
      up.on('error', () => c.destroy());
      c.once('close', () => up.destroy());
    });
  });
  await new Promise<void>((r) => minimal.listen(minimalPath, r));
  const fwdPort = await freePort();
  // The forwarder's own mode: it runs a child (here one that waits) and pipes its port to the proxy.
  const forwarder = spawn(FORWARDER, ['-listen', `127.0.0.1:${fwdPort}`, '-socket', proxy.socketPath, '--', 'sleep', '3600'], { stdio: 'ignore' });
  const ask = async (cmd: string) => {
    peer.stdin!.write(`${cmd}\n`);
    return Number(await next());
  };
  try {
    await new Promise((r) => setTimeout(r, 300));
    const direct: number[] = [];
    const proxied: number[] = [];
    const forwarded: number[] = [];
    const ceiling: number[] = [];
    const rounds = 5;
    await ask('direct');
    for (let i = 0; i < rounds; i++) {
      direct.push(await ask('direct'));
      proxied.push(await ask(`unix ${proxy.socketPath}`));
      forwarded.push(await ask(`tcp ${fwdPort}`));
      ceiling.push(await ask(`unix ${minimalPath}`));
    }
    const mbps = (ms: number[]) => stats(ms.map((m) => egressMb / (m / 1000)));
    const d = mbps(direct);
    const p = mbps(proxied);
    const f = mbps(forwarded);
    const m = mbps(ceiling);
    return {
      mb: egressMb,
      rounds,
      direct_mb_s: d,
      proxy_mb_s: p,
      forwarder_and_proxy_mb_s: f,
      minimal_node_proxy_mb_s: m,
      ratio_proxy_p50: Number((p.p50 / d.p50).toFixed(3)),
      ratio_forwarder_p50: Number((f.p50 / d.p50).toFixed(3)),
      ratio_minimal_node_proxy_p50: Number((m.p50 / d.p50).toFixed(3)),
      ratio_proxy_vs_minimal_p50: Number((p.p50 / m.p50).toFixed(3)),
      decisions,
      target: 'proxied p50 >= 0.5 x direct p50 (both paths)',
      target_met: p.p50 >= 0.5 * d.p50 && f.p50 >= 0.5 * d.p50,
    };
  } finally {
    forwarder.kill('SIGTERM');
    peer.stdin!.end();
    minimal.close();
    await proxy.close();
  }
}

async function main() {
  if (process.argv.includes('--only') && process.argv[process.argv.indexOf('--only') + 1] === 'egress') {
    const home = mkdtempSync(path.join(os.tmpdir(), 'loki-bench-egress-'));
    try {
      process.stdout.write(`${JSON.stringify({ benchmark: 'sandbox', egress: await egressBench(home) }, null, 2)}\n`);
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
    return;
  }
  const docker = new Docker();
  await docker.ping();
  await docker.getImage(IMAGE).inspect();

  // LOKI_HOME and the workspace roots apart: the sandbox never mounts the state directory.
  const home = mkdtempSync(path.join(os.tmpdir(), 'loki-bench-sbx-home-'));
  const roots = mkdtempSync(path.join(os.tmpdir(), 'loki-bench-sbx-roots-'));
  const ws = path.join(roots, 'ws');
  mkdirSync(path.join(ws, '.loki'), { recursive: true });
  writeFileSync(path.join(ws, 'prd.md'), '# bench\n');
  writeFileSync(path.join(ws, '.loki', 'config.yaml'), `provider:\n  command: ${JSON.stringify(COMMAND)}\nsandbox:\n  memory_limit: 256m\n  cpu_limit: "1"\n`);
  for (const p of [roots, ws, path.join(ws, '.loki')]) chmodSync(p, 0o755);
  const wsRunsc = path.join(roots, 'ws-runsc');
  mkdirSync(path.join(wsRunsc, '.loki'), { recursive: true });
  writeFileSync(path.join(wsRunsc, 'prd.md'), '# bench\n');
  writeFileSync(
    path.join(wsRunsc, '.loki', 'config.yaml'),
    `provider:\n  command: ${JSON.stringify(COMMAND)}\nsandbox:\n  memory_limit: 256m\n  cpu_limit: "1"\n  runtime: runsc\n`,
  );
  for (const p of [wsRunsc, path.join(wsRunsc, '.loki')]) chmodSync(p, 0o755);
  // The operator's limits are the bench workspace's, so its sessions match the warm pool's default policy.
  writeFileSync(path.join(home, 'policy.yaml'), 'runtimes: [runc, runsc]\nlimits:\n  memory: 256m\n  cpu: 1\n', { mode: 0o644 });

  const port = await freePort();
  const config = loadConfig({ LOKI_HOME: home, LOKI_WORKSPACE_ROOTS: roots, LOKI_DASHBOARD_PORT: String(port) }, { home, cwd: home });
  const server: RunningServer = await startServer(config, { logger: quiet });
  const { store, events } = server.runtime.deps;
  let worker: ChildProcess | null = null;
  const startWorker = async (warm: number) => {
    const child = spawn(process.execPath, [path.join(ROOT, 'bin/loki.js'), 'sandbox', 'worker', '--concurrency', String(concurrency), '--warm', String(warm)], {
      env: { PATH: process.env.PATH ?? '', HOME: home, LOKI_HOME: home, LOKI_URL: server.url, LOKI_WORKER_ID: WORKER_ID },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout!.resume();
    await new Promise<void>((resolve, reject) => {
      let out = '';
      child.stderr!.on('data', (d) => {
        out += d;
        if (out.includes('sandbox worker started')) resolve();
      });
      child.once('exit', (code) => reject(new Error(`worker exited (${code}): ${out}`)));
    });
    return child;
  };
  const stopWorker = async () => {
    if (worker && worker.exitCode === null) {
      const exited = new Promise((r) => worker!.once('exit', r));
      worker.kill('SIGTERM');
      await exited;
    }
    worker = null;
  };
  /** The pool's running containers (a used one is removed when its session ends). */
  const warmReady = async (n: number) => {
    const deadline = performance.now() + 60_000;
    for (;;) {
      const c = await docker.listContainers({ filters: { label: [`loki.worker=${WORKER_ID}`, 'loki.pool=1'] } });
      if (c.length >= n) return;
      if (performance.now() > deadline) throw new Error(`the warm pool did not reach ${n} containers within 60 s`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  try {
    worker = await startWorker(0);
    const client = new LokiClient({ url: server.url });

    /** POST → first stored output line, then wait for the session to end. */
    const lokiRound = async (workspace = ws): Promise<number> => {
      let resolveFirst!: (t: number) => void;
      const first = new Promise<number>((r) => {
        resolveFirst = r;
      });
      let id: string | null = null;
      let t0 = 0;
      let done = false;
      const check = () => {
        if (!id || done) return;
        void store.sessions.logs(id, 0, 1).then((l) => {
          if (l.length && !done) {
            done = true;
            resolveFirst(performance.now() - t0);
          }
        });
      };
      const unsubscribe = events.subscribe(check);
      try {
        t0 = performance.now();
        id = (await client.createSession({ workspace, prd: 'prd.md', sandbox: true })).id;
        check();
        const ended = (async () => {
          const deadline = performance.now() + 60_000;
          for (;;) {
            const s = await store.sessions.get(id!);
            if (s && TERMINAL_STATES.has(s.status)) return s;
            if (performance.now() > deadline) throw new Error(`session ${id} did not end within 60 s`);
            await new Promise((r) => setTimeout(r, 20));
          }
        })();
        // A session that ends without output must not hang the benchmark.
        const ms = await Promise.race([first, ended.then(async (s) => {
            await new Promise((r) => setTimeout(r, 500));
            return s;
          })]);
        if (typeof ms !== 'number') throw new Error(`session ended ${ms?.status} without output: ${ms?.reason}`);
        await ended;
        return ms;
      } finally {
        unsubscribe();
      }
    };

    for (let i = 0; i < 2; i++) {
      await lokiRound();
      await dockerRunFirstOutput();
    }
    const loki: number[] = [];
    const cli: number[] = [];
    for (let i = 0; i < rounds; i++) {
      // Interleaved, so both see the same engine conditions.
      loki.push(await lokiRound());
      cli.push(await dockerRunFirstOutput());
    }

    const t0 = performance.now();
    const ids: string[] = [];
    for (let i = 0; i < sessionsCount; i++) ids.push((await client.createSession({ workspace: ws, prd: 'prd.md', sandbox: true })).id);
    const outcomes: Record<string, number> = {};
    const deadline = performance.now() + 300_000;
    for (const id of ids) {
      for (;;) {
        if (performance.now() > deadline) throw new Error(`session ${id} did not end within 5 min`);
        const s = await store.sessions.get(id);
        if (s && TERMINAL_STATES.has(s.status)) {
          outcomes[s.status] = (outcomes[s.status] ?? 0) + 1;
          break;
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    const seconds = (performance.now() - t0) / 1000;
    const leftover = await docker.listContainers({ all: true, filters: { label: [`loki.worker=${WORKER_ID}`] } });
    const leftoverCli = await docker.listContainers({ all: true, filters: { ancestor: [IMAGE] } });
    const leftoverWorktrees = existsSync(path.join(home, 'worktrees')) ? readdirSync(path.join(home, 'worktrees')).length : 0;

    // 4. The warm pool: the same rounds with sessions attached to pooled containers.
    await stopWorker();
    worker = await startWorker(WARM);
    await warmReady(WARM);
    const warmLoki: number[] = [];
    const warmCli: number[] = [];
    await lokiRound();
    await warmReady(WARM);
    for (let i = 0; i < rounds; i++) {
      warmLoki.push(await lokiRound());
      warmCli.push(await dockerRunFirstOutput());
      await warmReady(WARM);
    }
    await stopWorker();
    const warmLeft = await docker.listContainers({ all: true, filters: { label: [`loki.worker=${WORKER_ID}`] } });

    // 5. gVisor (fresh containers).
    worker = await startWorker(0);
    await lokiRound(wsRunsc);
    await dockerRunFirstOutput('runsc');
    const runscLoki: number[] = [];
    const runscCli: number[] = [];
    for (let i = 0; i < runscRounds; i++) {
      runscLoki.push(await lokiRound(wsRunsc));
      runscCli.push(await dockerRunFirstOutput('runsc'));
    }
    await stopWorker();

    const egress = await egressBench(home);
    const worktrees = await worktreeBench(home);

    const lokiStats = stats(loki);
    const cliStats = stats(cli);
    const result = {
      benchmark: 'sandbox',
      image: IMAGE,
      command: COMMAND,
      start_to_first_output_ms: {
        rounds,
        loki_session: lokiStats,
        docker_run_cli: cliStats,
        ratio_p50: Number((lokiStats.p50 / cliStats.p50).toFixed(3)),
        ratio_mean: Number((lokiStats.mean / cliStats.mean).toFixed(3)),
        target: 'loki p50 <= 1.0 x docker run p50',
        target_met: lokiStats.p50 <= cliStats.p50,
      },
      warm_pool_start_to_first_output_ms: (() => {
        const l = stats(warmLoki);
        const c = stats(warmCli);
        return {
          rounds,
          warm: WARM,
          loki_session_pooled: l,
          docker_run_cli: c,
          ratio_p50: Number((l.p50 / c.p50).toFixed(3)),
          fresh_vs_pooled_p50: Number((lokiStats.p50 / l.p50).toFixed(3)),
          leftover_containers_after_sigterm: warmLeft.length,
          target: 'pooled p50 <= 0.6 x docker run p50, 0 containers after SIGTERM',
          target_met: l.p50 <= 0.6 * c.p50 && warmLeft.length === 0,
        };
      })(),
      runsc_start_to_first_output_ms: (() => {
        const l = stats(runscLoki);
        const c = stats(runscCli);
        return { rounds: runscRounds, loki_session: l, docker_run_cli: c, ratio_p50: Number((l.p50 / c.p50).toFixed(3)), pooled: false };
      })(),
      egress,
      throughput: {
        sessions: sessionsCount,
        concurrency,
        seconds: Number(seconds.toFixed(2)),
        sessions_per_min: Number(((sessionsCount / seconds) * 60).toFixed(1)),
        outcomes,
        leftover_containers: leftover.length,
        leftover_containers_of_image: leftoverCli.length,
        leftover_worktrees: leftoverWorktrees,
        target: 'zero leftover containers and worktrees',
        target_met: leftover.length === 0 && leftoverWorktrees === 0,
      },
      worktree_10k_files: worktrees,
    };
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  } finally {
    await stopWorker();
    await server.stop();
    rmSync(home, { recursive: true, force: true });
    rmSync(roots, { recursive: true, force: true });
  }
}

await main();

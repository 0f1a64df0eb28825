/**
 * npm run bench:streams — live event streams under load (JSON on stdout).
 *
 * 1. 1,000 concurrent SSE clients on GET /api/events; 20 events, each triggered
 *    by an API call (POST /api/enterprise/tokens publishes token_created): the
 *    time from sending that call until each client has the event (p50, p99 over
 *    all deliveries) and until all 1,000 have it (p50, p99 over events).
 * 2. 10,000 connect-and-disconnect cycles (each waits for the stream to open).
 * 3. Heap after a full GC against the baseline (target: within 5 MB), and the
 *    listener count in /api/status (target: 0).
 * The server runs in a child process with --expose-gc; it reports its heap over
 * IPC. Auth is off (loopback), the audit log is on: every stream is audited.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { freePort, numberArg, ROOT } from './lib';

const CLIENTS = numberArg('clients', 1000);
const EVENTS = numberArg('events', 20);
const CYCLES = numberArg('cycles', 10_000);
const CYCLE_CONCURRENCY = numberArg('concurrency', 50);
const MB = 1024 * 1024;

interface Target {
  child: ChildProcess;
  port: number;
  heap(): Promise<{ heapUsed: number; rss: number }>;
  stop(): Promise<void>;
}

async function startTarget(): Promise<Target> {
  const port = await freePort();
  const home = mkdtempSync(path.join(os.tmpdir(), 'loki-bench-streams-'));
  const child = spawn(process.execPath, ['--expose-gc', '--import', 'tsx', path.join(ROOT, 'scripts/bench/stream-target.ts')], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH ?? '',
      HOME: home,
      LOKI_HOME: home,
      LOKI_DASHBOARD_PORT: String(port),
      LOKI_MAX_SSE_CONNECTIONS: String(CLIENTS + CYCLE_CONCURRENCY + 10),
      ...(process.argv.includes('--no-audit') ? { LOKI_AUDIT_DISABLED: 'true' } : {}),
    },
    stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
  });
  await new Promise<void>((resolve, reject) => {
    let out = '';
    child.stdout?.on('data', (d) => {
      out += d;
      if (out.includes('READY')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`stream target exited with ${code}`)));
  });
  return {
    child,
    port,
    heap: () =>
      new Promise((resolve) => {
        child.once('message', (m) => resolve(m as { heapUsed: number; rss: number }));
        child.send({ cmd: 'heap' });
      }),
    stop: () =>
      new Promise((resolve) => {
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

const agent = new http.Agent({ keepAlive: false, maxSockets: Number.POSITIVE_INFINITY });

function request(port: number, method: string, pathname: string, body?: unknown): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(
      { host: '127.0.0.1', port, method, path: pathname, agent, headers: { host: `127.0.0.1:${port}`, ...(data ? { 'content-type': 'application/json' } : {}) } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c) => {
          text += c;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

async function streams(port: number): Promise<{ listeners: number; sse: number; ws: number }> {
  const r = await request(port, 'GET', '/api/status');
  return (JSON.parse(r.body) as { streams: { listeners: number; sse: number; ws: number } }).streams;
}

async function waitStreams(port: number, want: { listeners?: number; sse?: number }, timeoutMs = 30_000) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const s = await streams(port);
    if ((want.listeners === undefined || s.listeners === want.listeners) && (want.sse === undefined || s.sse === want.sse)) return s;
    if (Date.now() > until) throw new Error(`streams stuck at ${JSON.stringify(s)}, wanted ${JSON.stringify(want)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

interface SseConn {
  req: http.ClientRequest;
  /** Event name (from data) → arrival time. */
  arrivals: Map<string, number>;
  /** Event name → wall-clock ms from the event's `ts` (taken as the server wrote it) to arrival. */
  sincePublish: Map<string, number>;
}

/** Open one SSE stream; resolves once its first bytes arrived (the server registered it). */
function openSse(port: number, onFrame?: (conn: SseConn, data: string) => void): Promise<SseConn> {
  return new Promise((resolve, reject) => {
    const conn: SseConn = { req: null as unknown as http.ClientRequest, arrivals: new Map(), sincePublish: new Map() };
    const req = http.get({ host: '127.0.0.1', port, path: '/api/events?types=token_created', agent, headers: { host: `127.0.0.1:${port}` } }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        reject(new Error(`SSE status ${res.statusCode}`));
        return;
      }
      let buf = '';
      let opened = false;
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        if (!opened) {
          opened = true;
          resolve(conn);
        }
        if (!onFrame) return;
        buf += chunk;
        let end = buf.indexOf('\n\n');
        while (end >= 0) {
          const frame = buf.slice(0, end);
          buf = buf.slice(end + 2);
          const data = frame.split('\n').find((l) => l.startsWith('data: '));
          if (data) onFrame(conn, data.slice(6));
          end = buf.indexOf('\n\n');
        }
      });
      res.on('error', () => {});
    });
    req.on('error', (err) => {
      if ((err as NodeJS.ErrnoException).code !== 'ECONNRESET') reject(err);
    });
    conn.req = req;
  });
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return Number(sorted[i]!.toFixed(2));
}

const t = await startTarget();
try {
  // Warm-up: JIT, pools, the audit writer, prepared statements.
  for (let i = 0; i < 200; i++) {
    const c = await openSse(t.port);
    c.req.destroy();
  }
  await request(t.port, 'POST', '/api/enterprise/tokens', { name: 'warm-up', role: 'viewer' });
  await waitStreams(t.port, { listeners: 0, sse: 0 });
  const baseline = await t.heap();

  // Phase 1: 1,000 concurrent clients, fan-out latency.
  const tOpen = performance.now();
  const conns: SseConn[] = [];
  for (let i = 0; i < CLIENTS; i += 100) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(100, CLIENTS - i) }, () =>
        openSse(t.port, (conn, data) => {
          const name = /"name":"(ev-\d+)"/.exec(data)?.[1];
          if (name) {
            conn.arrivals.set(name, performance.now());
            conn.sincePublish.set(name, Date.now() - Number(/"ts":(\d+)/.exec(data)?.[1] ?? Date.now()));
          }
        }),
      ),
    );
    conns.push(...batch);
  }
  const openMs = performance.now() - tOpen;
  const atPeak = await waitStreams(t.port, { sse: CLIENTS, listeners: CLIENTS });
  const heapAtPeak = await t.heap();

  const deliveries: number[] = [];
  const allReached: number[] = [];
  const firstReached: number[] = [];
  const fromPublish: number[] = [];
  let missing = 0;
  for (let e = 0; e < EVENTS; e++) {
    const name = `ev-${e}`;
    const sent = performance.now();
    const r = await request(t.port, 'POST', '/api/enterprise/tokens', { name, role: 'viewer' });
    if (r.status !== 201) throw new Error(`token create failed: ${r.status} ${r.body}`);
    const until = Date.now() + 10_000;
    while (conns.some((c) => !c.arrivals.has(name)) && Date.now() < until) await new Promise((res) => setTimeout(res, 2));
    let last = 0;
    let first = Number.POSITIVE_INFINITY;
    for (const c of conns) {
      const at = c.arrivals.get(name);
      if (at === undefined) {
        missing++;
        continue;
      }
      deliveries.push(at - sent);
      last = Math.max(last, at - sent);
      first = Math.min(first, at - sent);
    }
    allReached.push(last);
    fromPublish.push(Math.max(...conns.map((c) => c.sincePublish.get(name) ?? 0)));
    firstReached.push(first);
    if (process.argv.includes('--verbose')) process.stderr.write(`event ${e}: first ${first.toFixed(1)} ms, all ${last.toFixed(1)} ms\n`);
    await new Promise((res) => setTimeout(res, 50));
  }
  for (const c of conns) c.req.destroy();
  await waitStreams(t.port, { listeners: 0, sse: 0 });

  // Phase 2: connect-and-disconnect cycles.
  const tCycles = performance.now();
  let done = 0;
  let failures = 0;
  await Promise.all(
    Array.from({ length: CYCLE_CONCURRENCY }, async () => {
      while (done < CYCLES) {
        done++;
        try {
          const c = await openSse(t.port);
          c.req.destroy();
        } catch {
          failures++;
        }
      }
    }),
  );
  const cyclesMs = performance.now() - tCycles;
  const final = await waitStreams(t.port, { listeners: 0, sse: 0 });
  await new Promise((r) => setTimeout(r, 500));
  const after = await t.heap();

  deliveries.sort((a, b) => a - b);
  allReached.sort((a, b) => a - b);
  firstReached.sort((a, b) => a - b);
  fromPublish.sort((a, b) => a - b);
  const heapDeltaMb = (after.heapUsed - baseline.heapUsed) / MB;
  const result = {
    benchmark: 'streams',
    // Other processes on the machine skew the latencies: the 1-minute load average is shown with them.
    machine: { cpus: os.cpus().length, node: process.version, load_average_1m: Number(os.loadavg()[0]!.toFixed(2)) },
    concurrent_clients: CLIENTS,
    open_all_ms: Math.round(openMs),
    streams_at_peak: atPeak,
    events: EVENTS,
    delivery_latency_ms: { p50: percentile(deliveries, 50), p99: percentile(deliveries, 99), max: percentile(deliveries, 100), samples: deliveries.length, missing },
    first_client_reached_ms: { p50: percentile(firstReached, 50), p99: percentile(firstReached, 99) },
    all_clients_reached_ms: { p50: percentile(allReached, 50), p99: percentile(allReached, 99), max: percentile(allReached, 100) },
    // The same, counted from the event's insert (its `ts`, 1 ms resolution) instead of from the API call that caused it.
    all_clients_reached_since_insert_ms: { p50: percentile(fromPublish, 50), p99: percentile(fromPublish, 99) },
    cycles: { count: CYCLES, concurrency: CYCLE_CONCURRENCY, failures, seconds: Number((cyclesMs / 1000).toFixed(2)), per_second: Math.round(CYCLES / (cyclesMs / 1000)) },
    heap_mb: {
      baseline: Number((baseline.heapUsed / MB).toFixed(2)),
      at_peak_1000_clients: Number((heapAtPeak.heapUsed / MB).toFixed(2)),
      after_gc: Number((after.heapUsed / MB).toFixed(2)),
      delta: Number(heapDeltaMb.toFixed(2)),
    },
    listeners_left: final.listeners,
    streams_left: final,
    targets: {
      heap_within_5mb: Math.abs(heapDeltaMb) <= 5,
      zero_listeners: final.listeners === 0 && final.sse === 0,
      p99_all_clients_le_100ms: percentile(allReached, 99) <= 100,
      p99_delivery_le_100ms: percentile(deliveries, 99) <= 100,
    },
  };
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
} finally {
  await t.stop();
}

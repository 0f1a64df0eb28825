/**
 * GET /metrics scraped from a real `loki dashboard` process and parsed with a real
 * Prometheus text-format parser (parse-prometheus-text-format): exact counters
 * after a known sequence of requests (by route pattern, never the raw path),
 * audit appends and group commits, egress decisions, sessions by state, worker
 * leases, open streams, syslog; the auth rules and the content type.
 */
import dgram from 'node:dgram';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { runCli, type SpawnedServer, spawnServer, startTestServer, tempHome } from '../helpers/server';
import { tempRoot } from '../sessions/helpers';

interface Sample {
  value?: string;
  labels?: Record<string, string>;
  buckets?: Record<string, string>;
  count?: string;
  sum?: string;
}
interface Family {
  name: string;
  help: string;
  type: string;
  metrics: Sample[];
}
type Parsed = Map<string, Family>;

const parser: (text: string) => Family[] = (await import('parse-prometheus-text-format' as string)).default;

function parse(text: string): Parsed {
  return new Map(parser(text).map((f) => [f.name, f]));
}

function labelsMatch(s: Sample, labels: Record<string, string>): boolean {
  return Object.entries(labels).every(([k, v]) => s.labels?.[k] === v);
}

/** The value of the one sample of `name` with `labels` (0 when the series does not exist yet). */
function value(m: Parsed, name: string, labels: Record<string, string> = {}): number {
  const hits = (m.get(name)?.metrics ?? []).filter((s) => labelsMatch(s, labels));
  if (hits.length > 1) throw new Error(`${name} ${JSON.stringify(labels)}: ${hits.length} samples`);
  return hits.length ? Number(hits[0]!.value) : 0;
}

/** An unlabelled histogram's count and sum (the parser drops count and sum of labelled ones, so ours have no labels). */
function histogram(m: Parsed, name: string): { count: number; sum: number; buckets: Record<string, string> } {
  const hits = m.get(name)?.metrics ?? [];
  if (hits.length !== 1 || hits[0]!.count === undefined) throw new Error(`${name}: ${JSON.stringify(hits)}`);
  return { count: Number(hits[0]!.count), sum: Number(hits[0]!.sum), buckets: hits[0]!.buckets ?? {} };
}

const CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

describe('GET /metrics on a spawned server with auth on', () => {
  let home: string;
  let root: string;
  let server: SpawnedServer;
  let udp: dgram.Socket;
  let received = 0;
  let viewer: string;
  let operator: string;
  let worker: string;

  const req = (p: string, token?: string, init: RequestInit = {}) => {
    const headers = new Headers(init.headers);
    if (token) headers.set('Authorization', `Bearer ${token}`);
    return fetch(`${server.url}${p}`, { ...init, headers });
  };
  const scrape = async (): Promise<Parsed> => {
    const r = await req('/metrics', viewer);
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toBe(CONTENT_TYPE);
    return parse(await r.text());
  };
  const token = async (name: string, role: string, extra: string[] = []) => {
    const r = await runCli(['enterprise', 'token', 'generate', name, '--role', role, '--json', ...extra], { LOKI_HOME: home });
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout).token as string;
  };

  beforeAll(async () => {
    home = tempHome('loki-metrics-');
    // Outside LOKI_HOME: a workspace there is refused (it holds the database and keys).
    root = tempRoot('loki-metrics-roots-');
    mkdirSync(path.join(root, 'ws'), { recursive: true });
    writeFileSync(path.join(root, 'ws', 'prd.md'), '# PRD\n');
    udp = dgram.createSocket('udp4');
    udp.on('message', () => {
      received++;
    });
    await new Promise<void>((r) => udp.bind(0, '127.0.0.1', () => r()));
    server = await spawnServer(
      {
        LOKI_ENTERPRISE_AUTH: 'true',
        LOKI_WORKSPACE_ROOTS: root,
        LOKI_AUDIT_SYSLOG_HOST: '127.0.0.1',
        LOKI_AUDIT_SYSLOG_PORT: String((udp.address() as { port: number }).port),
        LOKI_AUDIT_SYSLOG_PROTO: 'udp',
      },
      home,
    );
    // After the server: on PostgreSQL the CLI finds the database the server was given for this home.
    [viewer, operator, worker] = await Promise.all([token('prometheus', 'viewer'), token('ops', 'operator'), token('w1', 'worker', ['--worker-id', 'w1'])]);
  });

  afterAll(async () => {
    if (server) {
      server.child.kill('SIGTERM');
      await server.exited;
    }
    udp?.close();
    rmSync(home, { recursive: true, force: true });
    rmSync(root, { recursive: true, force: true });
  });

  it('without a token: 401 with WWW-Authenticate; with a token but without scope read: 403', async () => {
    const r = await req('/metrics');
    expect(r.status).toBe(401);
    expect(r.headers.get('www-authenticate')).toBe('Bearer realm="loki", error="invalid_token"');
    expect((await r.json()).error.code).toBe('invalid_token');
    const w = await req('/metrics', worker);
    expect(w.status).toBe(403);
    expect(w.headers.get('www-authenticate')).toBe('Bearer realm="loki", error="insufficient_scope", scope="read"');
  });

  it('counts requests by route pattern and status, and audit appends and group commits, exactly', async () => {
    const m1 = await scrape();
    // Every family documented in docs/metrics.md is there, with its type.
    const types = Object.fromEntries([...m1.values()].filter((f) => f.name.startsWith('loki_')).map((f) => [f.name, f.type]));
    expect(types).toEqual({
      loki_http_requests_total: 'COUNTER',
      loki_audit_appends_total: 'COUNTER',
      loki_audit_batch_size: 'HISTOGRAM',
      loki_audit_commit_seconds: 'HISTOGRAM',
      loki_egress_decisions_total: 'COUNTER',
      loki_audit_checkpoint_age_seconds: 'GAUGE',
      loki_audit_queue_depth: 'GAUGE',
      loki_syslog_queue_depth: 'GAUGE',
      loki_syslog_dropped_total: 'COUNTER',
      loki_syslog_sent_total: 'COUNTER',
      loki_syslog_connected: 'GAUGE',
      loki_stream_clients: 'GAUGE',
      loki_sessions: 'GAUGE',
      loki_worker_leases: 'GAUGE',
    });
    // The two refusals of the first test, counted on the route pattern.
    expect(value(m1, 'loki_http_requests_total', { method: 'GET', route: '/metrics', status: '401' })).toBe(1);
    expect(value(m1, 'loki_http_requests_total', { method: 'GET', route: '/metrics', status: '403' })).toBe(1);
    // The new key's genesis checkpoint was signed at start-up.
    const age = value(m1, 'loki_audit_checkpoint_age_seconds', { kind: 'genesis' });
    expect(age).toBeGreaterThanOrEqual(0);
    expect(age).toBeLessThan(120);

    for (let i = 0; i < 3; i++) expect((await req('/api/status', viewer)).status).toBe(200);
    expect((await req('/api/sessions/ses_doesnotexist', viewer)).status).toBe(404);
    expect((await req('/api/sessions/ses_another', viewer)).status).toBe(404);
    expect((await req('/no/such/path', viewer)).status).toBe(404);
    const m2 = await scrape();

    const d = (name: string, labels: Record<string, string> = {}) => value(m2, name, labels) - value(m1, name, labels);
    expect(d('loki_http_requests_total', { method: 'GET', route: '/api/status', status: '200' })).toBe(3);
    expect(d('loki_http_requests_total', { method: 'GET', route: '/metrics', status: '200' })).toBe(1);
    expect(d('loki_http_requests_total', { method: 'GET', route: '/api/sessions/:id', status: '404' })).toBe(2);
    expect(d('loki_http_requests_total', { method: 'GET', route: 'unmatched', status: '404' })).toBe(1);
    // Raw paths never become label values.
    const routes = new Set(m2.get('loki_http_requests_total')!.metrics.map((s) => s.labels?.route ?? ''));
    expect([...routes].filter((r) => r.includes('ses_') || r.includes('/no/'))).toEqual([]);
    // m1's own entry, 3 statuses, 3 not-founds: 7 entries, all committed, in group commits whose sizes add up.
    expect(d('loki_audit_appends_total', { outcome: 'committed' })).toBe(7);
    expect(d('loki_audit_appends_total', { outcome: 'failed' })).toBe(0);
    const b1 = histogram(m1, 'loki_audit_batch_size');
    const b2 = histogram(m2, 'loki_audit_batch_size');
    expect(b2.sum - b1.sum).toBe(7);
    const batches = b2.count - b1.count;
    expect(Number(b2.buckets['+Inf'])).toBe(b2.count);
    expect(Object.keys(b2.buckets)).toEqual(['1', '2', '4', '8', '16', '32', '64', '128', '256', '512', '+Inf']);
    expect(batches).toBeGreaterThanOrEqual(1);
    expect(batches).toBeLessThanOrEqual(7);
    const c1 = histogram(m1, 'loki_audit_commit_seconds');
    const c2 = histogram(m2, 'loki_audit_commit_seconds');
    expect(c2.count - c1.count).toBe(batches);
    expect(c2.sum - c1.sum).toBeGreaterThan(0);
    // Syslog: one datagram per committed entry, none dropped.
    expect(d('loki_syslog_sent_total')).toBe(7);
    expect(value(m2, 'loki_syslog_dropped_total')).toBe(0);
    expect(value(m2, 'loki_syslog_connected')).toBe(1);
  });

  it('sessions by state, worker leases, egress decisions and open streams', async () => {
    const m1 = await scrape();
    expect(value(m1, 'loki_sessions', { state: 'queued' })).toBe(0);
    expect(value(m1, 'loki_sessions', { state: 'running' })).toBe(0);
    expect(value(m1, 'loki_worker_leases', { state: 'active' })).toBe(0);

    const json = { 'Content-Type': 'application/json' };
    const created = await req('/api/sessions', operator, {
      method: 'POST',
      headers: json,
      body: JSON.stringify({ workspace: path.join(root, 'ws'), prd: 'prd.md', name: 'metrics' }),
    });
    expect(created.status).toBe(201);
    expect(value(await scrape(), 'loki_sessions', { state: 'queued' })).toBe(1);
    const claimed = await req('/api/sandbox/jobs/claim', worker, { method: 'POST', headers: json, body: JSON.stringify({ worker_id: 'w1', wait_ms: 0 }) });
    expect(claimed.status).toBe(200);
    const { job } = (await claimed.json()) as { job: { lease_id: string; session: { id: string } } };
    const egress = (seq: number, decision: 'allowed' | 'denied', host: string) => ({
      seq,
      type: 'egress',
      data: { decision, host, port: 443, rule: decision === 'allowed' ? `${host}:443` : 'not in sandbox.egress', method: 'CONNECT' },
    });
    const posted = await req(`/api/sandbox/jobs/${job.session.id}/events`, worker, {
      method: 'POST',
      headers: json,
      body: JSON.stringify({
        worker_id: 'w1',
        lease_id: job.lease_id,
        events: [egress(1, 'allowed', 'api.anthropic.com'), egress(2, 'denied', 'evil.example'), egress(3, 'allowed', 'api.anthropic.com')],
      }),
    });
    expect(posted.status).toBe(200);

    // One SSE stream and one WebSocket stay open while scraping.
    const sse = new AbortController();
    const stream = await req('/api/events', viewer, { signal: sse.signal });
    expect(stream.status).toBe(200);
    const ws = new WebSocket(`${server.url.replace('http', 'ws')}/ws`, [`loki.bearer.${viewer}`]);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    const m2 = await scrape();
    expect(value(m2, 'loki_egress_decisions_total', { decision: 'allowed' }) - value(m1, 'loki_egress_decisions_total', { decision: 'allowed' })).toBe(2);
    expect(value(m2, 'loki_egress_decisions_total', { decision: 'denied' }) - value(m1, 'loki_egress_decisions_total', { decision: 'denied' })).toBe(1);
    expect(value(m2, 'loki_sessions', { state: 'queued' })).toBe(0);
    expect(value(m2, 'loki_sessions', { state: 'running' })).toBe(1);
    expect(value(m2, 'loki_worker_leases', { state: 'active' })).toBe(1);
    expect(value(m2, 'loki_worker_leases', { state: 'expired' })).toBe(0);
    expect(value(m2, 'loki_stream_clients', { transport: 'sse' })).toBe(1);
    expect(value(m2, 'loki_stream_clients', { transport: 'ws' })).toBe(1);
    expect(value(m2, 'loki_http_requests_total', { method: 'POST', route: '/api/sandbox/jobs/:id/events', status: '200' })).toBe(1);
    expect(value(m2, 'loki_http_requests_total', { method: 'POST', route: '/api/sessions', status: '201' })).toBe(1);

    ws.close();
    sse.abort();
    // Every datagram the forwarder counted as sent arrived (loopback UDP).
    const sent = value(m2, 'loki_syslog_sent_total');
    const deadline = Date.now() + 5_000;
    while (received < sent && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(received).toBeGreaterThanOrEqual(sent);
  });
});

describe('GET /metrics with auth off', () => {
  it('serves loopback callers without a token (the server refuses non-loopback callers when auth is off)', async () => {
    const s = await startTestServer();
    try {
      const r = await s.req('/metrics');
      expect(r.status).toBe(200);
      expect(r.headers.get('content-type')).toBe(CONTENT_TYPE);
      const m = parse(await r.text());
      expect(m.get('loki_http_requests_total')?.type).toBe('COUNTER');
      // No syslog configured: no syslog families.
      expect(m.has('loki_syslog_sent_total')).toBe(false);
    } finally {
      await s.stop();
    }
  });
});

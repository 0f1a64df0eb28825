/**
 * Prometheus metrics of the Node server (prom-client), served by `GET /metrics`
 * (src/http/routes/metrics.ts). Node only: the Workers bundle never imports this
 * module (there `/metrics` answers 501).
 *
 * Counting costs little on the request path: requests are tallied in a Map and
 * handed to prom-client when scraped; the audit log reports each group commit
 * through `AuditLog.observeBatches`; everything else (sessions, leases,
 * checkpoint age, streams, syslog) is read at scrape time.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { AuditLog } from './audit/log';
import type { SyslogForwarder } from './audit/syslog';
import { SESSION_STATES, type Store } from './db/store';
import type { EventHub } from './events/hub';
import type { MetricsPort } from './http/routes/metrics';

export interface MetricsSources {
  audit: AuditLog;
  events: EventHub;
  store: Store;
  syslog: SyslogForwarder | null;
  now: () => number;
}

/** Group-commit sizes: the log's batches hold 1 to 512 entries. */
const BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];
/** appendBatch (write + fsync) in seconds. */
const COMMIT_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
/** Running sessions read per scrape for the lease gauges. */
const LEASE_SCAN = 10_000;

export interface NodeMetrics extends MetricsPort {
  registry: Registry;
  /** Stop observing the audit log. */
  close(): void;
}

export function createNodeMetrics(src: MetricsSources): NodeMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });

  // method \u0000 route \u0000 status → count, turned into the counter's samples at scrape time.
  const requests = new Map<string, number>();
  new Counter({
    name: 'loki_http_requests_total',
    help: 'HTTP requests answered, by method, route pattern (unmatched: no route) and status.',
    labelNames: ['method', 'route', 'status'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const [key, n] of requests) {
        const [method, route, status] = key.split('\u0000') as [string, string, string];
        this.inc({ method, route, status }, n);
      }
    },
  });

  const appends = new Counter({
    name: 'loki_audit_appends_total',
    help: 'Audit entries this server appended: committed, or failed (the request got 503 audit_unavailable).',
    labelNames: ['outcome'] as const,
    registers: [registry],
  });
  appends.inc({ outcome: 'committed' }, 0);
  appends.inc({ outcome: 'failed' }, 0);
  const batchSize = new Histogram({
    name: 'loki_audit_batch_size',
    help: 'Entries per audit group commit.',
    buckets: BATCH_BUCKETS,
    registers: [registry],
  });
  const commitSeconds = new Histogram({
    name: 'loki_audit_commit_seconds',
    help: 'Time of one committed audit group commit in the storage (write and fsync).',
    buckets: COMMIT_BUCKETS,
    registers: [registry],
  });
  const egress = new Counter({
    name: 'loki_egress_decisions_total',
    help: 'Sandbox egress decisions reported by workers and audited by this server (egress.allowed / egress.denied).',
    labelNames: ['decision'] as const,
    registers: [registry],
  });
  egress.inc({ decision: 'allowed' }, 0);
  egress.inc({ decision: 'denied' }, 0);
  const unobserve = src.audit.observeBatches(({ entries, size, seconds }) => {
    if (entries === null) {
      appends.inc({ outcome: 'failed' }, size);
      return;
    }
    appends.inc({ outcome: 'committed' }, size);
    batchSize.observe(size);
    commitSeconds.observe(seconds);
    for (const e of entries) {
      const a = e.input.action;
      if (a === 'egress.allowed') egress.inc({ decision: 'allowed' });
      else if (a === 'egress.denied') egress.inc({ decision: 'denied' });
    }
  });

  new Gauge({
    name: 'loki_audit_checkpoint_age_seconds',
    help: 'Seconds since the newest signed checkpoint of the audit log (by any process); no sample while there is none.',
    labelNames: ['kind'] as const,
    registers: [registry],
    async collect() {
      this.reset();
      if (!src.audit.enabled) return;
      const cp = await src.audit.storage.latestCheckpoint();
      if (cp) this.set({ kind: cp.kind }, Math.max(0, (src.now() - cp.time) / 1000));
    },
  });
  new Gauge({
    name: 'loki_audit_queue_depth',
    help: 'Audit entries waiting for the next group commit.',
    registers: [registry],
    collect() {
      this.set(src.audit.stats().queued);
    },
  });

  if (src.syslog) {
    const syslog = src.syslog;
    new Gauge({
      name: 'loki_syslog_queue_depth',
      help: 'Syslog messages queued or in flight to LOKI_AUDIT_SYSLOG_HOST.',
      registers: [registry],
      collect() {
        this.set(syslog.stats().queued);
      },
    });
    new Counter({
      name: 'loki_syslog_dropped_total',
      help: 'Syslog messages dropped (queue full, or unsent at shutdown); the audit database keeps every entry.',
      registers: [registry],
      collect() {
        this.reset();
        this.inc(syslog.stats().dropped);
      },
    });
    new Counter({
      name: 'loki_syslog_sent_total',
      help: 'Syslog messages sent.',
      registers: [registry],
      collect() {
        this.reset();
        this.inc(syslog.stats().sent);
      },
    });
    new Gauge({
      name: 'loki_syslog_connected',
      help: '1 while the syslog transport is connected (always 1 for UDP).',
      registers: [registry],
      collect() {
        this.set(syslog.stats().connected ? 1 : 0);
      },
    });
  }

  new Gauge({
    name: 'loki_stream_clients',
    help: 'Open live-event streams by transport (sse: GET /api/events, ws: GET /ws).',
    labelNames: ['transport'] as const,
    registers: [registry],
    collect() {
      const open = src.events.connections;
      this.set({ transport: 'sse' }, open.sse);
      this.set({ transport: 'ws' }, open.ws);
    },
  });

  new Gauge({
    name: 'loki_sessions',
    help: 'Sessions in the database by state.',
    labelNames: ['state'] as const,
    registers: [registry],
    async collect() {
      const counts = await src.store.sessions.counts();
      for (const state of SESSION_STATES) this.set({ state }, counts[state] ?? 0);
    },
  });

  new Gauge({
    name: 'loki_worker_leases',
    help: 'Running sessions leased to a sandbox worker: active (lease still valid) or expired (awaiting the sweep that marks them lost).',
    labelNames: ['state'] as const,
    registers: [registry],
    async collect() {
      const running = await src.store.sessions.list({ limit: LEASE_SCAN, status: 'running' });
      const now = src.now();
      let active = 0;
      let expired = 0;
      for (const s of running) {
        if (s.leaseExpiresAt === null) continue;
        if (s.leaseExpiresAt > now) active++;
        else expired++;
      }
      this.set({ state: 'active' }, active);
      this.set({ state: 'expired' }, expired);
    },
  });

  return {
    registry,
    request(method, route, status) {
      const key = `${method}\u0000${route}\u0000${status}`;
      requests.set(key, (requests.get(key) ?? 0) + 1);
    },
    async render() {
      return { contentType: registry.contentType, body: await registry.metrics() };
    },
    close: unobserve,
  };
}

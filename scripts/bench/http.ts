/**
 * npm run bench:http — bare Hono (same handlers, no middleware) vs the full
 * server (all middleware, auth off), GET /api/status, 50 connections, 10 s each.
 * The full server runs its default configuration, in which every request is
 * durably audited (the target is computed on it); it is also measured with the
 * audit log switched off (LOKI_AUDIT_DISABLED=true) for comparison.
 */
import { load, numberArg, startTarget } from './lib';

const seconds = numberArg('seconds', 10);
const connections = numberArg('connections', 50);

async function measure(mode: 'bare' | 'full', env: Record<string, string>) {
  const t = await startTarget(mode, env);
  try {
    await load(t.port, '/api/status', { connections, seconds: 1 }); // warm-up
    return await load(t.port, '/api/status', { connections, seconds });
  } finally {
    await t.stop();
  }
}

const bare = await measure('bare', { LOKI_AUDIT_DISABLED: 'true' });
const full = await measure('full', {});
const fullNoAudit = await measure('full', { LOKI_AUDIT_DISABLED: 'true' });
const result = {
  benchmark: 'http',
  endpoint: 'GET /api/status',
  connections,
  seconds,
  bare_hono: bare,
  full_server_default: full,
  full_server_audit_disabled: fullNoAudit,
  ratio_full_vs_bare: Number((full.requests_per_sec / bare.requests_per_sec).toFixed(3)),
  ratio_audit_disabled_vs_bare: Number((fullNoAudit.requests_per_sec / bare.requests_per_sec).toFixed(3)),
  target: 'full_server_default >= 0.85 x bare_hono',
  target_met: full.requests_per_sec >= 0.85 * bare.requests_per_sec,
};
process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);

/**
 * npm run bench:auth — authenticated GET /api/status (viewer token) against the
 * same server with auth off, in one run (50 connections, 10 s each, audit on in
 * both), and OIDC verifications per second with cached keys against a real
 * provider. Targets: auth costs at most 10% of throughput; ≥ 5,000 OIDC
 * verifications/s on one core.
 */
import { createToken } from '../../src/auth/token-service';
import { createSqliteStore, migrate, openSqlite } from '../../src/db/sqlite';
import { benchOidc } from './oidc';
import { load, numberArg, startTarget } from './lib';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const seconds = numberArg('seconds', 10);
const connections = numberArg('connections', 50);

async function run(env: Record<string, string>, token?: string) {
  const t = await startTarget('full', env);
  try {
    const headers: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
    await load(t.port, '/api/status', { connections, seconds: 1, headers });
    return await load(t.port, '/api/status', { connections, seconds, headers });
  } finally {
    await t.stop();
  }
}

const home = mkdtempSync(path.join(os.tmpdir(), 'loki-bench-auth-'));
const db = openSqlite(path.join(home, 'dashboard', 'loki.db'));
migrate(db);
const { plaintext } = await createToken(createSqliteStore(db).tokens, { name: 'bench', role: 'viewer', createdBy: 'bench' }, Date.now());
db.close();

const off = await run({ LOKI_HOME: home });
const on = await run({ LOKI_HOME: home, LOKI_ENTERPRISE_AUTH: 'true' }, plaintext);
const oidc = await benchOidc();
const cost = 1 - on.requests_per_sec / off.requests_per_sec;
process.stdout.write(
  `${JSON.stringify(
    {
      benchmark: 'auth',
      endpoint: 'GET /api/status',
      connections,
      seconds,
      auth_off: off,
      token_auth: on,
      token_auth_cost: Number(cost.toFixed(3)),
      oidc,
      targets: { token_auth_cost_max: 0.1, oidc_verifications_per_sec_min: 5000 },
      targets_met: { token_auth: cost <= 0.1, oidc: oidc.verifications_per_sec >= 5000 },
    },
    null,
    2,
  )}\n`,
);
process.exit(0);

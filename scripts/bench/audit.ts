/**
 * npm run bench:audit — the audit log's figures, in one run:
 *  1. durable appends/s with 64 concurrent writers (group commit, synchronous=FULL),
 *     measured on logs already holding 2,000, 10,000 and ~1,000,000 entries
 *     (Loki Mode: 1,190/s at 2,000 entries, 174/s at 10,000);
 *  2. RSS growth over 1,000,000 appends;
 *  3. verification of the 1,000,000-entry log (entries/s; Loki Mode ≈ 105,000/s);
 *  4. authenticated, audited GET /api/status vs bare Hono req/s;
 *  5. the transparency log (issue 11): appends above include the Merkle tree
 *     (tiles written in the same transaction); verification above includes the
 *     tree; inclusion proofs served per second over HTTP (random leaf, auditor
 *     token; with every read audited, and with LOKI_AUDIT_READS=failures),
 *     proofs computed per second in-process, and a full tile read.
 * Options: --entries N (default 1000000), --seconds S (HTTP, default 10).
 */
import { mkdtempSync } from 'node:fs';
import autocannon from 'autocannon';
import os from 'node:os';
import path from 'node:path';
import { createNodeAudit } from '../../src/audit/node-audit';
import { proveRecord } from '../../src/audit/tlog/merkle';
import { createToken } from '../../src/auth/token-service';
import { createSqliteStore, migrate, openSqlite } from '../../src/db/sqlite';
import { loadConfig } from '../../src/env';
import { durableCommitCeiling, hashCeiling } from './ceilings';
import { benchEntry as entry, load, numberArg, startTarget } from './lib';

const TOTAL = numberArg('entries', 1_000_000);
const seconds = numberArg('seconds', 10);
const WRITERS = 64;


const home = mkdtempSync(path.join(os.tmpdir(), 'loki-bench-audit-'));
const config = loadConfig({ LOKI_HOME: home }, { home, cwd: home });
const db = openSqlite(config.dbPath);
migrate(db);
const { audit, close } = await createNodeAudit(config, db);

let next = 1;
/** 64 writers, each awaiting its own durable append before the next one. */
async function appendUntil(target: number): Promise<{ appended: number; seconds: number; per_sec: number }> {
  const start = next;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: WRITERS }, async () => {
      while (next <= target) await audit.append(entry(next++));
    }),
  );
  const s = (performance.now() - t0) / 1000;
  const appended = next - start;
  return { appended, seconds: Number(s.toFixed(2)), per_sec: Math.round(appended / s) };
}

global.gc?.();
const rss0 = process.memoryUsage().rss;
const to2k = await appendUntil(2_000);
const at2k = await appendUntil(2_000 + 20_000);
const at22k = await appendUntil(TOTAL);
global.gc?.();
const rss1 = process.memoryUsage().rss;
const overall = { appended: next - 1, per_sec: Math.round((next - 1) / (to2k.seconds + at2k.seconds + at22k.seconds)) };
const atEnd = await appendUntil(next - 1 + 20_000);
// The same machine's durable-commit ceiling, right after the appends it bounds.
const sampleText = (db.prepare('SELECT entry FROM audit_log WHERE seq = 1').pluck().get() as string) ?? '';
const commitCeiling = durableCommitCeiling(home, sampleText);

await audit.drain();
const t0 = performance.now();
const verify = await audit.verify();
const vs = (performance.now() - t0) / 1000;
// The hashing ceiling of a full verification on every core, over 200,000 stored entries.
const hashCeil = await hashCeiling(db.prepare('SELECT entry FROM audit_log WHERE seq <= 200000 ORDER BY seq').pluck().all() as string[]);

// Inclusion proofs computed in-process (tile reads through SQLite, cached subtree hashes), random leaves.
const treeSize = (await audit.storage.treeStatus()).size;
const rand = (n: number) => Math.floor(Math.random() * n);
const read = (idx: number[]) => audit.storage.readHashes(idx);
async function proofsPerSec(): Promise<number> {
  const tp = performance.now();
  let proofs = 0;
  while (performance.now() - tp < 3000) {
    await proveRecord(treeSize, rand(treeSize), read, audit.hasher);
    proofs++;
  }
  return Math.round(proofs / ((performance.now() - tp) / 1000));
}
// Cold: most tiles seen for the first time (their subtree hashes computed, 255 per tile);
// warm: after one proof in every tile, as in a server that has been answering for a while.
const proofsCold = await proofsPerSec();
for (let n = 0; n * 256 < treeSize; n++) await proveRecord(treeSize, n * 256, read, audit.hasher);
const proofsWarm = await proofsPerSec();
await close();
db.close();

// HTTP: bare Hono vs the full server, token auth on, audit on.
const tdb = openSqlite(config.dbPath);
const { plaintext } = await createToken(createSqliteStore(tdb).tokens, { name: 'bench', role: 'viewer', createdBy: 'bench' }, Date.now());
tdb.close();
async function http(mode: 'bare' | 'full', env: Record<string, string>, headers: Record<string, string> = {}) {
  const t = await startTarget(mode, { LOKI_HOME: home, ...env });
  try {
    await load(t.port, '/api/status', { seconds: 1, headers });
    return await load(t.port, '/api/status', { seconds, headers });
  } finally {
    await t.stop();
  }
}
const bare = await http('bare', {});
const audited = await http('full', { LOKI_ENTERPRISE_AUTH: 'true' }, { authorization: `Bearer ${plaintext}` });

// The tlog endpoints: random inclusion proofs at the full tree size, and full tile reads.
const adb = openSqlite(config.dbPath);
const auditorToken = (await createToken(createSqliteStore(adb).tokens, { name: 'bench-auditor', role: 'auditor', createdBy: 'bench' }, Date.now())).plaintext;
adb.close();
async function tlogLoad(env: Record<string, string>, pathFor: () => string) {
  const t = await startTarget('full', { LOKI_HOME: home, LOKI_ENTERPRISE_AUTH: 'true', ...env });
  const run = (secs: number) =>
    autocannon({
      url: `http://127.0.0.1:${t.port}`,
      connections: 50,
      duration: secs,
      headers: { host: `127.0.0.1:${t.port}`, authorization: `Bearer ${auditorToken}` },
      requests: [{ method: 'GET', setupRequest: (req: Record<string, unknown>) => ({ ...req, path: pathFor() }) }],
    });
  try {
    await run(1);
    const r = await run(seconds);
    return { requests_per_sec: Math.round(r.requests.average), latency_p50_ms: r.latency.p50, latency_p99_ms: r.latency.p99, non_2xx: r.non2xx, errors: r.errors };
  } finally {
    await t.stop();
  }
}
const proofPath = () => `/api/enterprise/audit/tlog/proof/inclusion?index=${rand(treeSize)}&size=${treeSize}`;
const fullTiles = Math.floor(treeSize / 256);
const tilePath = () => {
  const n = rand(fullTiles);
  let s = String(n % 1000).padStart(3, '0');
  for (let m = Math.floor(n / 1000); m > 0; m = Math.floor(m / 1000)) s = `x${String(m % 1000).padStart(3, '0')}/${s}`;
  return `/api/enterprise/audit/tlog/tile/0/${s}`;
};
const proofsAudited = await tlogLoad({}, proofPath);
const proofsReadsFailures = await tlogLoad({ LOKI_AUDIT_READS: 'failures' }, proofPath);
const tileReads = await tlogLoad({ LOKI_AUDIT_READS: 'failures' }, tilePath);

const result = {
  benchmark: 'audit',
  writers: WRITERS,
  durable: 'WAL + synchronous=FULL, group commit',
  appends: {
    first_2000: to2k,
    log_at_2000_next_20000: at2k,
    up_to_total: at22k,
    log_at_total_next_20000: atEnd,
    overall,
    durable_commit_ceiling_64_rows: commitCeiling,
    ratio_to_ceiling: Number((atEnd.per_sec / commitCeiling.entries_per_sec).toFixed(3)),
  },
  rss_growth_mb_over_appends: Number(((rss1 - rss0) / 1024 / 1024).toFixed(1)),
  verify: {
    entries: verify.entries_checked,
    valid: verify.valid,
    reason: verify.reason,
    tree: verify.tree,
    seconds: Number(vs.toFixed(2)),
    entries_per_sec: Math.round(verify.entries_checked / vs),
    threads: os.availableParallelism(),
    hashing_ceiling: hashCeil,
    ratio_to_ceiling: Number((verify.entries_checked / vs / hashCeil.entries_per_sec).toFixed(3)),
  },
  tlog: {
    tree_size: treeSize,
    inclusion_proofs_per_sec_in_process: { cold_cache: proofsCold, warm_cache: proofsWarm },
    inclusion_proofs_http_reads_audited: proofsAudited,
    inclusion_proofs_http_reads_not_audited: proofsReadsFailures,
    full_tile_reads_http: tileReads,
    proofs_to_bare_hono_ratio: Number((proofsReadsFailures.requests_per_sec / bare.requests_per_sec).toFixed(3)),
  },
  http: { bare_hono: bare, audited_token_auth: audited, ratio: Number((audited.requests_per_sec / bare.requests_per_sec).toFixed(3)) },
  loki_mode_python: { appends_per_sec_at_2000: 1190, appends_per_sec_at_10000: 174, verify_entries_per_sec: 105000 },
  targets: { appends_per_sec: 40000, verify_entries_per_sec: 500000, http_ratio: 0.6, rss_growth_mb: 50, inclusion_proofs_per_sec: 20000 },
};
const met = {
  appends: at2k.per_sec >= 40000 && atEnd.per_sec >= 40000,
  inclusion_proofs_http: proofsReadsFailures.requests_per_sec >= 20000,
  verify: result.verify.entries_per_sec >= 500000,
  http: result.http.ratio >= 0.6,
  rss: result.rss_growth_mb_over_appends < 50,
};
process.stdout.write(`${JSON.stringify({ ...result, targets_met: met }, null, 2)}\n`);
process.exit(0);

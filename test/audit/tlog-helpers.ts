/**
 * Audit logs built exactly as the server builds them (createNodeAudit: SQLite
 * storage with the Merkle tree, JWS signer, note key, genesis checkpoint), on a
 * real database file in a temporary LOKI_HOME.
 */
import type { NodeAudit } from '../../src/audit/node-audit';
import { createNodeAudit } from '../../src/audit/node-audit';
import { defaultHasher, type Hash } from '../../src/audit/tlog/merkle';
import { utf8 } from '../../src/audit/tlog/sha256';
import { appendLeaves } from '../../src/audit/tlog/tiles';
import { migrate, openSqlite, type SqliteDb } from '../../src/db/sqlite';
import { loadConfig } from '../../src/env';
import { sampleEntry } from '../helpers/audit';
import { tempHome } from '../helpers/server';

export interface NodeLog {
  home: string;
  db: SqliteDb;
  node: NodeAudit;
  audit: NodeAudit['audit'];
  close(): Promise<void>;
}

export async function openNodeLog(home: string, env: Record<string, string> = {}, opts: { syncTree?: boolean; createKeys?: boolean } = {}): Promise<NodeLog> {
  const config = loadConfig({ LOKI_HOME: home, ...env }, { home, cwd: home });
  const db = openSqlite(config.dbPath);
  migrate(db);
  const node = await createNodeAudit(config, db, opts);
  return {
    home,
    db,
    node,
    audit: node.audit,
    async close() {
      await node.audit.drain();
      db.close();
    },
  };
}

/** A fresh log of `entries` sample entries appended concurrently (group commit), as the server would. */
export async function makeNodeLog(entries: number, env: Record<string, string> = {}): Promise<NodeLog> {
  const log = await openNodeLog(tempHome('loki-tlog-'), env);
  await appendSamples(log, 1, entries);
  return log;
}

export async function appendSamples(log: NodeLog, from: number, to: number): Promise<void> {
  const pending: Promise<unknown>[] = [];
  for (let i = from; i <= to; i++) pending.push(log.audit.append(sampleEntry(i)));
  await Promise.all(pending);
  await log.audit.drain();
}

/** The tiles of the tree over the stored entries, recomputed independently (plain TypeScript SHA-256). */
export function expectedTiles(db: SqliteDb): Map<string, string> {
  const rows = db.prepare('SELECT entry FROM audit_log ORDER BY seq').pluck().all() as string[];
  const leaves: Hash[] = rows.map((e) => defaultHasher.recordHash(utf8(e)));
  const out = new Map<string, string>();
  for (const r of appendLeaves(0, new Map(), leaves).rows) out.set(`${r.level}/${r.n}`, Buffer.from(r.data).toString('hex'));
  return out;
}

export function storedTiles(db: SqliteDb): Map<string, string> {
  const rows = db.prepare('SELECT level, idx, hashes FROM audit_tiles ORDER BY level, idx').all() as { level: number; idx: number; hashes: Buffer }[];
  return new Map(rows.map((r) => [`${r.level}/${r.idx}`, r.hashes.toString('hex')]));
}

/**
 * The audit log as every Node process builds it (server, CLI, benchmarks): SQLite
 * storage with group commit and the Merkle tree, the Ed25519 checkpoint signer
 * (JWS) and note key (C2SP checkpoints), the parallel verifier, and syslog
 * forwarding of every committed entry and checkpoint.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { createSqliteAuditStorage, sha256Hex } from '../db/sqlite-audit';
import { withAppendThread } from '../db/sqlite-audit-thread';
import { ensurePrivateDir, type SqliteDb } from '../db/sqlite';
import type { Config } from '../env';
import type { Logger } from '../http/context';
import { AuditLog, type CheckpointEvent, type CommittedEntry, type RangeChecker, sequentialChecker, type TlogSigner } from './log';
import { keyPaths, loadNoteKey } from './note-key';
import { nodeTreeHasher } from './node-tlog';
import { createParallelChecker } from './parallel-verify';
import { createFileSigner } from './signer';
import type { AuditStorage } from './storage';
import { auditEvent, checkpointEvent, detailsParams, entrySummary } from './siem';
import { createSyslogForwarder, type SyslogEntry, type SyslogForwarder, syslogSeverityFor } from './syslog';

export interface NodeAudit {
  audit: AuditLog;
  syslog: SyslogForwarder | null;
  close(): Promise<void>;
}

/** A key verification needs is missing: verification never creates one. */
export class AuditKeyMissingError extends Error {
  constructor(readonly file: string) {
    super(`the audit signing key ${file} does not exist (verification never creates a key: restore the file, or verify an export with --file)`);
  }
}

/**
 * An entry for syslog: the chain position, the who/what and the entry's details
 * (redacted; `details.<key>` SD-PARAMs), plus the ECS event the `json` and `cef`
 * formats render (docs/siem.md).
 */
export function syslogMessageFor(e: CommittedEntry): SyslogEntry {
  const i = e.input;
  const severity = syslogSeverityFor(i.action);
  return {
    severity,
    msgid: i.action,
    message: entrySummary(i),
    structured: {
      seq: e.seq,
      hash: e.hash,
      actor_type: i.actor.type,
      actor: i.actor.name ?? i.actor.id ?? i.actor.type,
      client_ip: i.client?.ip ?? null,
      status: i.outcome.status,
      success: i.outcome.success,
      request_id: i.request?.id ?? null,
      ...detailsParams(i.details ?? undefined),
    },
    event: () => auditEvent(e, severity),
  };
}

/**
 * A checkpoint for syslog: the full signed checkpoint in every format. RFC 5424:
 * the C2SP note text as the message and the JWS as the `jws` SD-PARAM (so a
 * syslog archive holds signed tree heads a verifier can use); JSON and CEF: both
 * in the event (`loki.checkpoint.jws` / `.note`, CEF `cs5` / `cs6`).
 */
export function syslogCheckpointMessage(cp: CheckpointEvent): SyslogEntry {
  return {
    severity: 'info' as const,
    msgid: 'audit.checkpoint',
    message: cp.note ?? `signed checkpoint ${cp.kind ?? ''} size ${cp.size} head ${cp.head_hash}`,
    signedMessage: cp.note !== null,
    structured: { origin: cp.origin, size: cp.size, head_hash: cp.head_hash, time: cp.time, kind: cp.kind ?? null },
    ...(cp.jws ? { signed: { jws: cp.jws } } : {}),
    event: () => checkpointEvent(cp),
  };
}

export interface NodeAuditOptions {
  logger?: Logger;
  /** false: no signing at all (tail). */
  signer?: boolean;
  /**
   * Create missing keys (default true: the server and the CLI's writing
   * commands). false (verification): a missing JWS key is an AuditKeyMissingError,
   * a missing note key leaves notes unchecked (the caller decides whether that is an error).
   */
  createKeys?: boolean;
  /** Backfill the Merkle tree for entries made before it existed (default true; verification does not write). */
  syncTree?: boolean;
  /**
   * SQLite: commit appends on a writer thread with its own connection
   * (src/db/sqlite-audit-thread.ts), so the event loop is not blocked by the
   * commit's fsync. The server sets it; the CLI's few appends do not need it.
   */
  appendThread?: boolean;
}

/** SQLite: the storage on the file, verified by the parallel worker threads. */
export async function createNodeAudit(config: Config, db: SqliteDb, opts: NodeAuditOptions = {}): Promise<NodeAudit> {
  const storage = createSqliteAuditStorage(db);
  if (!opts.appendThread || !config.auditEnabled) return createNodeAuditOn(config, storage, createParallelChecker(config.dbPath), opts);
  // The tree backfill (createNodeAuditOn) runs on this connection before any append goes to the thread.
  const threaded = withAppendThread(storage, config.dbPath);
  try {
    // The thread is up (its connection open) before anything is appended or served.
    await threaded.ready;
    const node = await createNodeAuditOn(config, threaded, createParallelChecker(config.dbPath), opts);
    return {
      ...node,
      async close() {
        await node.close();
        await threaded.close();
      },
    };
  } catch (err) {
    await threaded.close();
    throw err;
  }
}

/**
 * PostgreSQL (src/db/pg-audit.ts): one chain shared by every process; the rows
 * are verified as read through the pool (sequentially, with node:crypto).
 */
export async function createPgNodeAudit(config: Config, storage: AuditStorage, opts: NodeAuditOptions = {}): Promise<NodeAudit> {
  // The keys stay files beside where the SQLite database would be (0700 directory).
  if (config.auditEnabled && opts.signer !== false && opts.createKeys !== false) ensurePrivateDir(path.dirname(keyPaths(config.dbPath).signing));
  return createNodeAuditOn(config, storage, sequentialChecker(storage, sha256Hex, nodeTreeHasher), opts);
}

/** The TLS files named in the config, read once at start-up. */
function syslogTls(c: NonNullable<Config['syslog']>): { ca?: Buffer; cert?: Buffer; key?: Buffer } {
  const read = (file: string | null, name: string) => {
    if (!file) return undefined;
    try {
      return readFileSync(file);
    } catch (err) {
      throw new Error(`${name}: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
    }
  };
  return { ca: read(c.tlsCa, 'LOKI_AUDIT_SYSLOG_TLS_CA'), cert: read(c.tlsCert, 'LOKI_AUDIT_SYSLOG_TLS_CERT'), key: read(c.tlsKey, 'LOKI_AUDIT_SYSLOG_TLS_KEY') };
}

async function createNodeAuditOn(config: Config, storage: AuditStorage, rangeChecker: RangeChecker, opts: NodeAuditOptions): Promise<NodeAudit> {
  const createKeys = opts.createKeys ?? true;
  const syslog = config.syslog
    ? createSyslogForwarder({
        host: config.syslog.host,
        port: config.syslog.port,
        proto: config.syslog.proto,
        format: config.syslog.format,
        sdId: config.syslog.sdId,
        tls: config.syslog.proto === 'tls' ? syslogTls(config.syslog) : undefined,
        onError: (err) => opts.logger?.warn('syslog forwarding failed; queueing', { err: err.message }),
      })
    : null;
  const keys = keyPaths(config.dbPath);
  const signing = config.auditEnabled && opts.signer !== false;
  if (signing && !createKeys && !existsSync(keys.signing)) throw new AuditKeyMissingError(keys.signing);
  const signer = signing ? await createFileSigner(keys.signing) : null;
  const noteKey = signing ? await loadNoteKey(keys.note, config.auditOrigin, { create: createKeys }) : null;
  const tlog: TlogSigner | null = noteKey?.tlog ?? null;
  if (config.auditEnabled && opts.syncTree !== false) {
    const tree = await storage.syncTree();
    if (tree.state === 'unavailable') {
      opts.logger?.warn('the audit log was pruned before its Merkle tree existed: no tree and no checkpoint notes for it', { tree_size: tree.size, log_size: tree.logSize });
    } else if (tree.state === 'ahead' || tree.state === 'damaged') {
      opts.logger?.error('the audit Merkle tree does not match the log (run loki enterprise audit verify)', { state: tree.state, tree_size: tree.size, log_size: tree.logSize });
    }
  }
  const audit = new AuditLog({
    storage,
    enabled: config.auditEnabled,
    signer,
    tlog,
    hasher: nodeTreeHasher,
    verification: { rangeChecker },
    onError: (err) => opts.logger?.error('audit write failed', { err: String(err) }),
    onCommitted: syslog
      ? (entries) => {
          for (const e of entries) syslog.send(syslogMessageFor(e));
        }
      : undefined,
    onCheckpoint: syslog ? (cp) => syslog.send(syslogCheckpointMessage(cp)) : undefined,
  });
  // A new note key starts its log with a signed genesis checkpoint (of the log as
  // it is now: empty, or the entries made before notes existed). A note key with
  // no genesis checkpoint means the log was emptied or replaced: verify says so.
  if (noteKey?.created) await audit.checkpoint('genesis');
  return {
    audit,
    syslog,
    async close() {
      await audit.close();
      await syslog?.close();
    },
  };
}

/**
 * The audit log as every Node process builds it (server, CLI, benchmarks): SQLite
 * storage with group commit, the Ed25519 checkpoint signer, the parallel
 * verifier, and syslog forwarding of every committed entry and checkpoint.
 */
import path from 'node:path';
import { createSqliteAuditStorage } from '../db/sqlite-audit';
import type { SqliteDb } from '../db/sqlite';
import type { Config } from '../env';
import type { Logger } from '../http/context';
import type { CheckpointBody } from './chain';
import { AuditLog, type CommittedEntry } from './log';
import { createParallelChecker } from './parallel-verify';
import { createFileSigner } from './signer';
import { createSyslogForwarder, type SyslogForwarder, syslogSeverityFor } from './syslog';

export interface NodeAudit {
  audit: AuditLog;
  syslog: SyslogForwarder | null;
  close(): Promise<void>;
}

/** Structured data for syslog: the chain position and the who/what, never details (they may be large). */
export function syslogMessageFor(e: CommittedEntry) {
  const i = e.input;
  const who = i.actor.name ?? i.actor.id ?? i.actor.type;
  const what = i.request ? `${i.request.method} ${i.request.path}` : (i.resource ? `${i.resource.type} ${i.resource.id ?? ''}`.trim() : '');
  return {
    severity: syslogSeverityFor(i.action),
    msgid: i.action,
    message: `${i.action} by ${who}${what ? ` ${what}` : ''} -> ${i.outcome.success ? 'ok' : `failed ${i.outcome.status ?? ''} ${i.outcome.error ?? ''}`.trim()}`,
    structured: {
      seq: e.seq,
      hash: e.hash,
      actor_type: i.actor.type,
      actor: who,
      client_ip: i.client?.ip ?? null,
      status: i.outcome.status,
      success: i.outcome.success,
      request_id: i.request?.id ?? null,
    },
  };
}

export async function createNodeAudit(config: Config, db: SqliteDb, opts: { logger?: Logger; signer?: boolean } = {}): Promise<NodeAudit> {
  const syslog = config.syslog
    ? createSyslogForwarder({
        host: config.syslog.host,
        port: config.syslog.port,
        proto: config.syslog.proto,
        onError: (err) => opts.logger?.warn('syslog forwarding failed; queueing', { err: err.message }),
      })
    : null;
  const signer =
    config.auditEnabled && opts.signer !== false ? await createFileSigner(path.join(path.dirname(config.dbPath), 'audit-signing-key')) : null;
  const audit = new AuditLog({
    storage: createSqliteAuditStorage(db),
    enabled: config.auditEnabled,
    signer,
    verification: { rangeChecker: createParallelChecker(config.dbPath) },
    onError: (err) => opts.logger?.error('audit write failed', { err: String(err) }),
    onCommitted: syslog
      ? (entries) => {
          for (const e of entries) syslog.send(syslogMessageFor(e));
        }
      : undefined,
    onCheckpoint: syslog
      ? (cp: CheckpointBody) =>
          syslog.send({
            severity: 'info',
            msgid: 'audit.checkpoint',
            message: `signed checkpoint ${cp.kind ?? ''} size ${cp.size} head ${cp.head_hash}`,
            structured: { origin: cp.origin, size: cp.size, head_hash: cp.head_hash, time: cp.time, kind: cp.kind ?? null },
          })
      : undefined,
  });
  return {
    audit,
    syslog,
    async close() {
      await audit.close();
      await syslog?.close();
    },
  };
}

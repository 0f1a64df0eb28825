/**
 * The audit storage's SQL, shared by the SQLite (sqlite-audit.ts) and D1
 * (d1-audit.ts) implementations so both read the chain the same way.
 */
import type { AuditQuery } from '../audit/storage';

/** Build the filtered audit listing. Only placeholders carry values. */
export function auditQuerySql(q: AuditQuery): { sql: string; args: (string | number)[] } {
  const where: string[] = [];
  const args: (string | number)[] = [];
  if (q.order === 'desc') {
    if (q.afterSeq > 0) {
      where.push('seq < ?');
      args.push(q.afterSeq);
    }
  } else {
    where.push('seq > ?');
    args.push(q.afterSeq);
  }
  if (q.action) {
    where.push('action = ?');
    args.push(q.action);
  }
  if (q.actor) {
    where.push('actor = ?');
    args.push(q.actor);
  }
  if (q.since !== undefined) {
    where.push('ts >= ?');
    args.push(q.since);
  }
  args.push(q.limit);
  const sql = `SELECT seq, entry, prev_hash, hash FROM audit_log ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY seq ${q.order === 'desc' ? 'DESC' : 'ASC'} LIMIT ?`;
  return { sql, args };
}

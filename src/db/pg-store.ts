/**
 * The Store over drizzle's pg dialect (node-postgres pool): the same queries as
 * drizzle-store.ts (SQLite, D1) on pg-schema.ts. Every method is one statement;
 * a job claim picks its row with FOR UPDATE SKIP LOCKED, so concurrent workers
 * never wait on, nor take, each other's session.
 */
import { and, asc, desc, eq, getTableColumns, gt, inArray, isNotNull, isNull, lt, or, sql } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/node-postgres';
import type pg from 'pg';
import type { Role, Scope } from '../auth/roles';
import * as schema from './pg-schema';
import {
  type EventRecord,
  type SessionRecord,
  type SessionState,
  type Store,
  type TokenRecord,
  UniqueViolation,
} from './store';
import { type CountsCacheOptions, withCountsCache } from './session-counts';

type TokenRow = typeof schema.tokens.$inferSelect;
type SessionRow = typeof schema.sessions.$inferSelect;

function toToken(r: TokenRow): TokenRecord {
  return {
    ...r,
    role: r.role as Role,
    scopes: JSON.parse(r.scopes) as Scope[],
    source: r.source === 'legacy' ? 'legacy' : 'native',
  };
}

/** Every session column but the (possibly large) patch, which only `resultPatch` reads. */
const { resultPatch: _patchColumn, ...sessionColumns } = getTableColumns(schema.sessions);

function toSession(r: Omit<SessionRow, 'resultPatch'>): SessionRecord {
  return { ...r, status: r.status as SessionState };
}

/**
 * PostgreSQL text cannot hold U+0000, which a patch can (git diffs a file whose NUL
 * byte comes after its first 8000 bytes as text): such a patch, and one that
 * starts with the marker itself, is stored as base64 behind the marker.
 */
const ENCODED_PATCH = '\u0001loki-base64:';
const storedPatch = (p: string | null): string | null =>
  p !== null && (p.includes('\u0000') || p.startsWith(ENCODED_PATCH)) ? ENCODED_PATCH + Buffer.from(p, 'utf8').toString('base64') : p;
const readPatch = (p: string | null): string | null => (p?.startsWith(ENCODED_PATCH) ? Buffer.from(p.slice(ENCODED_PATCH.length), 'base64').toString('utf8') : p);

/** unique_violation (SQLSTATE 23505), on the error or on drizzle's wrapper's cause. */
function isUnique(err: unknown): boolean {
  const code = (e: unknown) => (e as { code?: unknown } | null)?.code;
  return code(err) === '23505' || code((err as { cause?: unknown } | null)?.cause) === '23505';
}

/** The advisory lock key event inserts hold to their commit ('loki' 03; 01 migrations, 02 audit). */
export const LOCK_EVENTS = 0x6c6f6b69_03;

export function createPgStore(pool: pg.Pool, counts: CountsCacheOptions = {}): Store {
  const db = drizzle(pool, { schema });
  const { tokens, sessions, sessionLogs, events } = schema;
  // Session counts are cached (src/db/session-counts.ts): /api/status asks on every request.
  return withCountsCache({
    kind: 'postgres',
    async ping() {
      await db.execute(sql`select 1`);
    },
    tokens: {
      async insert(t) {
        try {
          await db.insert(tokens).values({ ...t, scopes: JSON.stringify(t.scopes) });
        } catch (err) {
          if (isUnique(err)) throw new UniqueViolation('a token with that name already exists');
          throw err;
        }
      },
      async findByHash(hash) {
        const rows = await db.select().from(tokens).where(eq(tokens.hash, hash)).limit(1);
        return rows[0] ? toToken(rows[0]) : null;
      },
      async listLegacySalted() {
        const rows = await db.select().from(tokens).where(and(isNotNull(tokens.legacySalt), isNull(tokens.revokedAt)));
        return rows.map(toToken);
      },
      async rehash(id, newHash) {
        await db.update(tokens).set({ hash: newHash, legacySalt: null }).where(eq(tokens.id, id));
      },
      async get(idOrName) {
        const rows = await db
          .select()
          .from(tokens)
          .where(or(eq(tokens.id, idOrName), eq(tokens.name, idOrName)))
          .limit(1);
        return rows[0] ? toToken(rows[0]) : null;
      },
      async list(includeRevoked) {
        const rows = await db
          .select()
          .from(tokens)
          .where(includeRevoked ? undefined : isNull(tokens.revokedAt))
          .orderBy(asc(tokens.createdAt));
        return rows.map(toToken);
      },
      async revoke(id, at) {
        const rows = await db
          .update(tokens)
          .set({ revokedAt: at })
          .where(and(eq(tokens.id, id), isNull(tokens.revokedAt)))
          .returning({ id: tokens.id });
        return rows.length > 0;
      },
      async touch(id, at) {
        await db.update(tokens).set({ lastUsedAt: at }).where(eq(tokens.id, id));
      },
    },
    sessions: {
      async insert(s) {
        await db.insert(sessions).values(s);
      },
      async get(id) {
        const rows = await db.select(sessionColumns).from(sessions).where(eq(sessions.id, id)).limit(1);
        return rows[0] ? toSession(rows[0]) : null;
      },
      async list({ limit, status, before }) {
        const rows = await db
          .select(sessionColumns)
          .from(sessions)
          .where(
            and(
              status ? eq(sessions.status, status) : undefined,
              before
                ? or(lt(sessions.createdAt, before.createdAt), and(eq(sessions.createdAt, before.createdAt), lt(sessions.id, before.id)))
                : undefined,
            ),
          )
          .orderBy(desc(sessions.createdAt), desc(sessions.id))
          .limit(limit);
        return rows.map(toSession);
      },
      async counts() {
        const rows = await db
          .select({ status: sessions.status, n: sql<number>`count(*)` })
          .from(sessions)
          .groupBy(sessions.status);
        const out: Record<string, number> = {};
        for (const r of rows) out[r.status] = Number(r.n);
        return out;
      },
      async claim(workerId, leaseId, now, leaseUntil) {
        // One statement: lock the oldest queued session no other claim holds
        // (SKIP LOCKED: a concurrent claim takes the next one instead of waiting)
        // and lease it; `status = 'queued'` is checked again on the locked row.
        const rows = await db
          .update(sessions)
          .set({ status: 'running', workerId, leaseId, leaseExpiresAt: leaseUntil, startedAt: now })
          .where(
            and(
              eq(sessions.status, 'queued'),
              eq(
                sessions.id,
                sql`(select ${sessions.id} from ${sessions} where ${sessions.status} = 'queued' order by ${sessions.createdAt}, ${sessions.id} limit 1 for update skip locked)`,
              ),
            ),
          )
          .returning(sessionColumns);
        return rows[0] ? toSession(rows[0]) : null;
      },
      async renew(id, leaseId, leaseUntil) {
        const rows = await db
          .update(sessions)
          .set({ leaseExpiresAt: leaseUntil })
          .where(and(eq(sessions.id, id), eq(sessions.leaseId, leaseId), eq(sessions.status, 'running')))
          .returning({ id: sessions.id });
        return rows.length > 0;
      },
      async update(id, leaseId, patch) {
        const rows = await db
          .update(sessions)
          .set(patch)
          .where(leaseId ? and(eq(sessions.id, id), eq(sessions.leaseId, leaseId)) : eq(sessions.id, id))
          .returning({ id: sessions.id });
        return rows.length > 0;
      },
      async advanceSeq(id, leaseId, expected, next) {
        const rows = await db
          .update(sessions)
          .set({ lastEventSeq: next })
          .where(and(eq(sessions.id, id), eq(sessions.leaseId, leaseId), eq(sessions.lastEventSeq, expected)))
          .returning({ id: sessions.id });
        return rows.length > 0;
      },
      async transition(id, cond, patch) {
        // A worker's reason text may carry an agent's NUL byte: stored as U+FFFD (as session output is).
        const set = typeof patch.reason === 'string' ? { ...patch, reason: patch.reason.replace(/\u0000/g, '\ufffd') } : patch;
        const rows = await db
          .update(sessions)
          .set(set)
          .where(
            and(
              eq(sessions.id, id),
              inArray(sessions.status, [...cond.from]),
              cond.leaseId !== undefined ? eq(sessions.leaseId, cond.leaseId) : undefined,
            ),
          )
          .returning(sessionColumns);
        return rows[0] ? toSession(rows[0]) : null;
      },
      async reserveLogLines(id, count, bytes) {
        const rows = await db
          .update(sessions)
          .set({ logLines: sql`${sessions.logLines} + ${count}`, logBytes: sql`${sessions.logBytes} + ${bytes}` })
          .where(eq(sessions.id, id))
          .returning({ logLines: sessions.logLines, logBytes: sessions.logBytes });
        const r = rows[0];
        return r ? { firstLine: r.logLines - count + 1, logBytes: r.logBytes } : null;
      },
      async saveResult(id, leaseId, result, patch) {
        const rows = await db
          .update(sessions)
          .set({ result, resultPatch: storedPatch(patch) })
          .where(and(eq(sessions.id, id), eq(sessions.leaseId, leaseId)))
          .returning({ id: sessions.id });
        return rows.length > 0;
      },
      async resultPatch(id) {
        const rows = await db.select({ p: sessions.resultPatch }).from(sessions).where(eq(sessions.id, id)).limit(1);
        return readPatch(rows[0]?.p ?? null);
      },
      async requestStop(id) {
        const rows = await db
          .update(sessions)
          .set({ stopRequested: true })
          .where(and(eq(sessions.id, id), inArray(sessions.status, ['queued', 'running'])))
          .returning({ id: sessions.id });
        return rows.length > 0;
      },
      async expireLeases(now) {
        const rows = await db
          .update(sessions)
          .set({ status: 'lost', reason: 'worker lease expired', endedAt: now })
          .where(and(eq(sessions.status, 'running'), lt(sessions.leaseExpiresAt, now)))
          .returning(sessionColumns);
        return rows.map(toSession);
      },
      async appendLogs(id, lines) {
        if (lines.length === 0) return;
        await db
          .insert(sessionLogs)
          // PostgreSQL text cannot hold U+0000 (SQLite can): an agent's NUL bytes are stored as U+FFFD.
          .values(lines.map((l) => ({ sessionId: id, line: l.line, stream: l.stream, text: l.text.replace(/\u0000/g, '\ufffd'), ts: l.ts })))
          .onConflictDoNothing();
      },
      async logs(id, afterLine, limit) {
        return db
          .select({ line: sessionLogs.line, stream: sessionLogs.stream, text: sessionLogs.text, ts: sessionLogs.ts })
          .from(sessionLogs)
          .where(and(eq(sessionLogs.sessionId, id), gt(sessionLogs.line, afterLine)))
          .orderBy(asc(sessionLogs.line))
          .limit(limit);
      },
      async liveIdsForWorker(workerId) {
        const rows = await db
          .select({ id: sessions.id })
          .from(sessions)
          .where(and(eq(sessions.workerId, workerId), eq(sessions.status, 'running')));
        return rows.map((r) => r.id);
      },
    },
    events: {
      async insert(type, sessionId, data, ts) {
        // The id is taken, and the row committed, under a transaction-scoped lock
        // (one statement: its own transaction): ids become visible in id order, so
        // a reader that has seen id N never sees a smaller one appear later (the
        // event hubs of every server follow the table by id).
        const { rows } = await pool.query<{ id: number }>(
          `INSERT INTO events (type, session_id, data, ts)
           SELECT $1::text, $2::text, $3::text, $4::bigint FROM (SELECT pg_advisory_xact_lock($5)) AS serialised
           RETURNING id`,
          [type, sessionId, JSON.stringify(data ?? null), ts, LOCK_EVENTS],
        );
        return Number(rows[0]!.id);
      },
      async after({ afterId, sessionId, types, limit }) {
        const rows = await db
          .select()
          .from(events)
          .where(
            and(
              gt(events.id, afterId),
              sessionId ? eq(events.sessionId, sessionId) : undefined,
              types && types.length > 0 ? inArray(events.type, types) : undefined,
            ),
          )
          .orderBy(asc(events.id))
          .limit(limit);
        return rows.map((r): EventRecord => ({ ...r, data: JSON.parse(r.data) as unknown }));
      },
      async maxId() {
        const rows = await db.select({ m: sql<number | null>`max(${events.id})` }).from(events);
        return Number(rows[0]?.m ?? 0);
      },
      async prune(olderThan, keepMax) {
        const byAge = await db.delete(events).where(lt(events.ts, olderThan)).returning({ id: events.id });
        const max = await this.maxId();
        const byCount = await db
          .delete(events)
          .where(lt(events.id, max - keepMax + 1))
          .returning({ id: events.id });
        return byAge.length + byCount.length;
      },
    },
  }, counts);
}

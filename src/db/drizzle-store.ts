/**
 * Store implementation over drizzle's SQLite dialect. The same code serves
 * better-sqlite3 (sync driver; queries are awaitable) and D1 (async driver).
 */
import { and, asc, desc, eq, getTableColumns, gt, inArray, isNotNull, isNull, lt, or, sql } from 'drizzle-orm';
import type { BaseSQLiteDatabase } from 'drizzle-orm/sqlite-core';
import type { Role, Scope } from '../auth/roles';
import * as schema from './schema';
import {
  type EventRecord,
  type SessionRecord,
  type SessionState,
  type Store,
  type TokenRecord,
  UniqueViolation,
} from './store';
import { type CountsCacheOptions, withCountsCache } from './session-counts';

// biome-ignore lint/suspicious/noExplicitAny: driver-agnostic drizzle handle
export type AnyDb = BaseSQLiteDatabase<'sync' | 'async', any, typeof schema>;

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

function isUnique(err: unknown): boolean {
  const msg = String((err as { message?: string })?.message ?? err);
  const cause = String((err as { cause?: { message?: string } })?.cause?.message ?? '');
  return /UNIQUE constraint failed/i.test(msg) || /UNIQUE constraint failed/i.test(cause);
}

export function createDrizzleStore(db: AnyDb, kind: 'sqlite' | 'd1', counts: CountsCacheOptions = {}): Store {
  const { tokens, sessions, sessionLogs, events } = schema;
  // Session counts are cached (src/db/session-counts.ts): /api/status asks on every request.
  return withCountsCache({
    kind,
    async ping() {
      await db.run(sql`select 1`);
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
        // One statement: pick and lease the oldest queued session. Two workers
        // racing for the same row cannot both match `status = 'queued'`.
        const rows = await db
          .update(sessions)
          .set({ status: 'running', workerId, leaseId, leaseExpiresAt: leaseUntil, startedAt: now })
          .where(
            and(
              eq(sessions.status, 'queued'),
              eq(
                sessions.id,
                sql`(select ${sessions.id} from ${sessions} where ${sessions.status} = 'queued' order by ${sessions.createdAt}, ${sessions.id} limit 1)`,
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
        const rows = await db
          .update(sessions)
          .set(patch)
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
          .set({ result, resultPatch: patch })
          .where(and(eq(sessions.id, id), eq(sessions.leaseId, leaseId)))
          .returning({ id: sessions.id });
        return rows.length > 0;
      },
      async resultPatch(id) {
        const rows = await db.select({ p: sessions.resultPatch }).from(sessions).where(eq(sessions.id, id)).limit(1);
        return rows[0]?.p ?? null;
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
          .values(lines.map((l) => ({ sessionId: id, line: l.line, stream: l.stream, text: l.text, ts: l.ts })))
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
        const rows = await db
          .insert(events)
          .values({ type, sessionId, data: JSON.stringify(data ?? null), ts })
          .returning({ id: events.id });
        return rows[0]!.id;
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

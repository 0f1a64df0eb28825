import type { MiddlewareHandler } from 'hono';
import { z } from 'zod';
import { SESSION_STATES, TERMINAL_STATES } from '../../db/store';
import { createSessionBody } from '../../sessions/api';
import { SessionService, sessionView } from '../../sessions/service';
import type { AppContext, AppDeps, AppEnv } from '../context';
import type { TypedRoute } from '../define-route';
import { ApiError, ErrorCode } from '../errors';
import { isExponentForm, topLevelNumberSources } from '../json-source';
import { validate } from '../validate';

const intParam = (max: number, what: string) =>
  z
    .string()
    .regex(/^\d{1,15}$/, `must be ${what}`)
    .transform(Number)
    .pipe(z.number().int().min(0).max(max, `must be ${what}`));

const listQuery = z.object({
  limit: intParam(200, 'an integer from 1 to 200').pipe(z.number().min(1, 'must be an integer from 1 to 200')).optional(),
  status: z.enum(SESSION_STATES).optional(),
  cursor: z
    .string()
    .regex(/^\d{1,15}:[A-Za-z0-9_-]{1,64}$/, 'must be a next_cursor value from a previous page')
    .optional(),
});

const logsQuery = z.object({
  after: intParam(Number.MAX_SAFE_INTEGER, 'a non-negative integer').optional(),
  limit: intParam(5000, 'an integer from 1 to 5000').pipe(z.number().min(1, 'must be an integer from 1 to 5000')).optional(),
});

const idParam = z.object({ id: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'is not a session id') });

/**
 * `budget_usd` as a JSON number must be written as a plain decimal: `1e2` parses to
 * 100, so only the body text shows it. Refused with 400 `validation_error`.
 */
const plainBudget: MiddlewareHandler<AppEnv> = async (c, next) => {
  const text = await c.req.text();
  let parsed = false;
  try {
    JSON.parse(text);
    parsed = true;
  } catch {
    // the validator answers malformed JSON
  }
  const written = parsed ? topLevelNumberSources(text, 'budget_usd').find(isExponentForm) : undefined;
  if (written !== undefined) {
    throw new ApiError(400, ErrorCode.validation, `budget_usd: write the amount as a plain decimal such as 100 or 5.00, not in exponent form (got ${written.slice(0, 32)})`);
  }
  return next();
};

function actorName(c: AppContext): string {
  return c.get('identity')?.actor.name ?? 'anonymous';
}

/** The sessions API: start, list, read, logs, stop. */
export function sessionRoutes(route: TypedRoute, deps: AppDeps): void {
  const sessions = new SessionService(deps);

  route('POST', '/api/sessions', plainBudget, validate('json', createSessionBody), async (c) => {
    const body = c.req.valid('json');
    c.set('auditAction', 'session.start');
    c.set('auditResource', { type: 'session', id: null });
    c.set('auditDetails', { workspace: body.workspace, prd: body.prd, sandbox: body.sandbox ?? null, name: body.name ?? null });
    const s = await sessions.create(body, actorName(c));
    c.set('auditResource', { type: 'session', id: s.id });
    c.set('auditDetails', {
      workspace: s.workspace,
      prd: s.prd,
      sandbox: s.sandbox,
      host_session: !s.sandbox,
      provider: body.provider ?? null,
      policy_sha256: s.policySha256,
      budget_usd: s.budgetUsd,
      name: s.name,
    });
    return c.json(sessionView(s), 201);
  });

  route('GET', '/api/sessions', validate('query', listQuery), async (c) => {
    const q = c.req.valid('query');
    const limit = q.limit ?? 50;
    let before: { createdAt: number; id: string } | undefined;
    if (q.cursor) {
      const [at, id] = q.cursor.split(':') as [string, string];
      before = { createdAt: Number(at), id };
    }
    const rows = await deps.store.sessions.list({ limit, status: q.status, before });
    const last = rows[rows.length - 1];
    return c.json({
      sessions: rows.map(sessionView),
      next_cursor: rows.length === limit && last ? `${last.createdAt}:${last.id}` : null,
    });
  });

  route('GET', '/api/sessions/:id', validate('param', idParam), async (c) => {
    const { id } = c.req.valid('param');
    return c.json(sessionView(await sessions.get(id)));
  });

  route('GET', '/api/sessions/:id/logs', validate('param', idParam), validate('query', logsQuery), async (c) => {
    const { id } = c.req.valid('param');
    const q = c.req.valid('query');
    // Read the status first: when it is terminal, every line was stored before it.
    const s = await sessions.get(id);
    const after = q.after ?? 0;
    const lines = await deps.store.sessions.logs(id, after, q.limit ?? 1000);
    return c.json({
      session_id: id,
      status: s.status,
      ended: TERMINAL_STATES.has(s.status),
      lines: lines.map((l) => ({ line: l.line, stream: l.stream, text: l.text, ts: new Date(l.ts).toISOString() })),
      next_after: lines.length ? lines[lines.length - 1]!.line : after,
    });
  });

  /** A copy (non-git) workspace's result: the agent's changes as a git patch (`git apply` it). */
  route('GET', '/api/sessions/:id/patch', validate('param', idParam), async (c) => {
    const { id } = c.req.valid('param');
    const s = await sessions.get(id);
    const patch = await deps.store.sessions.resultPatch(id);
    if (patch === null) {
      throw new ApiError(404, ErrorCode.notFound, s.result ? `session ${id} has no patch (see result.kind and result.branch)` : `session ${id} has no result yet`);
    }
    return c.body(patch, 200, {
      'Content-Type': 'text/x-diff; charset=utf-8',
      'Content-Disposition': `attachment; filename="${id}.patch"`,
    });
  });

  route('POST', '/api/sessions/:id/stop', validate('param', idParam), async (c) => {
    const { id } = c.req.valid('param');
    c.set('auditAction', 'session.stop');
    c.set('auditResource', { type: 'session', id });
    const before = await deps.store.sessions.get(id);
    if (before) c.set('auditDetails', { prd: before.prd, workspace: before.workspace, status: before.status });
    const { session, pending } = await sessions.stop(id, actorName(c));
    c.set('auditDetails', { prd: session.prd, workspace: session.workspace, previous_status: before?.status ?? null, status: session.status });
    return c.json({ session: sessionView(session), stop_requested: true }, pending ? 202 : 200);
  });
}

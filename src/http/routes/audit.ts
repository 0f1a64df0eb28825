import { z } from 'zod';
import { entryFromRow } from '../../audit/log';
import type { AppDeps } from '../context';
import type { DefineRoute } from '../define-route';
import { validate } from '../validate';

const sinceSchema = z.string().transform((s, ctx) => {
  const ms = /^\d+$/.test(s) ? Number(s) : Date.parse(s);
  if (!Number.isFinite(ms)) {
    ctx.addIssue({ code: 'custom', message: 'must be an ISO 8601 date or epoch milliseconds' });
    return z.NEVER;
  }
  return ms;
});

const auditQuery = z.object({
  after_seq: z.string().regex(/^\d{1,15}$/, 'must be a non-negative integer').transform(Number).optional(),
  limit: z
    .string()
    .regex(/^\d{1,7}$/, 'must be an integer from 1 to 1000')
    .transform(Number)
    .pipe(z.number().int().min(1, 'must be an integer from 1 to 1000').max(1000, 'must be an integer from 1 to 1000'))
    .optional(),
  action: z.string().max(128).optional(),
  actor: z.string().max(255).optional(),
  since: sinceSchema.optional(),
  order: z.enum(['asc', 'desc']).optional(),
});

const verifyQuery = z.object({ checkpoint: z.string().max(4096).optional() });

export function auditRoutes(route: DefineRoute, deps: AppDeps): void {
  route('GET', '/api/enterprise/audit', validate('query', auditQuery), async (c) => {
    const q = c.req.valid('query' as never) as z.infer<typeof auditQuery>;
    c.set('auditAction', 'audit.read');
    c.set('auditDetails', { filters: q });
    const rows = await deps.audit.query({
      afterSeq: q.after_seq ?? 0,
      limit: q.limit ?? 100,
      action: q.action,
      actor: q.actor,
      since: q.since,
      order: q.order,
    });
    const entries = rows.map(entryFromRow);
    return c.json({ entries, count: entries.length, next_after_seq: entries.length ? entries[entries.length - 1]!.seq : null });
  });

  route('GET', '/api/enterprise/audit/verify', validate('query', verifyQuery), async (c) => {
    const q = c.req.valid('query' as never) as z.infer<typeof verifyQuery>;
    c.set('auditAction', 'audit.verify');
    await deps.audit.drain();
    const result = await deps.audit.verify({ external: q.checkpoint ?? null });
    c.set('auditDetails', { valid: result.valid, first_invalid_seq: result.first_invalid_seq, reason: result.reason });
    if (!result.valid) c.set('auditAction', 'audit.verify_failed');
    await deps.events
      .publish('audit_verified', null, { valid: result.valid, entries_checked: result.entries_checked, first_invalid_seq: result.first_invalid_seq, reason: result.reason })
      .catch(() => {});
    return c.json(result);
  });

  route('GET', '/api/enterprise/audit/checkpoint', async (c) => {
    c.set('auditAction', 'audit.checkpoint_read');
    const cp = await deps.audit.storage.latestCheckpoint();
    return c.json({ checkpoint: cp ? { kind: cp.kind, size: cp.size, head_hash: cp.headHash, time: cp.time, jws: cp.jws } : null });
  });
}

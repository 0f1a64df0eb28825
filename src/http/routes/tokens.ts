import { z } from 'zod';
import { createToken, publicToken, revokeToken, TokenInputError } from '../../auth/token-service';
import type { AppDeps } from '../context';
import type { TypedRoute } from '../define-route';
import { ErrorCode } from '../errors';
import { errorResponse } from '../respond';
import { validate } from '../validate';

const createBody = z.object({
  name: z.string(),
  role: z.string().optional(),
  scopes: z.array(z.string()).max(16).optional(),
  worker_id: z.string().max(64).optional(),
  expires_days: z.union([z.number(), z.null()]).optional(),
});

export function tokenRoutes(route: TypedRoute, deps: AppDeps): void {
  const now = deps.now ?? Date.now;

  route('GET', '/api/enterprise/tokens', async (c) => {
    const all = c.req.query('all') === 'true' || c.req.query('include_revoked') === 'true';
    const list = await deps.store.tokens.list(all);
    return c.json({ tokens: list.map(publicToken) });
  });

  route('POST', '/api/enterprise/tokens', validate('json', createBody), async (c) => {
    const body = c.req.valid('json');
    c.set('auditAction', 'token.create');
    try {
      const identity = c.get('identity');
      const { record, plaintext } = await createToken(
        deps.store.tokens,
        { name: body.name, role: body.role, scopes: body.scopes, expiresDays: body.expires_days, workerId: body.worker_id, createdBy: identity?.actor.name ?? null },
        now(),
      );
      c.set('auditResource', { type: 'token', id: record.id });
      c.set('auditDetails', { name: record.name, role: record.role, scopes: record.scopes, expires_at: record.expiresAt, worker_id: record.workerId });
      await deps.events.publish('token_created', null, { id: record.id, name: record.name, role: record.role }).catch(() => {});
      return c.json({ ...publicToken(record), token: plaintext }, 201);
    } catch (err) {
      if (err instanceof TokenInputError) {
        return errorResponse(c, err.kind === 'conflict' ? 409 : 400, err.kind === 'conflict' ? ErrorCode.conflict : ErrorCode.validation, err.message);
      }
      throw err;
    }
  });

  route('DELETE', '/api/enterprise/tokens/:id', async (c) => {
    const id = c.req.param('id') ?? '';
    c.set('auditAction', 'token.revoke');
    c.set('auditResource', { type: 'token', id });
    try {
      const t = await revokeToken(deps.store.tokens, id, now());
      c.set('auditResource', { type: 'token', id: t.id });
      c.set('auditDetails', { name: t.name });
      await deps.events.publish('token_revoked', null, { id: t.id, name: t.name }).catch(() => {});
      return c.json({ revoked: true, token: publicToken(t) });
    } catch (err) {
      if (err instanceof TokenInputError) {
        return errorResponse(c, err.kind === 'not_found' ? 404 : 409, err.kind === 'not_found' ? ErrorCode.notFound : ErrorCode.conflict, err.message);
      }
      throw err;
    }
  });
}

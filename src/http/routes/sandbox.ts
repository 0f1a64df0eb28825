import { z } from 'zod';
import type { AuditActor } from '../../audit/chain';
import { claimBody, eventsBody, workerIdSchema } from '../../sessions/api';
import { SessionService } from '../../sessions/service';
import type { AppContext, AppDeps } from '../context';
import type { TypedRoute } from '../define-route';
import { ApiError, ErrorCode } from '../errors';
import { validate } from '../validate';

const jobsQuery = z.object({ worker_id: workerIdSchema });

/**
 * A worker token is bound to one worker id: it may claim, post and list only under
 * that id. Admin tokens and loopback callers (auth off) may act for any id; a
 * worker-role token created before binding existed is refused.
 */
function checkWorkerId(c: AppContext, workerId: string): void {
  const identity = c.get('identity');
  if (!identity || identity.via === 'loopback' || identity.role === 'admin') return;
  const bound = identity.workerId ?? null;
  if (bound === null) {
    throw new ApiError(403, ErrorCode.forbidden, 'this token is not bound to a worker id; create the worker token with --worker-id');
  }
  if (bound !== workerId) {
    throw new ApiError(403, ErrorCode.forbidden, `this token is bound to worker id ${JSON.stringify(bound)}, not ${JSON.stringify(workerId)}`);
  }
}

function actorOf(c: AppContext): AuditActor {
  return c.get('identity')?.actor ?? { type: 'anonymous', id: null, name: null };
}

/**
 * The worker protocol (scope `sandbox`): long-poll claim with a lease, sequenced
 * event posts (heartbeat, output, state, container, branch, budget, notice), and
 * the list of sessions a worker id still holds (for its orphan check).
 */
export function sandboxRoutes(route: TypedRoute, deps: AppDeps): void {
  const sessions = new SessionService(deps);

  route('POST', '/api/sandbox/jobs/claim', validate('json', claimBody), async (c) => {
    const body = c.req.valid('json');
    c.set('auditAction', 'sandbox.claim');
    c.set('auditDetails', { worker_id: body.worker_id });
    checkWorkerId(c, body.worker_id);
    const signals = [c.req.raw.signal, deps.shutdownSignal].filter((s): s is AbortSignal => s !== undefined);
    const job = await sessions.claim(body.worker_id, body.wait_ms ?? 0, signals.length ? AbortSignal.any(signals) : undefined);
    if (!job) return c.body(null, 204);
    c.set('auditResource', { type: 'session', id: job.session.id });
    c.set('auditDetails', { worker_id: body.worker_id, prd: job.session.prd, sandbox: job.session.sandbox });
    return c.json({ job }, 200);
  });

  route('POST', '/api/sandbox/jobs/:id/events', validate('json', eventsBody), async (c) => {
    const id = c.req.param('id') ?? '';
    const body = c.req.valid('json');
    c.set('auditAction', 'sandbox.events');
    c.set('auditResource', { type: 'session', id });
    const counts: Record<string, number> = {};
    for (const e of body.events) counts[e.type] = (counts[e.type] ?? 0) + 1;
    c.set('auditDetails', { worker_id: body.worker_id, first_seq: body.events[0]?.seq ?? null, events: counts });
    checkWorkerId(c, body.worker_id);
    const ack = await sessions.applyEvents(id, body, actorOf(c), c.get('requestId') ?? null);
    c.set('auditDetails', { worker_id: body.worker_id, first_seq: body.events[0]?.seq ?? null, events: counts, applied: ack.applied });
    return c.json(ack, 200);
  });

  route('GET', '/api/sandbox/jobs', validate('query', jobsQuery), async (c) => {
    const q = c.req.valid('query');
    c.set('auditAction', 'sandbox.jobs');
    c.set('auditDetails', { worker_id: q.worker_id });
    checkWorkerId(c, q.worker_id);
    return c.json({ worker_id: q.worker_id, session_ids: await sessions.liveSessionIds(q.worker_id) });
  });
}

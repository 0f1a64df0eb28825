/**
 * Sessions: validation, the state machine and the worker protocol, behind the
 * HTTP routes. Runtime-free: the file-system checks go through the injected
 * `SessionValidator` port, storage through the store, time through `now`.
 *
 * States: queued → running (a worker's claim) → one outcome the worker reports
 * (succeeded, failed, stopped, timed_out, budget_exceeded, oom_killed), or `lost`
 * when its lease expires (the sweeper). A queued session can be stopped directly.
 * Every change is a conditional write (`transition`, `advanceSeq`), so a late or
 * retried report can never move a session out of a state it already left.
 */
import type { AuditActor, AuditInput } from '../audit/chain';
import { randomId, sha256Hex } from '../auth/tokens';
import { queuedSession, type SessionRecord, type SessionState, TERMINAL_STATES } from '../db/store';
import type { AppDeps, SessionValidator } from '../http/context';
import { ApiError, ErrorCode } from '../http/errors';
import { redactString, redactValue } from '../util/redact';
import {
  type CreateSessionInput,
  type EventsAck,
  type EventsInput,
  type Job,
  MAX_CLAIM_WAIT_MS,
  type SessionPolicy,
  type SessionResultView,
  type SessionView,
  sessionPolicySchema,
  type WorkerEvent,
} from './api';

export const BUDGET_RULE = 'a positive amount in USD with at most 2 decimals, at most 10000 (e.g. 5.00)';
export const MAX_BUDGET_USD = 10_000;

/**
 * Parse a budget given as a JSON number or a decimal string. Returns the amount or
 * an error message. `1e2`, `0x10`, `1.234`, `0`, `-1` and `10000.01` are refused.
 */
export function parseBudget(value: unknown): { usd: number } | { error: string } {
  let text: string;
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) return { error: `expected ${BUDGET_RULE}` };
    text = String(value);
  } else if (typeof value === 'string') {
    text = value.trim();
  } else {
    return { error: `expected ${BUDGET_RULE}` };
  }
  if (!/^\d{1,5}(?:\.\d{1,2})?$/.test(text)) return { error: `expected ${BUDGET_RULE}, got ${JSON.stringify(value)}` };
  const usd = Number(text);
  if (!(usd > 0) || usd > MAX_BUDGET_USD) return { error: `expected ${BUDGET_RULE}, got ${JSON.stringify(value)}` };
  return { usd };
}

/** Shape checks that need no file system; the validator port does the rest. */
export function checkSessionPaths(workspace: string, prd: string): void {
  const bad = (msg: string): never => {
    throw new ApiError(400, ErrorCode.invalidPath, msg);
  };
  if (workspace.includes('\0') || prd.includes('\0')) bad('paths must not contain NUL bytes');
  if (!workspace.startsWith('/')) bad(`workspace must be an absolute path, got ${JSON.stringify(workspace)}`);
  if (prd.startsWith('/') || prd.startsWith('\\') || /^[A-Za-z]:/.test(prd)) {
    bad(`prd must be a path relative to the workspace, not an absolute path: ${JSON.stringify(prd)}`);
  }
  if (prd.split(/[/\\]/).includes('..')) bad(`prd must not contain ".." segments: ${JSON.stringify(prd)}`);
  // The PRD path becomes one argument of the agent's command: it must never read as an option.
  if (prd.split(/[/\\]/).some((seg) => seg.startsWith('-'))) bad(`prd must not have a path segment starting with "-": ${JSON.stringify(prd)}`);
}

/** UTF-8 byte length without Buffer (the app runs on Workers too). */
export function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

export function outputTruncatedMarker(maxBytes: number): string {
  return `[loki] output truncated by the server: the session reached its limit of ${Math.round(maxBytes / (1024 * 1024))} MB; further output is discarded`;
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

export function sessionView(s: SessionRecord): SessionView {
  return {
    id: s.id,
    name: s.name,
    workspace: s.workspace,
    prd: s.prd,
    sandbox: s.sandbox,
    budget_usd: s.budgetUsd,
    cost_usd: s.costUsd,
    status: s.status,
    reason: s.reason,
    exit_code: s.exitCode,
    created_by: s.createdBy,
    created_at: new Date(s.createdAt).toISOString(),
    started_at: iso(s.startedAt),
    ended_at: iso(s.endedAt),
    worker_id: s.workerId,
    lease_expires_at: iso(s.leaseExpiresAt),
    stop_requested: s.stopRequested,
    last_event_seq: s.lastEventSeq,
    log_lines: s.logLines,
    log_bytes: s.logBytes,
    container_id: s.containerId,
    base_branch: s.baseBranch,
    agent_branch: s.agentBranch,
    host_session: !s.sandbox,
    policy: s.policy ? (JSON.parse(s.policy) as SessionPolicy) : null,
    policy_sha256: s.policySha256,
    result: s.result ? (JSON.parse(s.result) as SessionResultView) : null,
  };
}

/** The stored policy of a session, checked again on the way out (null: none, or not valid any more). */
export function sessionPolicyOf(s: SessionRecord): SessionPolicy | null {
  if (!s.policy) return null;
  try {
    const parsed = sessionPolicySchema.safeParse(JSON.parse(s.policy));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}

export type SessionServiceDeps = Pick<AppDeps, 'store' | 'events' | 'audit' | 'config' | 'logger'> & {
  now?: () => number;
  sessions?: SessionValidator;
};

const SWEEPER_ACTOR: AuditActor = { type: 'system', id: null, name: 'lease-sweeper' };
/** Shortest pause between two claim attempts of one waiting worker. */
const CLAIM_RECHECK_MIN_MS = 10;
/** Re-check the queue at least this often (sessions created by another process or isolate). */
const CLAIM_RECHECK_MAX_MS = 1_000;

export class SessionService {
  private readonly now: () => number;

  constructor(private readonly deps: SessionServiceDeps) {
    this.now = deps.now ?? Date.now;
  }

  get leaseMs(): number {
    return this.deps.config.sandboxLeaseMs;
  }

  // ---- sessions API ------------------------------------------------------

  async create(input: CreateSessionInput, createdBy: string): Promise<SessionRecord> {
    let budgetUsd = this.deps.config.budgetLimitUsd;
    if (input.budget_usd !== undefined && input.budget_usd !== null) {
      const b = parseBudget(input.budget_usd);
      if ('error' in b) throw new ApiError(400, ErrorCode.validation, `budget_usd: ${b.error}`);
      budgetUsd = b.usd;
    }
    checkSessionPaths(input.workspace, input.prd);
    const validator = this.deps.sessions;
    if (!validator) {
      throw new ApiError(503, ErrorCode.unavailable, 'this server cannot check workspace paths (no file system); start sessions through a Node server');
    }
    // LOKI_SANDBOX_MODE on the server forces the sandbox; the validator merges the
    // workspace config under the operator policy (a host session needs both the
    // request's `sandbox: false` and the operator's permission).
    const checked = await validator.validate(input.workspace, input.prd, {
      sandbox: this.deps.config.sandboxMode ? true : input.sandbox,
      provider: input.provider,
    });
    const record = queuedSession({
      id: randomId('ses_', 8),
      name: input.name ?? null,
      workspace: checked.workspace,
      prd: checked.prd,
      sandbox: checked.policy.sandbox,
      budgetUsd,
      createdBy,
      createdAt: this.now(),
      policy: checked.policyJson,
      policySha256: checked.policySha256,
    });
    await this.deps.store.sessions.insert(record);
    await this.publishState(record, null);
    return record;
  }

  async get(id: string): Promise<SessionRecord> {
    const s = await this.deps.store.sessions.get(id);
    if (!s) throw new ApiError(404, ErrorCode.notFound, `no session ${id}`);
    return s;
  }

  /**
   * Stop a session: a queued one ends `stopped` at once; a running one is flagged
   * and its worker learns of it from its next protocol response.
   */
  async stop(id: string, by: string): Promise<{ session: SessionRecord; pending: boolean }> {
    const s = await this.get(id);
    if (TERMINAL_STATES.has(s.status)) throw new ApiError(409, ErrorCode.conflict, `session ${id} has already ended (${s.status})`);
    await this.deps.store.sessions.requestStop(id);
    if (s.status === 'queued') {
      const stopped = await this.deps.store.sessions.transition(
        id,
        { from: ['queued'] },
        { status: 'stopped', reason: `stopped by ${by} before it started`, endedAt: this.now(), stopRequested: true },
      );
      if (stopped) {
        await this.publishState(stopped, 'queued');
        return { session: stopped, pending: false };
      }
    }
    await this.publish('stop_requested', id, { by });
    return { session: await this.get(id), pending: true };
  }

  // ---- worker protocol ---------------------------------------------------

  /**
   * Lease the oldest queued session to `workerId`, waiting up to `waitMs` for one.
   * Wakes when anything is published (a session created here) and re-checks the
   * queue at least every second (sessions created elsewhere).
   */
  async claim(workerId: string, waitMs: number, signal?: AbortSignal): Promise<Job | null> {
    await this.sweepExpiredLeases();
    const deadline = this.now() + Math.min(Math.max(0, waitMs), MAX_CLAIM_WAIT_MS);
    // Publishes are counted, so one that lands between an attempt and the wait is not missed.
    let published = 0;
    let wake: (() => void) | null = null;
    const unsubscribe = this.deps.events.subscribe(() => {
      published++;
      wake?.();
    });
    try {
      for (;;) {
        if (signal?.aborted) return null;
        const seen = published;
        const leaseId = randomId('lease_', 16);
        const now = this.now();
        const claimed = await this.deps.store.sessions.claim(workerId, leaseId, now, now + this.leaseMs);
        if (claimed) {
          if (signal?.aborted) {
            // The caller went away: put the session back rather than let it be lost.
            await this.deps.store.sessions.transition(
              claimed.id,
              { from: ['running'], leaseId },
              { status: 'queued', workerId: null, leaseId: null, leaseExpiresAt: null, startedAt: null },
            );
            return null;
          }
          const policy = sessionPolicyOf(claimed);
          // The stored text must still hash to the digest stored beside it, which the
          // `session.start` audit entry also carries. This catches an edit of the policy
          // alone; someone who rewrites both columns is caught only by comparing with that
          // entry (`loki audit`), and the worker still holds the policy to its own operator's.
          const intact = policy !== null && claimed.policy !== null && claimed.policySha256 === (await sha256Hex(claimed.policy));
          if (!policy || !intact || !claimed.policySha256) {
            // Created before session policies existed (or the row was altered): it
            // cannot be run under a policy nobody fixed. End it, loudly, and go on.
            const failed = await this.deps.store.sessions.transition(
              claimed.id,
              { from: ['running'], leaseId },
              { status: 'failed', reason: 'the session has no valid stored policy (missing, or not matching its SHA-256); start it again', endedAt: this.now(), leaseExpiresAt: null },
            );
            if (failed) {
              await this.publishState(failed, 'queued');
              await this.auditFailure('session.setup_failed', claimed.id, 'no_policy', {
                step: 'policy',
                message: 'no valid stored policy',
                workspace: claimed.workspace,
              });
            }
            continue;
          }
          await this.publishState(claimed, 'queued');
          return {
            session: sessionView(claimed),
            lease_id: leaseId,
            lease_expires_at: new Date(claimed.leaseExpiresAt ?? now + this.leaseMs).toISOString(),
            lease_ms: this.leaseMs,
            branch_protection: this.deps.config.branchProtection,
            policy,
            policy_sha256: claimed.policySha256,
          };
        }
        const remaining = deadline - this.now();
        if (remaining <= 0) return null;
        await new Promise<void>((resolve) => {
          let timer: ReturnType<typeof setTimeout>;
          const done = () => {
            clearTimeout(timer);
            signal?.removeEventListener('abort', done);
            wake = null;
            resolve();
          };
          timer = setTimeout(done, Math.min(remaining, CLAIM_RECHECK_MAX_MS));
          // Something was published: look again, but not sooner than the minimum pause.
          wake = () => {
            wake = null;
            clearTimeout(timer);
            timer = setTimeout(done, Math.max(0, now + CLAIM_RECHECK_MIN_MS - this.now()));
          };
          signal?.addEventListener('abort', done, { once: true });
          if (published !== seen) wake();
        });
      }
    } finally {
      unsubscribe();
    }
  }

  /** Running sessions leased to a worker id (the worker's orphan check). */
  liveSessionIds(workerId: string): Promise<string[]> {
    return this.deps.store.sessions.liveIdsForWorker(workerId);
  }

  /**
   * Apply a worker's batch of events. Events at or below the session's
   * `last_event_seq` are retries: acknowledged, not applied again. The new ones
   * must continue the sequence; the conditional `advanceSeq` decides which of two
   * concurrent posts applies them.
   */
  async applyEvents(id: string, input: EventsInput, actor: AuditActor, requestId: string | null): Promise<EventsAck> {
    const s = await this.get(id);
    if (s.workerId !== input.worker_id || s.leaseId !== input.lease_id) {
      throw new ApiError(409, ErrorCode.conflict, `the lease on session ${id} is not held by this worker`);
    }
    const events = input.events;
    for (let i = 1; i < events.length; i++) {
      if (events[i]!.seq <= events[i - 1]!.seq) throw new ApiError(400, ErrorCode.validation, 'events: seq must be strictly increasing');
    }
    const fresh = events.filter((e) => e.seq > s.lastEventSeq);
    if (fresh.length === 0) return this.ack(s, 0);
    if (s.status !== 'running') {
      throw new ApiError(409, ErrorCode.conflict, `session ${id} is ${s.status}: the lease has ended`);
    }
    fresh.forEach((e, i) => {
      if (e.seq !== s.lastEventSeq + 1 + i) {
        throw new ApiError(400, ErrorCode.validation, `events: expected seq ${s.lastEventSeq + 1 + i}, got ${e.seq} (no gaps)`);
      }
    });
    const last = fresh[fresh.length - 1]!.seq;
    if (!(await this.deps.store.sessions.advanceSeq(id, input.lease_id, s.lastEventSeq, last))) {
      const again = await this.get(id);
      if (again.leaseId === input.lease_id && again.lastEventSeq >= last) return this.ack(again, 0);
      throw new ApiError(409, ErrorCode.conflict, `a concurrent post for session ${id} was applied first; retry`);
    }
    try {
      await this.apply(s, input.lease_id, fresh, actor, requestId);
    } catch (err) {
      // Give the seqs back so that the worker's retry applies them.
      await this.deps.store.sessions.advanceSeq(id, input.lease_id, last, s.lastEventSeq).catch(() => false);
      throw err;
    }
    await this.deps.store.sessions.renew(id, input.lease_id, this.now() + this.leaseMs);
    return this.ack(await this.get(id), fresh.length);
  }

  private ack(s: SessionRecord, applied: number): EventsAck {
    return {
      ok: true,
      last_seq: s.lastEventSeq,
      applied,
      lease_expires_at: s.status === 'running' ? iso(s.leaseExpiresAt) : null,
      lease_ms: this.leaseMs,
      stop_requested: s.stopRequested,
      status: s.status,
    };
  }

  private async apply(s: SessionRecord, leaseId: string, events: WorkerEvent[], actor: AuditActor, requestId: string | null): Promise<void> {
    const id = s.id;
    const logState = { bytes: s.logBytes };
    let patch: Partial<SessionRecord> = {};
    const audit = (action: string, details: Record<string, unknown>, success = true) =>
      this.deps.audit.append({
        ts: this.now(),
        action,
        resource: { type: 'session', id },
        actor,
        request: { id: requestId, method: 'POST', path: `/api/sandbox/jobs/${id}/events` },
        outcome: { status: null, success, error: success ? null : action },
        details: redactValue(details),
      } satisfies AuditInput);

    for (const ev of events) {
      switch (ev.type) {
        case 'heartbeat':
          break;
        case 'output':
          await this.storeOutput(id, ev.data.stream, ev.data.lines, logState);
          break;
        case 'container': {
          const d = ev.data;
          if (d.event === 'created') patch.containerId = d.container_id;
          await audit(`sandbox.container.${d.event}`, { ...d, worker_id: s.workerId, prd: s.prd });
          await this.publish('container', id, d);
          break;
        }
        case 'branch': {
          const d = ev.data;
          if (d.event === 'created') {
            patch.baseBranch = d.base_branch ?? null;
            patch.agentBranch = d.agent_branch ?? null;
          }
          if (d.event === 'violation') {
            await audit('branch_protection_violation', { ...d, worker_id: s.workerId, workspace: s.workspace }, false);
            await this.publish('branch_protection_violation', id, d);
          } else {
            await this.publish(d.event === 'detached' ? 'branch_warning' : 'branch', id, d);
          }
          break;
        }
        case 'budget': {
          const d = ev.data;
          patch.costUsd = d.spent_usd;
          const type = d.exceeded ? 'budget_exceeded' : d.warning ? 'budget_warning' : 'budget';
          await this.publish(type, id, { spent_usd: d.spent_usd, limit_usd: d.limit_usd ?? s.budgetUsd });
          break;
        }
        case 'result': {
          const { patch: patchText, ...rest } = ev.data;
          const view: SessionResultView = { ...rest, has_patch: patchText !== null };
          if (!(await this.deps.store.sessions.saveResult(id, leaseId, JSON.stringify(view), patchText))) {
            throw new ApiError(409, ErrorCode.conflict, `session ${id} is no longer held by this lease`);
          }
          await audit('session.result', { ...view, diffstat: undefined, workspace: s.workspace, worker_id: s.workerId });
          await this.publish('session_result', id, view);
          break;
        }
        case 'egress': {
          const d = ev.data;
          await audit(`egress.${d.decision}`, { ...d, worker_id: s.workerId }, d.decision === 'allowed');
          await this.publish(`egress.${d.decision}`, id, d);
          break;
        }
        case 'setup_failed': {
          const d = ev.data;
          const action = d.step === 'branch' ? 'branch_protection_violation' : 'session.setup_failed';
          await audit(action, { ...d, workspace: s.workspace, worker_id: s.workerId }, false);
          await this.publish('session_setup_failed', id, d);
          break;
        }
        case 'notice': {
          const { event, ...rest } = ev.data;
          await this.publish(event, id, redactValue(rest));
          break;
        }
        case 'state': {
          const d = ev.data;
          const ended = await this.deps.store.sessions.transition(
            id,
            { from: ['running'], leaseId },
            {
              ...patch,
              status: d.status,
              reason: d.reason ? redactString(d.reason) : null,
              exitCode: d.exit_code ?? null,
              endedAt: this.now(),
              leaseExpiresAt: null,
            },
          );
          if (!ended) throw new ApiError(409, ErrorCode.conflict, `session ${id} is no longer running under this lease`);
          patch = {};
          await this.publishState(ended, 'running');
          await audit(
            'session.end',
            {
              status: ended.status,
              reason: ended.reason,
              exit_code: ended.exitCode,
              cost_usd: ended.costUsd,
              prd: ended.prd,
              workspace: ended.workspace,
              worker_id: ended.workerId,
            },
            ended.status === 'succeeded',
          );
          break;
        }
      }
    }
    if (Object.keys(patch).length > 0) await this.deps.store.sessions.update(id, leaseId, patch);
  }

  /** Store output lines (redacted, capped) and publish them as one `output` event. */
  private async storeOutput(id: string, stream: string, lines: string[], state: { bytes: number }): Promise<void> {
    const limit = this.deps.config.sessionOutputLimitBytes;
    if (state.bytes > limit || lines.length === 0) return;
    const accepted: string[] = [];
    let bytes = 0;
    let truncated = false;
    for (const line of lines) {
      const clean = redactString(line);
      const size = utf8Length(clean) + 1;
      if (state.bytes + bytes + size > limit) {
        accepted.push(outputTruncatedMarker(limit));
        // Push the counter past the limit: it marks the session as truncated.
        bytes = limit - state.bytes + 1;
        truncated = true;
        break;
      }
      accepted.push(clean);
      bytes += size;
    }
    const reserved = await this.deps.store.sessions.reserveLogLines(id, accepted.length, bytes);
    if (!reserved) return;
    state.bytes = reserved.logBytes;
    const ts = this.now();
    await this.deps.store.sessions.appendLogs(
      id,
      accepted.map((text, i) => ({ line: reserved.firstLine + i, stream, text, ts })),
    );
    await this.publish('output', id, { stream, first_line: reserved.firstLine, lines: accepted });
    if (truncated) await this.publish('output_truncated', id, { max_bytes: limit, by: 'server' });
  }

  /**
   * Mark running sessions whose lease expired as `lost` (their worker died or was
   * cut off): an event and an audit entry each; never re-queued.
   */
  async sweepExpiredLeases(): Promise<SessionRecord[]> {
    const lost = await this.deps.store.sessions.expireLeases(this.now());
    for (const s of lost) {
      await this.publishState(s, 'running');
      await this.auditFailure('session.lost', s.id, 'lease_expired', { worker_id: s.workerId, prd: s.prd, workspace: s.workspace, reason: s.reason });
    }
    return lost;
  }

  /** A failure the server itself decided (no request to attach it to); a failed write is logged. */
  private auditFailure(action: string, sessionId: string, error: string, details: Record<string, unknown>): Promise<void> {
    return this.deps.audit
      .append({
        ts: this.now(),
        action,
        resource: { type: 'session', id: sessionId },
        actor: SWEEPER_ACTOR,
        outcome: { status: null, success: false, error },
        details,
      })
      .then(
        () => undefined,
        (err) => this.deps.logger.error('audit write failed', { err: String(err), session: sessionId, action }),
      );
  }

  // ---- events ------------------------------------------------------------

  private async publish(type: string, sessionId: string | null, data: unknown): Promise<void> {
    try {
      await this.deps.events.publish(type, sessionId, data);
    } catch (err) {
      this.deps.logger.error('event publish failed', { type, session: sessionId, err: String(err) });
    }
  }

  private publishState(s: SessionRecord, previous: SessionState | null): Promise<void> {
    return this.publish('session_state', s.id, {
      status: s.status,
      previous,
      reason: s.reason,
      exit_code: s.exitCode,
      worker_id: s.workerId,
      name: s.name,
    });
  }
}

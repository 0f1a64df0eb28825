/**
 * The worker protocol on a real server, through the typed client: claims and
 * leases, sequenced events, retries, foreign leases, lease expiry → lost,
 * stop requests, audit entries, the server-side output cap.
 */
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiClientError, LokiClient } from '../../src/client';
import type { EventsInput, Job, WorkerEvent } from '../../src/sessions/api';
import { JobReporter } from '../../src/sandbox/reporter';
import { captureLogger, startTestServer, type TestServer } from '../helpers/server';
import { makeWorkspace, tempRoot } from './helpers';

// biome-ignore lint/suspicious/noExplicitAny: JSON bodies in assertions
type Json = any;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Fixture {
  s: TestServer;
  client: LokiClient;
  ws: string;
  root: string;
}

async function fixture(env: Record<string, string> = {}): Promise<Fixture> {
  const root = tempRoot();
  const ws = makeWorkspace(root, 'ws');
  const s = await startTestServer({ LOKI_WORKSPACE_ROOTS: root, ...env });
  return { s, root, ws, client: new LokiClient({ url: s.url }) };
}

async function close(f: Fixture | undefined) {
  if (!f) return;
  await f.s.stop();
  rmSync(f.root, { recursive: true, force: true });
}

function post(f: Fixture, job: Job, events: WorkerEvent[], over: Partial<EventsInput> = {}) {
  return f.client.postJobEvents(job.session.id, { worker_id: job.session.worker_id!, lease_id: job.lease_id, events, ...over });
}

async function auditEntries(f: Fixture, action: string) {
  const r = await f.s.req(`/api/enterprise/audit?action=${encodeURIComponent(action)}&limit=1000`);
  return ((await r.json()) as { entries: Json[] }).entries;
}

describe('worker protocol', () => {
  let f: Fixture;
  beforeAll(async () => {
    f = await fixture({ LOKI_SESSION_MAX_OUTPUT_BYTES: '4096' });
  });
  afterAll(() => close(f));

  const create = (name?: string) => f.client.createSession({ workspace: f.ws, prd: 'prd.md', ...(name ? { name } : {}) });
  /** Claim until we get `id` (other tests may have left queued sessions). */
  async function claimThis(id: string, workerId = 'w1'): Promise<Job> {
    for (;;) {
      const job = await f.client.claimJob({ worker_id: workerId, wait_ms: 0 });
      if (!job) throw new Error(`session ${id} was not claimable`);
      if (job.session.id === id) return job;
      await post(f, job, [{ seq: 1, type: 'state', data: { status: 'failed', reason: 'test cleanup' } }]);
    }
  }

  it('claim: 204 on an empty queue, then the oldest queued session with a lease, each session once', async () => {
    expect(await f.client.claimJob({ worker_id: 'w1', wait_ms: 0 })).toBeNull();
    const a = await create('a');
    const b = await create('b');
    const first = await f.client.claimJob({ worker_id: 'w1', wait_ms: 0 });
    const second = await f.client.claimJob({ worker_id: 'w2', wait_ms: 0 });
    expect(first?.session).toMatchObject({ id: a.id, status: 'running', worker_id: 'w1', last_event_seq: 0 });
    expect(second?.session).toMatchObject({ id: b.id, status: 'running', worker_id: 'w2' });
    expect(first?.lease_id).toMatch(/^lease_[0-9a-f]{32}$/);
    expect(first?.lease_ms).toBe(30_000);
    expect(first?.branch_protection).toBe(true);
    expect(Date.parse(first!.lease_expires_at) - Date.now()).toBeGreaterThan(25_000);
    expect(await f.client.claimJob({ worker_id: 'w3', wait_ms: 0 })).toBeNull();
    expect(await f.client.workerSessionIds('w1')).toEqual([a.id]);
    expect(await f.client.workerSessionIds('nobody')).toEqual([]);
    for (const job of [first!, second!]) await post(f, job, [{ seq: 1, type: 'state', data: { status: 'failed', reason: 'done' } }]);
  });

  it('a long-poll claim returns as soon as a session is created; an empty one ends with 204 after wait_ms', async () => {
    const t0 = Date.now();
    expect(await f.client.claimJob({ worker_id: 'w1', wait_ms: 400 })).toBeNull();
    expect(Date.now() - t0).toBeGreaterThanOrEqual(350);

    const waiting = f.client.claimJob({ worker_id: 'w1', wait_ms: 20_000 });
    await sleep(300);
    const created = await create('late');
    const t1 = Date.now();
    const job = await waiting;
    expect(job?.session.id).toBe(created.id);
    expect(Date.now() - t1).toBeLessThan(1_000);
    await post(f, job!, [{ seq: 1, type: 'state', data: { status: 'succeeded' } }]);
  });

  it('a worker that goes away while its claim waits is not leased anything', async () => {
    const ac = new AbortController();
    const gone = f.client.claimJob({ worker_id: 'ghost', wait_ms: 20_000 }, ac.signal).catch(() => 'aborted');
    await sleep(200);
    ac.abort();
    expect(await gone).toBe('aborted');
    await sleep(100);
    const created = await create();
    await sleep(300);
    const s = await f.client.getSession(created.id);
    expect(s.status).toBe('queued');
    const job = await claimThis(created.id, 'w1');
    await post(f, job, [{ seq: 1, type: 'state', data: { status: 'succeeded' } }]);
  });

  it('events: output is stored redacted and published; a retried post is acknowledged, not applied twice', async () => {
    const created = await create();
    const job = await claimThis(created.id);
    const batch: WorkerEvent[] = [
      { seq: 1, type: 'output', data: { stream: 'stdout', lines: ['hello', 'key sk-ant-api03-abcdefghijklmnopqrstuvwx end'] } },
      { seq: 2, type: 'heartbeat' },
      { seq: 3, type: 'output', data: { stream: 'stderr', lines: ['warn'] } },
    ];
    const ack = await post(f, job, batch);
    expect(ack).toMatchObject({ ok: true, last_seq: 3, applied: 3, stop_requested: false, status: 'running', lease_ms: 30_000 });
    const retry = await post(f, job, batch);
    expect(retry).toMatchObject({ ok: true, last_seq: 3, applied: 0 });
    // A retry overlapping new events applies only the new ones.
    const overlap = await post(f, job, [...batch.slice(2), { seq: 4, type: 'output', data: { stream: 'stdout', lines: ['bye'] } }]);
    expect(overlap).toMatchObject({ last_seq: 4, applied: 1 });

    const logs = await f.client.sessionLogs(created.id);
    expect(logs.lines.map((l) => [l.line, l.stream, l.text])).toEqual([
      [1, 'stdout', 'hello'],
      [2, 'stdout', 'key [REDACTED] end'],
      [3, 'stderr', 'warn'],
      [4, 'stdout', 'bye'],
    ]);
    expect(logs.next_after).toBe(4);
    expect((await f.client.sessionLogs(created.id, { after: 2, limit: 1 })).lines.map((l) => l.line)).toEqual([3]);
    const outputs = (await f.s.runtime.deps.events.after(0, { sessionId: created.id, types: ['output'] })).map((e) => e.data);
    expect(outputs).toEqual([
      { stream: 'stdout', first_line: 1, lines: ['hello', 'key [REDACTED] end'] },
      { stream: 'stderr', first_line: 3, lines: ['warn'] },
      { stream: 'stdout', first_line: 4, lines: ['bye'] },
    ]);
    await post(f, job, [{ seq: 5, type: 'state', data: { status: 'succeeded', exit_code: 0 } }]);
  });

  it('events must continue the sequence: a gap or a non-increasing batch → 400, an unknown type → 400', async () => {
    const created = await create();
    const job = await claimThis(created.id);
    const expectStatus = async (p: Promise<unknown>, status: number, code: string) => {
      const err = await p.then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(ApiClientError);
      expect(err).toMatchObject({ status, code });
    };
    await expectStatus(post(f, job, [{ seq: 2, type: 'heartbeat' }]), 400, 'validation_error');
    await expectStatus(
      post(f, job, [
        { seq: 1, type: 'heartbeat' },
        { seq: 1, type: 'heartbeat' },
      ]),
      400,
      'validation_error',
    );
    await expectStatus(post(f, job, [{ seq: 1, type: 'exec', data: {} } as never]), 400, 'validation_error');
    await expectStatus(post(f, job, [{ seq: 1, type: 'state', data: { status: 'lost' } } as never]), 400, 'validation_error');
    expect((await f.client.getSession(created.id)).last_event_seq).toBe(0);
    await post(f, job, [{ seq: 1, type: 'state', data: { status: 'succeeded' } }]);
  });

  it('409 when the lease is not this worker’s: another lease id, another worker id, an unknown session → 404', async () => {
    const created = await create();
    const job = await claimThis(created.id);
    for (const over of [{ lease_id: 'lease_forged' }, { worker_id: 'w-other' }]) {
      await expect(post(f, job, [{ seq: 1, type: 'heartbeat' }], over)).rejects.toMatchObject({ status: 409, code: 'conflict' });
    }
    await expect(
      f.client.postJobEvents('ses_0000000000000000', { worker_id: 'w1', lease_id: job.lease_id, events: [{ seq: 1, type: 'heartbeat' }] }),
    ).rejects.toMatchObject({ status: 404 });
    expect((await f.client.getSession(created.id)).last_event_seq).toBe(0);
    await post(f, job, [{ seq: 1, type: 'state', data: { status: 'succeeded' } }]);
  });

  it('a final state ends the session (event + audit); later events → 409, a retry of the final post is still acknowledged', async () => {
    const created = await create();
    const job = await claimThis(created.id);
    const final: WorkerEvent[] = [
      { seq: 1, type: 'budget', data: { spent_usd: 0.42 } },
      { seq: 2, type: 'state', data: { status: 'failed', reason: 'the provider exited with code 3', exit_code: 3 } },
    ];
    expect(await post(f, job, final)).toMatchObject({ last_seq: 2, status: 'failed', lease_expires_at: null });
    expect(await post(f, job, final)).toMatchObject({ last_seq: 2, applied: 0, status: 'failed' });
    await expect(post(f, job, [{ seq: 3, type: 'heartbeat' }])).rejects.toMatchObject({ status: 409 });
    const s = await f.client.getSession(created.id);
    expect(s).toMatchObject({ status: 'failed', reason: 'the provider exited with code 3', exit_code: 3, cost_usd: 0.42 });
    expect(s.ended_at).not.toBeNull();
    const states = (await f.s.runtime.deps.events.after(0, { sessionId: created.id, types: ['session_state'] })).map((e) => (e.data as Json).status);
    expect(states).toEqual(['queued', 'running', 'failed']);
    const ends = (await auditEntries(f, 'session.end')).filter((e) => e.resource.id === created.id);
    expect(ends).toHaveLength(1);
    expect(ends[0]).toMatchObject({ outcome: { success: false }, details: { status: 'failed', exit_code: 3, prd: 'prd.md', worker_id: 'w1' } });
  });

  it('stop of a running session: 202, the next ack carries stop_requested, the worker reports `stopped`', async () => {
    const created = await create();
    const job = await claimThis(created.id);
    const r = await f.s.req(`/api/sessions/${created.id}/stop`, { method: 'POST' });
    expect(r.status).toBe(202);
    expect(((await r.json()) as Json).session.status).toBe('running');
    const ack = await post(f, job, [{ seq: 1, type: 'heartbeat' }]);
    expect(ack.stop_requested).toBe(true);
    await post(f, job, [{ seq: 2, type: 'state', data: { status: 'stopped', reason: 'stop requested', exit_code: 143 } }]);
    expect((await f.client.getSession(created.id)).status).toBe('stopped');
    const types = (await f.s.runtime.deps.events.after(0, { sessionId: created.id })).map((e) => e.type);
    expect(types).toContain('stop_requested');
  });

  it('container lifecycle and branch protection violations become audit entries with the worker as actor', async () => {
    const created = await create();
    const job = await claimThis(created.id);
    await post(f, job, [
      { seq: 1, type: 'container', data: { event: 'created', container_id: 'c0ffee', image: 'loki-sandbox:local' } },
      { seq: 2, type: 'container', data: { event: 'started', container_id: 'c0ffee' } },
      { seq: 3, type: 'branch', data: { event: 'created', base_branch: 'main', base_commit: 'abc', agent_branch: `loki/session-${created.id}` } },
      { seq: 4, type: 'budget', data: { spent_usd: 0.8, limit_usd: 1, warning: true } },
      { seq: 5, type: 'notice', data: { event: 'session_timeout', kind: 'idle', seconds: 5 } },
      { seq: 6, type: 'container', data: { event: 'exited', container_id: 'c0ffee', exit_code: 0, oom_killed: false } },
      { seq: 7, type: 'container', data: { event: 'removed', container_id: 'c0ffee' } },
      { seq: 8, type: 'branch', data: { event: 'violation', base_branch: 'main', base_commit: 'abc', current_commit: 'def' } },
      { seq: 9, type: 'state', data: { status: 'timed_out', reason: 'no output for 5 s' } },
    ]);
    const s = await f.client.getSession(created.id);
    expect(s).toMatchObject({ container_id: 'c0ffee', base_branch: 'main', agent_branch: `loki/session-${created.id}`, cost_usd: 0.8, status: 'timed_out' });
    for (const action of ['sandbox.container.created', 'sandbox.container.started', 'sandbox.container.exited', 'sandbox.container.removed']) {
      const e = (await auditEntries(f, action)).find((x) => x.resource.id === created.id);
      expect(e, action).toMatchObject({ actor: { name: 'local' }, details: { container_id: 'c0ffee', worker_id: 'w1' } });
    }
    const violation = (await auditEntries(f, 'branch_protection_violation')).find((x) => x.resource.id === created.id);
    expect(violation).toMatchObject({ outcome: { success: false }, details: { base_branch: 'main', current_commit: 'def' } });
    const types = (await f.s.runtime.deps.events.after(0, { sessionId: created.id })).map((e) => e.type);
    expect(types).toEqual(
      expect.arrayContaining(['container', 'branch', 'budget_warning', 'session_timeout', 'branch_protection_violation', 'session_state']),
    );
  });

  it('spending reported while a session runs (budget events without a threshold) shows in cost_usd at once', async () => {
    const created = await create();
    const job = await claimThis(created.id);
    await post(f, job, [{ seq: 1, type: 'budget', data: { spent_usd: 0.25, limit_usd: null } }]);
    expect(await f.client.getSession(created.id)).toMatchObject({ status: 'running', cost_usd: 0.25 });
    await post(f, job, [{ seq: 2, type: 'budget', data: { spent_usd: 0.5, limit_usd: null } }]);
    expect(await f.client.getSession(created.id)).toMatchObject({ status: 'running', cost_usd: 0.5 });
    const budget = (await f.s.runtime.deps.events.after(0, { sessionId: created.id })).filter((e) => e.type === 'budget');
    expect(budget.map((e) => e.data)).toEqual([
      { spent_usd: 0.25, limit_usd: null },
      { spent_usd: 0.5, limit_usd: null },
    ]);
  });

  it('the server caps stored output (LOKI_SESSION_MAX_OUTPUT_BYTES) and ends it with one truncation marker', async () => {
    const created = await create();
    const job = await claimThis(created.id);
    const line = 'x'.repeat(999); // 1000 bytes with the newline
    await post(f, job, [{ seq: 1, type: 'output', data: { stream: 'stdout', lines: [line, line, line] } }]);
    await post(f, job, [{ seq: 2, type: 'output', data: { stream: 'stdout', lines: [line, line, line] } }]);
    await post(f, job, [{ seq: 3, type: 'output', data: { stream: 'stdout', lines: ['more'] } }]);
    const logs = await f.client.sessionLogs(created.id);
    expect(logs.lines.map((l) => l.text)).toEqual([line, line, line, line, expect.stringMatching(/^\[loki\] output truncated by the server/)]);
    const s = await f.client.getSession(created.id);
    expect(s.log_lines).toBe(5);
    expect(s.log_bytes).toBeGreaterThan(4096);
    expect((await f.s.runtime.deps.events.after(0, { sessionId: created.id, types: ['output_truncated'] })).length).toBe(1);
    await post(f, job, [{ seq: 4, type: 'state', data: { status: 'succeeded' } }]);
  });

  it('the claimed job carries the policy stored at creation and its digest', async () => {
    const created = await create();
    const job = await claimThis(created.id);
    expect(created.policy).not.toBeNull();
    expect(job.policy).toEqual(created.policy);
    expect(job.policy_sha256).toBe(created.policy_sha256);
    expect(job.session).toMatchObject({ host_session: false, policy_sha256: created.policy_sha256 });
    const claims = (await auditEntries(f, 'sandbox.claim')).filter((e) => e.resource?.id === created.id);
    expect(claims.map((e) => e.details)).toEqual([{ worker_id: 'w1', prd: 'prd.md', sandbox: true }]);
    await post(f, job, [{ seq: 1, type: 'state', data: { status: 'succeeded' } }]);
  });

  it('a `result` event is stored with the session (patch served by GET /patch, audited, published); `disk_exceeded` is a final state', async () => {
    const created = await create();
    expect(created.result).toBeNull();
    const noResult = await f.s.req(`/api/sessions/${created.id}/patch`);
    expect(noResult.status).toBe(404);
    expect(((await noResult.json()) as Json).error.message).toBe(`session ${created.id} has no result yet`);
    const job = await claimThis(created.id);
    const patch = 'diff --git a/new.txt b/new.txt\nnew file mode 100644\n--- /dev/null\n+++ b/new.txt\n@@ -0,0 +1 @@\n+hello\n';
    const result = {
      kind: 'copy' as const,
      commit: 'c0mm17',
      base_commit: null,
      branch: null,
      files_changed: 1,
      insertions: 1,
      deletions: 0,
      diffstat: ' new.txt | 1 +',
      patch_too_large: false,
      skipped: [],
      patch,
    };
    await post(f, job, [
      { seq: 1, type: 'result', data: result },
      { seq: 2, type: 'state', data: { status: 'disk_exceeded', reason: 'the worktree reached its 1g disk limit' } },
    ]);
    const s = await f.client.getSession(created.id);
    expect(s).toMatchObject({ status: 'disk_exceeded', reason: 'the worktree reached its 1g disk limit' });
    const { patch: _, ...view } = result;
    expect(s.result).toEqual({ ...view, has_patch: true });
    const r = await f.s.req(`/api/sessions/${created.id}/patch`);
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toBe('text/x-diff; charset=utf-8');
    expect(r.headers.get('content-disposition')).toBe(`attachment; filename="${created.id}.patch"`);
    expect(await r.text()).toBe(patch);
    const audited = (await auditEntries(f, 'session.result')).find((e) => e.resource?.id === created.id);
    expect(audited).toMatchObject({ details: { kind: 'copy', commit: 'c0mm17', files_changed: 1, has_patch: true, worker_id: 'w1' } });
    expect(audited.details.diffstat).toBeUndefined();
    const published = await f.s.runtime.deps.events.after(0, { sessionId: created.id, types: ['session_result'] });
    expect(published.map((e) => e.data)).toEqual([{ ...view, has_patch: true }]);
    const end = (await auditEntries(f, 'session.end')).find((e) => e.resource?.id === created.id);
    expect(end).toMatchObject({ outcome: { success: false }, details: { status: 'disk_exceeded' } });
  });

  it('a git result has no patch: GET /patch → 404 naming the branch field', async () => {
    const created = await create();
    const job = await claimThis(created.id);
    await post(f, job, [
      {
        seq: 1,
        type: 'result',
        data: { kind: 'git', commit: 'abc123', base_commit: 'def456', branch: `loki/session-${created.id}`, files_changed: 2, insertions: 3, deletions: 1, diffstat: '', patch_too_large: false, skipped: [], patch: null },
      },
      { seq: 2, type: 'state', data: { status: 'succeeded' } },
    ]);
    expect((await f.client.getSession(created.id)).result).toMatchObject({ kind: 'git', branch: `loki/session-${created.id}`, has_patch: false });
    const r = await f.s.req(`/api/sessions/${created.id}/patch`);
    expect(r.status).toBe(404);
    expect(((await r.json()) as Json).error.message).toBe(`session ${created.id} has no patch (see result.kind and result.branch)`);
  });

  it('`setup_failed` events are audited (step branch as branch_protection_violation) and published', async () => {
    const created = await create();
    const job = await claimThis(created.id);
    await post(f, job, [
      { seq: 1, type: 'setup_failed', data: { step: 'commit', message: 'the agent\'s work could not be committed: disk full', kept_at: '/var/lib/loki/wt/x' } },
      { seq: 2, type: 'setup_failed', data: { step: 'branch', message: 'HEAD moved' } },
      { seq: 3, type: 'state', data: { status: 'failed', reason: 'setup failed' } },
    ]);
    const failed = (await auditEntries(f, 'session.setup_failed')).find((e) => e.resource?.id === created.id);
    expect(failed).toMatchObject({ outcome: { success: false }, details: { step: 'commit', kept_at: '/var/lib/loki/wt/x', worker_id: 'w1', workspace: f.ws } });
    const branch = (await auditEntries(f, 'branch_protection_violation')).find((e) => e.resource?.id === created.id);
    expect(branch).toMatchObject({ outcome: { success: false }, details: { step: 'branch', message: 'HEAD moved' } });
    const published = await f.s.runtime.deps.events.after(0, { sessionId: created.id, types: ['session_setup_failed'] });
    expect(published.map((e) => (e.data as Json).step)).toEqual(['commit', 'branch']);
  });

  it('a queued session with no valid stored policy (created before policies) is failed at claim, never run', async () => {
    const created = await create();
    await f.s.sql('UPDATE sessions SET policy = NULL WHERE id = ?', created.id);
    // Other tests leave nothing queued: the claim has nothing to hand out.
    expect(await f.client.claimJob({ worker_id: 'w1', wait_ms: 0 })).toBeNull();
    const s = await f.client.getSession(created.id);
    expect(s).toMatchObject({ status: 'failed', reason: 'the session has no valid stored policy (missing, or not matching its SHA-256); start it again', policy: null });
    expect(s.ended_at).not.toBeNull();
    const audited = (await auditEntries(f, 'session.setup_failed')).find((e) => e.resource?.id === created.id);
    expect(audited).toMatchObject({ outcome: { success: false, error: 'no_policy' }, details: { step: 'policy' } });
  });
});

describe('a tampered stored policy', () => {
  let f: Fixture;
  beforeAll(async () => {
    f = await fixture();
  });
  afterAll(() => close(f));

  it('a policy edited in the database (no longer matching the SHA-256 the session.start entry carries) is failed at claim, never handed out', async () => {
    const created = await f.client.createSession({ workspace: f.ws, prd: 'prd.md' });
    // Someone with write access to the database widens the stored policy.
    await f.s.sql(`UPDATE sessions SET policy = replace(policy, '"network":false', '"network":true') WHERE id = ?`, created.id);
    expect(await f.client.claimJob({ worker_id: 'w1', wait_ms: 0 })).toBeNull();
    const s = await f.client.getSession(created.id);
    expect(s).toMatchObject({ status: 'failed', reason: 'the session has no valid stored policy (missing, or not matching its SHA-256); start it again' });
    expect(s.policy?.network).toBe(true);
  });
});

describe('lease expiry', () => {
  let f: Fixture;
  beforeAll(async () => {
    f = await fixture({ LOKI_SANDBOX_LEASE_MS: '1000' });
  });
  afterAll(() => close(f));

  it('heartbeats keep a lease; without them the session becomes `lost` (event + audit), is never re-queued, and its worker gets 409', async () => {
    const kept = await f.client.createSession({ workspace: f.ws, prd: 'prd.md' });
    const keptJob = (await f.client.claimJob({ worker_id: 'w1', wait_ms: 0 }))!;
    expect(keptJob.session.id).toBe(kept.id);
    expect(keptJob.lease_ms).toBe(1000);
    const dropped = await f.client.createSession({ workspace: f.ws, prd: 'prd.md' });
    const droppedJob = (await f.client.claimJob({ worker_id: 'w2', wait_ms: 0 }))!;
    expect(droppedJob.session.id).toBe(dropped.id);

    for (let seq = 1; seq <= 6; seq++) {
      await post(f, keptJob, [{ seq, type: 'heartbeat' }]);
      await sleep(300);
    }
    expect((await f.client.getSession(kept.id)).status).toBe('running');
    const lost = await f.client.getSession(dropped.id);
    expect(lost).toMatchObject({ status: 'lost', reason: 'worker lease expired' });
    expect(await f.client.claimJob({ worker_id: 'w3', wait_ms: 0 })).toBeNull();
    await expect(post(f, droppedJob, [{ seq: 1, type: 'heartbeat' }])).rejects.toMatchObject({ status: 409 });

    const states = (await f.s.runtime.deps.events.after(0, { sessionId: dropped.id, types: ['session_state'] })).map((e) => (e.data as Json).status);
    expect(states).toEqual(['queued', 'running', 'lost']);
    const audit = (await auditEntries(f, 'session.lost')).filter((e) => e.resource.id === dropped.id);
    expect(audit).toHaveLength(1);
    expect(audit[0]).toMatchObject({ actor: { type: 'system', name: 'lease-sweeper' }, details: { worker_id: 'w2', prd: 'prd.md' } });
    await post(f, keptJob, [{ seq: 7, type: 'state', data: { status: 'succeeded' } }]);
  });
});

describe('JobReporter (the worker side) against a real server', () => {
  let f: Fixture;
  beforeAll(async () => {
    f = await fixture();
  });
  afterAll(() => close(f));

  it('a post whose response is lost is retried with the same seqs and applied once', async () => {
    let dropped = 0;
    const lossy: typeof fetch = async (input, init) => {
      const res = await fetch(input, init);
      if (String(input).includes('/events') && dropped < 2) {
        dropped++;
        await res.text();
        throw new TypeError('fetch failed (response lost)');
      }
      return res;
    };
    const client = new LokiClient({ url: f.s.url, fetch: lossy });
    const created = await f.client.createSession({ workspace: f.ws, prd: 'prd.md' });
    const job = (await f.client.claimJob({ worker_id: 'w1', wait_ms: 0 }))!;
    const logger = captureLogger();
    const reporter = new JobReporter({
      client,
      sessionId: created.id,
      workerId: 'w1',
      leaseId: job.lease_id,
      lastSeq: 0,
      leaseMs: job.lease_ms,
      logger,
      onStopRequested: () => {},
      onLeaseLost: () => {},
    });
    for (let i = 1; i <= 50; i++) reporter.output('stdout', `line ${i}`);
    reporter.event({ type: 'budget', data: { spent_usd: 0.1 } });
    for (let i = 51; i <= 60; i++) reporter.output(i % 2 ? 'stderr' : 'stdout', `line ${i}`);
    reporter.event({ type: 'state', data: { status: 'succeeded', exit_code: 0 } });
    await reporter.drain();
    reporter.close();
    expect(dropped).toBe(2);
    const logs = await f.client.sessionLogs(created.id);
    expect(logs.lines.map((l) => l.text)).toEqual(Array.from({ length: 60 }, (_, i) => `line ${i + 1}`));
    expect(logs.lines.map((l) => l.line)).toEqual(Array.from({ length: 60 }, (_, i) => i + 1));
    const s = await f.client.getSession(created.id);
    expect(s.status).toBe('succeeded');
    expect(s.last_event_seq).toBe(reporter.lastAck!.last_seq);
    expect(logger.lines.some((l) => l.msg.includes('retrying'))).toBe(true);
  });

  it('tells the worker about stop requests and a lost lease', async () => {
    const created = await f.client.createSession({ workspace: f.ws, prd: 'prd.md' });
    const job = (await f.client.claimJob({ worker_id: 'w1', wait_ms: 0 }))!;
    let stops = 0;
    let lost = '';
    const reporter = new JobReporter({
      client: f.client,
      sessionId: created.id,
      workerId: 'w1',
      leaseId: job.lease_id,
      lastSeq: 0,
      leaseMs: job.lease_ms,
      logger: captureLogger(),
      onStopRequested: () => stops++,
      onLeaseLost: (m) => {
        lost = m;
      },
    });
    await f.client.stopSession(created.id);
    reporter.output('stdout', 'working');
    await reporter.drain();
    expect(stops).toBe(1);
    // Someone else ends the session: the next post is refused, and the reporter gives up.
    await f.s.runtime.deps.store.sessions.update(created.id, null, { status: 'lost', leaseId: 'lease_other' });
    reporter.output('stdout', 'still working');
    await reporter.drain();
    expect(lost).toMatch(/not held by this worker/);
    expect(reporter.leaseLost).toBe(true);
    reporter.close();
  });

  it('splits lines too long for one post', async () => {
    const created = await f.client.createSession({ workspace: f.ws, prd: 'prd.md' });
    const job = (await f.client.claimJob({ worker_id: 'w1', wait_ms: 0 }))!;
    const reporter = new JobReporter({
      client: f.client,
      sessionId: created.id,
      workerId: 'w1',
      leaseId: job.lease_id,
      lastSeq: 0,
      leaseMs: job.lease_ms,
      logger: captureLogger(),
      onStopRequested: () => {},
      onLeaseLost: () => {},
    });
    const long = 'y'.repeat(300 * 1024);
    for (let i = 0; i < 6; i++) reporter.output('stdout', long);
    reporter.event({ type: 'state', data: { status: 'succeeded' } });
    await reporter.drain();
    reporter.close();
    const logs = await f.client.sessionLogs(created.id, { limit: 5000 });
    expect(logs.lines.map((l) => l.text).join('')).toBe(long.repeat(6));
    expect(Math.max(...logs.lines.map((l) => l.text.length))).toBeLessThanOrEqual(128 * 1024);
    expect((await f.client.getSession(created.id)).status).toBe('succeeded');
  });
});

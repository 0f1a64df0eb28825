/**
 * The sandbox worker process (`loki sandbox worker`, `npm run worker`). It talks
 * to the server only over HTTP (the typed client, with the worker-role token
 * `LOKI_WORKER_TOKEN`) and to Docker through dockerode, so several workers on
 * several Docker hosts can serve one server.
 *
 * Loop: long-poll a claim while a slot is free (`--concurrency`), run the
 * session with `runSession`, report output and events through a `JobReporter`
 * (sequenced, retried, heartbeats within the lease), turn a stop request from the
 * server into the run's abort signal. Housekeeping: containers labelled with this
 * worker id that no running session owns are removed at start and then
 * periodically. SIGTERM/SIGINT: stop every session (the runner sends SIGTERM,
 * waits `LOKI_SANDBOX_KILL_GRACE_MS`, then kills), report them `stopped`, exit 0
 * within 15 s; a second signal exits 130 at once.
 */
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Docker from 'dockerode';
import { ApiClientError, LokiClient } from '../client';
import { pickEnv } from '../env';
import type { Logger } from '../http/context';
import { configOrExit, policyOrExit } from '../node';
import type { Job, WorkerOutcome } from '../sessions/api';
import { createLogger } from '../util/logger';
import { redactString } from '../util/redact';
import { FORBIDDEN_ENV } from './config';
import { removeContainer } from './docker';
import { JobReporter } from './reporter';
import { HOST_BASE_ENV, recoverWorktrees, removeOrphans, runSession, type SessionResult, type SetupStep } from './runner';
import { defaultWorkspaceConfig } from './config';
import { DEFAULT_WARM, MAX_WARM, parseWarm, removeStaleSlots, WarmPool } from './pool';
import { effectiveSessionPolicy, type OperatorPolicy, PolicyViolation, policySha256, recheckSessionPolicy } from './session-policy';

/** The largest patch (JSON-encoded) posted to the server; a larger one stays on the worker. */
export const MAX_POSTED_PATCH_CHARS = 768 * 1024;

export const MIN_CONCURRENCY = 1;
export const MAX_CONCURRENCY = 32;
/** How long a claim waits on the server (the protocol's maximum). */
const CLAIM_WAIT_MS = 25_000;
/** Orphan check: quickly while the server lists sessions for this id that we do not run, else rarely. */
const ORPHAN_SWEEP_SUSPECT_MS = 1_000;
const ORPHAN_SWEEP_IDLE_MS = 30_000;
/** How often `--exit-with-parent` checks that the parent is still there. */
const PARENT_CHECK_MS = 1_000;
/** Everything is over within this after SIGTERM (the contract says 15 s). */
export const SHUTDOWN_DEADLINE_MS = 14_000;

export interface SandboxWorkerOptions {
  client: LokiClient;
  workerId: string;
  concurrency: number;
  /** null: no engine; sandboxed sessions fail with a clear reason. */
  docker: Docker | null;
  killGraceMs: number;
  maxOutputBytes: number;
  /** The worker user's home (mount rules). */
  home: string;
  lokiHome: string;
  /** This worker host's copy of the operator policy: every session's policy is checked against it. */
  operatorPolicy: OperatorPolicy;
  /** Where session worktrees are made (default `$LOKI_HOME/worktrees`). */
  worktreeRoot?: string;
  /** The Docker socket this worker uses (never mounted into a session). */
  dockerSocket?: string;
  /** The in-container egress forwarder binary (`LOKI_FORWARDER`). */
  forwarderPath?: string;
  logger: Logger;
  /** Reads the allowlisted variables from the worker's environment. */
  pickEnv?: (names: readonly string[]) => Record<string, string>;
  /** Warm containers of the default image and policy kept ready (`--warm N`, default 2; 0: none). */
  warm?: number;
  /** Where warm-pool slots live (default `$LOKI_HOME/pool/<worker id>`). */
  poolRoot?: string;
}

interface ActiveSession {
  job: Job;
  abort: AbortController;
  reporter: JobReporter | null;
  containerIds: Set<string>;
  done: Promise<void>;
}

/** This worker's running sessions plus those the server lists: what an orphan check must keep. */
class LiveSessions extends Set<string> {
  constructor(
    ids: Iterable<string>,
    private readonly active: ReadonlyMap<string, unknown>,
    private readonly pool: WarmPool | null = null,
  ) {
    super(ids);
  }
  override has(id: string): boolean {
    return super.has(id) || this.active.has(id) || (this.pool?.has(id) ?? false);
  }
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });

export class SandboxWorker {
  private readonly active = new Map<string, ActiveSession>();
  private readonly stopping = new AbortController();
  private slotWaiter: (() => void) | null = null;
  private orphanTimer: NodeJS.Timeout | null = null;
  private sweeping: Promise<void> | null = null;
  /** Exit code for the process: 0, or 1 after a fatal error (e.g. the token was refused). */
  exitCode = 0;
  /** The warm pool (null: none, or it could not be set up). */
  pool: WarmPool | null = null;

  constructor(private readonly o: SandboxWorkerOptions) {}

  /**
   * The warm pool for the worker's default policy (the operator policy applied to a
   * workspace without a config). It needs a Docker engine, the forwarder and a root
   * worker (slot mounts); without them sessions get fresh containers and the reason
   * is logged.
   */
  private async startPool(): Promise<void> {
    const size = this.o.warm ?? DEFAULT_WARM;
    const docker = this.o.docker;
    const log = this.o.logger;
    const root = this.o.poolRoot ?? path.join(this.o.lokiHome, 'pool', this.o.workerId.replace(/[^A-Za-z0-9_.-]/g, '_'));
    // What a previous run left (killed with pooled sessions running: their worktrees
    // still bound on the slots) goes whether or not this run has a pool.
    if (process.getuid?.() === 0) await removeStaleSlots(root, log);
    if (size === 0 || !docker) return;
    const why = !this.o.forwarderPath || !existsSync(this.o.forwarderPath)
      ? `no egress forwarder${this.o.forwarderPath ? ` at ${this.o.forwarderPath}` : ''} (build it with scripts/forwarder/build.sh)`
      : process.getuid?.() !== 0
        ? 'the worker is not root (pool slots are mounts)'
        : null;
    if (why) {
      log.warn('no warm pool: sessions get fresh containers', { reason: why, warm: size });
      return;
    }
    try {
      const context = { home: this.o.home, lokiHome: this.o.lokiHome, dockerSocket: this.o.dockerSocket };
      const template = effectiveSessionPolicy({
        config: defaultWorkspaceConfig({ workspaceDir: this.o.lokiHome, home: this.o.home }),
        operator: this.o.operatorPolicy,
        requestedSandbox: true,
        forceSandbox: true,
        mountContext: context,
      });
      this.pool = new WarmPool({
        docker,
        size,
        template,
        workerId: this.o.workerId,
        root,
        forwarderPath: this.o.forwarderPath!,
        context,
        logger: log,
      });
      log.info('warm pool', { size, image: template.image, runtime: template.runtime });
    } catch (err) {
      this.pool = null;
      log.error('no warm pool: sessions get fresh containers', { reason: redactString((err as Error).message), warm: size });
    }
  }

  get activeCount(): number {
    return this.active.size;
  }

  /** Claim and run sessions until `shutdown`; resolves when every session has been reported. */
  async run(): Promise<void> {
    const log = this.o.logger;
    log.info('sandbox worker started', { worker_id: this.o.workerId, concurrency: this.o.concurrency, server: this.o.client.url, docker: this.o.docker !== null });
    await this.startPool();
    await this.sweepOrphans();
    this.pool?.fill();
    let backoff = 500;
    let failing = false;
    while (!this.stopping.signal.aborted) {
      await this.waitForSlot();
      if (this.stopping.signal.aborted) break;
      let job: Job | null;
      try {
        job = await this.o.client.claimJob({ worker_id: this.o.workerId, wait_ms: CLAIM_WAIT_MS }, this.stopping.signal);
      } catch (err) {
        if (this.stopping.signal.aborted) break;
        if (err instanceof ApiClientError && (err.status === 401 || err.status === 403)) {
          log.error('the server refused the worker token; stopping', { status: err.status, code: err.code, message: err.message });
          this.exitCode = 1;
          void this.shutdown('token refused');
          break;
        }
        if (!failing) log.warn('claiming a job failed; retrying', { err: (err as Error).message });
        failing = true;
        await sleep(backoff, this.stopping.signal);
        backoff = Math.min(10_000, backoff * 2);
        continue;
      }
      if (failing) log.info('connected to the server again', { server: this.o.client.url });
      failing = false;
      backoff = 500;
      if (job) this.start(job);
    }
    await Promise.all([...this.active.values()].map((a) => a.done));
    if (this.orphanTimer) clearTimeout(this.orphanTimer);
    await this.sweeping;
    await this.closePool();
    log.info('sandbox worker stopped', { worker_id: this.o.workerId });
  }

  /**
   * Stop claiming, stop every running session (reported `stopped`) and let `run`
   * resolve. Containers still present at `deadlineMs` are removed by force.
   */
  async shutdown(why = 'worker shutting down', deadlineMs = SHUTDOWN_DEADLINE_MS): Promise<void> {
    if (!this.stopping.signal.aborted) {
      this.o.logger.info('stopping sessions', { reason: why, sessions: this.active.size });
      this.stopping.abort();
      for (const a of this.active.values()) a.abort.abort('shutdown');
      this.slotWaiter?.();
    }
    const all = Promise.all([...this.active.values()].map((a) => a.done));
    if ((await Promise.race([all.then(() => 'done' as const), sleep(deadlineMs).then(() => 'deadline' as const)])) === 'deadline') {
      this.o.logger.warn('shutdown deadline reached; removing remaining containers', { sessions: this.active.size });
      for (const a of this.active.values()) {
        a.reporter?.close();
        for (const id of a.containerIds) await removeContainer(this.o.docker!.getContainer(id)).catch(() => undefined);
      }
    }
    await this.closePool();
  }

  /** Remove every idle warm container (those in use went with their sessions). */
  private async closePool(): Promise<void> {
    if (!this.pool) return;
    try {
      await this.pool.close();
    } catch (err) {
      this.o.logger.error('warm pool: containers left behind', { err: redactString((err as Error).message) });
    }
  }

  private waitForSlot(): Promise<void> {
    if (this.active.size < this.o.concurrency || this.stopping.signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      this.slotWaiter = () => {
        this.slotWaiter = null;
        resolve();
      };
    });
  }

  private start(job: Job): void {
    const id = job.session.id;
    const entry: ActiveSession = { job, abort: new AbortController(), reporter: null, containerIds: new Set(), done: Promise.resolve() };
    this.active.set(id, entry);
    entry.done = this.runJob(entry)
      .catch((err) => this.o.logger.error('session crashed in the worker', { session: id, err: String(err) }))
      .finally(() => {
        this.active.delete(id);
        this.slotWaiter?.();
      });
  }

  private async runJob(a: ActiveSession): Promise<void> {
    const { job } = a;
    const s = job.session;
    const log = this.o.logger;
    if (this.stopping.signal.aborted) a.abort.abort('shutdown');
    const reporter = new JobReporter({
      client: this.o.client,
      sessionId: s.id,
      workerId: this.o.workerId,
      leaseId: job.lease_id,
      lastSeq: s.last_event_seq,
      leaseMs: job.lease_ms,
      logger: log,
      onStopRequested: () => a.abort.abort('stop'),
      onLeaseLost: () => a.abort.abort('lease_lost'),
    });
    a.reporter = reporter;
    if (s.stop_requested) a.abort.abort('stop');
    log.info('session claimed', { session: s.id, sandbox: s.sandbox, prd: s.prd });

    const hints: Hints = {};
    let result: SessionResult;
    const policy = job.policy;
    try {
      // The policy was fixed when the session was created; this worker's operator
      // has a say too. No file in the workspace is read to decide anything.
      if (policySha256(policy) !== job.policy_sha256) {
        throw new PolicyViolation('policy', 'the policy handed over does not match its SHA-256 from the session.start audit entry');
      }
      recheckSessionPolicy(policy, this.o.operatorPolicy, { home: this.o.home, lokiHome: this.o.lokiHome, dockerSocket: this.o.dockerSocket });
      if (policy.sandbox && !this.o.docker) throw new Error('this worker has no Docker engine, and the session is sandboxed');
      const names = [...(policy.sandbox ? [] : HOST_BASE_ENV), ...policy.env_allowlist].filter((n) => !FORBIDDEN_ENV.test(n));
      result = await runSession(
        {
          sessionId: s.id,
          workerId: this.o.workerId,
          workspace: s.workspace,
          prdRelative: s.prd,
          policy,
          budgetUsd: s.budget_usd,
          env: (this.o.pickEnv ?? pickEnv)(names),
        },
        {
          signal: a.abort.signal,
          onOutput: (stream, line) => reporter.output(stream, line),
          onEvent: (type, data) => this.forward(a, reporter, hints, type, data),
        },
        {
          docker: this.o.docker ?? undefined,
          home: this.o.home,
          lokiHome: this.o.lokiHome,
          dockerSocket: this.o.dockerSocket,
          killGraceMs: this.o.killGraceMs,
          maxOutputBytes: this.o.maxOutputBytes,
          worktreeRoot: this.o.worktreeRoot ?? path.join(this.o.lokiHome, 'worktrees'),
          forwarderPath: this.o.forwarderPath,
          pool: this.pool,
        },
      );
    } catch (err) {
      const message = redactString(err instanceof Error ? err.message : String(err));
      if (err instanceof PolicyViolation) {
        reporter.event({ type: 'setup_failed', data: { step: 'policy', message } });
      } else {
        reporter.event({ type: 'notice', data: { event: 'session_error', message } });
      }
      result = { outcome: 'failed', exitCode: null, spentUsd: 0, outputTruncated: false, error: message };
    }

    if (!reporter.leaseLost) {
      if (result.spentUsd > 0) reporter.event({ type: 'budget', data: { spent_usd: result.spentUsd, limit_usd: s.budget_usd } });
      reporter.event({
        type: 'state',
        data: { status: result.outcome, reason: outcomeReason(result, a.abort.signal.reason, hints), exit_code: result.exitCode },
      });
    }
    await reporter.drain();
    reporter.close();
    log.info('session finished', { session: s.id, outcome: reporter.leaseLost ? 'lease_lost' : result.outcome });
  }

  /** Runner events → protocol events. */
  private forward(a: ActiveSession, r: JobReporter, hints: Hints, type: string, d: Record<string, unknown>): void {
    const str = (v: unknown) => (typeof v === 'string' ? v : null);
    const num = (v: unknown) => (typeof v === 'number' ? v : null);
    const containerId = str(d.container_id) ?? '';
    switch (type) {
      case 'container_created':
        a.containerIds.add(containerId);
        r.event({
          type: 'container',
          data: { event: 'created', container_id: containerId, ...(str(d.image) ? { image: str(d.image)! } : {}), ...(d.pooled === true ? { pooled: true } : {}) },
        });
        return;
      case 'container_started':
        r.event({ type: 'container', data: { event: 'started', container_id: containerId } });
        return;
      case 'container_exited':
        r.event({ type: 'container', data: { event: 'exited', container_id: containerId, exit_code: num(d.exit_code), oom_killed: d.oom_killed === true } });
        return;
      case 'container_removed':
        a.containerIds.delete(containerId);
        r.event({ type: 'container', data: { event: 'removed', container_id: containerId } });
        return;
      case 'worktree_created':
        if (d.kind === 'git') {
          r.event({
            type: 'branch',
            data: { event: 'created', base_branch: str(d.base_branch), base_commit: str(d.base_commit), agent_branch: str(d.agent_branch) },
          });
        }
        return;
      case 'setup_failed':
        hints.error = str(d.message) ?? undefined;
        r.event({ type: 'setup_failed', data: { step: (str(d.step) ?? 'prepare') as SetupStep, message: str(d.message) ?? 'setup failed', kept_at: str(d.kept_at) } });
        return;
      case 'session_result': {
        let patch = str(d.patch);
        let tooLarge = d.patchTooLarge === true;
        if (patch !== null && JSON.stringify(patch).length > MAX_POSTED_PATCH_CHARS) {
          patch = null;
          tooLarge = true;
        }
        r.event({
          type: 'result',
          data: {
            kind: d.kind === 'copy' ? 'copy' : 'git',
            commit: str(d.commit),
            base_commit: str(d.baseCommit),
            branch: str(d.branch),
            files_changed: num(d.filesChanged) ?? 0,
            insertions: num(d.insertions) ?? 0,
            deletions: num(d.deletions) ?? 0,
            diffstat: (str(d.diffstat) ?? '').slice(0, 65_536),
            patch,
            patch_too_large: tooLarge,
            skipped: Array.isArray(d.skipped) ? d.skipped.filter((x): x is string => typeof x === 'string').slice(0, 101) : [],
          },
        });
        return;
      }
      case 'egress':
        r.event({
          type: 'egress',
          data: {
            decision: d.decision === 'allowed' ? 'allowed' : 'denied',
            host: (str(d.host) ?? '').slice(0, 300),
            port: num(d.port) ?? 0,
            rule: (str(d.rule) ?? '').slice(0, 400),
            method: d.method === 'CONNECT' ? 'CONNECT' : 'HTTP',
            address: str(d.address),
            bytes_up: num(d.bytesUp),
            bytes_down: num(d.bytesDown),
            error: str(d.error),
          },
        });
        return;
      case 'disk_exceeded':
        hints.disk = `the session wrote more than its disk limit of ${formatSize(num(d.limit_bytes))}`;
        break;
      case 'cost':
        r.event({ type: 'budget', data: { spent_usd: num(d.spent_usd) ?? 0, limit_usd: num(d.limit_usd) } });
        return;
      case 'budget_warning':
      case 'budget_exceeded': {
        const spent = num(d.spent_usd) ?? 0;
        const limit = num(d.limit_usd);
        if (type === 'budget_exceeded') hints.budget = `budget exceeded: $${spent.toFixed(2)} spent of $${limit?.toFixed(2) ?? '?'}`;
        r.event({ type: 'budget', data: { spent_usd: spent, limit_usd: limit, ...(type === 'budget_warning' ? { warning: true } : { exceeded: true }) } });
        return;
      }
      case 'session_timeout':
        hints.timeout = d.kind === 'idle' ? `no output for ${num(d.seconds)} s (idle_timeout_seconds)` : `ran longer than ${num(d.seconds)} s (timeout_seconds)`;
        break;
      case 'session_error':
        hints.error ??= str(d.message) ?? undefined;
        break;
      case 'stop_requested':
      case 'output_truncated':
      case 'process_started':
      case 'process_exited':
        break;
      default:
        this.o.logger.info('runner event not forwarded', { session: a.job.session.id, type });
        return;
    }
    r.event({ type: 'notice', data: { ...d, event: type as 'session_timeout' } });
  }

  /** Commit and remove the worktrees of sessions this worker no longer runs (after a crash). */
  private async recoverWorktrees(live: Set<string>): Promise<void> {
    const root = this.o.worktreeRoot ?? path.join(this.o.lokiHome, 'worktrees');
    for (const r of await recoverWorktrees(root, this.o.workerId, (id) => live.has(id))) {
      const fields = { session: r.sessionId, worker_id: this.o.workerId, commit: r.result?.commit ?? null, branch: r.result?.branch ?? null };
      if (r.kept) this.o.logger.error('orphan worktree could not be committed; kept', { ...fields, err: r.error, path: path.join(root, r.sessionId) });
      else this.o.logger.info('orphan worktree committed and removed', { ...fields, note: r.error });
    }
  }

  /** Remove this worker's containers that no running session owns. */
  private sweepOrphans(): Promise<void> {
    this.sweeping ??= (async () => {
      let suspects = false;
      const docker = this.o.docker;
      if (docker) {
        try {
          const serverLive = await this.o.client.workerSessionIds(this.o.workerId, this.stopping.signal);
          suspects = serverLive.some((id) => !this.active.has(id));
          const live = new LiveSessions(serverLive, this.active, this.pool);
          const removed = await removeOrphans(docker, this.o.workerId, live);
          for (const id of removed) this.o.logger.info('orphan container removed', { container_id: id, worker_id: this.o.workerId });
          await this.recoverWorktrees(live);
        } catch (err) {
          if (!this.stopping.signal.aborted) this.o.logger.warn('orphan check failed; will retry', { err: (err as Error).message });
          suspects = true;
        }
      }
      if (!docker) {
        // A worker without an engine runs host sessions only; it still recovers their worktrees.
        try {
          await this.recoverWorktrees(new LiveSessions(await this.o.client.workerSessionIds(this.o.workerId, this.stopping.signal), this.active));
        } catch (err) {
          if (!this.stopping.signal.aborted) this.o.logger.warn('worktree recovery failed', { err: (err as Error).message });
        }
      }
      this.sweeping = null;
      if (!this.stopping.signal.aborted && docker) {
        this.orphanTimer = setTimeout(() => void this.sweepOrphans(), suspects ? ORPHAN_SWEEP_SUSPECT_MS : ORPHAN_SWEEP_IDLE_MS);
        this.orphanTimer.unref();
      }
    })();
    return this.sweeping;
  }
}

interface Hints {
  timeout?: string;
  budget?: string;
  error?: string;
  disk?: string;
}

function formatSize(bytes: number | null): string {
  if (bytes === null) return '?';
  return bytes % 1024 ** 3 === 0 ? `${bytes / 1024 ** 3} GiB` : `${Math.round(bytes / 1024 ** 2)} MiB`;
}

/** One line saying why a session ended the way it did (null for success). */
export function outcomeReason(
  result: SessionResult,
  abortReason: unknown,
  hints: Hints,
): string | null {
  const outcome: WorkerOutcome = result.outcome;
  switch (outcome) {
    case 'succeeded':
      return null;
    case 'stopped':
      return abortReason === 'shutdown' ? 'the worker shut down' : 'stop requested';
    case 'timed_out':
      return hints.timeout ?? 'time limit reached';
    case 'budget_exceeded':
      return hints.budget ?? 'budget exceeded';
    case 'oom_killed':
      return 'out of memory (sandbox.memory_limit)';
    case 'disk_exceeded':
      return hints.disk ?? 'disk limit reached';
    case 'failed':
      return result.error ?? hints.error ?? (result.exitCode !== null ? `the provider exited with code ${result.exitCode}` : 'failed');
  }
}

/** `os.hostname()` made into a valid worker id. */
export function defaultWorkerId(): string {
  const id = os
    .hostname()
    .replace(/[^A-Za-z0-9_.-]/g, '-')
    .replace(/^[^A-Za-z0-9]+/, '')
    .slice(0, 64);
  return id || 'worker';
}

export function parseConcurrency(value: string): number | null {
  if (!/^\d{1,2}$/.test(value.trim())) return null;
  const n = Number(value);
  return n >= MIN_CONCURRENCY && n <= MAX_CONCURRENCY ? n : null;
}

/** `loki sandbox worker [--concurrency N]`. */
export async function runWorkerCli(o: { concurrency: string; warm: string; exitWithParent?: boolean }): Promise<void> {
  const concurrency = parseConcurrency(o.concurrency);
  if (concurrency === null) {
    process.stderr.write(`loki: --concurrency must be an integer from ${MIN_CONCURRENCY} to ${MAX_CONCURRENCY}, got ${JSON.stringify(o.concurrency)}\n`);
    process.exit(2);
  }
  const warm = parseWarm(o.warm);
  if (warm === null) {
    process.stderr.write(`loki: --warm must be an integer from 0 to ${MAX_WARM}, got ${JSON.stringify(o.warm)}\n`);
    process.exit(2);
  }
  const config = configOrExit();
  const operatorPolicy = policyOrExit(config);
  const logger = createLogger();
  let docker: Docker | null = new Docker();
  try {
    await docker.ping();
  } catch (err) {
    logger.warn('no Docker engine: sandboxed sessions will fail on this worker', { err: (err as Error).message });
    docker = null;
  }
  const worker = new SandboxWorker({
    client: new LokiClient({ url: config.url, token: config.workerToken }),
    workerId: config.workerId ?? defaultWorkerId(),
    concurrency,
    docker,
    killGraceMs: config.sandboxKillGraceMs,
    maxOutputBytes: config.sessionOutputLimitBytes,
    home: os.homedir(),
    lokiHome: config.home,
    operatorPolicy,
    dockerSocket: config.dockerSocket,
    forwarderPath: config.forwarderPath ?? fileURLToPath(new URL('../../.tmp/loki-forward', import.meta.url)),
    logger,
    warm,
  });
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    if (++signals > 1) {
      process.stderr.write(`loki: second ${sig}, exiting now\n`);
      process.exit(130);
    }
    void worker.shutdown(`${sig} received`).then(() => process.exit(worker.exitCode));
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  if (o.exitWithParent) {
    // A parent killed without a word (SIGKILL) leaves this process to init or a
    // subreaper: its parent pid changes, and the worker stops as on SIGTERM.
    const parent = process.ppid;
    const watch = setInterval(() => {
      if (process.ppid === parent) return;
      clearInterval(watch);
      logger.warn('the process that started this worker is gone; shutting down', { parent_pid: parent });
      void worker.shutdown('parent process gone').then(() => process.exit(worker.exitCode));
    }, PARENT_CHECK_MS);
    watch.unref();
  }
  await worker.run();
  process.exit(worker.exitCode);
}

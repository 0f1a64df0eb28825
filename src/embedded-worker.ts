/**
 * The embedded sandbox worker (`LOKI_EMBEDDED_WORKER`): `loki dashboard` and
 * `npm start` also run one `loki sandbox worker` as a supervised child process,
 * so one command runs the whole job on one machine. Separate workers (other
 * machines, other engines) keep working beside it.
 *
 * - Docker: `auto` starts the worker when the engine answers a ping (the same
 *   engine the child will use: dockerode's own `DOCKER_HOST` reading), `on` makes
 *   an unreachable engine a start-up error, `off` never starts one.
 * - Token: the server mints a `worker` token bound to the embedded worker id at
 *   start-up (audited `token.create`), hands it to the child in its environment
 *   (never argv, never a log line) and revokes it at shutdown (audited
 *   `token.revoke`). Tokens a killed server left behind are revoked at the next
 *   start, before the new one is minted.
 * - Supervision: a child that exits is restarted after an exponential back-off
 *   (1 s, doubling, at most 60 s; back to 1 s once a run lasted 60 s). Its stdout
 *   and stderr lines go to the server's stderr prefixed `[embedded-worker] `.
 * - Shutdown: SIGTERM (the worker stops its sessions and reports them), SIGKILL
 *   after `stopTimeoutMs`; the server does this before it stops serving and before
 *   it closes its database.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import Docker from 'dockerode';
import type { AuditActor } from './audit/chain';
import type { AuditLog } from './audit/log';
import { createToken } from './auth/token-service';
import type { TokenStore } from './db/store';
import { type Config, readProcessEnv } from './env';
import type { EventHub } from './events/hub';
import type { Logger } from './http/context';
import { defaultWorkerId } from './sandbox/worker';
import { redactString } from './util/redact';

export const LOKI_BIN = fileURLToPath(new URL('../bin/loki.js', import.meta.url));

/** `created_by` of the tokens the server mints for its embedded worker. */
export const EMBEDDED_TOKEN_CREATOR = 'system:embedded-worker';
const ACTOR: AuditActor = { type: 'system', id: null, name: 'embedded-worker' };
/** Prefix of each line of the child's output in the server's log. */
export const OUTPUT_PREFIX = '[embedded-worker] ';
/** Longest line of child output kept (longer ones are cut, marked with `…`). */
const MAX_LINE_CHARS = 16 * 1024;

export type EmbeddedWorkerState = 'running' | 'restarting' | 'off' | 'unavailable';

/** `embedded_worker` in `/api/status`. */
export interface EmbeddedWorkerStatus {
  state: EmbeddedWorkerState;
  /** Why it is not running (null while running). */
  reason: string | null;
  /** The child's pid while it runs. */
  pid: number | null;
  /** How many times the child was restarted since the server started. */
  restarts: number;
  /** The worker id it claims under (null when none was started). */
  worker_id: string | null;
}

export class EmbeddedWorkerError extends Error {}

/**
 * The embedded worker's environment: the server's, without what the worker must
 * not hold (it talks to the server over HTTP only: no admin token, no database
 * URL with its password, which an agent of a host session could read from the
 * worker's /proc/<pid>/environ), plus its URL, worker token and id.
 */
export function embeddedWorkerEnv(base: NodeJS.ProcessEnv, o: { url: string; token: string; workerId: string }): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...base };
  for (const name of ['LOKI_TOKEN', 'LOKI_EMBEDDED_WORKER', 'LOKI_DATABASE_URL', 'LOKI_DB']) delete env[name];
  return { ...env, LOKI_URL: o.url, LOKI_WORKER_TOKEN: o.token, LOKI_WORKER_ID: o.workerId };
}

/** The embedded worker's id: `embedded-` + `LOKI_WORKER_ID` or the host name (never the id of a separate worker on this host). */
export function embeddedWorkerId(config: Pick<Config, 'workerId'>): string {
  return `embedded-${config.workerId ?? defaultWorkerId()}`.slice(0, 64).replace(/[^A-Za-z0-9]+$/, '');
}

/** Where dockerode will connect (for messages): `DOCKER_HOST` as configured, else the default socket. */
export function dockerTarget(env: Record<string, string | undefined> = readProcessEnv()): string {
  const v = env.DOCKER_HOST?.trim();
  return v ? v : 'unix:///var/run/docker.sock';
}

/** Ping the engine the child will use; null when it answers, else one line saying why not. */
export async function probeDocker(timeoutMs = 3_000): Promise<string | null> {
  let docker: Docker;
  try {
    docker = new Docker({ timeout: timeoutMs });
  } catch (err) {
    return `DOCKER_HOST is not usable: ${(err as Error).message}`;
  }
  try {
    await docker.ping();
    return null;
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why = e.message || e.code || String(err);
    return `no Docker engine answers at ${dockerTarget()} (${redactString(why)})`;
  }
}

export interface BackoffOptions {
  /** First delay (default 1 s). */
  initialMs: number;
  /** Largest delay (default 60 s). */
  maxMs: number;
  /** A run at least this long resets the delay to `initialMs` (default 60 s). */
  resetAfterMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 1_000, maxMs: 60_000, resetAfterMs: 60_000 };

/** The delay before restart number `failures + 1` of a run of consecutive short-lived children. */
export function restartDelay(failures: number, o: BackoffOptions = DEFAULT_BACKOFF): number {
  return Math.min(o.maxMs, o.initialMs * 2 ** Math.min(failures, 30));
}

function describeExit(code: number | null, signal: NodeJS.Signals | null, ranMs: number): string {
  const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
  return `the worker ${how} after ${(ranMs / 1000).toFixed(1)} s`;
}

export interface SupervisorOptions {
  command: string;
  args: string[];
  /** The child's whole environment (secrets go here, never in `args`). */
  env: NodeJS.ProcessEnv;
  logger: Logger;
  /** Receives each line of the child's output, already prefixed (default: the server's stderr). */
  output?: (line: string) => void;
  backoff?: BackoffOptions;
  /** Between SIGTERM and SIGKILL at stop (default 20 s: the worker itself is done within 15 s). */
  stopTimeoutMs?: number;
}

/** Keeps one child process running: restarts it with back-off, stops it with SIGTERM then SIGKILL. */
export class Supervisor {
  private child: ChildProcess | null = null;
  private exited: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private failures = 0;
  private stopping = false;
  private lastReason: string | null = null;
  /**
   * The server exiting without `stop()` (a crash): the child gets SIGTERM and winds
   * down on its own. During `stop()` (a second signal exits the server at once) it
   * already has its SIGTERM, and another would make it exit without cleaning up.
   */
  private readonly onParentExit = () => {
    if (!this.stopping && this.child && this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
  };
  private hooked = false;
  restarts = 0;

  constructor(private readonly o: SupervisorOptions) {}

  get pid(): number | null {
    return this.child?.pid ?? null;
  }

  status(): Pick<EmbeddedWorkerStatus, 'state' | 'reason' | 'pid' | 'restarts'> {
    if (this.child) return { state: 'running', reason: null, pid: this.child.pid ?? null, restarts: this.restarts };
    if (this.stopping) return { state: 'off', reason: 'the server is shutting down', pid: null, restarts: this.restarts };
    return { state: 'restarting', reason: this.lastReason, pid: null, restarts: this.restarts };
  }

  start(): void {
    if (this.stopping || this.child) return;
    if (!this.hooked) process.once('exit', this.onParentExit);
    this.hooked = true;
    const startedAt = Date.now();
    const child = spawn(this.o.command, this.o.args, { env: this.o.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    this.child = child;
    const write = this.o.output ?? ((line: string) => void process.stderr.write(`${line}\n`));
    const pipe = (stream: NodeJS.ReadableStream | null) => {
      if (!stream) return Promise.resolve();
      let buf = '';
      const emit = (line: string) => {
        const cut = line.length > MAX_LINE_CHARS ? `${line.slice(0, MAX_LINE_CHARS)}…` : line;
        write(`${OUTPUT_PREFIX}${redactString(cut)}`);
      };
      stream.setEncoding('utf8');
      stream.on('data', (d: string) => {
        buf += d;
        let i = buf.indexOf('\n');
        while (i >= 0) {
          emit(buf.slice(0, i));
          buf = buf.slice(i + 1);
          i = buf.indexOf('\n');
        }
        if (buf.length > MAX_LINE_CHARS) {
          emit(buf);
          buf = '';
        }
      });
      return new Promise<void>((resolve) =>
        stream.once('close', () => {
          if (buf) emit(buf);
          resolve();
        }),
      );
    };
    const drained = Promise.all([pipe(child.stdout), pipe(child.stderr)]);
    this.exited = new Promise<void>((resolve) => {
      let done = false;
      const finish = (code: number | null, signal: NodeJS.Signals | null, err?: Error) => {
        if (done) return;
        done = true;
        const ranMs = Date.now() - startedAt;
        this.child = null;
        this.lastReason = err ? `the worker could not be started: ${err.message}` : describeExit(code, signal, ranMs);
        if (this.stopping) {
          resolve();
          return;
        }
        if (ranMs >= (this.o.backoff ?? DEFAULT_BACKOFF).resetAfterMs) this.failures = 0;
        const delay = restartDelay(this.failures, this.o.backoff);
        this.failures++;
        this.lastReason = `${this.lastReason}; restarting in ${(delay / 1000).toFixed(1)} s`;
        this.o.logger.warn('embedded sandbox worker stopped; restarting', { reason: this.lastReason, restarts: this.restarts });
        this.timer = setTimeout(() => {
          this.timer = null;
          if (this.stopping) return;
          this.restarts++;
          this.start();
        }, delay);
        resolve();
      };
      child.once('error', (err) => finish(null, null, err));
      // Output is read to its end first, unless a grandchild holds the pipes open.
      child.once('exit', (code, signal) => {
        const late = setTimeout(() => finish(code, signal), 1_000);
        void drained.then(() => {
          clearTimeout(late);
          finish(code, signal);
        });
      });
    });
  }

  /** SIGTERM, then SIGKILL after the timeout; resolves once the child has exited. No restart afterwards. */
  async stop(): Promise<void> {
    this.stopping = true;
    process.removeListener('exit', this.onParentExit);
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) {
      await this.exited;
      return;
    }
    child.kill('SIGTERM');
    let t: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      this.exited!.then(() => false),
      new Promise<boolean>((r) => {
        t = setTimeout(() => r(true), this.o.stopTimeoutMs ?? 20_000);
      }),
    ]);
    clearTimeout(t);
    if (timedOut) {
      this.o.logger.warn('embedded sandbox worker did not stop in time; killing it', { pid: child.pid });
      child.kill('SIGKILL');
      await this.exited;
    }
  }
}

export interface EmbeddedWorkerDeps {
  config: Config;
  tokens: TokenStore;
  audit: AuditLog;
  events: EventHub;
  logger: Logger;
  /** The server's own URL as the child should reach it. */
  serverUrl: string;
  output?: (line: string) => void;
  backoff?: BackoffOptions;
  stopTimeoutMs?: number;
  now?: () => number;
}

/** A running embedded worker: its supervisor and its token. */
export class EmbeddedWorker {
  private stopped: Promise<void> | null = null;

  private constructor(
    private readonly d: EmbeddedWorkerDeps,
    readonly workerId: string,
    readonly tokenId: string,
    private readonly tokenName: string,
    readonly supervisor: Supervisor,
  ) {}

  /**
   * Revoke tokens a previous run left, mint this run's token and start the child.
   * Throws when the token cannot be minted or its creation cannot be audited.
   */
  static async start(d: EmbeddedWorkerDeps): Promise<EmbeddedWorker> {
    const now = d.now ?? Date.now;
    const workerId = embeddedWorkerId(d.config);
    await revokeLeftovers(d, workerId, now);
    const { record, plaintext } = await createToken(
      d.tokens,
      {
        name: `embedded-worker ${workerId} ${new Date(now()).toISOString()}`,
        role: 'worker',
        workerId,
        createdBy: EMBEDDED_TOKEN_CREATOR,
      },
      now(),
    );
    try {
      await d.audit.append({
        ts: now(),
        action: 'token.create',
        resource: { type: 'token', id: record.id },
        actor: ACTOR,
        outcome: { status: null, success: true, error: null },
        details: { name: record.name, role: record.role, scopes: record.scopes, expires_at: null, worker_id: workerId, via: 'embedded-worker' },
      });
    } catch (err) {
      // Nothing unaudited may stay usable.
      await d.tokens.revoke(record.id, now()).catch(() => false);
      throw err;
    }
    await d.events.publish('token_created', null, { id: record.id, name: record.name, role: record.role }).catch(() => {});
    const env = embeddedWorkerEnv(readProcessEnv(), { url: d.serverUrl, token: plaintext, workerId });
    const supervisor = new Supervisor({
      command: process.execPath,
      args: [LOKI_BIN, 'sandbox', 'worker', '--concurrency', String(d.config.embeddedWorkerConcurrency), '--warm', String(d.config.embeddedWorkerWarm), '--exit-with-parent'],
      env,
      logger: d.logger,
      output: d.output,
      backoff: d.backoff,
      stopTimeoutMs: d.stopTimeoutMs,
    });
    supervisor.start();
    d.logger.info('embedded sandbox worker started', { worker_id: workerId, pid: supervisor.pid, token_id: record.id, server: d.serverUrl });
    return new EmbeddedWorker(d, workerId, record.id, record.name, supervisor);
  }

  status(): EmbeddedWorkerStatus {
    return { ...this.supervisor.status(), worker_id: this.workerId };
  }

  /** Stop the child (SIGTERM, then SIGKILL), then revoke its token. Call while the database is open. */
  stop(): Promise<void> {
    this.stopped ??= (async () => {
      await this.supervisor.stop();
      this.d.logger.info('embedded sandbox worker stopped', { worker_id: this.workerId });
      await revoke(this.d, this.tokenId, this.tokenName, 'server shutdown', this.d.now ?? Date.now);
    })();
    return this.stopped;
  }
}

async function revoke(d: EmbeddedWorkerDeps, id: string, name: string, reason: string, now: () => number): Promise<void> {
  // Revoked even when the audit entry cannot be written: a live token is the worse outcome.
  const revoked = await d.tokens.revoke(id, now());
  if (!revoked) return;
  await d.audit
    .append({
      ts: now(),
      action: 'token.revoke',
      resource: { type: 'token', id },
      actor: ACTOR,
      outcome: { status: null, success: true, error: null },
      details: { name, reason, via: 'embedded-worker' },
    })
    .catch((err) => d.logger.error('the embedded worker token was revoked but its audit entry could not be written', { token_id: id, err: String(err) }));
  await d.events.publish('token_revoked', null, { id, name }).catch(() => {});
}

/**
 * This worker id's embedded-worker tokens still active from a server that did not
 * shut down cleanly. Only its own: servers on other hosts share a PostgreSQL
 * database, and their embedded workers' tokens are live.
 */
async function revokeLeftovers(d: EmbeddedWorkerDeps, workerId: string, now: () => number): Promise<void> {
  for (const t of await d.tokens.list(false)) {
    if (t.createdBy !== EMBEDDED_TOKEN_CREATOR || t.workerId !== workerId || t.revokedAt !== null) continue;
    await revoke(d, t.id, t.name, 'left by a previous run', now);
    d.logger.info('revoked an embedded worker token left by a previous run', { token_id: t.id });
  }
}

/** The status before (or without) a running embedded worker. */
export function notRunning(state: 'off' | 'unavailable', reason: string, workerId: string | null = null): EmbeddedWorkerStatus {
  return { state, reason, pid: null, restarts: 0, worker_id: workerId };
}

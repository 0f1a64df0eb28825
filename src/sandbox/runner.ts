/**
 * One agent session, start to finish: validate the PRD path, protect the branch,
 * run the provider (in a locked-down container or as a child process), enforce the
 * time, idle-output, budget and output limits, and report one outcome.
 *
 * Both paths share `supervise`: the only difference is how a run is started and
 * terminated. Session-level problems (a refused mount, a PRD outside the workspace,
 * Docker or git failures) resolve as `failed` with `error`; the promise rejects only
 * on misuse (no Docker client for a sandboxed run).
 */
import { spawn } from 'node:child_process';
import { realpathSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { finished, Writable } from 'node:stream';
import type Docker from 'dockerode';
import { isInside, resolveInside } from '../util/paths';
import { redactString } from '../util/redact';
import { createBudgetTracker } from './budget';
import { FORBIDDEN_ENV, providerArgv, type WorkspaceConfig } from './config';
import { DEFAULT_KILL_GRACE_MS, killWithGrace, removeContainer } from './docker';
import { type BranchInfo, branchCommit, checkBaseMoved, type GitOptions, prepareSessionBranch } from './git';
import { createOutputCollector, DEFAULT_MAX_OUTPUT_BYTES, type OutputCollector, type OutputStream } from './output';
import { type PolicyContext, sandboxPolicyFromConfig } from './policy';

export type SessionOutcome = 'succeeded' | 'failed' | 'stopped' | 'timed_out' | 'budget_exceeded' | 'oom_killed';

export interface SessionSpec {
  sessionId: string;
  workerId: string;
  /** Absolute path of the workspace on this host. */
  workspace: string;
  /** PRD path relative to the workspace; must be a regular file inside it. */
  prdRelative: string;
  sandbox: boolean;
  config: WorkspaceConfig;
  budgetUsd: number | null;
  /** The worker's environment: allowlisted names are copied from here, nothing else. */
  env: Readonly<Record<string, string | undefined>>;
  /** `LOKI_BRANCH_PROTECTION` (default true). */
  branchProtection?: boolean;
}

export interface SessionHooks {
  onOutput(stream: OutputStream, line: string): void;
  onEvent(type: string, data: Record<string, unknown>): void;
  /** Aborting it stops the session (outcome `stopped`). */
  signal?: AbortSignal;
}

export interface RunnerOptions {
  /** Required for sandboxed sessions. */
  docker?: Docker;
  /** The worker user's home (mount rules); default `os.homedir()`. */
  home?: string;
  lokiHome?: string;
  dockerSocket?: string;
  /** Between SIGTERM and SIGKILL (default 10 s). */
  killGraceMs?: number;
  /** Stored output per session (default 50 MB). */
  maxOutputBytes?: number;
  git?: GitOptions;
}

export interface SessionBranch extends BranchInfo {
  /** Whether the base branch moved during the session (null when not checked). */
  baseMoved: boolean | null;
}

export interface SessionResult {
  outcome: SessionOutcome;
  exitCode: number | null;
  containerId?: string;
  branch?: SessionBranch;
  spentUsd: number;
  outputTruncated: boolean;
  /** Why a session failed before or around the run (redacted). */
  error?: string;
}

/**
 * Non-secret variables a host child process needs to work at all (finding its
 * program, its config, a locale). Everything else must be allowlisted.
 */
export const HOST_BASE_ENV: readonly string[] = ['PATH', 'HOME', 'LANG', 'LC_ALL', 'TZ', 'TMPDIR', 'USER', 'LOGNAME'];

/** How long to wait for the output streams to drain after the process exited. */
const DRAIN_MS = 2_000;

type StopReason = 'stopped' | 'timed_out' | 'budget_exceeded';

interface ExitInfo {
  exitCode: number | null;
  oomKilled: boolean;
}

/** A started run: how it ends, and how to end it. */
interface Execution {
  exited: Promise<ExitInfo>;
  terminate(): Promise<void>;
}

interface RunSummary {
  outcome: SessionOutcome;
  exitCode: number | null;
  spentUsd: number;
  outputTruncated: boolean;
  error?: string;
}

const delay = (ms: number) =>
  new Promise<'timeout'>((resolve) => {
    setTimeout(() => resolve('timeout'), ms).unref();
  });

const messageOf = (err: unknown) => redactString(err instanceof Error ? err.message : String(err));

/** The environment of a host child process: the base set plus the allowlist, never a Loki credential. */
export function hostChildEnv(allowlist: readonly string[], env: SessionSpec['env']): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of [...HOST_BASE_ENV, ...allowlist]) {
    const value = env[name];
    if (value !== undefined && !FORBIDDEN_ENV.test(name)) out[name] = value;
  }
  return out;
}

/** Real workspace and the PRD path as the provider sees it (relative, `/`-separated). */
function resolveSessionPaths(spec: SessionSpec): { workspace: string; prd: string } {
  if (!path.isAbsolute(spec.workspace)) throw new Error(`workspace must be an absolute path: ${spec.workspace}`);
  const workspace = realpathSync(spec.workspace);
  const prdReal = resolveInside(workspace, spec.prdRelative);
  if (!statSync(prdReal).isFile()) throw new Error(`PRD is not a regular file: ${spec.prdRelative}`);
  if (!isInside(workspace, prdReal) || prdReal === workspace) throw new Error(`PRD escapes the workspace: ${spec.prdRelative}`);
  return { workspace, prd: path.relative(workspace, prdReal).split(path.sep).join('/') };
}

/**
 * Run `start` under the session's limits. `start` begins the run and returns how it
 * ends and how to terminate it; everything else (timers, budget, stop request,
 * output) is common to both runtimes.
 */
async function supervise(
  spec: SessionSpec,
  hooks: SessionHooks,
  options: RunnerOptions,
  start: (collector: OutputCollector) => Promise<Execution>,
): Promise<RunSummary> {
  const settings = spec.config.sandbox;
  const budget = createBudgetTracker(spec.budgetUsd);
  let reason: StopReason | null = null;
  let terminate: (() => Promise<void>) | null = null;
  let terminating: Promise<void> | null = null;

  const runTerminate = () => {
    if (!terminate || terminating) return;
    const t = terminate;
    terminating = t().catch((err) => hooks.onEvent('session_error', { message: `stop failed: ${messageOf(err)}` }));
  };
  const trip = (why: StopReason, event: string, data: Record<string, unknown>) => {
    if (reason) return;
    reason = why;
    hooks.onEvent(event, data);
    runTerminate();
  };

  let idleTimer: NodeJS.Timeout | undefined;
  const collector = createOutputCollector({
    maxBytes: options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT_BYTES,
    onLine: (stream, line) => hooks.onOutput(stream, line),
    onRawLine: (_stream, line) => {
      for (const ev of budget.feed(line)) {
        const data = { spent_usd: ev.spentUsd, limit_usd: ev.limitUsd };
        if (ev.type === 'warning') hooks.onEvent('budget_warning', data);
        else trip('budget_exceeded', 'budget_exceeded', data);
      }
    },
    onTruncated: (maxBytes) => hooks.onEvent('output_truncated', { max_bytes: maxBytes }),
    onActivity: () => idleTimer?.refresh(),
  });

  const onAbort = () => trip('stopped', 'stop_requested', {});
  if (hooks.signal?.aborted) onAbort();
  if (reason) return { outcome: reason, exitCode: null, spentUsd: 0, outputTruncated: false };
  hooks.signal?.addEventListener('abort', onAbort, { once: true });

  let sessionTimer: NodeJS.Timeout | undefined;
  try {
    let exec: Execution;
    try {
      exec = await start(collector);
    } catch (err) {
      const error = messageOf(err);
      hooks.onEvent('session_error', { message: error });
      return { outcome: reason ?? 'failed', exitCode: null, spentUsd: budget.spentUsd, outputTruncated: false, error };
    }
    terminate = exec.terminate;
    sessionTimer = setTimeout(
      () => trip('timed_out', 'session_timeout', { kind: 'session', seconds: settings.timeoutSeconds }),
      settings.timeoutSeconds * 1000,
    );
    idleTimer = setTimeout(
      () => trip('timed_out', 'session_timeout', { kind: 'idle', seconds: settings.idleTimeoutSeconds }),
      settings.idleTimeoutSeconds * 1000,
    );
    if (reason) runTerminate();
    const exit = await exec.exited;
    clearTimeout(sessionTimer);
    clearTimeout(idleTimer);
    await terminating;
    collector.end();
    const outcome: SessionOutcome = reason ?? (exit.oomKilled ? 'oom_killed' : exit.exitCode === 0 ? 'succeeded' : 'failed');
    return { outcome, exitCode: exit.exitCode, spentUsd: budget.spentUsd, outputTruncated: collector.truncated };
  } finally {
    clearTimeout(sessionTimer);
    clearTimeout(idleTimer);
    hooks.signal?.removeEventListener('abort', onAbort);
  }
}

function sink(collector: OutputCollector, stream: OutputStream): Writable {
  return new Writable({
    write(chunk: Buffer, _encoding, callback) {
      collector.write(stream, chunk);
      callback();
    },
  });
}

function streamDone(stream: NodeJS.ReadableStream): Promise<void> {
  return new Promise((resolve) => {
    finished(stream, () => resolve());
  });
}

async function runInContainer(
  spec: SessionSpec,
  hooks: SessionHooks,
  options: RunnerOptions,
  createOptions: Docker.ContainerCreateOptions,
): Promise<RunSummary & { containerId?: string }> {
  const docker = options.docker!;
  const graceMs = options.killGraceMs ?? DEFAULT_KILL_GRACE_MS;
  if (hooks.signal?.aborted) {
    hooks.onEvent('stop_requested', {});
    return { outcome: 'stopped', exitCode: null, spentUsd: 0, outputTruncated: false };
  }
  let container: Docker.Container;
  try {
    container = await docker.createContainer(createOptions);
  } catch (err) {
    const error = `container create failed: ${messageOf(err)}`;
    hooks.onEvent('session_error', { message: error });
    return { outcome: 'failed', exitCode: null, spentUsd: 0, outputTruncated: false, error };
  }
  const containerId = container.id;
  hooks.onEvent('container_created', { container_id: containerId, image: createOptions.Image });
  try {
    const summary = await supervise(spec, hooks, options, async (collector) => {
      const stream = (await container.attach({ stream: true, stdout: true, stderr: true })) as NodeJS.ReadableStream & {
        destroy?: () => void;
      };
      const drained = streamDone(stream);
      docker.modem.demuxStream(stream, sink(collector, 'stdout'), sink(collector, 'stderr'));
      try {
        await container.start();
      } catch (err) {
        stream.destroy?.();
        throw new Error(`container start failed: ${messageOf(err)}`);
      }
      // Only after start: a `next-exit` wait sent before start can reach the engine
      // after a short-lived container already exited, and then it never returns.
      // Once start has returned, `not-running` covers both running and exited.
      const waited: Promise<{ StatusCode?: number }> = container.wait({ condition: 'not-running' });
      waited.catch(() => undefined);
      let terminated = false;
      hooks.onEvent('container_started', { container_id: containerId });
      const exited = (async (): Promise<ExitInfo> => {
        const status = await waited;
        await Promise.race([drained, delay(DRAIN_MS)]);
        stream.destroy?.();
        let info = await container.inspect();
        // Docker records an OOM kill from an event of its own that can land after the
        // exit under load: a SIGKILL we did not send gets a moment for it to arrive.
        for (let i = 0; i < 5 && !terminated && info.State.ExitCode === 137 && info.State.OOMKilled !== true; i++) {
          await delay(100);
          info = await container.inspect();
        }
        const exit = {
          exitCode: typeof info.State.ExitCode === 'number' ? info.State.ExitCode : (status.StatusCode ?? null),
          oomKilled: info.State.OOMKilled === true,
        };
        hooks.onEvent('container_exited', { container_id: containerId, exit_code: exit.exitCode, oom_killed: exit.oomKilled });
        return exit;
      })();
      return {
        exited,
        terminate: async () => {
          terminated = true;
          await killWithGrace(container, waited, graceMs);
        },
      };
    });
    return { ...summary, containerId };
  } finally {
    try {
      await removeContainer(container);
      hooks.onEvent('container_removed', { container_id: containerId });
    } catch (err) {
      hooks.onEvent('session_error', { message: `container remove failed: ${messageOf(err)}`, container_id: containerId });
    }
  }
}

function runAsProcess(
  spec: SessionSpec,
  hooks: SessionHooks,
  options: RunnerOptions,
  workspace: string,
  argv: string[],
): Promise<RunSummary> {
  const graceMs = options.killGraceMs ?? DEFAULT_KILL_GRACE_MS;
  return supervise(spec, hooks, options, async (collector) => {
    const [program, ...args] = argv as [string, ...string[]];
    // detached: the child leads its own process group, so a stop reaches its children too.
    const child = spawn(program, args, {
      cwd: workspace,
      env: hostChildEnv(spec.config.sandbox.envAllowlist, spec.env),
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', (err) => reject(new Error(`provider could not be started: ${err.message}`)));
    });
    const pid = child.pid!;
    hooks.onEvent('process_started', { pid });
    const killGroup = (signal: NodeJS.Signals) => {
      try {
        process.kill(-pid, signal);
      } catch {
        // the group is already gone
      }
    };
    child.stdout!.on('data', (c: Buffer) => collector.write('stdout', c));
    child.stderr!.on('data', (c: Buffer) => collector.write('stderr', c));
    const drained = Promise.all([streamDone(child.stdout!), streamDone(child.stderr!)]);
    const exitedRaw = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
    });
    const exited = (async (): Promise<ExitInfo> => {
      const { code, signal } = await exitedRaw;
      // Whatever the provider left running in its group ends with it.
      killGroup('SIGKILL');
      await Promise.race([drained, delay(DRAIN_MS)]);
      child.stdout!.destroy();
      child.stderr!.destroy();
      hooks.onEvent('process_exited', { pid, exit_code: code, signal });
      return { exitCode: code, oomKilled: false };
    })();
    return {
      exited,
      terminate: async () => {
        killGroup('SIGTERM');
        if ((await Promise.race([exitedRaw, delay(graceMs)])) === 'timeout') killGroup('SIGKILL');
      },
    };
  });
}

/** Run one session to its end. See the module comment for the error model. */
export async function runSession(spec: SessionSpec, hooks: SessionHooks, options: RunnerOptions = {}): Promise<SessionResult> {
  if (spec.sandbox && !options.docker) throw new TypeError('runSession: a Docker client is required for sandboxed sessions');
  const failed = (err: unknown, extra: Partial<SessionResult> = {}): SessionResult => {
    const error = messageOf(err);
    hooks.onEvent('session_error', { message: error });
    return { outcome: 'failed', exitCode: null, spentUsd: 0, outputTruncated: false, error, ...extra };
  };

  let workspace: string;
  let argv: string[];
  let createOptions: Docker.ContainerCreateOptions | null = null;
  try {
    const paths = resolveSessionPaths(spec);
    workspace = paths.workspace;
    argv = providerArgv(spec.config.provider.command, paths.prd);
    if (spec.sandbox) {
      const ctx: PolicyContext = {
        sessionId: spec.sessionId,
        workerId: spec.workerId,
        workspace,
        prd: paths.prd,
        env: spec.env,
        home: options.home ?? os.homedir(),
        lokiHome: options.lokiHome,
        dockerSocket: options.dockerSocket,
      };
      createOptions = sandboxPolicyFromConfig(spec.config, ctx);
    }
  } catch (err) {
    return failed(err);
  }

  let branch: BranchInfo | undefined;
  if (spec.branchProtection !== false) {
    try {
      branch = await prepareSessionBranch(workspace, spec.sessionId, options.git);
    } catch (err) {
      return failed(err);
    }
    if (branch.detached) {
      hooks.onEvent('branch_detached_warning', { base_commit: branch.baseCommit });
    } else if (branch.isRepo) {
      hooks.onEvent('branch_created', {
        base_branch: branch.baseBranch,
        base_commit: branch.baseCommit,
        agent_branch: branch.agentBranch,
      });
    }
  }

  let summary: RunSummary & { containerId?: string };
  try {
    summary = createOptions
      ? await runInContainer(spec, hooks, options, createOptions)
      : await runAsProcess(spec, hooks, options, workspace, argv);
  } catch (err) {
    summary = { outcome: 'failed', exitCode: null, spentUsd: 0, outputTruncated: false, error: messageOf(err) };
    hooks.onEvent('session_error', { message: summary.error });
  }

  const result: SessionResult = { ...summary };
  if (branch) {
    let baseMoved: boolean | null = null;
    if (branch.isRepo && !branch.detached && branch.baseBranch) {
      try {
        baseMoved = await checkBaseMoved(workspace, branch.baseBranch, branch.baseCommit, options.git);
      } catch (err) {
        hooks.onEvent('session_error', { message: `branch check failed: ${messageOf(err)}` });
      }
      if (baseMoved) {
        hooks.onEvent('branch_protection_violation', {
          base_branch: branch.baseBranch,
          base_commit: branch.baseCommit,
          current_commit: await branchCommit(workspace, branch.baseBranch, options.git).catch(() => null),
          agent_branch: branch.agentBranch,
        });
      }
    }
    result.branch = { ...branch, baseMoved };
  }
  return result;
}

export { removeOrphans, stopAllForWorker } from './docker';

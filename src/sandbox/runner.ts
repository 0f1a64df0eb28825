/**
 * One agent session, start to finish: validate the PRD path, make the session's
 * private worktree (the user's checkout is never touched), run the provider in it
 * (in a locked-down container or, when the operator allowed it, as a host child
 * process), enforce the time, idle-output, budget, disk and output limits, commit
 * what the agent changed onto `loki/session-<id>`, and report one outcome.
 *
 * Both paths share `supervise`: the only difference is how a run is started and
 * terminated. Session-level problems (a refused mount, a PRD outside the workspace,
 * Docker or git failures) resolve as `failed` with `error`; the promise rejects only
 * on misuse (no Docker client for a sandboxed run).
 */
import { spawn } from 'node:child_process';
import {
  closeSync,
  constants as fsConstants,
  existsSync,
  fstatSync,
  lchownSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { finished, Writable } from 'node:stream';
import type Docker from 'dockerode';
import { isInside, readRegularFile, resolveInside } from '../util/paths';
import { redactString, secretRedactor } from '../util/redact';
import { createBudgetTracker } from './budget';
import type { SessionPolicy } from '../sessions/api';
import { FORBIDDEN_ENV, providerArgv } from './config';
import { DEFAULT_KILL_GRACE_MS, killWithGrace, removeContainer } from './docker';
import type { GitOptions } from './git';
import { createOutputCollector, DEFAULT_MAX_OUTPUT_BYTES, type OutputCollector, type OutputStream } from './output';
import { type EgressProxy, startEgressProxy } from './egress';
import { bindMount } from './mounts';
import { containerOptions, type PolicyContext, parseUser, sessionProcess } from './policy';
import { checkWorkspaceMount, type PoolSlot, type WarmPool } from './pool';
import { buildPrompt, MAX_PROMPT_PRD_BYTES, PROMPT_PLACEHOLDER } from './providers';
import {
  commitWorktree,
  createWorktree,
  releaseWorktree,
  removeWorktree,
  type Worktree,
  WorktreeError,
  type WorktreeResult,
  worktreeDiskUsage,
} from './worktree';

export type SessionOutcome = 'succeeded' | 'failed' | 'stopped' | 'timed_out' | 'budget_exceeded' | 'oom_killed' | 'disk_exceeded';

export interface SessionSpec {
  sessionId: string;
  workerId: string;
  /** Absolute path of the workspace on this host. */
  workspace: string;
  /** PRD path relative to the workspace; must be a regular file inside it. */
  prdRelative: string;
  /** The effective policy fixed when the session was created (`policy.sandbox` false: a host session). */
  policy: SessionPolicy;
  budgetUsd: number | null;
  /** The worker's environment: allowlisted names are copied from here, nothing else. */
  env: Readonly<Record<string, string | undefined>>;
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
  /** Where session worktrees are made (`$LOKI_HOME/worktrees`). */
  worktreeRoot: string;
  /** How often the worktree's free space is checked (default 500 ms). */
  diskPollMs?: number;
  /** The in-container egress forwarder (built by scripts/forwarder/build.sh); needed when a policy lists egress. */
  forwarderPath?: string;
  /** Name resolution for the egress proxy (tests); default: the host's resolver. */
  egressResolve?: (host: string) => Promise<string[]>;
  /** The worker's warm pool: a session whose policy matches runs in a pooled container. */
  pool?: WarmPool | null;
}

export interface SessionResult {
  outcome: SessionOutcome;
  exitCode: number | null;
  containerId?: string;
  /** The session ran in a container from the warm pool. */
  pooled?: boolean;
  /** What was committed (absent when the session failed before or at the commit). */
  result?: WorktreeResult;
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
/** How often a running session reports its spending (the `cost` event) at most. */
const COST_REPORT_MS = 250;

type StopReason = 'stopped' | 'timed_out' | 'budget_exceeded' | 'disk_exceeded';

/** Below this much free space in the worktree's file system the session ends `disk_exceeded`. */
export const DISK_FULL_BYTES = 1024 * 1024;

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
  if (spec.prdRelative.split('/').some((seg) => seg.startsWith('-'))) throw new Error(`PRD path segments must not start with "-": ${spec.prdRelative}`);
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
  worktree: Worktree,
  start: (collector: OutputCollector) => Promise<Execution>,
): Promise<RunSummary> {
  const settings = { timeoutSeconds: spec.policy.timeout_seconds, idleTimeoutSeconds: spec.policy.idle_timeout_seconds };
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
  const costReported = { usd: 0, at: 0 };
  const collector = createOutputCollector({
    maxBytes: options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT_BYTES,
    onLine: (stream, line) => hooks.onOutput(stream, line),
    onRawLine: (_stream, line) => {
      const crossed = budget.feed(line);
      for (const ev of crossed) {
        const data = { spent_usd: ev.spentUsd, limit_usd: ev.limitUsd };
        if (ev.type === 'warning') hooks.onEvent('budget_warning', data);
        else trip('budget_exceeded', 'budget_exceeded', data);
      }
      // Spending as it happens (not only at 80%, 100% and the end), at most every
      // COST_REPORT_MS; the final figure is reported when the session ends.
      const spent = budget.spentUsd;
      if (crossed.length === 0 && spent > costReported.usd && Date.now() - costReported.at >= COST_REPORT_MS) {
        costReported.usd = spent;
        costReported.at = Date.now();
        hooks.onEvent('cost', { spent_usd: spent, limit_usd: budget.limitUsd });
      }
    },
    onTruncated: (maxBytes) => hooks.onEvent('output_truncated', { max_bytes: maxBytes }),
    // The credentials the session was handed never reach its stored output.
    redact: secretRedactor(spec.policy.env_allowlist.map((n) => spec.env[n]).filter((v): v is string => typeof v === 'string')),
    onActivity: () => idleTimer?.refresh(),
  });

  const onAbort = () => trip('stopped', 'stop_requested', {});
  if (hooks.signal?.aborted) onAbort();
  if (reason) return { outcome: reason, exitCode: null, spentUsd: 0, outputTruncated: false };
  hooks.signal?.addEventListener('abort', onAbort, { once: true });

  // The disk limit is a file system of that size (the writes fail with ENOSPC); a
  // session that fills it is ended, and reported as such.
  const diskLimited = worktree.mounted && spec.policy.disk_bytes !== null;
  const diskFull = () => {
    if (!diskLimited) return false;
    try {
      return worktreeDiskUsage(worktree).availBytes < DISK_FULL_BYTES;
    } catch {
      return false;
    }
  };
  const diskTrip = () => trip('disk_exceeded', 'disk_exceeded', { limit_bytes: spec.policy.disk_bytes });
  const diskTimer = diskLimited
    ? setInterval(() => {
        if (diskFull()) diskTrip();
      }, options.diskPollMs ?? 500)
    : undefined;
  diskTimer?.unref();

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
    clearInterval(diskTimer);
    // An agent that hit the limit and exited at once (ENOSPC) between two checks.
    if (!reason && diskFull()) diskTrip();
    await terminating;
    collector.end();
    const outcome: SessionOutcome = reason ?? (exit.oomKilled ? 'oom_killed' : exit.exitCode === 0 ? 'succeeded' : 'failed');
    return { outcome, exitCode: exit.exitCode, spentUsd: budget.spentUsd, outputTruncated: collector.truncated };
  } finally {
    clearTimeout(sessionTimer);
    clearTimeout(idleTimer);
    clearInterval(diskTimer);
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

/** A container ready to run the session: how to begin it and how to get rid of it. */
interface PreparedContainer {
  container: Docker.Container;
  image: string;
  pooled: boolean;
  /** Start the agent (a fresh container: start it; a pooled one: send the launch message). */
  begin(): Promise<void>;
  /** Remove the container (and, for a pooled one, its slot). */
  remove(): Promise<void>;
}

/** A fresh container for the session, or null with the failure reported. */
async function createFresh(
  hooks: SessionHooks,
  options: RunnerOptions,
  createOptions: Docker.ContainerCreateOptions,
): Promise<PreparedContainer | { error: string }> {
  try {
    const container = await options.docker!.createContainer(createOptions);
    return {
      container,
      image: String(createOptions.Image),
      pooled: false,
      begin: () => container.start(),
      remove: () => removeContainer(container),
    };
  } catch (err) {
    const error = `container create failed: ${messageOf(err)}`;
    hooks.onEvent('session_error', { message: error });
    return { error };
  }
}

function pooledContainer(options: RunnerOptions, slot: PoolSlot, image: string, proc: { argv: string[]; env: string[] }): PreparedContainer {
  const pool = options.pool!;
  return {
    container: options.docker!.getContainer(slot.containerId),
    image,
    pooled: true,
    begin: () => pool.launch(slot, proc),
    remove: () => pool.release(slot),
  };
}

async function runInContainer(
  spec: SessionSpec,
  hooks: SessionHooks,
  options: RunnerOptions,
  worktree: Worktree,
  prepare: () => Promise<PreparedContainer | { error: string }>,
): Promise<RunSummary & { containerId?: string }> {
  const docker = options.docker!;
  const graceMs = options.killGraceMs ?? DEFAULT_KILL_GRACE_MS;
  if (hooks.signal?.aborted) {
    hooks.onEvent('stop_requested', {});
    return { outcome: 'stopped', exitCode: null, spentUsd: 0, outputTruncated: false };
  }
  const prepared = await prepare();
  if ('error' in prepared) return { outcome: 'failed', exitCode: null, spentUsd: 0, outputTruncated: false, error: prepared.error };
  const { container, pooled } = prepared;
  const containerId = container.id;
  const flag = pooled ? { pooled: true } : {};
  hooks.onEvent('container_created', { container_id: containerId, image: prepared.image, ...flag });
  try {
    const summary = await supervise(spec, hooks, options, worktree, async (collector) => {
      const stream = (await container.attach({ stream: true, stdout: true, stderr: true })) as NodeJS.ReadableStream & {
        destroy?: () => void;
      };
      const drained = streamDone(stream);
      docker.modem.demuxStream(stream, sink(collector, 'stdout'), sink(collector, 'stderr'));
      try {
        await prepared.begin();
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
      hooks.onEvent('container_started', { container_id: containerId, ...flag });
      const exited = (async (): Promise<ExitInfo> => {
        const status = await waited;
        await Promise.race([drained, delay(DRAIN_MS)]);
        stream.destroy?.();
        let info = await container.inspect();
        // Docker records an OOM kill from an event of its own that can land after the
        // exit under load: a SIGKILL we did not send gets a moment for it to arrive.
        // (Up to 3 s: half a second was not enough on a loaded CI host.)
        for (let i = 0; i < 30 && !terminated && info.State.ExitCode === 137 && info.State.OOMKilled !== true; i++) {
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
      await prepared.remove();
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
  worktree: Worktree,
  argv: string[],
): Promise<RunSummary> {
  const graceMs = options.killGraceMs ?? DEFAULT_KILL_GRACE_MS;
  const workspace = worktree.dir;
  return supervise(spec, hooks, options, worktree, async (collector) => {
    const [program, ...args] = argv as [string, ...string[]];
    // detached: the child leads its own process group, so a stop reaches its children too.
    const child = spawn(program, args, {
      cwd: workspace,
      env: hostChildEnv(spec.policy.env_allowlist, spec.env),
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

/**
 * Pin each extra mount: open the checked real path without following a final
 * symlink, make sure the kernel's own name for what was opened is still that path
 * (an intermediate component swapped for a symlink shows up here), and bind-mount
 * the opened directory itself (`/proc/self/fd/N`, not canonicalised) under the
 * session's root-only directory. Docker binds that, so nothing done to the original
 * path after the checks can redirect the container. Needs root (mount).
 */
async function pinMounts(mounts: SessionPolicy['mounts'], base: string): Promise<string[]> {
  const out: string[] = [];
  if (mounts.length === 0) return out;
  const dir = path.join(base, 'mounts');
  mkdirSync(dir, { mode: 0o700 });
  for (const [i, m] of mounts.entries()) {
    const fd = openSync(m.host, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
    try {
      const opened = readlinkSync(`/proc/self/fd/${fd}`);
      if (opened !== m.host) throw new Error(`mount ${m.host} changed since it was checked (it is now ${opened})`);
      const st = fstatSync(fd);
      const target = path.join(dir, String(i));
      if (st.isDirectory()) mkdirSync(target, { mode: 0o700 });
      else if (st.isFile()) writeFileSync(target, '', { mode: 0o600, flag: 'wx' });
      else throw new Error(`mount ${m.host} is neither a directory nor a regular file`);
      await new Promise<void>((resolve, reject) => {
        const child = spawn('mount', ['--no-canonicalize', '--bind', '/proc/self/fd/3', target], {
          stdio: ['ignore', 'ignore', 'pipe', fd],
          env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' },
        });
        let err = '';
        child.stderr!.on('data', (d) => {
          err += d;
        });
        child.once('error', reject);
        child.once('close', (code) => (code === 0 ? resolve() : reject(new Error(`mount ${m.host} could not be pinned: ${err.trim() || `exit ${code}`}`))));
      });
      const pinned = lstatSync(target);
      if (pinned.dev !== st.dev || pinned.ino !== st.ino) throw new Error(`mount ${m.host} could not be pinned (the bind shows another object)`);
      out.push(target);
    } finally {
      closeSync(fd);
    }
  }
  return out;
}

/**
 * The session's egress proxy on a Unix socket in its own directory: the policy's
 * entries are the allowlist; its IP entries (checked against the operator's
 * private destinations when the session was created) are the private addresses it
 * may reach. Every decision becomes an `egress` event (audited by the server).
 */
async function startSessionEgress(spec: SessionSpec, hooks: SessionHooks, options: RunnerOptions, socketDir: string): Promise<EgressProxy> {
  const forwarder = options.forwarderPath;
  if (!forwarder || !existsSync(forwarder)) {
    throw new Error(`the session's policy lists egress, but this worker has no egress forwarder${forwarder ? ` at ${forwarder}` : ''} (build it with scripts/forwarder/build.sh)`);
  }
  const ipEntry = /^(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-f:.]+\]):\d+$/;
  return startEgressProxy({
    socketPath: path.join(socketDir, 'egress.sock'),
    allow: spec.policy.egress,
    privateDestinations: spec.policy.egress.filter((e) => ipEntry.test(e)),
    resolve: options.egressResolve,
    onDecision: (d) => hooks.onEvent('egress', { ...d }),
  });
}

/** Setup and commit failures: the step, for the `session.setup_failed` audit entry. */
export type SetupStep = 'policy' | 'prepare' | 'disk' | 'ownership' | 'commit' | 'fetch' | 'remove' | 'branch';

/**
 * Put the PRD the user started the session with into the worktree at the same path
 * when the base commit lacks it or has another version (it is usually written just
 * before `loki start` and not committed yet). It then lands in the session's commit.
 */
function placePrd(workspace: string, prdRelative: string, worktree: Worktree, owner: { uid: number; gid: number } | null): void {
  const content = readRegularFile(resolveInside(workspace, prdRelative), MAX_PRD_BYTES, 'the PRD');
  const root = realpathSync(worktree.dir);
  // Real paths only: a symlink in the base commit must not lead the write (or the
  // chown) anywhere outside the worktree.
  let dir: string;
  try {
    dir = resolveInside(root, path.dirname(prdRelative) || '.', { mustExist: false });
  } catch {
    dir = '/';
  }
  if (!isInside(root, dir)) throw new Error(`PRD path escapes the worktree: ${prdRelative}`);
  const target = path.join(dir, path.basename(prdRelative));
  try {
    const st = lstatSync(target);
    if (st.isFile() && readFileSync(target).equals(content)) return;
  } catch {
    // not there yet
  }
  mkdirSync(dir, { recursive: true });
  if (realpathSync(dir) !== dir) throw new Error(`PRD path escapes the worktree: ${prdRelative}`);
  rmSync(target, { force: true });
  writeFileSync(target, content, { mode: 0o644, flag: 'wx' });
  if (owner) {
    for (let d = dir; isInside(root, d) && d !== root; d = path.dirname(d)) lchownSync(d, owner.uid, owner.gid);
    lchownSync(target, owner.uid, owner.gid);
  }
}

/** The largest PRD the worker copies into a worktree. */
const MAX_PRD_BYTES = 16 * 1024 * 1024;


/** Next to each worktree (outside the agent's mount): what the worker needs to recover it after a crash. */
const WORKTREE_META = 'worktree.json';
/** A session directory without metadata older than this is a creation that crashed. */
const ABANDONED_AFTER_MS = 10 * 60_000;

function saveWorktreeMeta(wt: Worktree, workerId: string, prd: string): void {
  writeFileSync(path.join(wt.base, WORKTREE_META), JSON.stringify({ workerId, prd, worktree: wt }), { mode: 0o600 });
}

export interface RecoveredWorktree {
  sessionId: string;
  /** What was committed from it (null: nothing could be, see `error`). */
  result: WorktreeResult | null;
  error: string | null;
  /** Still on disk (the commit failed: kept, nothing lost). */
  kept: boolean;
}

/**
 * After a crash: the worktrees this worker left behind (sessions it no longer runs,
 * `keep` says which it does). The agent's work is committed onto its session branch
 * (or into a patch) before the worktree is removed; one that cannot be committed is
 * kept where it is. Directories whose creation never finished are removed.
 */
export async function recoverWorktrees(root: string, workerId: string, keep: (sessionId: string) => boolean): Promise<RecoveredWorktree[]> {
  let names: string[];
  try {
    names = readdirSync(root);
  } catch {
    return [];
  }
  const out: RecoveredWorktree[] = [];
  for (const name of names) {
    if (keep(name) || !/^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/.test(name)) continue;
    const base = path.join(root, name);
    let meta: { workerId: string; prd: string; worktree: Worktree } | null = null;
    try {
      meta = JSON.parse(readFileSync(path.join(base, WORKTREE_META), 'utf8'));
    } catch {
      meta = null;
    }
    if (meta && meta.workerId !== workerId) continue;
    if (!meta) {
      let age = 0;
      try {
        age = Date.now() - statSync(base).mtimeMs;
      } catch {
        continue;
      }
      if (age < ABANDONED_AFTER_MS) continue;
      const stub: Worktree = {
        sessionId: name,
        kind: 'copy',
        base,
        dir: path.join(base, 'fs', 'work'),
        workTree: path.join(base, 'fs', 'work'),
        gitDir: existsSync(path.join(base, 'disk.img')) ? path.join(base, 'fs', 'git') : path.join(base, 'git'),
        fsRoot: path.join(base, 'fs'),
        mounted: true,
        userRepo: null,
        baseCommit: '',
        baseBranch: null,
        agentBranch: null,
      };
      await removeWorktree(stub).catch(() => undefined);
      out.push({ sessionId: name, result: null, error: 'creation never finished', kept: false });
      continue;
    }
    try {
      const result = await commitWorktree(meta.worktree, { sessionId: name, prd: meta.prd });
      if (result.kind === 'copy' && result.commit) {
        // No server will take it any more (the lease is gone): keep the patch beside the worktrees.
        const dir = path.join(path.dirname(root), 'results');
        mkdirSync(dir, { recursive: true, mode: 0o700 });
        if (result.patch === null) throw new Error('the patch is too large to keep; the worktree stays');
        writeFileSync(path.join(dir, `${name}.patch`), result.patch, { mode: 0o600 });
      }
      await removeWorktree(meta.worktree);
      out.push({ sessionId: name, result, error: null, kept: false });
    } catch (err) {
      await releaseWorktree(meta.worktree).catch(() => undefined);
      out.push({ sessionId: name, result: null, error: messageOf(err), kept: true });
    }
  }
  return out;
}

/** Run one session to its end. See the module comment for the error model. */
export async function runSession(spec: SessionSpec, hooks: SessionHooks, options: RunnerOptions): Promise<SessionResult> {
  const sandboxed = spec.policy.sandbox;
  if (sandboxed && !options.docker) throw new TypeError('runSession: a Docker client is required for sandboxed sessions');
  const setupFailed = (step: SetupStep, err: unknown, keptAt: string | null = null): SessionResult => {
    const error = messageOf(err);
    hooks.onEvent('setup_failed', { step, message: error, kept_at: keptAt });
    return { outcome: 'failed', exitCode: null, spentUsd: 0, outputTruncated: false, error };
  };

  let paths: { workspace: string; prd: string };
  try {
    paths = resolveSessionPaths(spec);
  } catch (err) {
    return setupFailed('prepare', err);
  }
  if (hooks.signal?.aborted) {
    hooks.onEvent('stop_requested', {});
    return { outcome: 'stopped', exitCode: null, spentUsd: 0, outputTruncated: false };
  }

  // The private worktree: owned by the container's uid (a sandboxed session) or by
  // the worker (a host session); on a file system of the session's disk limit.
  const owner = sandboxed ? parseUser(spec.policy.user) : null;
  let worktree: Worktree;
  try {
    worktree = await createWorktree({
      sessionId: spec.sessionId,
      workspace: paths.workspace,
      root: options.worktreeRoot,
      diskBytes: spec.policy.disk_bytes,
      owner,
      git: options.git,
    });
  } catch (err) {
    return setupFailed(err instanceof WorktreeError ? err.step : 'prepare', err);
  }
  try {
    saveWorktreeMeta(worktree, spec.workerId, paths.prd);
  } catch (err) {
    await removeWorktree(worktree).catch(() => undefined);
    return setupFailed('prepare', err);
  }
  hooks.onEvent('worktree_created', {
    kind: worktree.kind,
    base_branch: worktree.baseBranch,
    base_commit: worktree.baseCommit,
    agent_branch: worktree.agentBranch,
    disk_bytes: worktree.mounted ? spec.policy.disk_bytes : null,
  });

  let createOptions: Docker.ContainerCreateOptions | null = null;
  let argv: string[];
  let egress: EgressProxy | null = null;
  let slot: PoolSlot | null = null;
  let pooledProc: { argv: string[]; env: string[] } | null = null;
  try {
    placePrd(paths.workspace, paths.prd, worktree, owner);
    // A preset gets the PRD's content as its prompt (one whole argument, never a shell string).
    const prompt = spec.policy.command.includes(PROMPT_PLACEHOLDER)
      ? buildPrompt(paths.prd, readRegularFile(resolveInside(paths.workspace, paths.prd), MAX_PROMPT_PRD_BYTES, 'the PRD (as a prompt)').toString('utf8'))
      : undefined;
    argv = providerArgv(spec.policy.command, paths.prd, prompt);
    if (sandboxed) slot = options.pool?.take(spec.policy) ?? null;
    if (slot) {
      // A warm container: the worktree appears at its /workspace through the slot's mount.
      await bindMount(worktree.dir, slot.workDir);
      checkWorkspaceMount(slot, worktree.dir);
      if (spec.policy.egress.length > 0) egress = await startSessionEgress(spec, hooks, options, slot.egressDir);
      pooledProc = sessionProcess(spec.policy, {
        egress: egress ? { socketDir: slot.egressDir, forwarder: options.forwarderPath! } : undefined,
        prompt,
        sessionId: spec.sessionId,
        workerId: spec.workerId,
        workspace: slot.workDir,
        prd: paths.prd,
        env: spec.env,
        home: options.home ?? os.homedir(),
      });
    } else if (sandboxed) {
      const mountSources = await pinMounts(spec.policy.mounts, worktree.base);
      if (spec.policy.egress.length > 0) egress = await startSessionEgress(spec, hooks, options, path.join(worktree.base, 'egress'));
      const ctx: PolicyContext = {
        egress: egress ? { socketDir: path.dirname(egress.socketPath), forwarder: options.forwarderPath! } : undefined,
        prompt,
        mountSources,
        sessionId: spec.sessionId,
        workerId: spec.workerId,
        workspace: worktree.dir,
        prd: paths.prd,
        env: spec.env,
        home: options.home ?? os.homedir(),
        lokiHome: options.lokiHome,
        dockerSocket: options.dockerSocket,
      };
      createOptions = containerOptions(spec.policy, ctx);
    }
  } catch (err) {
    await egress?.close().catch(() => undefined);
    if (slot) await options.pool!.release(slot).catch(() => undefined);
    await removeWorktree(worktree).catch(() => undefined);
    return setupFailed('prepare', err);
  }

  let summary: RunSummary & { containerId?: string };
  try {
    if (slot && pooledProc) {
      const [s, proc] = [slot, pooledProc];
      summary = await runInContainer(spec, hooks, options, worktree, async () => pooledContainer(options, s, spec.policy.image, proc));
    } else if (createOptions) {
      const create = createOptions;
      summary = await runInContainer(spec, hooks, options, worktree, () => createFresh(hooks, options, create));
    } else summary = await runAsProcess(spec, hooks, options, worktree, argv);
  } catch (err) {
    summary = { outcome: 'failed', exitCode: null, spentUsd: 0, outputTruncated: false, error: messageOf(err) };
    hooks.onEvent('session_error', { message: summary.error });
  } finally {
    // A pooled container the agent was never launched in (the session was stopped while
    // its slot was being prepared) is removed too; after a run this does nothing.
    if (slot) await options.pool!.release(slot).catch((err) => hooks.onEvent('session_error', { message: `container remove failed: ${messageOf(err)}` }));
    // The container is gone: end the proxy (open tunnels are reported at close).
    await egress?.close().catch((err) => hooks.onEvent('session_error', { message: `egress proxy close failed: ${messageOf(err)}` }));
  }

  // Whatever the outcome, what the agent wrote is committed: nothing is lost. If it
  // cannot be, the session has failed and the worktree is kept where it is.
  let committed: WorktreeResult;
  try {
    committed = await commitWorktree(worktree, { sessionId: spec.sessionId, prd: paths.prd });
  } catch (err) {
    // Kept (nothing lost), but unmounted: kept worktrees must not pile up loop devices.
    await releaseWorktree(worktree).catch(() => undefined);
    const failed = setupFailed(err instanceof WorktreeError ? err.step : 'commit', `the agent's work could not be committed: ${messageOf(err)}`, worktree.base);
    return { ...failed, spentUsd: summary.spentUsd, outputTruncated: summary.outputTruncated, containerId: summary.containerId };
  }
  hooks.onEvent('session_result', { ...committed });
  try {
    await removeWorktree(worktree);
  } catch (err) {
    hooks.onEvent('session_error', { message: `worktree removal failed: ${messageOf(err)}` });
  }
  return { ...summary, result: committed, ...(slot ? { pooled: true } : {}) };
}

export { removeOrphans, stopAllForWorker } from './docker';

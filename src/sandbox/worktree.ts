/**
 * Isolated session worktrees: the agent never runs in the user's own checkout.
 *
 * Per session, under `root` (`$LOKI_HOME/worktrees`, 0700):
 *
 *   <root>/<id>/            0700, the worker's
 *     disk.img              sparse ext4 image (only with a disk limit), loop-mounted on fs/
 *     fs/                   0711, the worker's: mount point (or a plain directory without a disk limit)
 *       work/               W: the work tree the agent sees (/workspace or the host cwd)
 *       git/                G with a disk limit: 0700, on the session's own file system, so that
 *                           the objects count against the limit; never inside W, never mounted
 *     git/                  G without a disk limit
 *
 * Only W is given to the agent (bind mount or cwd); `fs/` and G stay the worker's.
 *
 * Every host-side git call runs as `git --git-dir=G --work-tree=W` (for the private
 * repository) with hooks, fsmonitor, auto gc/maintenance and every transport but
 * `file` disabled, and an environment built from scratch (no system or global
 * config, no system attributes, no HOME). The agent can write anything in W, so W
 * must never be able to make host-side git run code (or run forever):
 *  - G (config, hooks, index, info/attributes) is out of the agent's reach, so no
 *    filter, diff or merge driver, fsmonitor or hook can be configured; diffs also
 *    run with `--no-ext-diff --no-textconv`;
 *  - before every `git add`, every entry named `.git` (any case, any depth) and
 *    every socket, FIFO and device node is removed from W. An embedded repository
 *    whose HEAD matches a tracked gitlink otherwise makes `git add -A` spawn
 *    `git status` inside it, which runs that repository's own `filter.*.clean`
 *    (verified with git 2.39.5; `diff.ignoreSubmodules=all` does not prevent it).
 *    Nested repositories are therefore committed as plain files. Directories nested
 *    deeper than MAX_TREE_DEPTH (or whose paths get near PATH_MAX), and files whose
 *    apparent size is over the file system's size (sparse files: hashing them would
 *    take until the timeout), are removed too and reported in `skipped`;
 *  - commits are made with plumbing (`write-tree`, `commit-tree`, `update-ref`).
 * `commitWorktree` must only run once the agent has stopped (container removed,
 * process group killed): git and the sanitizing walk read W by path.
 *
 * The user's repository is only read (`rev-parse`, `symbolic-ref`, and `rev-list` |
 * `pack-objects` of the base commit and its tree, indexed from a pipe into G, which is
 * then shallow at the base) and, at the end, receives the session commit: its
 * objects through a pipe (`pack-objects` in G | `index-pack --stdin --strict` in the
 * user's repository), then `update-ref <ref> <commit> ""`, which refuses an existing
 * branch. HEAD, index, work tree and other refs are never touched. When the worker
 * is root and the repository belongs to another uid, every git command in it
 * runs as that uid, so its config never runs as root and no root-owned file appears in its
 * `.git`. That uid is the owner of the repository's top-level directory; a `.git`
 * that is a symbolic link, or a git directory (or common directory, for a linked
 * work tree) owned by anyone else, is refused: otherwise a user could point their
 * workspace at someone else's repository and have the worker read and write it.
 */
import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { redactString } from '../util/redact';
import { type GitOptions, sessionBranchName } from './git';
import { mountsUnder } from './mounts';

export type WorktreeStep = 'prepare' | 'disk' | 'ownership' | 'commit' | 'fetch' | 'remove';

export class WorktreeError extends Error {
  readonly code = 'worktree_failed';
  constructor(
    readonly step: WorktreeStep,
    message: string,
  ) {
    super(message);
    this.name = 'WorktreeError';
  }
}

export interface WorktreeOptions {
  sessionId: string;
  /** Real path of the user's workspace directory. */
  workspace: string;
  /** `$LOKI_HOME/worktrees`; created 0700 when missing. */
  root: string;
  /** Size of the session's own file system, or null for a plain directory. */
  diskBytes: number | null;
  /** Container uid:gid that must own the work tree, or null (host session: the worker keeps it). */
  owner: { uid: number; gid: number } | null;
  git?: GitOptions;
}

export interface Worktree {
  sessionId: string;
  kind: 'git' | 'copy';
  /** Session directory `<root>/<id>`. */
  base: string;
  /** What to mount at /workspace (or use as cwd): the work tree, or the workspace's subdirectory in it. */
  dir: string;
  workTree: string;
  /** The private git directory: `<fsRoot>/git` with a disk limit, `<base>/git` without. */
  gitDir: string;
  fsRoot: string;
  mounted: boolean;
  /** Top level (real path) of the user's repository; null for a copy. */
  userRepo: string | null;
  baseCommit: string;
  baseBranch: string | null;
  /** `loki/session-<id>` for a git workspace, null for a copy. */
  agentBranch: string | null;
}

export interface WorktreeResult {
  kind: 'git' | 'copy';
  commit: string | null;
  baseCommit: string;
  /** The branch created in the user's repository (null for a copy or when nothing changed). */
  branch: string | null;
  filesChanged: number;
  insertions: number;
  deletions: number;
  /** `git diff --stat` text, at most 64 KiB. */
  diffstat: string;
  /** Copy workspaces: `git diff --binary <base> <commit>` (at most 8 MiB); null for git workspaces. */
  patch: string | null;
  patchTooLarge: boolean;
  /**
   * What was deleted from the work tree instead of committed (at most MAX_SKIPPED
   * entries, `<path> (<reason>)`): directories nested too deep, files larger than
   * the file system.
   */
  skipped: string[];
}

export const MAX_DIFFSTAT_BYTES = 64 * 1024;
export const MAX_PATCH_BYTES = 8 * 1024 * 1024;
/** Deeper directories are removed from the work tree before a commit (and reported). */
export const MAX_TREE_DEPTH = 512;
export const MAX_SKIPPED = 100;

const DEFAULT_PATH = '/usr/local/bin:/usr/bin:/bin';
const SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const DEFAULT_TIMEOUT_MS = 300_000;
const MAX_OUTPUT_BYTES = 32 * 1024 * 1024;
const MAX_STDERR_BYTES = 64 * 1024;
const WORKER_NAME = 'Loki worker';
const WORKER_EMAIL = 'loki-worker@localhost';
const SESSION_REF = /^refs\/heads\/(loki\/session-[A-Za-z0-9][A-Za-z0-9_-]{0,127})$/;

/**
 * Passed as `-c` to every git call. Command-line config outranks repository config
 * and reaches child git processes through GIT_CONFIG_PARAMETERS.
 */
const HARDENING: readonly string[] = [
  'core.hooksPath=/dev/null',
  'core.fsmonitor=false',
  'core.untrackedCache=false',
  'core.sshCommand=false',
  'core.attributesFile=/dev/null',
  'core.excludesFile=/dev/null',
  'gc.auto=0',
  'maintenance.auto=false',
  'protocol.allow=never',
  'protocol.file.allow=always',
  'submodule.recurse=false',
  'fetch.recurseSubmodules=false',
  'fetch.writeCommitGraph=false',
  'commit.gpgSign=false',
];

/** Appended to the private repository's own config (defence in depth; the `-c` flags win anyway). */
const PRIVATE_CONFIG = `[core]
\tbare = false
\tfilemode = true
\tsymlinks = true
\tignorecase = false
\tautocrlf = false
\tsafecrlf = false
\tlogAllRefUpdates = false
\thooksPath = /dev/null
\tfsmonitor = false
\tuntrackedCache = false
[gc]
\tauto = 0
[maintenance]
\tauto = false
[protocol]
\tallow = never
[protocol "file"]
\tallow = always
[advice]
\tdetachedHead = false
`;

// ---------------------------------------------------------------------------
// Process helpers

interface Exec {
  code: number | null;
  stdout: Buffer;
  stderr: string;
  /** stdout went over `maxStdout` and the process was killed. */
  truncated: boolean;
  timedOut: boolean;
}

interface ExecOptions {
  env: Record<string, string>;
  cwd?: string;
  uid?: number;
  gid?: number;
  /** Written to stdin (a string) or piped into it (a stream); without it, stdin is /dev/null. */
  input?: string | Readable;
  timeoutMs: number;
  maxStdout?: number;
  /** Leave stdout to the caller (`Running.stdout`) instead of collecting it. */
  streamStdout?: boolean;
}

interface Running {
  done: Promise<Exec>;
  /** With `streamStdout`: the child's stdout. */
  stdout: Readable | null;
  kill: () => void;
}

function start(file: string, args: string[], o: ExecOptions): Running {
  const opts: SpawnOptions = { cwd: o.cwd ?? '/', env: o.env, stdio: [o.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] };
  if (o.uid !== undefined) opts.uid = o.uid;
  if (o.gid !== undefined) opts.gid = o.gid;
  let child: ChildProcess;
  try {
    child = spawn(file, args, opts);
  } catch (err) {
    return { done: Promise.reject(new Error(`${file} could not be started: ${messageOf(err)}`)), stdout: null, kill: () => undefined };
  }
  const done = new Promise<Exec>((resolve, reject) => {
    const max = o.maxStdout ?? MAX_OUTPUT_BYTES;
    const chunks: Buffer[] = [];
    let size = 0;
    let truncated = false;
    let timedOut = false;
    let stderr = '';
    if (!o.streamStdout) {
      child.stdout!.on('data', (d: Buffer) => {
        if (truncated) return;
        if (size + d.length > max) {
          chunks.push(d.subarray(0, max - size));
          size = max;
          truncated = true;
          child.kill('SIGKILL');
          return;
        }
        chunks.push(d);
        size += d.length;
      });
    }
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      if (stderr.length < MAX_STDERR_BYTES) stderr += d;
    });
    if (typeof o.input === 'string') {
      child.stdin!.on('error', () => undefined);
      child.stdin!.end(o.input);
    } else if (o.input) {
      child.stdin!.on('error', () => undefined);
      o.input.pipe(child.stdin!);
    }
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, o.timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`${file} could not be started: ${err.message}`));
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(chunks), stderr, truncated, timedOut });
    });
  });
  return {
    done,
    stdout: o.streamStdout ? child.stdout : null,
    kill: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
}

const exec = (file: string, args: string[], o: ExecOptions): Promise<Exec> => start(file, args, o).done;

function failureText(r: Exec): string {
  if (r.timedOut) return 'timed out';
  const lines = r.stderr
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  const line = lines.find((l) => /^(fatal|error):/.test(l)) ?? lines[0];
  return redactString(line ?? `exit code ${r.code}`);
}

const messageOf = (err: unknown) => redactString(err instanceof Error ? err.message : String(err));

function asWorktreeError(err: unknown, step: WorktreeStep): WorktreeError {
  if (err instanceof WorktreeError) return err;
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return new WorktreeError(code === 'ENOSPC' ? 'disk' : step, messageOf(err));
}

async function system(file: string, args: string[], step: WorktreeStep, timeoutMs: number): Promise<string> {
  const r = await exec(file, args, { env: { PATH: SYSTEM_PATH, LC_ALL: 'C' }, timeoutMs }).catch((err) => {
    throw new WorktreeError(step, messageOf(err));
  });
  if (r.code !== 0) throw new WorktreeError(step, `${file} failed: ${failureText(r)}`);
  return r.stdout.toString('utf8');
}

const myUid = (): number => process.getuid?.() ?? -1;

// ---------------------------------------------------------------------------
// Git contexts

interface GitCtx {
  /** Global options before the subcommand (`--git-dir`, `-c` …). */
  pre: string[];
  cwd: string;
  env: Record<string, string>;
  timeoutMs: number;
  /** Run as this uid/gid (the owner of the user's repository). */
  as: { uid: number; gid: number } | null;
}

function gitEnv(opts: GitOptions): Record<string, string> {
  // No HOME: no user config, attributes or excludes; GIT_CONFIG_GLOBAL covers the rest.
  return {
    PATH: opts.path ?? DEFAULT_PATH,
    LC_ALL: 'C',
    GIT_TERMINAL_PROMPT: '0',
    GIT_CONFIG_NOSYSTEM: '1',
    GIT_CONFIG_GLOBAL: '/dev/null',
    GIT_ATTR_NOSYSTEM: '1',
    GIT_NO_REPLACE_OBJECTS: '1',
    GIT_OPTIONAL_LOCKS: '0',
    GIT_AUTHOR_NAME: WORKER_NAME,
    GIT_AUTHOR_EMAIL: WORKER_EMAIL,
    GIT_COMMITTER_NAME: WORKER_NAME,
    GIT_COMMITTER_EMAIL: WORKER_EMAIL,
  };
}

const hardening = (extra: readonly string[] = []) => [...HARDENING, ...extra].flatMap((c) => ['-c', c]);

interface GitCall {
  input?: string;
  maxStdout?: number;
  env?: Record<string, string>;
}

async function gitRun(ctx: GitCtx, args: string[], step: WorktreeStep, call: GitCall = {}): Promise<Exec> {
  try {
    return await exec('git', [...ctx.pre, ...args], {
      cwd: ctx.cwd,
      env: call.env ? { ...ctx.env, ...call.env } : ctx.env,
      timeoutMs: ctx.timeoutMs,
      uid: ctx.as?.uid,
      gid: ctx.as?.gid,
      input: call.input,
      maxStdout: call.maxStdout,
    });
  } catch (err) {
    throw new WorktreeError(step, messageOf(err));
  }
}

/** The subcommand in an argument list (skipping `-c key=value` and other global options). */
function subcommand(args: string[]): string {
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '-c') i++;
    else if (!a.startsWith('-')) return a;
  }
  return args[0] ?? '';
}

/** Run git; any failure (including a refusal for dubious ownership) throws. Output is trimmed. */
async function gitOut(ctx: GitCtx, args: string[], step: WorktreeStep, call: GitCall = {}): Promise<string> {
  const r = await gitRun(ctx, args, step, call);
  if (r.code !== 0 || r.truncated) throw new WorktreeError(stepOf(r, step), `git ${subcommand(args)} failed: ${r.truncated ? 'output too large' : failureText(r)}`);
  return r.stdout.toString('utf8').trim();
}

/** Like gitOut, but exit code 1 with nothing on stderr (`--quiet` "not found") gives null. */
async function gitMaybe(ctx: GitCtx, args: string[], step: WorktreeStep): Promise<string | null> {
  const r = await gitRun(ctx, args, step);
  if (r.code === 1 && !r.stderr.trim()) return null;
  if (r.code !== 0) throw new WorktreeError(stepOf(r, step), `git ${subcommand(args)} failed: ${failureText(r)}`);
  return r.stdout.toString('utf8').trim();
}

/** A git failure for want of space (the session's file system is full: G is on it) is a `disk` failure. */
const stepOf = (r: Exec, step: WorktreeStep): WorktreeStep => (/No space left on device/.test(r.stderr) ? 'disk' : step);

/**
 * `from-git … | to-git …` (each with its own context: uid, cwd, timeout), nothing on
 * disk in between. Throws the first real failure: when the consumer fails, the
 * producer is killed (it would block on a full pipe) and the consumer's error reported.
 */
async function gitPipe(from: GitCtx, fromArgs: string[], input: string, to: GitCtx, toArgs: string[], step: WorktreeStep): Promise<void> {
  const spawnOpts = (ctx: GitCtx) => ({ cwd: ctx.cwd, env: ctx.env, timeoutMs: ctx.timeoutMs, uid: ctx.as?.uid, gid: ctx.as?.gid });
  const producer = start('git', [...from.pre, ...fromArgs], { ...spawnOpts(from), input, streamStdout: true });
  if (!producer.stdout) {
    await producer.done.catch((err) => {
      throw new WorktreeError(step, messageOf(err));
    });
    throw new WorktreeError(step, `git ${subcommand(fromArgs)} could not be started`);
  }
  const consumer = start('git', [...to.pre, ...toArgs], { ...spawnOpts(to), input: producer.stdout });
  let killed = false;
  const stop = () => {
    killed = true;
    producer.kill();
  };
  const [p, c] = await Promise.allSettled([
    producer.done,
    consumer.done.then(
      (r) => {
        if (r.code !== 0) stop();
        return r;
      },
      (err: unknown) => {
        stop();
        throw err;
      },
    ),
  ]);
  const failed = (args: string[], r: PromiseSettledResult<Exec>): string | null => {
    if (r.status === 'rejected') return messageOf(r.reason);
    return r.value.code === 0 ? null : `git ${subcommand(args)} failed: ${failureText(r.value)}`;
  };
  const producerError = failed(fromArgs, p);
  const consumerError = failed(toArgs, c);
  const error = (killed ? null : producerError) ?? consumerError ?? producerError;
  if (error) throw new WorktreeError(/No space left on device/.test(error) ? 'disk' : step, error);
}

function privateCtx(gitDir: string, workTree: string, cwd: string, opts: GitOptions): GitCtx {
  return {
    pre: [`--git-dir=${gitDir}`, `--work-tree=${workTree}`, ...hardening()],
    cwd,
    env: gitEnv(opts),
    timeoutMs: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    as: null,
  };
}

function privateCtxOf(wt: Worktree, opts: GitOptions): GitCtx {
  return privateCtx(wt.gitDir, wt.workTree, wt.base, opts);
}

// ---------------------------------------------------------------------------
// The user's repository

interface UserRepo {
  /** Work tree top level (real path); null for a bare repository. */
  top: string | null;
  gitDir: string;
  commonDir: string;
  ctx: GitCtx;
}

/** The uid to run as in a repository owned by `uid`: only a root worker can (and must) switch. */
function runAsFor(st: fs.Stats): { uid: number; gid: number } | null {
  return myUid() === 0 && st.uid !== 0 ? { uid: st.uid, gid: st.gid } : null;
}

function userCtx(cwd: string, safeDirs: string[], as: { uid: number; gid: number } | null, opts: GitOptions): GitCtx {
  const unique = [...new Set(safeDirs)];
  return {
    pre: hardening(unique.map((d) => `safe.directory=${d}`)),
    cwd,
    env: gitEnv(opts),
    timeoutMs: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    as,
  };
}

function lstatOrNull(p: string): fs.Stats | null {
  try {
    return fs.lstatSync(p);
  } catch {
    return null;
  }
}

function looksLikeGitDir(d: string): boolean {
  return !!(lstatOrNull(path.join(d, 'HEAD'))?.isFile() && lstatOrNull(path.join(d, 'objects'))?.isDirectory());
}

/**
 * Find the repository `start` belongs to, without trusting git's discovery to
 * succeed quietly: a `.git` entry here or above (or, with `allowBare`, `start`
 * itself being a git directory) means a repository, and from then on every git
 * failure throws. Returns null when there is no `.git` entry at all.
 *
 * Whose repository it is comes from `lstat` of its top-level directory (of the git
 * directory itself for a bare one), and git runs as that uid. The repository is
 * refused unless the `.git` entry is a plain directory or file (not a symbolic
 * link), git's own top level is that same directory, and the `.git` entry, the git
 * directory and the common directory (a gitfile may point anywhere) all belong to
 * that uid: a user must not be able to point a workspace they own at a repository
 * of someone else (root's included) and have the worker read it and write a branch
 * into it with that owner's rights.
 */
async function openUserRepo(start: string, opts: GitOptions, step: WorktreeStep, allowBare = false): Promise<UserRepo | null> {
  const real = fs.realpathSync(start);
  let candidate: string | null = null;
  for (let d = real; ; d = path.dirname(d)) {
    if (lstatOrNull(path.join(d, '.git'))) {
      candidate = d;
      break;
    }
    if (path.dirname(d) === d) break;
  }
  let ownerStat: fs.Stats;
  let safeDirs: string[];
  if (candidate) {
    checkDotGit(candidate, step);
    ownerStat = fs.lstatSync(candidate);
    safeDirs = [candidate, path.join(candidate, '.git')];
  } else if (allowBare && looksLikeGitDir(real)) {
    ownerStat = fs.lstatSync(real);
    safeDirs = [real];
  } else {
    return null;
  }
  const uid = ownerStat.uid;
  let ctx = userCtx(real, safeDirs, runAsFor(ownerStat), opts);
  const info = (
    await gitOut(
      ctx,
      ['rev-parse', '--is-bare-repository', '--is-inside-work-tree', '--path-format=absolute', '--absolute-git-dir', '--git-common-dir'],
      step,
    )
  ).split('\n');
  const [bare, inside, gitDir, commonDir] = info;
  if (!gitDir || !commonDir) throw new WorktreeError(step, `unexpected git rev-parse output in ${real}`);
  let top: string | null = null;
  if (inside === 'true') {
    top = fs.realpathSync(await gitOut(ctx, ['rev-parse', '--show-toplevel'], step));
    // core.worktree, or a `.git` git skipped: the top level must be where we looked.
    if (top !== candidate) {
      throw new WorktreeError(step, `refusing ${real}: git places its top level at ${top}, not at ${candidate ?? 'a directory with a .git entry'}`);
    }
    checkDotGit(top, step);
  } else if (bare !== 'true' || !allowBare) {
    throw new WorktreeError(step, `${real} is inside a git directory or a bare repository, not a work tree`);
  }
  const commonReal = fs.realpathSync(commonDir);
  const gitDirReal = fs.realpathSync(gitDir);
  const owned: [string, string][] = [
    ['git directory', gitDirReal],
    ['common git directory', commonReal],
  ];
  if (top) owned.unshift(['top-level directory', top], ['.git entry', path.join(top, '.git')]);
  let commonStat: fs.Stats | null = null;
  for (const [what, p] of owned) {
    const st = fs.lstatSync(p);
    if (st.uid !== uid) {
      throw new WorktreeError(
        step,
        `refusing the repository at ${top ?? gitDirReal}: its ${what} ${p} is owned by uid ${st.uid}, not by uid ${uid} (the owner of ${candidate ?? real})`,
      );
    }
    if (p === commonReal) commonStat = st;
  }
  ctx = userCtx(top ?? gitDirReal, [...safeDirs, ...(top ? [top] : []), gitDirReal, commonReal], runAsFor(commonStat!), opts);
  return { top, gitDir: gitDirReal, commonDir: commonReal, ctx };
}

/** `<dir>/.git` must be a directory or a gitfile, never a symbolic link (which git would follow). */
function checkDotGit(dir: string, step: WorktreeStep): void {
  const p = path.join(dir, '.git');
  const st = fs.lstatSync(p);
  if (st.isSymbolicLink()) throw new WorktreeError(step, `refusing the repository at ${dir}: ${p} is a symbolic link`);
  if (!st.isDirectory() && !st.isFile()) throw new WorktreeError(step, `refusing the repository at ${dir}: ${p} is not a directory or a file`);
}

// ---------------------------------------------------------------------------
// File-system helpers

// Paths are Buffers: a name that is not valid UTF-8 must not turn into another name.

type Kind = 'dir' | 'file' | 'link' | 'special';
/** `depth`: 1 for an entry of `top`. */
type Visit = (full: Buffer, name: Buffer, kind: Kind, depth: number) => 'skip' | 'descend' | 'removed';

const SLASH = Buffer.from('/');
const joinB = (dir: Buffer, name: Buffer) => Buffer.concat([dir, SLASH, name]);
const PATH_MAX = 4096;
const NAME_MAX = 255;
/** Longer directories are moved up before being emptied (see removeDeep). */
const FLATTEN_AT = 2048;

function kindOf(full: Buffer, ent: fs.Dirent<Buffer>): Kind {
  if (ent.isDirectory()) return 'dir';
  if (ent.isFile()) return 'file';
  if (ent.isSymbolicLink()) return 'link';
  if (ent.isFIFO() || ent.isSocket() || ent.isCharacterDevice() || ent.isBlockDevice()) return 'special';
  const st = fs.lstatSync(full); // DT_UNKNOWN
  if (st.isDirectory()) return 'dir';
  if (st.isFile()) return 'file';
  if (st.isSymbolicLink()) return 'link';
  return 'special';
}

const readDir = (dir: Buffer) => fs.readdirSync(dir, { withFileTypes: true, encoding: 'buffer' });

/** Iterative walk that never follows symbolic links. */
function walk(top: string, visit: Visit): void {
  const stack: [Buffer, number][] = [[Buffer.from(top), 1]];
  while (stack.length > 0) {
    const [dir, depth] = stack.pop()!;
    for (const ent of readDir(dir)) {
      const full = joinB(dir, ent.name);
      if (visit(full, ent.name, kindOf(full, ent), depth) === 'descend') stack.push([full, depth + 1]);
    }
  }
}

/** Open a directory up to its owner (a non-root worker cannot otherwise list or empty a mode-000 one). */
function openUp(dir: Buffer): void {
  if (myUid() === 0) return;
  try {
    const st = fs.lstatSync(dir);
    if (st.isDirectory() && (st.mode & 0o700) !== 0o700) fs.chmodSync(dir, (st.mode & 0o7777) | 0o700);
  } catch {
    // gone or not ours: the removal reports it
  }
}

/**
 * Remove the directory `top` and everything in it, however deep: a subdirectory
 * whose path gets long is first renamed to a fresh name in `scratch` (a short
 * directory on the same file system), so no path ever nears PATH_MAX and nothing
 * recurses (`fs.rmSync` overflows its stack or fails with ENAMETOOLONG on a tree
 * a few thousand levels deep). Never follows symbolic links.
 */
function removeDeep(top: Buffer, scratch: Buffer): void {
  const stack: { dir: Buffer; listed: boolean }[] = [{ dir: top, listed: false }];
  while (stack.length > 0) {
    const item = stack[stack.length - 1]!;
    if (item.listed) {
      stack.pop();
      fs.rmdirSync(item.dir);
      continue;
    }
    item.listed = true;
    openUp(item.dir);
    for (const ent of readDir(item.dir)) {
      let full = joinB(item.dir, ent.name);
      if (kindOf(full, ent) !== 'dir') {
        fs.unlinkSync(full);
        continue;
      }
      if (full.length > FLATTEN_AT) {
        const moved = joinB(scratch, Buffer.from(`.loki-rm-${randomBytes(9).toString('hex')}`));
        fs.renameSync(full, moved);
        full = moved;
      }
      stack.push({ dir: full, listed: false });
    }
  }
}

/** Remove a file system entry of the work tree (a directory with everything in it). */
function removeEntry(full: Buffer, kind: Kind, scratch: Buffer): void {
  if (kind === 'dir') removeDeep(full, scratch);
  else fs.unlinkSync(full);
}

/** How a skipped path is reported: relative to the work tree, shortened. */
function skippedEntry(top: Buffer, full: Buffer, reason: string): string {
  let rel = full.subarray(top.length + 1).toString('utf8');
  if (rel.length > 240) rel = `${rel.slice(0, 240)}…`;
  return `${rel} (${reason})`;
}

/** At most MAX_SKIPPED entries; past that, the last one counts what is not listed. */
class Skipped {
  private readonly list: string[] = [];
  private total = 0;
  add(entry: string): void {
    this.total++;
    if (this.list.length < MAX_SKIPPED) this.list.push(entry);
  }
  result(): string[] {
    if (this.total <= MAX_SKIPPED) return [...this.list];
    return [...this.list.slice(0, MAX_SKIPPED - 1), `… and ${this.total - MAX_SKIPPED + 1} more`];
  }
}

/**
 * Make W safe for host-side `git add`, in place:
 *  - remove every `.git` entry (any case, any depth: embedded repositories make git
 *    run their config) and every socket, FIFO or device node (git cannot store them;
 *    reading a FIFO would block);
 *  - remove (and report) every directory deeper than MAX_TREE_DEPTH, or whose
 *    entries' paths could reach PATH_MAX (neither git nor a path-based walk copes);
 *  - remove (and report) every regular file whose apparent size is over the size
 *    of W's file system, or that would take the sum of the sizes over it: only
 *    sparse files (and hard links) get there, and git would read every byte.
 * `scratch`: a short directory on W's file system, outside W (see removeDeep).
 */
function sanitizeWorkTree(workTree: string, scratch: string): string[] {
  const top = Buffer.from(workTree);
  const scratchB = Buffer.from(scratch);
  const fsBytes = (() => {
    const s = fs.statfsSync(workTree);
    return s.blocks * s.bsize;
  })();
  let budget = fsBytes;
  const skipped = new Skipped();
  walk(workTree, (full, name, kind, depth) => {
    if (name.length === 4 && name.toString('latin1').toLowerCase() === '.git') {
      removeEntry(full, kind, scratchB);
      return 'removed';
    }
    if (kind === 'special') {
      fs.unlinkSync(full);
      return 'removed';
    }
    if (kind === 'dir') {
      if (depth > MAX_TREE_DEPTH || full.length + 1 + NAME_MAX >= PATH_MAX) {
        removeDeep(full, scratchB);
        const why = depth > MAX_TREE_DEPTH ? `directory nested more than ${MAX_TREE_DEPTH} levels deep` : 'directory path too long';
        skipped.add(skippedEntry(top, full, `${why}, removed with its contents`));
        return 'removed';
      }
      return 'descend';
    }
    if (kind === 'file') {
      const size = fs.lstatSync(full).size;
      if (size > budget) {
        fs.unlinkSync(full);
        const why = size > fsBytes ? `${size} bytes, larger than the file system (${fsBytes} bytes)` : `${size} bytes, the files add up to more than the file system`;
        skipped.add(skippedEntry(top, full, `${why}, removed`));
        return 'removed';
      }
      budget -= size;
    }
    return 'skip';
  });
  return skipped.result();
}

function chownTree(top: string, uid: number, gid: number): void {
  fs.lchownSync(top, uid, gid);
  walk(top, (full, _name, kind) => {
    fs.lchownSync(full, uid, gid);
    return kind === 'dir' ? 'descend' : 'skip';
  });
}

function verifyOwnedAndWritable(dir: string, owner: { uid: number; gid: number }): void {
  const st = fs.lstatSync(dir);
  if (!st.isDirectory()) throw new WorktreeError('ownership', `${dir} is not a directory`);
  if (st.uid !== owner.uid) throw new WorktreeError('ownership', `${dir} is owned by uid ${st.uid}, not ${owner.uid}`);
  if ((st.mode & 0o300) !== 0o300) {
    throw new WorktreeError('ownership', `${dir} is not writable by its owner (mode ${(st.mode & 0o7777).toString(8)})`);
  }
}

function ensureRoot(root: string): string {
  if (!path.isAbsolute(root)) throw new WorktreeError('prepare', `worktree root must be an absolute path: ${root}`);
  fs.mkdirSync(root, { recursive: true, mode: 0o700 });
  const real = fs.realpathSync(root);
  const st = fs.statSync(real);
  if (!st.isDirectory()) throw new WorktreeError('prepare', `worktree root is not a directory: ${real}`);
  if (st.uid !== myUid()) throw new WorktreeError('prepare', `worktree root ${real} is owned by uid ${st.uid}, not the worker`);
  if ((st.mode & 0o022) !== 0) throw new WorktreeError('prepare', `worktree root ${real} is writable by others`);
  return real;
}

/** Remove a tree even if it holds read-only or mode-000 directories, or is thousands of levels deep. */
function removeTree(dir: string): void {
  if (!lstatOrNull(dir)) return;
  try {
    fs.rmSync(dir, { recursive: true, force: true, maxRetries: 2 });
    return;
  } catch {
    // EACCES (a non-root worker and a mode-000 directory), ENAMETOOLONG, a stack overflow …
  }
  const top = Buffer.from(dir);
  removeDeep(top, top);
}

// ---------------------------------------------------------------------------
// Create

function validateOptions(o: WorktreeOptions): void {
  if (o.diskBytes !== null && (!Number.isSafeInteger(o.diskBytes) || o.diskBytes <= 0)) {
    throw new WorktreeError('disk', `diskBytes must be a positive integer or null, got ${o.diskBytes}`);
  }
  if (o.owner && !(Number.isSafeInteger(o.owner.uid) && o.owner.uid >= 0 && Number.isSafeInteger(o.owner.gid) && o.owner.gid >= 0)) {
    throw new WorktreeError('ownership', 'owner uid and gid must be non-negative integers');
  }
  if (!path.isAbsolute(o.workspace)) throw new WorktreeError('prepare', `workspace must be an absolute path: ${o.workspace}`);
}

async function makeDisk(wt: Worktree, bytes: number, timeoutMs: number): Promise<void> {
  if (myUid() !== 0) throw new WorktreeError('disk', 'a disk limit needs a root worker (loop mount)');
  const img = path.join(wt.base, 'disk.img');
  const fd = fs.openSync(img, 'wx', 0o600);
  try {
    // Twice the limit, half of it reserved for root: the agent (never root, no
    // CAP_SYS_RESOURCE) gets ENOSPC at the limit, and the worker's git (root) still
    // has room to commit what the agent wrote. Sparse: only what is written is used.
    fs.ftruncateSync(fd, bytes * 2);
  } finally {
    fs.closeSync(fd);
  }
  // The file system's root stays the worker's: it holds G next to W.
  await system('mkfs.ext4', ['-q', '-F', '-m', '50', '-O', '^has_journal', '-E', 'lazy_itable_init=1,root_owner=0:0', img], 'disk', timeoutMs);
  fs.mkdirSync(wt.fsRoot, { mode: 0o700 });
  await mountDisk(img, wt.fsRoot, timeoutMs);
  wt.mounted = true;
}

function mountDisk(img: string, at: string, timeoutMs: number): Promise<string> {
  return system('mount', ['-t', 'ext4', '-o', 'loop,nosuid,nodev', img, at], 'disk', timeoutMs);
}

async function initPrivateRepo(ctx: GitCtx, gitDir: string, objectFormat: string, step: WorktreeStep): Promise<void> {
  // `--template=` (empty): no sample hooks, no info/exclude.
  await gitOut({ ...ctx, pre: hardening() }, ['init', '-q', '--bare', '--template=', `--object-format=${objectFormat}`, gitDir], step);
  fs.chmodSync(gitDir, 0o700);
  fs.appendFileSync(path.join(gitDir, 'config'), PRIVATE_CONFIG);
}

/** Stage everything in W (after sanitizing it) and return the tree, and what was left out. */
async function snapshotTree(ctx: GitCtx, wt: Worktree, step: WorktreeStep): Promise<{ tree: string; skipped: string[] }> {
  const skipped = sanitizeWorkTree(wt.workTree, wt.fsRoot);
  await gitOut(ctx, ['-c', 'core.autocrlf=false', '-c', 'core.safecrlf=false', 'add', '-A'], step);
  return { tree: await gitOut(ctx, ['write-tree'], step), skipped };
}

/** The workspace's place in W, refusing symlinks on the way (Docker would follow them on the host). */
function workspaceDir(workTree: string, rel: string): string {
  let cur = workTree;
  for (const part of rel.split(path.sep).filter(Boolean)) {
    cur = path.join(cur, part);
    const st = lstatOrNull(cur);
    if (!st) fs.mkdirSync(cur, { mode: 0o755 });
    else if (!st.isDirectory()) throw new WorktreeError('prepare', `${rel} is not a directory in the base commit`);
  }
  return cur;
}

async function populateFromRepo(wt: Worktree, repo: UserRepo, workspace: string, opts: GitOptions): Promise<void> {
  const base = await gitMaybe(repo.ctx, ['rev-parse', '--verify', '--quiet', 'HEAD^{commit}'], 'prepare');
  if (!base) throw new WorktreeError('prepare', `the repository at ${repo.top} has no commits yet; commit something first`);
  const head = await gitMaybe(repo.ctx, ['symbolic-ref', '--quiet', 'HEAD'], 'prepare');
  const format = await gitOut(repo.ctx, ['rev-parse', '--show-object-format'], 'prepare');
  wt.kind = 'git';
  wt.userRepo = repo.top;
  wt.baseCommit = base;
  wt.baseBranch = head?.startsWith('refs/heads/') ? head.slice('refs/heads/'.length) : null;
  wt.agentBranch = sessionBranchName(wt.sessionId);

  const ctx = privateCtxOf(wt, opts);
  await initPrivateRepo(ctx, wt.gitDir, format, 'prepare');
  // The base commit and its tree only (like a depth-1 fetch), the same way the
  // result goes back: the repository's owner lists and packs the objects, the
  // private repository indexes the pack from a pipe. No transport, no shell.
  const objects = await gitOut(repo.ctx, ['rev-list', '--objects', '--no-walk', base], 'prepare');
  await gitPipe(repo.ctx, ['pack-objects', '--stdout', '-q'], `${objects}\n`, ctx, ['index-pack', '--stdin', '--fsck-objects'], 'prepare');
  fs.writeFileSync(path.join(wt.gitDir, 'shallow'), `${base}\n`, { mode: 0o600 });
  await gitOut(ctx, ['checkout', '-q', '-f', '--no-recurse-submodules', base], 'prepare');

  const rel = path.relative(repo.top!, workspace);
  if (rel.startsWith('..') || path.isAbsolute(rel)) throw new WorktreeError('prepare', 'workspace is outside its repository');
  wt.dir = workspaceDir(wt.workTree, rel);
}

async function populateFromCopy(wt: Worktree, workspace: string, opts: GitOptions): Promise<void> {
  wt.kind = 'copy';
  fs.cpSync(workspace, wt.workTree, {
    recursive: true,
    verbatimSymlinks: true,
    dereference: false,
    errorOnExist: false,
    force: true,
    preserveTimestamps: true,
    filter: (src) => {
      if (src === workspace) return true;
      if (path.basename(src).toLowerCase() === '.git') return false;
      const st = fs.lstatSync(src);
      return st.isFile() || st.isDirectory() || st.isSymbolicLink();
    },
  });
  const ctx = privateCtxOf(wt, opts);
  await initPrivateRepo(ctx, wt.gitDir, 'sha1', 'prepare');
  const { tree } = await snapshotTree(ctx, wt, 'prepare');
  const commit = await gitOut(ctx, ['commit-tree', tree, '-m', 'loki: workspace snapshot'], 'prepare');
  await gitOut(ctx, ['update-ref', '--no-deref', 'HEAD', commit], 'prepare');
  wt.baseCommit = commit;
}

/**
 * Make the session's private copy of `o.workspace`. On failure everything made so
 * far is removed (an existing session directory is never touched) and a
 * WorktreeError is thrown.
 */
export async function createWorktree(o: WorktreeOptions): Promise<Worktree> {
  try {
    sessionBranchName(o.sessionId);
  } catch (err) {
    throw new WorktreeError('prepare', messageOf(err));
  }
  validateOptions(o);
  const opts = o.git ?? {};
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  let root: string;
  let workspace: string;
  try {
    root = ensureRoot(o.root);
    workspace = fs.realpathSync(o.workspace);
    if (!fs.statSync(workspace).isDirectory()) throw new WorktreeError('prepare', `workspace is not a directory: ${workspace}`);
  } catch (err) {
    throw asWorktreeError(err, 'prepare');
  }
  const base = path.join(root, o.sessionId);
  try {
    fs.mkdirSync(base, { mode: 0o700 });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new WorktreeError('prepare', code === 'EEXIST' ? `session directory already exists: ${base}` : messageOf(err));
  }
  const fsRoot = path.join(base, 'fs');
  const wt: Worktree = {
    sessionId: o.sessionId,
    kind: 'copy',
    base,
    dir: path.join(fsRoot, 'work'),
    workTree: path.join(fsRoot, 'work'),
    gitDir: path.join(base, 'git'),
    fsRoot,
    mounted: false,
    userRepo: null,
    baseCommit: '',
    baseBranch: null,
    agentBranch: null,
  };
  let step: WorktreeStep = 'prepare';
  try {
    fs.chmodSync(base, 0o700);
    step = 'disk';
    if (o.diskBytes !== null) {
      await makeDisk(wt, o.diskBytes, timeoutMs);
      // G on the session's file system: its objects count against the limit too.
      wt.gitDir = path.join(fsRoot, 'git');
    } else {
      fs.mkdirSync(fsRoot, { mode: 0o711 });
    }
    // The worker's; only W is handed to the agent (nobody needs to list fs/).
    fs.chmodSync(fsRoot, 0o711);
    fs.mkdirSync(wt.workTree, { mode: 0o755 });
    fs.chmodSync(wt.workTree, 0o755);

    step = 'prepare';
    const repo = await openUserRepo(workspace, opts, 'prepare');
    if (repo) await populateFromRepo(wt, repo, workspace, opts);
    else await populateFromCopy(wt, workspace, opts);

    step = 'ownership';
    if (o.owner) {
      chownTree(wt.workTree, o.owner.uid, o.owner.gid);
      verifyOwnedAndWritable(wt.workTree, o.owner);
      verifyOwnedAndWritable(wt.dir, o.owner);
    }
    return wt;
  } catch (err) {
    const error = asWorktreeError(err, step);
    await removeWorktree(wt).catch(() => undefined);
    throw error;
  }
}

// ---------------------------------------------------------------------------
// Commit

function parseShortstat(s: string): { filesChanged: number; insertions: number; deletions: number } {
  const num = (re: RegExp) => Number(re.exec(s)?.[1] ?? 0);
  return {
    filesChanged: num(/(\d+) files? changed/),
    insertions: num(/(\d+) insertions?\(\+\)/),
    deletions: num(/(\d+) deletions?\(-\)/),
  };
}

function capText(buf: Buffer, max: number): string {
  if (buf.length <= max) return buf.toString('utf8');
  return `${buf.subarray(0, max - 32).toString('utf8')}\n… (diffstat truncated)\n`;
}

const oneLine = (s: string) => s.replace(/[\u0000-\u001f\u007f]+/g, ' ').slice(0, 500);

async function makePatch(ctx: GitCtx, wt: Worktree, base: string, commit: string): Promise<{ patch: string | null; tooLarge: boolean }> {
  const args = ['diff', '--binary', '--full-index', '--no-ext-diff', '--no-textconv', '--no-color', '--no-renames', base, commit];
  let r = await gitRun(ctx, args, 'commit', { maxStdout: MAX_PATCH_BYTES + 1 });
  if (r.truncated) return { patch: null, tooLarge: true };
  if (r.code !== 0) throw new WorktreeError('commit', `git diff failed: ${failureText(r)}`);
  try {
    return { patch: new TextDecoder('utf-8', { fatal: true }).decode(r.stdout), tooLarge: false };
  } catch {
    // Text that is not UTF-8 would not survive a string: emit every file as a binary (ASCII) patch.
    const attrs = path.join(wt.gitDir, 'info', 'attributes');
    fs.mkdirSync(path.dirname(attrs), { recursive: true });
    fs.writeFileSync(attrs, '* -diff\n');
    try {
      r = await gitRun(ctx, args, 'commit', { maxStdout: MAX_PATCH_BYTES + 1 });
    } finally {
      fs.rmSync(attrs, { force: true });
    }
    if (r.truncated) return { patch: null, tooLarge: true };
    if (r.code !== 0) throw new WorktreeError('commit', `git diff failed: ${failureText(r)}`);
    return { patch: r.stdout.toString('latin1'), tooLarge: false };
  }
}

/**
 * Create `loki/session-<id>` in the user's repository. The objects go through a
 * pipe: `git pack-objects --revs --stdout` (as the worker, in G: what the session
 * commit has that its base has not) into `git index-pack --stdin --strict` (as the
 * repository's owner, in the user's repository: every object fsck'd, every link
 * checked, so the base the pack builds on must be there). No file is handed over:
 * the owner never gets a directory or a file the worker later chowns or deletes by
 * path (with a bundle in a temporary directory given to the owner, the owner could
 * swap its entries for symbolic links under root's chown and `rm -r`), and nothing
 * is written on the host's file system outside the user's repository. Then the
 * branch is created, refusing an existing one.
 */
async function deliverToUserRepo(wt: Worktree, ctx: GitCtx, commit: string, opts: GitOptions): Promise<void> {
  const ref = `refs/heads/${wt.agentBranch}`;
  const repo = await openUserRepo(wt.userRepo!, opts, 'fetch');
  if (!repo) throw new WorktreeError('fetch', `${wt.userRepo} is no longer a git repository`);
  const existing = await gitMaybe(repo.ctx, ['rev-parse', '--verify', '--quiet', ref], 'fetch');
  if (existing === commit) return; // delivered by an earlier attempt
  if (existing !== null) {
    throw new WorktreeError('fetch', `branch ${wt.agentBranch} already exists in ${wt.userRepo}; not overwriting it`);
  }
  await gitPipe(
    ctx,
    ['pack-objects', '--revs', '--stdout', '-q', '--delta-base-offset'],
    `${commit}\n^${wt.baseCommit}\n`,
    repo.ctx,
    ['index-pack', '--stdin', '--strict'],
    'fetch',
  );
  await gitOut(repo.ctx, ['update-ref', '-m', `loki: session ${wt.sessionId}`, ref, commit, ''], 'fetch');
}

/**
 * Commit what the agent left in the work tree onto `loki/session-<id>` (parent: the
 * base commit) and, for a git workspace, create that branch in the user's
 * repository. Call only after the agent has stopped. A worktree whose file system
 * is not mounted (released, or after a reboot) is mounted again first.
 */
export async function commitWorktree(
  wt: Worktree,
  o: { sessionId: string; prd: string; git?: GitOptions },
): Promise<WorktreeResult> {
  if (o.sessionId !== wt.sessionId) throw new WorktreeError('commit', 'session id does not match the worktree');
  let branchName: string;
  try {
    branchName = sessionBranchName(wt.sessionId);
  } catch (err) {
    throw new WorktreeError('commit', messageOf(err));
  }
  const opts: GitOptions = o.git ?? {};
  checkLayout(wt, 'commit');
  try {
    await ensureMounted(wt, opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  } catch (err) {
    throw asWorktreeError(err, 'disk');
  }
  const ctx = privateCtxOf(wt, opts);
  const unchanged: WorktreeResult = {
    kind: wt.kind,
    commit: null,
    baseCommit: wt.baseCommit,
    branch: null,
    filesChanged: 0,
    insertions: 0,
    deletions: 0,
    diffstat: '',
    patch: wt.kind === 'copy' ? '' : null,
    patchTooLarge: false,
    skipped: [],
  };
  let commit: string;
  let stats: { filesChanged: number; insertions: number; deletions: number };
  let diffstat: string;
  try {
    const snap = await snapshotTree(ctx, wt, 'commit');
    const tree = snap.tree;
    unchanged.skipped = snap.skipped;
    const baseTree = await gitOut(ctx, ['rev-parse', '--verify', `${wt.baseCommit}^{tree}`], 'commit');
    if (tree === baseTree) return unchanged;
    // A retry (say, after a failed delivery) reuses the commit made for the same tree.
    const ref = `refs/heads/${branchName}`;
    const previous = await gitMaybe(ctx, ['rev-parse', '--verify', '--quiet', `${ref}^{commit}`], 'commit');
    const previousTree = previous ? await gitOut(ctx, ['rev-parse', '--verify', `${previous}^{tree}`], 'commit') : null;
    if (previous && previousTree === tree) {
      commit = previous;
    } else {
      const prd = oneLine(o.prd);
      const message = `loki: session ${wt.sessionId} (${prd})\n\nPRD: ${prd}\n`;
      commit = await gitOut(ctx, ['commit-tree', tree, '-p', wt.baseCommit, '-F', '-'], 'commit', {
        input: message,
        env: { GIT_AUTHOR_NAME: `Loki session ${wt.sessionId}`, GIT_AUTHOR_EMAIL: `loki-session-${wt.sessionId}@localhost` },
      });
      // Old value: the ref must still be where we saw it (absent: empty).
      await gitOut(ctx, ['update-ref', ref, commit, previous ?? ''], 'commit');
    }
    const diff = ['diff', '--no-ext-diff', '--no-textconv', '--no-color'];
    stats = parseShortstat(await gitOut(ctx, [...diff, '--shortstat', wt.baseCommit, commit], 'commit'));
    const st = await gitRun(ctx, [...diff, '--stat=200,150', wt.baseCommit, commit], 'commit', { maxStdout: MAX_DIFFSTAT_BYTES + 1 });
    if (st.code !== 0 && !st.truncated) throw new WorktreeError('commit', `git diff --stat failed: ${failureText(st)}`);
    diffstat = capText(st.stdout, MAX_DIFFSTAT_BYTES);
  } catch (err) {
    throw asWorktreeError(err, 'commit');
  }

  const result: WorktreeResult = { ...unchanged, commit, ...stats, diffstat };
  if (wt.kind === 'git') {
    try {
      await deliverToUserRepo(wt, ctx, commit, opts);
    } catch (err) {
      throw asWorktreeError(err, 'fetch');
    }
    result.branch = wt.agentBranch;
  } else {
    try {
      const p = await makePatch(ctx, wt, wt.baseCommit, commit);
      result.patch = p.patch;
      result.patchTooLarge = p.tooLarge;
    } catch (err) {
      throw asWorktreeError(err, 'commit');
    }
  }
  return result;
}

// ---------------------------------------------------------------------------
// Remove, usage

/** The paths of a Worktree (a record read back from disk, say) must be a session's. */
function checkLayout(wt: Worktree, step: WorktreeStep): void {
  try {
    sessionBranchName(wt.sessionId);
  } catch (err) {
    throw new WorktreeError(step, messageOf(err));
  }
  const fsRoot = path.join(wt.base, 'fs');
  if (
    !path.isAbsolute(wt.base) ||
    path.basename(wt.base) !== wt.sessionId ||
    wt.fsRoot !== fsRoot ||
    (step !== 'remove' && (wt.workTree !== path.join(fsRoot, 'work') || ![path.join(wt.base, 'git'), path.join(fsRoot, 'git')].includes(wt.gitDir)))
  ) {
    throw new WorktreeError(step, `refusing ${wt.base}: not a session directory`);
  }
}

/** `<root>/<id>` by real path (mount points are listed by real path; the session directory itself is never a link). */
function realBase(wt: Worktree, step: WorktreeStep): string {
  let base = wt.base;
  try {
    base = path.join(fs.realpathSync(path.dirname(wt.base)), wt.sessionId);
  } catch {
    // root gone: nothing mounted below it either
  }
  if (lstatOrNull(base)?.isSymbolicLink()) throw new WorktreeError(step, `refusing ${base}: a symbolic link`);
  return base;
}

/** Mount the session's image again if it is not (after `releaseWorktree`, or a reboot). */
async function ensureMounted(wt: Worktree, timeoutMs: number): Promise<void> {
  const base = realBase(wt, 'disk');
  const img = path.join(base, 'disk.img');
  const imgStat = lstatOrNull(img);
  if (!imgStat) return; // no disk limit
  if (!imgStat.isFile()) throw new WorktreeError('disk', `${img} is not a regular file`);
  const fsRoot = path.join(base, 'fs');
  const mounts = mountsUnder(fsRoot);
  if (mounts === null ? wt.mounted : mounts.includes(fsRoot)) {
    wt.mounted = true;
    return;
  }
  if (myUid() !== 0) throw new WorktreeError('disk', 'mounting the session file system needs a root worker');
  const st = lstatOrNull(fsRoot);
  if (!st?.isDirectory()) throw new WorktreeError('disk', `${fsRoot} is not a directory`);
  await mountDisk(img, fsRoot, timeoutMs);
  wt.mounted = true;
}

/** Unmount everything below the session directory and detach its loop device; returns the real session directory. */
async function unmountSession(wt: Worktree): Promise<string> {
  const base = realBase(wt, 'remove');
  const mounts = mountsUnder(base) ?? (wt.mounted ? [path.join(base, 'fs')] : []);
  for (const mp of mounts) {
    try {
      await system('umount', ['-d', mp], 'remove', 60_000);
    } catch {
      // Busy: detach it now, the kernel finishes (and frees the loop device) when released.
      await system('umount', ['-l', '-d', mp], 'remove', 60_000);
    }
  }
  const left = mountsUnder(base);
  if (left && left.length > 0) throw new WorktreeError('remove', `still mounted: ${left.join(', ')}`);
  const img = path.join(base, 'disk.img');
  if (myUid() === 0 && lstatOrNull(img)) {
    // A loop device left attached without a mount (a crash between the two).
    const out = await system('losetup', ['-j', img], 'remove', 60_000).catch(() => '');
    for (const line of out.split('\n')) {
      const dev = /^(\/dev\/loop\d+):/.exec(line)?.[1];
      if (dev) await system('losetup', ['-d', dev], 'remove', 60_000).catch(() => undefined);
    }
  }
  wt.mounted = false;
  return base;
}

/**
 * Unmount the session's file system (freeing its loop device) but keep everything:
 * `disk.img` holds the work tree (and G), `commitWorktree` mounts it again. For a
 * worktree kept after a failed commit. Idempotent; nothing to do without a disk limit.
 */
export async function releaseWorktree(wt: Worktree): Promise<void> {
  checkLayout(wt, 'remove');
  try {
    await unmountSession(wt);
  } catch (err) {
    throw asWorktreeError(err, 'remove');
  }
}

/** Unmount (if mounted) and delete `<root>/<id>`. Idempotent. */
export async function removeWorktree(wt: Worktree): Promise<void> {
  checkLayout(wt, 'remove');
  try {
    const base = await unmountSession(wt);
    removeTree(base);
    if (lstatOrNull(base)) throw new WorktreeError('remove', `could not remove ${base}`);
  } catch (err) {
    throw asWorktreeError(err, 'remove');
  }
}

/** Size and free space of the session's file system (the host's when there is no disk limit). */
export function worktreeDiskUsage(wt: Worktree): { totalBytes: number; availBytes: number } {
  const s = fs.statfsSync(wt.fsRoot);
  return { totalBytes: s.blocks * s.bsize, availBytes: s.bavail * s.bsize };
}

// ---------------------------------------------------------------------------
// Session branches in the user's repository

interface BranchState {
  repo: UserRepo;
  branches: { branch: string; commit: string; merged: boolean }[];
  checkedOut: Set<string>;
}

function checkRevision(into: string): void {
  if (!into || into.startsWith('-') || /[\u0000-\u0020\u007f]/.test(into)) {
    throw new WorktreeError('prepare', `invalid revision ${JSON.stringify(into)}`);
  }
}

async function sessionBranchState(repoPath: string, o: { into?: string; git?: GitOptions }): Promise<BranchState> {
  const opts = o.git ?? {};
  let repo: UserRepo | null;
  try {
    repo = await openUserRepo(repoPath, opts, 'prepare', true);
  } catch (err) {
    throw asWorktreeError(err, 'prepare');
  }
  if (!repo) throw new WorktreeError('prepare', `${repoPath} is not a git repository`);
  const ctx = repo.ctx;
  if (o.into !== undefined) checkRevision(o.into);
  const into = await gitMaybe(ctx, ['rev-parse', '--verify', '--quiet', `${o.into ?? 'HEAD'}^{commit}`], 'prepare');
  if (into === null && o.into !== undefined) throw new WorktreeError('prepare', `unknown revision ${o.into}`);

  const fmt = '--format=%(refname)%00%(objectname)';
  const all = await gitOut(ctx, ['for-each-ref', fmt, 'refs/heads/loki/'], 'prepare');
  const merged = new Set<string>();
  if (into) {
    const m = await gitOut(ctx, ['for-each-ref', '--format=%(refname)', `--merged=${into}`, 'refs/heads/loki/'], 'prepare');
    for (const line of m.split('\n')) if (line) merged.add(line);
  }
  const branches: BranchState['branches'] = [];
  for (const line of all.split('\n')) {
    const [ref, commit] = line.split('\0');
    const name = ref ? SESSION_REF.exec(ref)?.[1] : undefined;
    if (!ref || !name || !commit) continue;
    branches.push({ branch: name, commit, merged: merged.has(ref) });
  }
  // Branches checked out in any work tree of the repository (main and linked).
  const checkedOut = new Set<string>();
  const wl = await gitOut(ctx, ['worktree', 'list', '--porcelain', '-z'], 'prepare');
  for (const field of wl.split('\0')) {
    if (field.startsWith('branch ')) checkedOut.add(field.slice('branch '.length));
  }
  const head = await gitMaybe(ctx, ['symbolic-ref', '--quiet', 'HEAD'], 'prepare');
  if (head) checkedOut.add(head);
  return { repo, branches, checkedOut };
}

/** `loki/session-*` branches of `repo`, and whether each is merged into `into` (default: HEAD). */
export async function listSessionBranches(
  repo: string,
  o: { into?: string; git?: GitOptions } = {},
): Promise<{ branch: string; commit: string; merged: boolean }[]> {
  return (await sessionBranchState(repo, o)).branches;
}

/**
 * Delete merged (or all) session branches, never one that is checked out. All
 * deletions happen in one transaction, each conditional on the branch still
 * pointing where it was listed. Returns what was deleted.
 */
export async function pruneSessionBranches(
  repo: string,
  o: { mode: 'merged' | 'all'; into?: string; git?: GitOptions },
): Promise<{ branch: string; commit: string }[]> {
  if (o.mode !== 'merged' && o.mode !== 'all') throw new WorktreeError('prepare', `unknown prune mode ${String(o.mode)}`);
  const state = await sessionBranchState(repo, o);
  const doomed = state.branches
    .filter((b) => (o.mode === 'all' || b.merged) && !state.checkedOut.has(`refs/heads/${b.branch}`))
    .map(({ branch, commit }) => ({ branch, commit }));
  if (doomed.length === 0) return [];
  const input = `${doomed.map((b) => `delete refs/heads/${b.branch} ${b.commit}`).join('\n')}\n`;
  await gitOut(state.repo.ctx, ['update-ref', '-m', 'loki: prune session branches', '--stdin'], 'remove', { input });
  return doomed;
}

/**
 * Isolated session worktrees: the agent never runs in the user's own checkout.
 *
 * Per session, under `root` (`$LOKI_HOME/worktrees`, 0700):
 *
 *   <root>/<id>/            0700, the worker's
 *     disk.img              sparse ext4 image (only with a disk limit), loop-mounted on fs/
 *     fs/                   mount point (or a plain directory without a disk limit)
 *       work/               W: the work tree the agent sees (/workspace or the host cwd)
 *     git/                  G: a private git directory, never inside fs/, never mounted
 *
 * Every host-side git call runs as `git --git-dir=G --work-tree=W` (for the private
 * repository) with hooks, fsmonitor, auto gc/maintenance and every transport but
 * `file` disabled, and an environment built from scratch (no system or global
 * config, no system attributes, no HOME). The agent can write anything in W, so W
 * must never be able to make host-side git run code:
 *  - G (config, hooks, index, info/attributes) is out of the agent's reach, so no
 *    filter, diff or merge driver, fsmonitor or hook can be configured; diffs also
 *    run with `--no-ext-diff --no-textconv`;
 *  - before every `git add`, every entry named `.git` (any case, any depth) and
 *    every socket, FIFO and device node is removed from W. An embedded repository
 *    whose HEAD matches a tracked gitlink otherwise makes `git add -A` spawn
 *    `git status` inside it, which runs that repository's own `filter.*.clean`
 *    (verified with git 2.39.5; `diff.ignoreSubmodules=all` does not prevent it).
 *    Nested repositories are therefore committed as plain files;
 *  - commits are made with plumbing (`write-tree`, `commit-tree`, `update-ref`).
 * `commitWorktree` must only run once the agent has stopped (container removed,
 * process group killed): git reads W by path.
 *
 * The user's repository is only read (`rev-parse`, `symbolic-ref`, upload-pack for
 * the initial shallow fetch) and, at the end, receives the session commit through a
 * bundle: `git fetch <bundle> <ref>` (objects only, fsck on) and then
 * `update-ref <ref> <commit> ""`, which refuses an existing branch. HEAD, index,
 * work tree and other refs are never touched. When the worker is root and the
 * repository belongs to another uid, every git command in it (including the
 * upload-pack serving the initial fetch, through `setpriv`) runs as that uid, so
 * its config never runs as root and no root-owned file appears in its `.git`.
 */
import { type SpawnOptions, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { redactString } from '../util/redact';
import { type GitOptions, sessionBranchName } from './git';

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
}

export const MAX_DIFFSTAT_BYTES = 64 * 1024;
export const MAX_PATCH_BYTES = 8 * 1024 * 1024;

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
 * and reaches child git processes through GIT_CONFIG_PARAMETERS (but not a local
 * transport's upload-pack: see `uploadPackCommand`).
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
  input?: string;
  timeoutMs: number;
  maxStdout?: number;
}

function exec(file: string, args: string[], o: ExecOptions): Promise<Exec> {
  return new Promise((resolve, reject) => {
    const opts: SpawnOptions = { cwd: o.cwd ?? '/', env: o.env, stdio: [o.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] };
    if (o.uid !== undefined) opts.uid = o.uid;
    if (o.gid !== undefined) opts.gid = o.gid;
    const child = spawn(file, args, opts);
    const max = o.maxStdout ?? MAX_OUTPUT_BYTES;
    const chunks: Buffer[] = [];
    let size = 0;
    let truncated = false;
    let timedOut = false;
    let stderr = '';
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
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      if (stderr.length < MAX_STDERR_BYTES) stderr += d;
    });
    if (o.input !== undefined) {
      child.stdin!.on('error', () => undefined);
      child.stdin!.end(o.input);
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
}

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
const myGid = (): number => process.getgid?.() ?? -1;

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
  if (r.code !== 0 || r.truncated) throw new WorktreeError(step, `git ${subcommand(args)} failed: ${r.truncated ? 'output too large' : failureText(r)}`);
  return r.stdout.toString('utf8').trim();
}

/** Like gitOut, but exit code 1 with nothing on stderr (`--quiet` "not found") gives null. */
async function gitMaybe(ctx: GitCtx, args: string[], step: WorktreeStep): Promise<string | null> {
  const r = await gitRun(ctx, args, step);
  if (r.code === 1 && !r.stderr.trim()) return null;
  if (r.code !== 0) throw new WorktreeError(step, `git ${subcommand(args)} failed: ${failureText(r)}`);
  return r.stdout.toString('utf8').trim();
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
    ownerStat = fs.statSync(path.join(candidate, '.git'));
    safeDirs = [candidate, path.join(candidate, '.git')];
  } else if (allowBare && looksLikeGitDir(real)) {
    ownerStat = fs.statSync(real);
    safeDirs = [real];
  } else {
    return null;
  }
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
  } else if (bare !== 'true' || !allowBare) {
    throw new WorktreeError(step, `${real} is inside a git directory or a bare repository, not a work tree`);
  }
  const commonReal = fs.realpathSync(commonDir);
  const gitDirReal = fs.realpathSync(gitDir);
  // Writes go to the common directory: run as its owner.
  const commonStat = fs.statSync(commonReal);
  ctx = userCtx(top ?? gitDirReal, [...safeDirs, ...(top ? [top] : []), gitDirReal, commonReal], runAsFor(commonStat), opts);
  return { top, gitDir: gitDirReal, commonDir: commonReal, ctx };
}

const sq = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/**
 * A local fetch runs `<upload-pack> '<path>'` through the shell with the local
 * repository's environment (GIT_CONFIG_PARAMETERS included) removed, so our `-c`
 * flags do not reach it: give them explicitly, and drop to the repository owner.
 */
function uploadPackCommand(repo: UserRepo): string {
  const cfg = [...HARDENING, `safe.directory=${repo.commonDir}`, `safe.directory=${repo.gitDir}`]
    .map((c) => `-c ${sq(c)}`)
    .join(' ');
  const as = repo.ctx.as;
  const drop = as ? `setpriv --reuid=${as.uid} --regid=${as.gid} --clear-groups -- ` : '';
  return `${drop}git ${cfg} upload-pack`;
}

// ---------------------------------------------------------------------------
// File-system helpers

type Visit = (full: string, ent: fs.Dirent) => 'skip' | 'descend' | 'removed';

/** Iterative walk that never follows symbolic links. */
function walk(top: string, visit: Visit): void {
  const stack = [top];
  while (stack.length > 0) {
    const dir = stack.pop()!;
    for (const ent of fs.readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, ent.name);
      if (visit(full, ent) === 'descend') stack.push(full);
    }
  }
}

function direntKind(full: string, ent: fs.Dirent): 'dir' | 'file' | 'link' | 'special' {
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

/**
 * Make W safe for host-side `git add`: remove every `.git` entry (any case, any
 * depth: embedded repositories make git run their config) and every socket, FIFO
 * or device node (git cannot store them; reading a FIFO would block).
 */
function sanitizeWorkTree(workTree: string): number {
  let removed = 0;
  walk(workTree, (full, ent) => {
    if (ent.name.toLowerCase() === '.git') {
      fs.rmSync(full, { recursive: true, force: true });
      removed++;
      return 'removed';
    }
    const kind = direntKind(full, ent);
    if (kind === 'special') {
      fs.rmSync(full, { force: true });
      removed++;
      return 'removed';
    }
    return kind === 'dir' ? 'descend' : 'skip';
  });
  return removed;
}

function chownTree(top: string, uid: number, gid: number): void {
  fs.lchownSync(top, uid, gid);
  walk(top, (full, ent) => {
    fs.lchownSync(full, uid, gid);
    return direntKind(full, ent) === 'dir' ? 'descend' : 'skip';
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

function unescapeMountPath(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(Number.parseInt(oct, 8)));
}

/** Mount points at `dir` or below it (deepest first), from /proc/self/mountinfo. */
function mountsUnder(dir: string): string[] | null {
  let text: string;
  try {
    text = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return null;
  }
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const field = line.split(' ')[4];
    if (!field) continue;
    const mp = unescapeMountPath(field);
    if (mp === dir || mp.startsWith(`${dir}/`)) out.push(mp);
  }
  return out.sort((a, b) => b.length - a.length);
}

/** Remove a tree even if it holds read-only or mode-000 directories. */
function removeTree(dir: string): void {
  try {
    fs.rmSync(dir, { recursive: true, force: true, maxRetries: 2 });
    return;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EACCES' && code !== 'EPERM' && code !== 'ENOTEMPTY') throw err;
  }
  // Not root (or a stubborn mode): open every directory up to its owner, then retry.
  const fix = (d: string) => {
    try {
      const st = fs.lstatSync(d);
      if (st.isDirectory()) fs.chmodSync(d, (st.mode & 0o7777) | 0o700);
    } catch {
      // gone or not ours
    }
  };
  fix(dir);
  try {
    walk(dir, (full, ent) => {
      if (direntKind(full, ent) !== 'dir') return 'skip';
      fix(full);
      return 'descend';
    });
  } catch {
    // best effort; the retry reports what is left
  }
  fs.rmSync(dir, { recursive: true, force: true, maxRetries: 2 });
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

async function makeDisk(wt: Worktree, bytes: number, owner: { uid: number; gid: number } | null, timeoutMs: number): Promise<void> {
  if (myUid() !== 0) throw new WorktreeError('disk', 'a disk limit needs a root worker (loop mount)');
  const img = path.join(wt.base, 'disk.img');
  const fd = fs.openSync(img, 'wx', 0o600);
  try {
    fs.ftruncateSync(fd, bytes);
  } finally {
    fs.closeSync(fd);
  }
  const uid = owner?.uid ?? myUid();
  const gid = owner?.gid ?? myGid();
  await system('mkfs.ext4', ['-q', '-F', '-m', '0', '-O', '^has_journal', '-E', `lazy_itable_init=1,root_owner=${uid}:${gid}`, img], 'disk', timeoutMs);
  fs.mkdirSync(wt.fsRoot, { mode: 0o700 });
  await system('mount', ['-t', 'ext4', '-o', 'loop,nosuid,nodev', img, wt.fsRoot], 'disk', timeoutMs);
  wt.mounted = true;
}

async function initPrivateRepo(ctx: GitCtx, gitDir: string, objectFormat: string, step: WorktreeStep): Promise<void> {
  // `--template=` (empty): no sample hooks, no info/exclude.
  await gitOut({ ...ctx, pre: hardening() }, ['init', '-q', '--bare', '--template=', `--object-format=${objectFormat}`, gitDir], step);
  fs.appendFileSync(path.join(gitDir, 'config'), PRIVATE_CONFIG);
}

/** Stage everything in W (after sanitizing it) and return the tree. */
async function snapshotTree(ctx: GitCtx, workTree: string, step: WorktreeStep): Promise<string> {
  sanitizeWorkTree(workTree);
  await gitOut(ctx, ['-c', 'core.autocrlf=false', '-c', 'core.safecrlf=false', 'add', '-A'], step);
  return gitOut(ctx, ['write-tree'], step);
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
  const fetch = ['fetch', '--no-tags', '--depth=1', '-q', '--no-recurse-submodules', `--upload-pack=${uploadPackCommand(repo)}`, repo.commonDir];
  const bySha = await gitRun(ctx, [...fetch, base], 'prepare');
  if (bySha.code !== 0) {
    await gitOut(ctx, [...fetch, 'HEAD'], 'prepare');
    const got = await gitOut(ctx, ['rev-parse', '--verify', 'FETCH_HEAD^{commit}'], 'prepare');
    if (got !== base) throw new WorktreeError('prepare', `the repository's HEAD moved while preparing the session (${base} → ${got})`);
  }
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
  const tree = await snapshotTree(ctx, wt.workTree, 'prepare');
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
    if (o.diskBytes !== null) await makeDisk(wt, o.diskBytes, o.owner, timeoutMs);
    else fs.mkdirSync(fsRoot, { mode: 0o755 });
    fs.mkdirSync(wt.workTree, { mode: 0o755 });
    fs.chmodSync(wt.workTree, 0o755);

    step = 'prepare';
    const repo = await openUserRepo(workspace, opts, 'prepare');
    if (repo) await populateFromRepo(wt, repo, workspace, opts);
    else await populateFromCopy(wt, workspace, opts);

    step = 'ownership';
    if (o.owner) {
      chownTree(wt.workTree, o.owner.uid, o.owner.gid);
      fs.lchownSync(fsRoot, o.owner.uid, o.owner.gid);
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

async function deliverToUserRepo(wt: Worktree, ctx: GitCtx, commit: string, opts: GitOptions): Promise<void> {
  const ref = `refs/heads/${wt.agentBranch}`;
  const repo = await openUserRepo(wt.userRepo!, opts, 'fetch');
  if (!repo) throw new WorktreeError('fetch', `${wt.userRepo} is no longer a git repository`);
  const existing = await gitMaybe(repo.ctx, ['rev-parse', '--verify', '--quiet', ref], 'fetch');
  if (existing === commit) return; // delivered by an earlier attempt
  if (existing !== null) {
    throw new WorktreeError('fetch', `branch ${wt.agentBranch} already exists in ${wt.userRepo}; not overwriting it`);
  }
  // The repository owner may not be able to reach G: hand over a bundle in a
  // directory of its own.
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'loki-bundle-'));
  try {
    const bundle = path.join(tmp, 'session.bundle');
    await gitOut(ctx, ['bundle', 'create', '-q', bundle, ref, `^${wt.baseCommit}`], 'fetch');
    const as = repo.ctx.as;
    if (as) {
      fs.chownSync(tmp, as.uid, as.gid);
      fs.chownSync(bundle, as.uid, as.gid);
    }
    // Objects only (no ref, no FETCH_HEAD), checked; then create the branch, refusing an existing one.
    await gitOut(
      repo.ctx,
      ['-c', 'fetch.fsckObjects=true', 'fetch', '--no-tags', '-q', '--no-write-fetch-head', '--no-recurse-submodules', bundle, ref],
      'fetch',
    );
    await gitOut(repo.ctx, ['update-ref', '-m', `loki: session ${wt.sessionId}`, ref, commit, ''], 'fetch');
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

/**
 * Commit what the agent left in the work tree onto `loki/session-<id>` (parent: the
 * base commit) and, for a git workspace, create that branch in the user's
 * repository. Call only after the agent has stopped.
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
  };
  let commit: string;
  let stats: { filesChanged: number; insertions: number; deletions: number };
  let diffstat: string;
  try {
    const tree = await snapshotTree(ctx, wt.workTree, 'commit');
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

/** Unmount (if mounted) and delete `<root>/<id>`. Idempotent. */
export async function removeWorktree(wt: Worktree): Promise<void> {
  try {
    sessionBranchName(wt.sessionId);
  } catch (err) {
    throw new WorktreeError('remove', messageOf(err));
  }
  if (!path.isAbsolute(wt.base) || path.basename(wt.base) !== wt.sessionId || wt.fsRoot !== path.join(wt.base, 'fs')) {
    throw new WorktreeError('remove', `refusing to remove ${wt.base}: not a session directory`);
  }
  try {
    // Mount points are listed by real path: resolve the root (the session directory itself is never a link).
    let base = wt.base;
    try {
      base = path.join(fs.realpathSync(path.dirname(wt.base)), wt.sessionId);
    } catch {
      // root gone: nothing mounted below it either
    }
    if (lstatOrNull(base)?.isSymbolicLink()) throw new WorktreeError('remove', `refusing to remove ${base}: a symbolic link`);
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

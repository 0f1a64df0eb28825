/**
 * Session worktrees against real git, real loop mounts and real uids (the suite
 * runs as root). The agent is simulated by processes running as uid 1000.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  commitWorktree,
  createWorktree,
  listSessionBranches,
  MAX_TREE_DEPTH,
  pruneSessionBranches,
  releaseWorktree,
  removeWorktree,
  type Worktree,
  WorktreeError,
  type WorktreeOptions,
  worktreeDiskUsage,
} from '../../src/sandbox/worktree';

const AGENT = { uid: 1000, gid: 1000 };
const MiB = 1024 * 1024;
const isRoot = process.getuid?.() === 0;

let tmp: string;
let root: string;
let repo: string;
let markers: string;
const made: Worktree[] = [];

const ENV = {
  PATH: '/usr/local/bin:/usr/bin:/bin',
  GIT_CONFIG_NOSYSTEM: '1',
  GIT_CONFIG_GLOBAL: '/dev/null',
  GIT_AUTHOR_NAME: 'User',
  GIT_AUTHOR_EMAIL: 'user@example.com',
  GIT_COMMITTER_NAME: 'User',
  GIT_COMMITTER_EMAIL: 'user@example.com',
  LC_ALL: 'C',
  // The test's own status calls must not rewrite the index (it may belong to another uid).
  GIT_OPTIONAL_LOCKS: '0',
};

/** The test's own git: any owner, and none of the repository's hooks or fsmonitor. */
const TEST_GIT = ['-c', 'safe.directory=*', '-c', 'core.fsmonitor=false', '-c', 'core.hooksPath=/dev/null'];

function git(cwd: string, ...args: string[]): string {
  const r = spawnSync('git', [...TEST_GIT, ...args], { cwd, encoding: 'utf8', env: ENV, maxBuffer: 256 * MiB });
  if (r.status !== 0) throw new Error(`git ${args.join(' ')}: ${r.stderr}`);
  return r.stdout.trim();
}

function gitBuf(cwd: string, ...args: string[]): Buffer {
  const r = spawnSync('git', [...TEST_GIT, ...args], { cwd, env: ENV, maxBuffer: 256 * MiB });
  if (r.status !== 0) throw new Error(`git ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/** Run a shell script as the agent (uid 1000) with `cwd` as its working directory. */
function agent(cwd: string, script: string): { status: number | null; stderr: string } {
  const r = spawnSync('sh', ['-c', script], { cwd, uid: AGENT.uid, gid: AGENT.gid, encoding: 'utf8', env: { PATH: ENV.PATH } });
  return { status: r.status, stderr: r.stderr };
}

function write(file: string, content: string | Buffer, mode?: number): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, content);
  if (mode !== undefined) fs.chmodSync(file, mode);
}

function initRepo(dir: string, files: Record<string, string>): string {
  fs.mkdirSync(dir, { recursive: true });
  git(dir, 'init', '-q', '-b', 'main');
  for (const [name, content] of Object.entries(files)) write(path.join(dir, name), content);
  git(dir, 'add', '-A');
  git(dir, 'commit', '-q', '-m', 'base');
  return git(dir, 'rev-parse', 'HEAD');
}

/** Path → content of every blob in a commit's tree (symlinks as `-> target`). */
function treeOf(cwd: string, commit: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const entry of gitBuf(cwd, 'ls-tree', '-r', '-z', commit).toString('utf8').split('\0')) {
    if (!entry) continue;
    const [meta, name] = entry.split('\t') as [string, string];
    const [mode, type, oid] = meta.split(' ') as [string, string, string];
    if (type === 'commit') {
      out[name] = `gitlink ${oid}`;
      continue;
    }
    const body = gitBuf(cwd, 'cat-file', 'blob', oid).toString('utf8');
    out[name] = mode === '120000' ? `-> ${body}` : mode === '100755' ? `x ${body}` : body;
  }
  return out;
}

/** What a user would notice in their checkout. */
function checkoutState(dir: string) {
  const gitDir = path.join(dir, '.git');
  return {
    head: fs.readFileSync(path.join(gitDir, 'HEAD'), 'utf8'),
    headCommit: git(dir, 'rev-parse', 'HEAD'),
    status: git(dir, 'status', '--porcelain', '--untracked-files=all'),
    index: fs.readFileSync(path.join(gitDir, 'index')).toString('hex'),
    files: snapshotDir(dir, ['.git']),
  };
}

function refsOf(dir: string): string {
  return git(dir, 'for-each-ref', '--format=%(refname) %(objectname)');
}

/** Path → description of everything under `dir` (lstat only). */
function snapshotDir(dir: string, skip: string[] = []): Record<string, string> {
  const out: Record<string, string> = {};
  const visit = (d: string) => {
    for (const name of fs.readdirSync(d).sort()) {
      const full = path.join(d, name);
      const rel = path.relative(dir, full);
      if (skip.includes(rel)) continue;
      const st = fs.lstatSync(full);
      if (st.isSymbolicLink()) out[rel] = `link ${fs.readlinkSync(full)}`;
      else if (st.isDirectory()) {
        out[rel] = 'dir';
        visit(full);
      } else out[rel] = `${st.mode & 0o100 ? 'x ' : ''}${fs.readFileSync(full).toString('hex')}`;
    }
  };
  visit(dir);
  return out;
}

function loopLines(img: string): string[] {
  const r = spawnSync('losetup', ['-a'], { encoding: 'utf8' });
  return r.stdout.split('\n').filter((l) => l.includes(img));
}

function mounted(p: string): boolean {
  return fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === p);
}

async function create(o: Partial<WorktreeOptions> & { sessionId: string; workspace: string }): Promise<Worktree> {
  const wt = await createWorktree({ root, diskBytes: null, owner: AGENT, ...o });
  made.push(wt);
  return wt;
}

function markerFiles(): string[] {
  return fs.readdirSync(markers);
}

beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'loki-wt-'));
  // Traversable, so that a repository owned by another uid is usable by that uid.
  fs.chmodSync(tmp, 0o755);
  root = path.join(tmp, 'worktrees');
  repo = path.join(tmp, 'repo');
  markers = path.join(tmp, 'markers');
  fs.mkdirSync(markers);
  fs.chmodSync(markers, 0o1777);
});

afterEach(async () => {
  for (const wt of made.splice(0)) await removeWorktree(wt).catch(() => undefined);
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe.skipIf(!isRoot)('session worktrees', () => {
  it('isolates a git workspace and lands exactly the agent commit on loki/session-<id>', async () => {
    const base = initRepo(repo, { 'a.txt': 'a\n', 'b.txt': 'b\n', 'dir/c.txt': 'c\n' });
    // Local, uncommitted state of the user's checkout must survive untouched.
    write(path.join(repo, 'a.txt'), 'local edit\n');
    write(path.join(repo, 'staged.txt'), 'staged\n');
    git(repo, 'add', 'staged.txt');
    write(path.join(repo, 'untracked.txt'), 'u\n');
    const before = checkoutState(repo);
    const refsBefore = refsOf(repo);

    const wt = await create({ sessionId: 's1', workspace: repo, diskBytes: 64 * MiB });
    expect(wt).toMatchObject({
      sessionId: 's1',
      kind: 'git',
      base: path.join(fs.realpathSync(root), 's1'),
      userRepo: fs.realpathSync(repo),
      baseCommit: base,
      baseBranch: 'main',
      agentBranch: 'loki/session-s1',
      mounted: true,
    });
    expect(wt.dir).toBe(wt.workTree);
    expect(wt.workTree).toBe(path.join(wt.fsRoot, 'work'));
    // With a disk limit the private git directory is on the session's file system, beside W.
    expect(wt.gitDir).toBe(path.join(wt.fsRoot, 'git'));
    expect(mounted(wt.fsRoot)).toBe(true);
    expect(loopLines(path.join(wt.base, 'disk.img'))).toHaveLength(1);
    expect(fs.statSync(root).mode & 0o777).toBe(0o700);
    expect(fs.statSync(wt.base).mode & 0o777).toBe(0o700);
    expect(fs.statSync(wt.gitDir).uid).toBe(0);
    expect(fs.statSync(wt.gitDir).mode & 0o777).toBe(0o700);
    expect(fs.statSync(wt.fsRoot).uid).toBe(0);
    expect(fs.statSync(wt.fsRoot).mode & 0o777).toBe(0o711);
    expect(fs.statSync(wt.dir).uid).toBe(1000);
    // The work tree is the base commit, not the user's local state.
    expect(snapshotDir(wt.workTree, ['lost+found'])).toEqual({
      'a.txt': Buffer.from('a\n').toString('hex'),
      'b.txt': Buffer.from('b\n').toString('hex'),
      dir: 'dir',
      'dir/c.txt': Buffer.from('c\n').toString('hex'),
    });
    expect(checkoutState(repo)).toEqual(before);
    expect(refsOf(repo)).toBe(refsBefore);

    const r = agent(wt.dir, 'printf "new\\n" > new.txt && printf "changed\\n" > b.txt && rm dir/c.txt && mkdir -p deep/x && printf "d\\n" > deep/x/y');
    expect(r).toEqual({ status: 0, stderr: '' });

    const result = await commitWorktree(wt, { sessionId: 's1', prd: 'docs/prd.md' });
    expect(result).toMatchObject({
      kind: 'git',
      baseCommit: base,
      branch: 'loki/session-s1',
      filesChanged: 4,
      insertions: 3,
      deletions: 2,
      patch: null,
      patchTooLarge: false,
    });
    expect(result.commit).toMatch(/^[0-9a-f]{40}$/);
    expect(result.diffstat).toContain('4 files changed, 3 insertions(+), 2 deletions(-)');
    expect(result.diffstat).toContain('new.txt');

    const commit = result.commit!;
    expect(git(repo, 'rev-parse', 'refs/heads/loki/session-s1')).toBe(commit);
    expect(git(repo, 'rev-list', '--count', `${base}..${commit}`)).toBe('1');
    expect(git(repo, 'rev-parse', `${commit}^`)).toBe(base);
    expect(git(repo, 'log', '-1', '--format=%an|%ae|%s', commit)).toBe('Loki session s1|loki-session-s1@localhost|loki: session s1 (docs/prd.md)');
    expect(treeOf(repo, commit)).toEqual({ 'a.txt': 'a\n', 'b.txt': 'changed\n', 'deep/x/y': 'd\n', 'new.txt': 'new\n' });
    // Nothing else moved in the user's repository.
    expect(checkoutState(repo)).toEqual(before);
    expect(refsOf(repo).split('\n').sort()).toEqual([...refsBefore.split('\n'), `refs/heads/loki/session-s1 ${commit}`].sort());
    expect(git(repo, 'fsck', '--no-dangling')).toBe('');

    const img = path.join(wt.base, 'disk.img');
    await removeWorktree(wt);
    expect(fs.existsSync(wt.base)).toBe(false);
    expect(mounted(wt.fsRoot)).toBe(false);
    expect(loopLines(img)).toEqual([]);
    await removeWorktree(wt); // idempotent
  });

  it('mounts the workspace subdirectory of the repository', async () => {
    const base = initRepo(repo, { 'top.txt': 't\n', 'pkg/app/main.txt': 'm\n' });
    const wt = await create({ sessionId: 'sub1', workspace: path.join(repo, 'pkg', 'app'), owner: null });
    expect(wt.dir).toBe(path.join(wt.workTree, 'pkg', 'app'));
    expect(wt.mounted).toBe(false);
    expect(fs.statSync(wt.dir).uid).toBe(0); // host session: the worker keeps it
    write(path.join(wt.dir, 'added.txt'), 'added\n');
    const result = await commitWorktree(wt, { sessionId: 'sub1', prd: 'prd.md' });
    expect(result).toMatchObject({ baseCommit: base, filesChanged: 1, insertions: 1, deletions: 0 });
    expect(treeOf(repo, result.commit!)).toEqual({ 'top.txt': 't\n', 'pkg/app/main.txt': 'm\n', 'pkg/app/added.txt': 'added\n' });
  });

  it('creates a subdirectory workspace that is not in the base commit', async () => {
    initRepo(repo, { 'top.txt': 't\n' });
    fs.mkdirSync(path.join(repo, 'fresh'));
    const wt = await create({ sessionId: 'sub2', workspace: path.join(repo, 'fresh') });
    expect(wt.dir).toBe(path.join(wt.workTree, 'fresh'));
    expect(fs.statSync(wt.dir).uid).toBe(1000);
    expect(agent(wt.dir, 'printf "x\\n" > x').status).toBe(0);
    const result = await commitWorktree(wt, { sessionId: 'sub2', prd: 'p' });
    expect(treeOf(repo, result.commit!)).toEqual({ 'top.txt': 't\n', 'fresh/x': 'x\n' });
  });

  it('works with a repository owned by another uid and leaves no root-owned file in its .git', async () => {
    const base = initRepo(repo, { 'a.txt': 'a\n' });
    // Hooks and fsmonitor configured by the repository owner never run as root (nor at all).
    write(path.join(repo, '.git', 'hooks', 'reference-transaction'), `#!/bin/sh\ntouch ${markers}/ref-hook\n`, 0o755);
    git(repo, 'config', 'core.fsmonitor', `touch ${markers}/user-fsmonitor; false`);
    spawnSync('chown', ['-R', '4242:4242', repo]);
    const before = checkoutState(repo);

    const wt = await create({ sessionId: 'own1', workspace: repo, diskBytes: 32 * MiB });
    expect(wt.baseCommit).toBe(base);
    expect(agent(wt.dir, 'printf "agent\\n" > a.txt').status).toBe(0);
    const result = await commitWorktree(wt, { sessionId: 'own1', prd: 'prd.md' });
    expect(git(repo, 'rev-parse', 'refs/heads/loki/session-own1')).toBe(result.commit);
    expect(treeOf(repo, result.commit!)).toEqual({ 'a.txt': 'agent\n' });
    expect(checkoutState(repo)).toEqual(before);

    const notOwned: string[] = [];
    const visit = (d: string) => {
      for (const name of fs.readdirSync(d)) {
        const full = path.join(d, name);
        const st = fs.lstatSync(full);
        if (st.uid !== 4242 || st.gid !== 4242) notOwned.push(`${full} ${st.uid}:${st.gid}`);
        if (st.isDirectory()) visit(full);
      }
    };
    visit(path.join(repo, '.git'));
    expect(notOwned).toEqual([]);
    expect(markerFiles()).toEqual([]);
  });

  it('refuses a git directory owned by another uid than the work tree', async () => {
    // Work tree and `.git` file owned by 4242, the git directory it points to by 4343:
    // whose rights would the worker use? Neither: refused.
    const gitDir = path.join(tmp, 'split.git');
    initRepo(repo, { 'a.txt': 'a\n' });
    fs.renameSync(path.join(repo, '.git'), gitDir);
    write(path.join(repo, '.git'), `gitdir: ${gitDir}\n`);
    spawnSync('chown', ['-R', '4242:4242', repo]);
    spawnSync('chown', ['-R', '4343:4343', gitDir]);
    const err = await create({ sessionId: 'split1', workspace: repo }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WorktreeError);
    expect((err as WorktreeError).step).toBe('prepare');
    expect((err as WorktreeError).message).toMatch(/git directory .*split\.git is owned by uid 4343, not by uid 4242/);
    expect(fs.existsSync(path.join(root, 'split1'))).toBe(false);
  });

  it('lets the container uid write everything in a root-owned repository copy, but not the private git dir', async () => {
    initRepo(repo, { 'a.txt': 'a\n', 'ro/b.txt': 'b\n' });
    fs.chmodSync(path.join(repo, 'ro', 'b.txt'), 0o444);
    const wt = await create({ sessionId: 'own2', workspace: repo });
    expect(fs.statSync(repo).uid).toBe(0);
    expect(agent(wt.dir, 'printf 1 > a.txt && printf 2 > ro/new && rm ro/b.txt && mkdir d && printf 3 > d/e').status).toBe(0);
    expect(agent(wt.dir, `touch ${wt.gitDir}/x`).status).not.toBe(0);
    expect(agent(wt.dir, `ls ${wt.base}`).status).not.toBe(0);
  });

  it('never runs code the agent planted in the work tree (attributes, .git config, hooks, nested repositories)', async () => {
    // A submodule in the base commit: the agent makes it an embedded repository whose
    // HEAD matches the gitlink, the case in which `git add -A` runs `git status` in it.
    const lib = path.join(tmp, 'lib');
    const libCommit = initRepo(lib, { 'lib.txt': 'lib\n' });
    initRepo(repo, { 'a.txt': 'a\n' });
    write(path.join(repo, '.gitmodules'), '[submodule "sub"]\n\tpath = sub\n\turl = ../lib\n');
    git(repo, 'update-index', '--add', '--cacheinfo', `160000,${libCommit},sub`);
    git(repo, 'add', '.gitmodules');
    git(repo, 'commit', '-q', '-m', 'submodule');
    const base = git(repo, 'rev-parse', 'HEAD');

    const wt = await create({ sessionId: 'evil1', workspace: repo });
    const evilConfig = (tag: string) =>
      `[core]\n\tfsmonitor = touch ${markers}/${tag}-fsmonitor; false\n\thooksPath = hooks\n` +
      `[filter "evil"]\n\tclean = touch ${markers}/${tag}-clean; cat\n\tsmudge = touch ${markers}/${tag}-smudge; cat\n\tprocess = touch ${markers}/${tag}-process\n` +
      `[diff "evil"]\n\ttextconv = touch ${markers}/${tag}-textconv; cat\n\tcommand = touch ${markers}/${tag}-extdiff\n` +
      `[core]\n\tpager = touch ${markers}/${tag}-pager; cat\n`;
    const hook = (tag: string) => `#!/bin/sh\ntouch ${markers}/${tag}-hook\n`;
    // The work tree's own `.git` directory, `.gitattributes` and a `hooks/` directory.
    write(path.join(wt.dir, '.gitattributes'), '* filter=evil diff=evil\n');
    write(path.join(wt.dir, '.git', 'config'), evilConfig('top'));
    write(path.join(wt.dir, '.git', 'HEAD'), 'ref: refs/heads/main\n');
    fs.mkdirSync(path.join(wt.dir, '.git', 'objects'), { recursive: true });
    fs.mkdirSync(path.join(wt.dir, '.git', 'refs'), { recursive: true });
    for (const h of ['pre-commit', 'post-commit', 'reference-transaction', 'post-index-change']) {
      write(path.join(wt.dir, '.git', 'hooks', h), hook(`top-${h}`), 0o755);
      write(path.join(wt.dir, 'hooks', h), hook(`wt-${h}`), 0o755);
    }
    write(path.join(wt.dir, '.GIT', 'config'), evilConfig('upper'));
    // The embedded repository at the submodule path, HEAD = the gitlink.
    fs.cpSync(path.join(lib, '.git'), path.join(wt.dir, 'sub', '.git'), { recursive: true });
    git(path.join(wt.dir, 'sub'), 'checkout', '-q', '-f', libCommit);
    fs.appendFileSync(path.join(wt.dir, 'sub', '.git', 'config'), evilConfig('sub'));
    write(path.join(wt.dir, 'sub', '.gitattributes'), '* filter=evil diff=evil\n');
    // Same size, new mtime: `git status` in the embedded repository would have to hash it (clean filter).
    write(path.join(wt.dir, 'sub', 'lib.txt'), 'LIB\n');
    for (const h of ['pre-commit', 'post-checkout', 'reference-transaction']) write(path.join(wt.dir, 'sub', '.git', 'hooks', h), hook(`sub-${h}`), 0o755);
    // Another nested repository, not tracked.
    git(wt.dir, 'init', '-q', 'vendor/other');
    write(path.join(wt.dir, 'vendor', 'other', 'o.txt'), 'o\n');
    fs.appendFileSync(path.join(wt.dir, 'vendor', 'other', '.git', 'config'), evilConfig('other'));
    write(path.join(wt.dir, 'vendor', 'other', '.gitattributes'), '* filter=evil\n');
    // A FIFO would block a reader forever.
    spawnSync('mkfifo', [path.join(wt.dir, 'fifo')]);
    spawnSync('chown', ['-R', '1000:1000', wt.dir]);

    const result = await commitWorktree(wt, { sessionId: 'evil1', prd: 'prd.md' });
    expect(markerFiles()).toEqual([]);
    const tree = treeOf(repo, result.commit!);
    expect(Object.keys(tree).sort()).toEqual([
      '.gitattributes',
      '.gitmodules',
      'a.txt',
      'hooks/post-commit',
      'hooks/post-index-change',
      'hooks/pre-commit',
      'hooks/reference-transaction',
      'sub',
      'vendor/other/.gitattributes',
      'vendor/other/o.txt',
    ]);
    // The gitlink stays at the base (its embedded repository was not followed).
    expect(git(repo, 'ls-tree', result.commit!, 'sub')).toBe(`160000 commit ${libCommit}\tsub`);
    expect(git(repo, 'rev-parse', `${result.commit}^`)).toBe(base);
    expect(markerFiles()).toEqual([]);
    await removeWorktree(wt);
    expect(markerFiles()).toEqual([]);
  });

  it('keeps symbolic links as links, in git and copy workspaces', async () => {
    initRepo(repo, { 'a.txt': 'a\n' });
    fs.symlinkSync('/etc/passwd', path.join(repo, 'passwd'));
    git(repo, 'add', 'passwd');
    git(repo, 'commit', '-q', '-m', 'link');
    const wt = await create({ sessionId: 'ln1', workspace: repo });
    expect(fs.lstatSync(path.join(wt.dir, 'passwd')).isSymbolicLink()).toBe(true);
    expect(fs.readlinkSync(path.join(wt.dir, 'passwd'))).toBe('/etc/passwd');
    expect(fs.lstatSync('/etc/passwd').uid).toBe(0); // lchown: the target was not chowned
    expect(agent(wt.dir, 'ln -s /etc/shadow shadow').status).toBe(0);
    const result = await commitWorktree(wt, { sessionId: 'ln1', prd: 'p' });
    expect(treeOf(repo, result.commit!)).toEqual({ 'a.txt': 'a\n', passwd: '-> /etc/passwd', shadow: '-> /etc/shadow' });

    const plain = path.join(tmp, 'plain');
    write(path.join(plain, 'f.txt'), 'f\n');
    fs.symlinkSync('/etc/passwd', path.join(plain, 'passwd'));
    fs.symlinkSync('/etc', path.join(plain, 'etcdir'));
    fs.symlinkSync('f.txt', path.join(plain, 'rel'));
    const cw = await create({ sessionId: 'ln2', workspace: plain });
    expect(cw.kind).toBe('copy');
    expect(snapshotDir(cw.dir)).toEqual({
      etcdir: 'link /etc',
      'f.txt': Buffer.from('f\n').toString('hex'),
      passwd: 'link /etc/passwd',
      rel: 'link f.txt',
    });
    expect(treeOfPrivate(cw, cw.baseCommit)).toEqual({ etcdir: '-> /etc', 'f.txt': 'f\n', passwd: '-> /etc/passwd', rel: '-> f.txt' });
    expect(fs.lstatSync('/etc/passwd').uid).toBe(0);
  });

  it('produces a patch for a copy workspace that reproduces the agent result', async () => {
    const plain = path.join(tmp, 'plain');
    write(path.join(plain, 'keep.txt'), 'keep\n');
    write(path.join(plain, 'edit.txt'), 'one\ntwo\nthree\n');
    write(path.join(plain, 'gone.txt'), 'bye\n');
    write(path.join(plain, 'bin.dat'), Buffer.from([0, 1, 2, 255, 0, 7]));
    write(path.join(plain, 'latin1.txt'), Buffer.from('caf\xe9\n', 'latin1'));
    write(path.join(plain, 'run.sh'), '#!/bin/sh\n');
    fs.symlinkSync('keep.txt', path.join(plain, 'link'));
    spawnSync('mkfifo', [path.join(plain, 'fifo')]);
    const original = snapshotDir(plain, ['fifo']);

    const wt = await create({ sessionId: 'cp1', workspace: plain, diskBytes: 32 * MiB });
    expect(wt).toMatchObject({ kind: 'copy', userRepo: null, baseBranch: null, agentBranch: null, dir: wt.workTree });
    expect(wt.baseCommit).toMatch(/^[0-9a-f]{40}$/);
    expect(snapshotDir(wt.dir, ['lost+found'])).toEqual(original); // no FIFO
    const script = [
      'printf "one\\n2\\nthree\\nfour\\n" > edit.txt',
      'rm gone.txt',
      'printf "\\000\\001new binary\\377" > new.bin',
      'printf "\\351t\\351\\n" > latin1.txt',
      'chmod +x run.sh',
      'rm link && ln -s edit.txt link',
      'mkdir -p a/b && printf "deep\\n" > a/b/c.txt',
    ].join(' && ');
    expect(agent(wt.dir, script)).toEqual({ status: 0, stderr: '' });
    const expected = snapshotDir(wt.dir, ['lost+found']);

    const result = await commitWorktree(wt, { sessionId: 'cp1', prd: 'prd.md' });
    expect(result).toMatchObject({ kind: 'copy', branch: null, patchTooLarge: false, filesChanged: 7 });
    expect(result.patch).toBeTypeOf('string');

    const fresh = path.join(tmp, 'fresh');
    fs.cpSync(plain, fresh, { recursive: true, verbatimSymlinks: true, filter: (s) => !s.endsWith('fifo') });
    fs.writeFileSync(path.join(tmp, 'p.diff'), result.patch!);
    const applied = spawnSync('git', ['apply', path.join(tmp, 'p.diff')], { cwd: fresh, encoding: 'utf8', env: ENV });
    expect(applied.stderr).toBe('');
    expect(applied.status).toBe(0);
    expect(snapshotDir(fresh)).toEqual(expected);
  });

  it('gives a readable text patch, and none when it is over 8 MiB', async () => {
    const plain = path.join(tmp, 'plain');
    write(path.join(plain, 'a.txt'), 'old line\n');
    const wt = await create({ sessionId: 'cp2', workspace: plain });
    write(path.join(wt.dir, 'a.txt'), 'new line\n');
    const small = await commitWorktree(wt, { sessionId: 'cp2', prd: 'p' });
    expect(small.patch).toContain('-old line\n+new line\n');
    expect(small).toMatchObject({ filesChanged: 1, insertions: 1, deletions: 1 });

    const wt2 = await create({ sessionId: 'cp3', workspace: plain });
    const lines = Array.from({ length: 150_000 }, (_, i) => `line ${i} ${'x'.repeat(60)}`).join('\n');
    write(path.join(wt2.dir, 'big.txt'), lines);
    const big = await commitWorktree(wt2, { sessionId: 'cp3', prd: 'p' });
    expect(big).toMatchObject({ patch: null, patchTooLarge: true, filesChanged: 1, insertions: 150_000 });
    expect(big.commit).toMatch(/^[0-9a-f]{40}$/);
  });

  it('enforces the disk limit on the session file system only', async () => {
    initRepo(repo, { 'a.txt': 'a\n' });
    const hostBefore = fs.statfsSync(tmp);
    const wt = await create({ sessionId: 'disk1', workspace: repo, diskBytes: 32 * MiB });
    const r = agent(wt.dir, 'head -c 100000000 /dev/zero > big');
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('No space left on device');
    const usage = worktreeDiskUsage(wt);
    // Twice the limit, half reserved for root (the worker's git): the agent sees none left.
    expect(usage.totalBytes).toBeLessThanOrEqual(64 * MiB);
    expect(usage.totalBytes).toBeGreaterThan(48 * MiB);
    expect(usage.availBytes).toBeLessThan(MiB);
    const hostAfter = fs.statfsSync(tmp);
    const dropped = (hostBefore.bavail - hostAfter.bavail) * hostAfter.bsize;
    expect(dropped).toBeLessThan(40 * MiB);
    const img = path.join(wt.base, 'disk.img');
    expect(fs.statSync(img).size).toBe(64 * MiB);
    await removeWorktree(wt);
    expect(loopLines(img)).toEqual([]);
    expect(fs.existsSync(wt.base)).toBe(false);
  });

  it('reports no commit and creates no branch when nothing changed', async () => {
    const base = initRepo(repo, { 'a.txt': 'a\n' });
    const refs = refsOf(repo);
    const wt = await create({ sessionId: 'none1', workspace: repo });
    // Rewriting a file with the same content, or touching it, is no change.
    expect(agent(wt.dir, 'printf "a\\n" > a.txt && touch a.txt').status).toBe(0);
    expect(await commitWorktree(wt, { sessionId: 'none1', prd: 'p' })).toEqual({
      kind: 'git',
      commit: null,
      baseCommit: base,
      branch: null,
      filesChanged: 0,
      insertions: 0,
      deletions: 0,
      diffstat: '',
      patch: null,
      patchTooLarge: false,
      skipped: [],
    });
    expect(refsOf(repo)).toBe(refs);

    const plain = path.join(tmp, 'plain');
    write(path.join(plain, 'x'), 'x\n');
    const cw = await create({ sessionId: 'none2', workspace: plain });
    expect(await commitWorktree(cw, { sessionId: 'none2', prd: 'p' })).toMatchObject({ kind: 'copy', commit: null, patch: '', filesChanged: 0 });
  });

  it('refuses to overwrite an existing session branch', async () => {
    const base = initRepo(repo, { 'a.txt': 'a\n' });
    git(repo, 'branch', 'loki/session-dup1', base);
    const wt = await create({ sessionId: 'dup1', workspace: repo });
    write(path.join(wt.dir, 'a.txt'), 'agent\n');
    const err = await commitWorktree(wt, { sessionId: 'dup1', prd: 'p' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WorktreeError);
    expect((err as WorktreeError).step).toBe('fetch');
    expect((err as WorktreeError).message).toContain('already exists');
    expect(git(repo, 'rev-parse', 'refs/heads/loki/session-dup1')).toBe(base);

    // Once the conflicting branch is gone, a retry delivers the same commit; another retry is a no-op.
    git(repo, 'branch', '-D', 'loki/session-dup1');
    const retry = await commitWorktree(wt, { sessionId: 'dup1', prd: 'p' });
    expect(retry).toMatchObject({ branch: 'loki/session-dup1', filesChanged: 1 });
    expect(git(repo, 'rev-parse', 'refs/heads/loki/session-dup1')).toBe(retry.commit);
    expect((await commitWorktree(wt, { sessionId: 'dup1', prd: 'p' })).commit).toBe(retry.commit);
    expect(treeOf(repo, retry.commit!)).toEqual({ 'a.txt': 'agent\n' });
  });

  it('fails loudly and cleans up: bad session id, no commits, broken .git, existing session dir', async () => {
    fs.mkdirSync(repo);
    const bad = await createWorktree({ sessionId: '../x', workspace: repo, root, diskBytes: null, owner: null }).catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(WorktreeError);
    expect((bad as WorktreeError).step).toBe('prepare');

    git(repo, 'init', '-q', '-b', 'main');
    const empty = await createWorktree({ sessionId: 'e1', workspace: repo, root, diskBytes: 32 * MiB, owner: AGENT }).catch((e: unknown) => e);
    expect(empty).toBeInstanceOf(WorktreeError);
    expect((empty as WorktreeError).message).toContain('no commits');
    expect(fs.existsSync(path.join(root, 'e1'))).toBe(false);
    expect(loopLines(path.join(root, 'e1', 'disk.img'))).toEqual([]);

    // A `.git` that git rejects is an error, never a silent fallback to a copy.
    const broken = path.join(tmp, 'broken');
    write(path.join(broken, '.git'), 'gitdir: /nonexistent\n');
    const b = await createWorktree({ sessionId: 'e2', workspace: broken, root, diskBytes: null, owner: null }).catch((e: unknown) => e);
    expect(b).toBeInstanceOf(WorktreeError);
    expect(fs.existsSync(path.join(root, 'e2'))).toBe(false);

    fs.mkdirSync(path.join(root, 'e3'));
    write(path.join(root, 'e3', 'keep'), 'k');
    const plain = path.join(tmp, 'plain');
    fs.mkdirSync(plain);
    const exists = await createWorktree({ sessionId: 'e3', workspace: plain, root, diskBytes: null, owner: null }).catch((e: unknown) => e);
    expect((exists as WorktreeError).message).toContain('already exists');
    expect(fs.readFileSync(path.join(root, 'e3', 'keep'), 'utf8')).toBe('k');
  });

  it('removes a mounted worktree described by a reconstructed record with a symlinked root', async () => {
    initRepo(repo, { 'a.txt': 'a\n' });
    fs.mkdirSync(root, { mode: 0o700 });
    const link = path.join(tmp, 'rootlink');
    fs.symlinkSync(root, link);
    const wt = await createWorktree({ sessionId: 'stub1', workspace: repo, root: link, diskBytes: 32 * MiB, owner: AGENT });
    expect(wt.base).toBe(path.join(root, 'stub1'));
    const img = path.join(wt.base, 'disk.img');
    const base = path.join(link, 'stub1');
    const stub: Worktree = {
      ...wt,
      base,
      fsRoot: path.join(base, 'fs'),
      workTree: path.join(base, 'fs', 'work'),
      dir: path.join(base, 'fs', 'work'),
      gitDir: path.join(base, 'git'),
      mounted: false,
    };
    await removeWorktree(stub);
    expect(fs.existsSync(wt.base)).toBe(false);
    expect(mounted(wt.fsRoot)).toBe(false);
    expect(loopLines(img)).toEqual([]);
    await expect(removeWorktree({ ...stub, base: '/etc', fsRoot: '/etc/fs' })).rejects.toThrow(WorktreeError);
  });

  it('removes a worktree the agent made hard to delete', async () => {
    initRepo(repo, { 'a.txt': 'a\n' });
    for (const diskBytes of [null, 32 * MiB]) {
      const wt = await create({ sessionId: `rm${diskBytes ? 'disk' : 'plain'}`, workspace: repo, diskBytes });
      const r = agent(wt.dir, 'mkdir -p ro/inner && printf x > ro/inner/f && chmod 000 ro/inner/f && chmod 555 ro/inner && chmod 000 ro && chmod 000 a.txt');
      expect(r.status).toBe(0);
      await removeWorktree(wt);
      expect(fs.existsSync(wt.base)).toBe(false);
    }
  });

  it('lists and prunes session branches, never a checked-out one', async () => {
    const c1 = initRepo(repo, { 'a.txt': 'a\n' });
    write(path.join(repo, 'a.txt'), 'a2\n');
    git(repo, 'commit', '-q', '-am', 'two');
    const c2 = git(repo, 'rev-parse', 'HEAD');
    git(repo, 'checkout', '-q', '-b', 'side', c1);
    write(path.join(repo, 's.txt'), 's\n');
    git(repo, 'add', 's.txt');
    git(repo, 'commit', '-q', '-m', 'side');
    const side = git(repo, 'rev-parse', 'HEAD');
    git(repo, 'branch', 'loki/session-merged1', c1);
    git(repo, 'branch', 'loki/session-merged2', c2);
    git(repo, 'branch', 'loki/session-unmerged', side);
    git(repo, 'branch', 'loki/session-linked', c1);
    git(repo, 'branch', 'loki/session-here', c1);
    git(repo, 'branch', 'loki/other', c1);
    git(repo, 'worktree', 'add', '-q', path.join(tmp, 'linked'), 'loki/session-linked');
    git(repo, 'checkout', '-q', 'loki/session-here');

    expect(await listSessionBranches(repo, { into: 'main' })).toEqual([
      { branch: 'loki/session-here', commit: c1, merged: true },
      { branch: 'loki/session-linked', commit: c1, merged: true },
      { branch: 'loki/session-merged1', commit: c1, merged: true },
      { branch: 'loki/session-merged2', commit: c2, merged: true },
      { branch: 'loki/session-unmerged', commit: side, merged: false },
    ]);
    // Default `into`: the current branch (loki/session-here at c1).
    expect((await listSessionBranches(repo)).filter((b) => b.merged).map((b) => b.branch)).toEqual([
      'loki/session-here',
      'loki/session-linked',
      'loki/session-merged1',
    ]);

    expect(await pruneSessionBranches(repo, { mode: 'merged', into: 'main' })).toEqual([
      { branch: 'loki/session-merged1', commit: c1 },
      { branch: 'loki/session-merged2', commit: c2 },
    ]);
    expect(await pruneSessionBranches(repo, { mode: 'all' })).toEqual([{ branch: 'loki/session-unmerged', commit: side }]);
    expect(git(repo, 'for-each-ref', '--format=%(refname:short)', 'refs/heads/')).toBe(
      ['loki/other', 'loki/session-here', 'loki/session-linked', 'main', 'side'].join('\n'),
    );
    expect(await pruneSessionBranches(repo, { mode: 'all' })).toEqual([]);
    const bad = await listSessionBranches(repo, { into: '--output=/tmp/x' }).catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(WorktreeError);
  });

  it('handles a repository with 10,000 files', { timeout: 300_000 }, async () => {
    fs.mkdirSync(repo);
    for (let d = 0; d < 100; d++) {
      for (let f = 0; f < 100; f++) write(path.join(repo, `d${d}`, `f${f}.txt`), `file ${d}/${f}\n`.repeat(20));
    }
    git(repo, 'init', '-q', '-b', 'main');
    git(repo, 'add', '-A');
    git(repo, 'commit', '-q', '-m', 'big');

    let t = performance.now();
    const wt = await create({ sessionId: 'big1', workspace: repo, diskBytes: 512 * MiB });
    const createMs = performance.now() - t;
    expect(agent(wt.dir, 'for i in $(seq 0 99); do echo changed >> d$i/f0.txt; echo new > d$i/new.txt; done').status).toBe(0);
    t = performance.now();
    const result = await commitWorktree(wt, { sessionId: 'big1', prd: 'p' });
    const commitMs = performance.now() - t;
    t = performance.now();
    await removeWorktree(wt);
    const removeMs = performance.now() - t;
    expect(result).toMatchObject({ filesChanged: 200, insertions: 200, deletions: 0 });
    const copyRoot = path.join(tmp, 'copyws');
    fs.cpSync(repo, copyRoot, { recursive: true, filter: (s) => path.basename(s) !== '.git' });
    t = performance.now();
    const cw = await create({ sessionId: 'big2', workspace: copyRoot, diskBytes: 512 * MiB });
    const copyCreateMs = performance.now() - t;
    expect(agent(cw.dir, 'echo changed >> d0/f0.txt').status).toBe(0);
    t = performance.now();
    const cres = await commitWorktree(cw, { sessionId: 'big2', prd: 'p' });
    const copyCommitMs = performance.now() - t;
    expect(cres.filesChanged).toBe(1);
    console.log(
      `10,000 files: git create ${createMs.toFixed(0)} ms, commit (200 files changed) ${commitMs.toFixed(0)} ms, ` +
        `remove ${removeMs.toFixed(0)} ms; copy create ${copyCreateMs.toFixed(0)} ms, commit ${copyCommitMs.toFixed(0)} ms`,
    );
  });
});

describe.skipIf(!isRoot)('session worktrees: hostile users and agents', () => {
  /** A repository (and its checkout) owned by `uid`, with a secret committed. */
  function victimRepo(dir: string, uid: number): string {
    const base = initRepo(dir, { 'secret.txt': 'root only\n' });
    spawnSync('chown', ['-R', `${uid}:${uid}`, dir]);
    return base;
  }

  it('hands the session commit over through a pipe: the repository owner never gets a directory the worker deletes', async () => {
    // The owner of the repository can run code during every git command the worker
    // runs as them (here: core.alternateRefsCommand, which `git fetch` runs). Whatever
    // directory of the worker's they can write to then (a bundle directory given to
    // them, say) is one they can fill with symbolic links under root's chown and rm -r.
    const base = initRepo(repo, { 'a.txt': 'a\n' });
    const alt = path.join(tmp, 'alt.git');
    git(tmp, 'clone', '-q', '--bare', repo, alt);
    fs.writeFileSync(path.join(repo, '.git', 'objects', 'info', 'alternates'), `${alt}/objects\n`);
    const probe = path.join(tmp, 'probe.sh');
    const tmpdir = os.tmpdir();
    write(
      probe,
      `#!/bin/sh\necho ran >> ${markers}/probe-ran\nfor d in ${tmpdir}/* ${tmpdir}/.[!.]*; do\n` +
        `  if [ -d "$d" ] && [ -O "$d" ] && touch "$d/planted-by-owner" 2>/dev/null; then echo "$d" >> ${markers}/foothold; fi\ndone\n`,
      0o755,
    );
    git(repo, 'config', 'core.alternateRefsCommand', probe);
    spawnSync('chown', ['-R', '4242:4242', repo, alt]);

    const wt = await create({ sessionId: 'pipe1', workspace: repo, diskBytes: 32 * MiB });
    expect(agent(wt.dir, 'printf "agent\\n" > a.txt && head -c 3000000 /dev/urandom > blob').status).toBe(0);
    const result = await commitWorktree(wt, { sessionId: 'pipe1', prd: 'p' });
    expect(fs.existsSync(path.join(markers, 'foothold')) ? fs.readFileSync(path.join(markers, 'foothold'), 'utf8') : '').toBe('');
    expect(git(repo, 'rev-parse', 'refs/heads/loki/session-pipe1')).toBe(result.commit);
    expect(git(repo, 'rev-parse', `${result.commit}^`)).toBe(base);
    expect(Object.keys(treeOf(repo, result.commit!)).sort()).toEqual(['a.txt', 'blob']);
    expect(git(repo, 'fsck', '--no-dangling')).toBe('');
    // Everything the delivery wrote in the repository belongs to its owner.
    const notOwned: string[] = [];
    const visit = (d: string) => {
      for (const name of fs.readdirSync(d)) {
        const full = path.join(d, name);
        const st = fs.lstatSync(full);
        if (st.uid !== 4242) notOwned.push(full);
        if (st.isDirectory()) visit(full);
      }
    };
    visit(path.join(repo, '.git'));
    expect(notOwned).toEqual([]);
  });

  it('delivers nothing when the pack does not connect to what the repository has', async () => {
    initRepo(repo, { 'a.txt': 'a\n' });
    const wt = await create({ sessionId: 'pipe2', workspace: repo });
    write(path.join(wt.dir, 'b.txt'), 'b\n');
    // The base commit disappears from the user's repository (a rewritten history, pruned).
    fs.rmSync(path.join(repo, '.git'), { recursive: true, force: true });
    initRepo(repo, { 'other.txt': 'o\n' });
    const err = await commitWorktree(wt, { sessionId: 'pipe2', prd: 'p' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WorktreeError);
    expect((err as WorktreeError).step).toBe('fetch');
    expect((err as WorktreeError).message).toContain('index-pack');
    expect(refsOf(repo)).not.toContain('loki/session-pipe2');
  });

  it('refuses a workspace whose .git is a symbolic link to another user\'s repository', async () => {
    const victim = path.join(tmp, 'victim');
    victimRepo(victim, 0);
    const victimRefs = refsOf(victim);
    const ws = path.join(tmp, 'ws');
    fs.mkdirSync(path.join(ws, 'sub'), { recursive: true });
    fs.symlinkSync(path.join(victim, '.git'), path.join(ws, '.git'));
    spawnSync('chown', ['-R', '-h', '4242:4242', ws]);
    for (const [id, workspace] of [
      ['ln-top', ws],
      ['ln-sub', path.join(ws, 'sub')],
    ] as const) {
      const err = await create({ sessionId: id, workspace }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(WorktreeError);
      expect((err as WorktreeError).step).toBe('prepare');
      expect((err as WorktreeError).message).toMatch(/\.git is a symbolic link/);
      expect(fs.existsSync(path.join(root, id))).toBe(false);
    }
    // The same link left by the repository's owner in its own (root's) checkout is refused too.
    const rootWs = path.join(tmp, 'rootws');
    fs.mkdirSync(rootWs);
    fs.symlinkSync(path.join(victim, '.git'), path.join(rootWs, '.git'));
    await expect(listSessionBranches(rootWs)).rejects.toThrow(/symbolic link/);
    expect(refsOf(victim)).toBe(victimRefs);
  });

  it("refuses a gitfile, or a .git directory, that belongs to someone else than the work tree's owner", async () => {
    const victim = path.join(tmp, 'victim');
    victimRepo(victim, 0);
    const victimRefs = refsOf(victim);
    // A user's directory whose gitfile points at root's repository (readable by all).
    const ws = path.join(tmp, 'ws');
    write(path.join(ws, '.git'), `gitdir: ${path.join(victim, '.git')}\n`);
    spawnSync('chown', ['-R', '4242:4242', ws]);
    const err = await create({ sessionId: 'gf1', workspace: ws }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WorktreeError);
    expect((err as WorktreeError).step).toBe('prepare');
    // (git's own ownership check, run as 4242, or ours)
    expect((err as WorktreeError).message).toMatch(/is owned by uid 0, not by uid 4242|dubious ownership/);
    expect(fs.existsSync(path.join(root, 'gf1'))).toBe(false);
    // A user's checkout whose .git directory is root's.
    victimRepo(repo, 0);
    spawnSync('chown', ['4242:4242', repo, path.join(repo, 'secret.txt')]);
    const err2 = await create({ sessionId: 'gf2', workspace: repo }).catch((e: unknown) => e);
    expect((err2 as WorktreeError).message).toMatch(/\.git entry .* is owned by uid 0, not by uid 4242/);
    expect(refsOf(victim)).toBe(victimRefs);
    expect(refsOf(repo)).not.toContain('loki/');
  });

  it('accepts a linked work tree (a gitfile) when everything belongs to the same user', async () => {
    const base = initRepo(repo, { 'a.txt': 'a\n' });
    const linked = path.join(tmp, 'linked');
    git(repo, 'worktree', 'add', '-q', '-b', 'feature', linked);
    spawnSync('chown', ['-R', '4242:4242', repo, linked]);
    const wt = await create({ sessionId: 'lw1', workspace: linked });
    expect(wt).toMatchObject({ kind: 'git', userRepo: fs.realpathSync(linked), baseCommit: base, baseBranch: 'feature' });
    write(path.join(wt.dir, 'b.txt'), 'b\n');
    const result = await commitWorktree(wt, { sessionId: 'lw1', prd: 'p' });
    expect(git(repo, 'rev-parse', 'refs/heads/loki/session-lw1')).toBe(result.commit);
    expect(treeOf(repo, result.commit!)).toEqual({ 'a.txt': 'a\n', 'b.txt': 'b\n' });
  });

  it('keeps the private git directory inside the disk limit, out of the agent\'s reach', async () => {
    initRepo(repo, { 'a.txt': 'a\n' });
    const wt = await create({ sessionId: 'gd1', workspace: repo, diskBytes: 64 * MiB });
    expect(wt.gitDir).toBe(path.join(wt.fsRoot, 'git'));
    expect(agent(wt.dir, 'head -c 20971520 /dev/urandom > blob').status).toBe(0);
    // The agent reaches neither fs/ nor G (even knowing their names).
    expect(agent(wt.dir, 'ls ..').status).not.toBe(0);
    expect(agent(wt.dir, 'ls ../git').status).not.toBe(0);
    expect(agent(wt.dir, 'touch ../git/x').status).not.toBe(0);
    expect(agent(wt.dir, 'mv ../git ../g2').status).not.toBe(0);
    const result = await commitWorktree(wt, { sessionId: 'gd1', prd: 'p' });
    expect(treeOf(repo, result.commit!)).toHaveProperty('blob');
    // 20 MiB of objects were written, none of them on the host's file system.
    const hostBytes = (dir: string): number => {
      let total = 0;
      for (const name of fs.readdirSync(dir)) {
        const full = path.join(dir, name);
        if (full === wt.fsRoot || full === path.join(wt.base, 'disk.img')) continue;
        const st = fs.lstatSync(full);
        total += st.blocks * 512;
        if (st.isDirectory()) total += hostBytes(full);
      }
      return total;
    };
    expect(hostBytes(wt.base)).toBeLessThan(MiB);
    expect(worktreeDiskUsage(wt).availBytes).toBeLessThan(64 * MiB - 40 * MiB);
    // An agent that fills its share still gets its work committed: the worker's git
    // writes into the half reserved for root.
    const filled = await create({ sessionId: 'gd2', workspace: repo, diskBytes: 64 * MiB });
    expect(agent(filled.dir, 'head -c 100000000 /dev/urandom > more').status).not.toBe(0);
    expect(worktreeDiskUsage(filled).availBytes).toBeLessThan(MiB);
    const full = await commitWorktree(filled, { sessionId: 'gd2', prd: 'p' });
    expect(full.commit).not.toBeNull();
    expect(Object.keys(treeOf(repo, full.commit!))).toContain('more');
    await removeWorktree(filled);
  });

  it('commits a worktree holding a directory tree 2,100 levels deep (leaving it out), and removes one', async () => {
    initRepo(repo, { 'a.txt': 'a\n' });
    // (dash's `cd` gives up past PATH_MAX: relative chdir from node)
    const chain = 'const fs = require("fs"); for (let i = 0; i < 2100; i++) { fs.mkdirSync("a"); process.chdir("a"); } fs.writeFileSync("f", "deep");';
    const deep = `mkdir keep && printf "k\\n" > keep/f && ${process.execPath} -e '${chain}'`;
    for (const diskBytes of [null, 64 * MiB]) {
      const id = diskBytes ? 'deep-disk' : 'deep-plain';
      const wt = await create({ sessionId: id, workspace: repo, diskBytes });
      expect(agent(wt.dir, deep)).toEqual({ status: 0, stderr: '' });
      const result = await commitWorktree(wt, { sessionId: id, prd: 'p' });
      expect(treeOf(repo, result.commit!)).toEqual({ 'a.txt': 'a\n', 'keep/f': 'k\n' });
      expect(result.skipped).toHaveLength(1);
      expect(result.skipped[0]).toMatch(new RegExp(`^(a/){120}… \\(directory nested more than ${MAX_TREE_DEPTH} levels deep, removed with its contents\\)$`));
      expect(result.skipped[0]!.length).toBeLessThan(400);
      // What is left of the chain is MAX_TREE_DEPTH levels of (empty) directories.
      let depth = 0;
      for (let d = path.join(wt.dir, 'a'); fs.existsSync(d) && depth < 600; d = path.join(d, 'a')) depth++;
      expect(depth).toBe(MAX_TREE_DEPTH);
      await removeWorktree(wt);
      expect(fs.existsSync(wt.base)).toBe(false);
    }
    // Removal without a commit, nothing mounted: the whole chain goes.
    const wt = await create({ sessionId: 'deep-rm', workspace: repo });
    expect(agent(wt.dir, deep).status).toBe(0);
    await removeWorktree(wt);
    expect(fs.existsSync(wt.base)).toBe(false);
  });

  it('leaves out sparse files larger than the file system instead of hashing them until the timeout', { timeout: 240_000 }, async () => {
    initRepo(repo, { 'a.txt': 'a\n' });
    // On the host's file system (no disk limit): a 3 TiB hole.
    const wt = await create({ sessionId: 'sparse1', workspace: repo });
    expect(agent(wt.dir, 'truncate -s 3T huge && printf "s\\n" > small').status).toBe(0);
    const t = performance.now();
    const result = await commitWorktree(wt, { sessionId: 'sparse1', prd: 'p', git: { timeoutMs: 60_000 } });
    expect(performance.now() - t).toBeLessThan(30_000);
    expect(treeOf(repo, result.commit!)).toEqual({ 'a.txt': 'a\n', small: 's\n' });
    expect(result.skipped).toEqual([expect.stringMatching(/^huge \(3298534883328 bytes, larger than the file system \(\d+ bytes\), removed\)$/)]);
    expect(fs.existsSync(path.join(wt.dir, 'huge'))).toBe(false);

    // On a 64 MiB session file system: 150 files of 1 GiB each; the report is capped.
    const dw = await create({ sessionId: 'sparse2', workspace: repo, diskBytes: 64 * MiB });
    expect(agent(dw.dir, 'for i in $(seq 1 150); do truncate -s 1G big$i || exit 1; done && printf "s\\n" > small').status).toBe(0);
    const r2 = await commitWorktree(dw, { sessionId: 'sparse2', prd: 'p', git: { timeoutMs: 60_000 } });
    expect(treeOf(repo, r2.commit!)).toEqual({ 'a.txt': 'a\n', small: 's\n' });
    expect(r2.skipped).toHaveLength(100);
    expect(r2.skipped.slice(0, 99).every((e) => /^big\d+ \(1073741824 bytes, larger than the file system/.test(e))).toBe(true);
    expect(r2.skipped[99]).toBe('… and 51 more');

    // Hard links: each is within the size, together they are not (git would read every one).
    const hw = await create({ sessionId: 'sparse3', workspace: repo, diskBytes: 64 * MiB });
    expect(agent(hw.dir, 'head -c 30000000 /dev/zero > z && for i in 1 2 3 4; do ln z z$i || exit 1; done').status).toBe(0);
    const r3 = await commitWorktree(hw, { sessionId: 'sparse3', prd: 'p' });
    expect(r3.skipped.length).toBeGreaterThan(0);
    expect(r3.skipped.every((e) => e.includes('add up to more than the file system'))).toBe(true);
    expect(Object.keys(treeOf(repo, r3.commit!)).length + r3.skipped.length).toBe(6);
  });

  it('releases a kept worktree (no mount, no loop device) and commits it later from its image', async () => {
    const base = initRepo(repo, { 'a.txt': 'a\n' });
    git(repo, 'branch', 'loki/session-rel1', base);
    const wt = await create({ sessionId: 'rel1', workspace: repo, diskBytes: 32 * MiB });
    expect(agent(wt.dir, 'printf "agent\\n" > a.txt').status).toBe(0);
    const err = await commitWorktree(wt, { sessionId: 'rel1', prd: 'p' }).catch((e: unknown) => e);
    expect((err as WorktreeError).step).toBe('fetch');

    const img = path.join(wt.base, 'disk.img');
    await releaseWorktree(wt);
    await releaseWorktree(wt); // idempotent
    expect(wt.mounted).toBe(false);
    expect(mounted(wt.fsRoot)).toBe(false);
    expect(loopLines(img)).toEqual([]);
    expect(fs.statSync(img).size).toBe(64 * MiB);
    expect(fs.readdirSync(wt.fsRoot)).toEqual([]);

    // Later (a retry, or recovery after a restart from a record of the worktree).
    git(repo, 'branch', '-D', 'loki/session-rel1');
    const record: Worktree = JSON.parse(JSON.stringify(wt));
    const result = await commitWorktree(record, { sessionId: 'rel1', prd: 'p' });
    expect(record.mounted).toBe(true);
    expect(mounted(wt.fsRoot)).toBe(true);
    expect(treeOf(repo, result.commit!)).toEqual({ 'a.txt': 'agent\n' });
    await removeWorktree(record);
    expect(loopLines(img)).toEqual([]);
    expect(fs.existsSync(wt.base)).toBe(false);

    // Without a disk limit there is nothing to release.
    const plain = await create({ sessionId: 'rel2', workspace: repo });
    await releaseWorktree(plain);
    expect(fs.existsSync(path.join(plain.dir, 'a.txt'))).toBe(true);
  });
});

/** The tree of a commit in a worktree's private repository (read by the test's own git). */
function treeOfPrivate(wt: Worktree, commit: string): Record<string, string> {
  return treeOf(wt.gitDir, commit);
}

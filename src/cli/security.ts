/**
 * `loki security check`: file modes of the state directory, the workspace's
 * .gitignore, and secrets committed to (or lying in) the workspace. Exit 0 when
 * nothing is found, 1 with findings, 2 on errors.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { configOrExit } from '../node';
import { findSecrets } from '../util/redact';

interface Finding {
  level: 'error' | 'warning';
  what: string;
}

const MAX_FILE = 1024 * 1024;
const SKIP_DIRS = new Set(['.git', 'node_modules', '.wrangler', 'dist', 'coverage', '.tmp']);

const ENV_FILE = /(^|\/)\.env(\..*)?$/;

/** Walk `root` (no git): every regular file below it, bounded, skipping tool directories. */
function walkFiles(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.isDirectory() && !SKIP_DIRS.has(e.name)) walk(path.join(dir, e.name));
      else if (e.isFile()) out.push(path.join(dir, e.name));
      if (out.length > 50_000) return;
    }
  };
  walk(root);
  return out;
}

/**
 * The files to scan for secrets (git's view: tracked and untracked, not ignored;
 * without git, a walk) and the `.env` files whose mode is checked: those also
 * when ignored, since an ignored `.env` is where secrets are meant to live.
 */
function workspaceFiles(root: string): { scan: string[]; env: string[] } {
  const git = (args: string[]) => spawnSync('git', ['-C', root, 'ls-files', '-z', ...args], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  const listed = git(['--cached', '--others', '--exclude-standard']);
  if (listed.status === 0) {
    const files = (r: ReturnType<typeof git>) => [...new Set(r.stdout.split('\0').filter(Boolean))].map((f) => path.join(root, f));
    const env = git(['--cached', '--others', '--', ':(glob)**/.env', ':(glob)**/.env.*']);
    return { scan: files(listed), env: env.status === 0 ? files(env) : files(listed).filter((f) => ENV_FILE.test(f)) };
  }
  const all = walkFiles(root);
  return { scan: all, env: all.filter((f) => ENV_FILE.test(path.relative(root, f))) };
}

/**
 * Where secrets are in `text`, one range per secret: the patterns overlap (an
 * `sk-ant-…` key is also an `sk-…` key; a `?token=loki_…` is a loki token and a
 * token parameter), so overlapping matches are merged.
 */
function secretRanges(text: string): { index: number; length: number }[] {
  const merged: { index: number; end: number }[] = [];
  for (const hit of findSecrets(text)) {
    const last = merged[merged.length - 1];
    if (last && hit.index < last.end) last.end = Math.max(last.end, hit.index + hit.length);
    else merged.push({ index: hit.index, end: hit.index + hit.length });
  }
  return merged.map((m) => ({ index: m.index, length: m.end - m.index }));
}

export function securityCheck(opts: { home: string; dbPath: string; workspace: string }): Finding[] {
  const findings: Finding[] = [];
  const mode = (p: string) => statSync(p).mode & 0o777;
  const dashDir = path.dirname(opts.dbPath);
  if (existsSync(dashDir) && mode(dashDir) & 0o077) findings.push({ level: 'error', what: `${dashDir} is mode ${mode(dashDir).toString(8)}; expected 700` });
  for (const f of [opts.dbPath, `${opts.dbPath}-wal`, `${opts.dbPath}-shm`, path.join(dashDir, 'audit-signing-key')]) {
    if (existsSync(f) && mode(f) & 0o077) findings.push({ level: 'error', what: `${f} is mode ${mode(f).toString(8)}; expected 600` });
  }
  const gi = path.join(opts.workspace, '.gitignore');
  const ignore = existsSync(gi) ? readFileSync(gi, 'utf8') : '';
  for (const needed of ['.loki/', '.env']) {
    if (!ignore.split('\n').some((l) => l.trim().replace(/^\//, '').replace(/\*$/, '') === needed || l.trim() === needed.replace(/\/$/, ''))) {
      findings.push({ level: 'warning', what: `.gitignore does not list ${needed}` });
    }
  }
  const files = workspaceFiles(opts.workspace);
  for (const file of files.env) {
    let st: ReturnType<typeof lstatSync>;
    try {
      st = lstatSync(file);
    } catch {
      continue;
    }
    const rel = path.relative(opts.workspace, file);
    if (st.isFile() && st.mode & 0o077) findings.push({ level: 'warning', what: `${rel} is readable by others (mode ${(st.mode & 0o777).toString(8)})` });
  }
  for (const file of files.scan) {
    let st: ReturnType<typeof lstatSync>;
    try {
      st = lstatSync(file);
    } catch {
      continue;
    }
    if (!st.isFile() || st.size > MAX_FILE) continue;
    const rel = path.relative(opts.workspace, file);
    const text = readFileSync(file, 'utf8');
    if (text.includes('\0')) continue;
    // One finding per line, however many secrets it holds.
    const byLine = new Map<number, number[]>();
    for (const hit of secretRanges(text)) {
      const line = text.slice(0, hit.index).split('\n').length;
      byLine.set(line, [...(byLine.get(line) ?? []), hit.length]);
    }
    for (const [line, lengths] of byLine) {
      const what = lengths.length === 1 ? 'a secret' : `${lengths.length} secrets`;
      findings.push({ level: 'error', what: `${rel}:${line}: looks like ${what} (${lengths.join(' and ')} characters; not shown)` });
    }
  }
  return findings;
}

export function securityCommands(program: Command): void {
  program
    .command('security')
    .description('security checks')
    .command('check')
    .description('check state-file modes, the workspace .gitignore, and secrets in the workspace (exit 1 on findings)')
    .option('--workspace <dir>', 'workspace to scan', '.')
    .option('--json', 'print JSON')
    .action((o: { workspace: string; json?: boolean }) => {
      const config = configOrExit();
      const workspace = path.resolve(o.workspace);
      if (!existsSync(workspace) || !statSync(workspace).isDirectory()) {
        process.stderr.write(`loki: no such workspace directory: ${o.workspace}\n`);
        process.exit(2);
      }
      const findings = securityCheck({ home: config.home, dbPath: config.dbPath, workspace });
      if (o.json) process.stdout.write(`${JSON.stringify({ ok: findings.length === 0, findings }, null, 2)}\n`);
      else if (findings.length === 0) process.stdout.write('security check: no findings\n');
      else for (const f of findings) process.stdout.write(`${f.level}: ${f.what}\n`);
      process.exit(findings.some((f) => f.level === 'error') ? 1 : 0);
    });
}

/** Workspaces for session tests: a root for LOKI_WORKSPACE_ROOTS with workspaces inside. */
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { SessionPolicy } from '../../src/sessions/api';

export const HOSTILE_PRD = "a b'; rm -rf ~; $(touch /tmp/pwned).md";

export function tempRoot(prefix = 'loki-roots-'): string {
  // realpath: /tmp may be a symlink on some systems; the server compares real paths.
  return mkdtempSync(path.join(os.tmpdir(), prefix));
}

/**
 * A workspace directory under `root` with a `prd.md` and, when given, a
 * `.loki/config.yaml`. Readable by everyone: the sandbox runs as uid 1000.
 */
export function makeWorkspace(root: string, name: string, opts: { config?: string; files?: Record<string, string> } = {}): string {
  const ws = path.join(root, name);
  mkdirSync(ws, { recursive: true });
  writeFileSync(path.join(ws, 'prd.md'), '# PRD\nbuild the thing\n');
  if (opts.config !== undefined) {
    mkdirSync(path.join(ws, '.loki'), { recursive: true });
    writeFileSync(path.join(ws, '.loki', 'config.yaml'), opts.config);
  }
  for (const [rel, content] of Object.entries(opts.files ?? {})) {
    mkdirSync(path.dirname(path.join(ws, rel)), { recursive: true });
    writeFileSync(path.join(ws, rel), content);
  }
  openUp(root);
  return ws;
}

/** chmod a+rX below (and including) `dir`. */
export function openUp(dir: string): void {
  chmodSync(dir, 0o755);
  for (const entry of readdirSync(dir)) {
    const p = path.join(dir, entry);
    const st = statSync(p);
    if (st.isDirectory()) openUp(p);
    else chmodSync(p, 0o644);
  }
}

/** A provider config (YAML) running `argv`, with sandbox settings merged in. */
export function providerConfig(argv: string[], sandbox: Record<string, unknown> = {}): string {
  const lines = [`provider:`, `  command: ${JSON.stringify(argv)}`, `sandbox:`];
  const settings = { memory_limit: '256m', cpu_limit: '1', timeout_seconds: 60, ...sandbox };
  for (const [k, v] of Object.entries(settings)) lines.push(`  ${k}: ${JSON.stringify(v)}`);
  return `${lines.join('\n')}\n`;
}

/**
 * SHA-256 of a session policy's canonical JSON (object keys sorted at every level,
 * arrays in order, no white space), written here independently of the server's
 * `canonicalPolicyJson` so the tests check it rather than repeat it.
 */
export function policyDigest(policy: unknown): string {
  const sort = (v: unknown): unknown =>
    Array.isArray(v)
      ? v.map(sort)
      : v !== null && typeof v === 'object'
        ? Object.fromEntries(
            Object.entries(v as Record<string, unknown>)
              .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
              .map(([k, x]) => [k, sort(x)]),
          )
        : v;
  return createHash('sha256').update(JSON.stringify(sort(policy))).digest('hex');
}

/** The effective policy of a session whose workspace asks for nothing, under the built-in operator policy. */
export const DEFAULT_SESSION_POLICY: SessionPolicy = {
  sandbox: true,
  image: 'loki-sandbox:local',
  runtime: 'runc',
  network: false,
  egress: [],
  memory_bytes: 4 * 1024 ** 3,
  nano_cpus: 2e9,
  timeout_seconds: 3600,
  idle_timeout_seconds: 900,
  disk_bytes: 10 * 1024 ** 3,
  mounts: [],
  env_allowlist: [],
  cap_add: [],
  user: '1000:1000',
  command: ['claude', '-p', '{prd}', '--output-format', 'stream-json', '--verbose'],
};

/** A session policy for runner tests: the defaults with `command` and `patch` applied. */
export function sessionPolicy(command: string[], patch: Partial<SessionPolicy> = {}): SessionPolicy {
  return { ...DEFAULT_SESSION_POLICY, command, ...patch };
}

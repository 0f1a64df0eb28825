/**
 * The one policy module: the operator's policy file (`$LOKI_HOME/policy.yaml`,
 * `LOKI_POLICY_FILE`) and the effective policy of one session.
 *
 * Trust model: the operator decides what any session may get. A workspace's
 * `.loki/config.yaml` is read once, when the session is created, and can only
 * narrow that: anything beyond it is refused with 400 `policy_violation` naming the
 * key and the limit. The result (`SessionPolicy`) is stored with the session, its
 * SHA-256 goes into the `session.start` audit entry, and the worker runs exactly
 * it (after checking it again against its own copy of the operator policy). No
 * file the agent can write is ever read again.
 */
import { createHash } from 'node:crypto';
import { lstatSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import type { SessionPolicy } from '../sessions/api';
import { isInside } from '../util/paths';
import {
  CAP_ADD_ALLOWED,
  CONFIG_RELATIVE_PATH,
  DEFAULT_IMAGE,
  DEFAULT_PROVIDER_COMMAND,
  EGRESS_ENTRY,
  FORBIDDEN_ENV,
  parseCpuLimit,
  parseMemoryLimit,
  type WorkspaceConfig,
} from './config';
import { type PolicyContext, parseUser, SandboxPolicyError, validateHostMount } from './policy';

export const AGENT_IMAGE = 'loki-agent:local';
export const DEFAULT_RUNTIME = 'runc';
const GiB = 1024 ** 3;
/** Built-in defaults for a session that asks for nothing (capped by the operator's limits). */
const SESSION_DEFAULTS = { memoryBytes: 4 * GiB, nanoCpus: 2e9, timeoutSeconds: 3600, diskBytes: 10 * GiB };

export interface OperatorPolicy {
  /** Where it came from (null: no file, the built-in defaults). */
  source: string | null;
  hostSessions: boolean;
  /** The only argvs a host session may run (a workspace file must never choose what runs on the host). */
  hostCommands: string[][];
  mountRoots: { path: string; mode: 'ro' | 'rw' }[];
  images: string[];
  runtimes: string[];
  envAllowlist: string[];
  limits: { memoryBytes: number; nanoCpus: number; timeoutSeconds: number; diskBytes: number | null };
  egress: { openNetwork: boolean; allow: string[]; privateDestinations: string[] };
}

export class PolicyFileError extends Error {
  readonly code = 'invalid_policy';
}

/** A session asks for more than the operator allows: 400 `policy_violation` (403 for host sessions). */
export class PolicyViolation extends Error {
  readonly code = 'policy_violation';
  constructor(
    /** The key that asked for too much, e.g. `sandbox.memory_limit`. */
    readonly key: string,
    message: string,
    readonly status: 400 | 403 = 400,
  ) {
    super(`${key}: ${message}`);
  }
}

const size = (what: string) =>
  z.union([z.string(), z.number()]).transform((v, ctx) => {
    const bytes = parseMemoryLimit(v);
    if (bytes === null) {
      ctx.addIssue({ code: 'custom', message: `expected a ${what} like 512m or 8g, got ${JSON.stringify(v)}` });
      return z.NEVER;
    }
    return bytes;
  });

const envName = z.string().superRefine((v, ctx) => {
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(v)) ctx.addIssue({ code: 'custom', message: `${JSON.stringify(v)} is not an environment variable name` });
  else if (FORBIDDEN_ENV.test(v)) ctx.addIssue({ code: 'custom', message: `${v} is a Loki credential and is never passed to an agent` });
});

const absoluteDir = z.string().refine((p) => p.startsWith('/') && !p.includes('\0'), { message: 'expected an absolute path' });

const egressPattern = z
  .string()
  .transform((v) => v.trim().toLowerCase())
  .refine((v) => EGRESS_ENTRY.test(v), { message: 'expected "host:port" or "*.domain:port"' });

const policySchema = z.strictObject({
  host_sessions: z.boolean().default(false),
  host_commands: z
    .array(z.array(z.string().min(1)).min(1, 'expected at least the program name'))
    .default([[...DEFAULT_PROVIDER_COMMAND]]),
  mount_roots: z
    .array(z.union([absoluteDir.transform((p) => ({ path: p, mode: 'ro' as const })), z.strictObject({ path: absoluteDir, mode: z.enum(['ro', 'rw']).default('ro') })]))
    .default([]),
  images: z.array(z.string().min(1)).default([DEFAULT_IMAGE, AGENT_IMAGE]),
  runtimes: z.array(z.string().regex(/^[a-z][a-z0-9._-]{0,63}$/, 'expected a Docker runtime name')).min(1).default([DEFAULT_RUNTIME]),
  env_allowlist: z.array(envName).default([]),
  limits: z
    .strictObject({
      memory: size('memory size').default(8 * GiB),
      cpu: z
        .union([z.string(), z.number()])
        .transform((v, ctx) => {
          const n = parseCpuLimit(v);
          if (n === null) {
            ctx.addIssue({ code: 'custom', message: `expected a positive number of CPUs, got ${JSON.stringify(v)}` });
            return z.NEVER;
          }
          return n;
        })
        .default(4e9),
      timeout_seconds: z.number().int().min(1).max(30 * 24 * 3600).default(14_400),
      /** `none` (or null) turns the disk limit off: an explicit operator decision. */
      disk: z.union([z.literal('none'), z.null(), size('disk size')]).default(10 * GiB),
    })
    .prefault({}),
  egress: z
    .strictObject({
      open_network: z.boolean().default(false),
      allow: z.array(egressPattern).default([]),
      private_destinations: z.array(egressPattern).default([]),
    })
    .prefault({}),
});

function firstIssue(error: z.ZodError, file: string): string {
  const issue = error.issues[0]!;
  const at = issue.path.map(String);
  if (issue.code === 'unrecognized_keys') return `${file}: ${[...at, issue.keys[0]].join('.')}: unknown key`;
  return `${file}: ${at.join('.') || '(root)'}: ${issue.message}`;
}

/** Validate an already-parsed policy document (exposed for tests). */
export function operatorPolicyFromObject(doc: unknown, o: { source: string | null; allowHostSessions?: boolean }): OperatorPolicy {
  const where = o.source ?? 'policy';
  if (doc !== null && doc !== undefined && (typeof doc !== 'object' || Array.isArray(doc))) {
    throw new PolicyFileError(`${where}: (root): expected a mapping`);
  }
  const parsed = policySchema.safeParse(doc ?? {});
  if (!parsed.success) throw new PolicyFileError(firstIssue(parsed.error, where));
  const p = parsed.data;
  const disk = p.limits.disk;
  return {
    source: o.source,
    hostSessions: p.host_sessions || o.allowHostSessions === true,
    hostCommands: p.host_commands,
    mountRoots: p.mount_roots,
    images: [...new Set(p.images)],
    runtimes: [...new Set(p.runtimes)],
    envAllowlist: [...new Set(p.env_allowlist)],
    limits: {
      memoryBytes: p.limits.memory,
      nanoCpus: p.limits.cpu,
      timeoutSeconds: p.limits.timeout_seconds,
      diskBytes: disk === 'none' || disk === null ? null : disk,
    },
    egress: { openNetwork: p.egress.open_network, allow: p.egress.allow, privateDestinations: p.egress.private_destinations },
  };
}

/**
 * Read the operator's policy file. A missing file gives the built-in defaults (no
 * host sessions, no extra mounts, no egress). A file that others can write, or that
 * is not owned by this user or root, is refused: it would let them widen the policy.
 */
export function loadOperatorPolicy(file: string, o: { allowHostSessions?: boolean } = {}): OperatorPolicy {
  let st: ReturnType<typeof lstatSync>;
  try {
    st = lstatSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return operatorPolicyFromObject({}, { source: null, ...o });
    throw new PolicyFileError(`${file}: cannot read: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  if (!st.isFile()) throw new PolicyFileError(`${file}: not a regular file (symlinks are not followed)`);
  const uid = process.getuid?.() ?? 0;
  if (st.uid !== uid && st.uid !== 0) throw new PolicyFileError(`${file}: owned by uid ${st.uid}, expected this user (${uid}) or root`);
  if ((st.mode & 0o022) !== 0) {
    throw new PolicyFileError(`${file}: writable by group or others (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it`);
  }
  if (st.size > 1024 * 1024) throw new PolicyFileError(`${file}: larger than 1 MiB`);
  let doc: unknown;
  try {
    doc = parseYaml(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new PolicyFileError(`${file}: not valid YAML: ${String((err as Error).message).split('\n')[0]}`);
  }
  return operatorPolicyFromObject(doc, { source: file, ...o });
}

/** The policy as the operator wrote it (for `/api/status` and `loki status`). */
export function operatorPolicySummary(p: OperatorPolicy): Record<string, unknown> {
  return {
    source: p.source,
    host_sessions: p.hostSessions,
    host_commands: p.hostCommands,
    mount_roots: p.mountRoots,
    images: p.images,
    runtimes: p.runtimes,
    env_allowlist: p.envAllowlist,
    limits: { memory_bytes: p.limits.memoryBytes, nano_cpus: p.limits.nanoCpus, timeout_seconds: p.limits.timeoutSeconds, disk_bytes: p.limits.diskBytes },
    egress: { open_network: p.egress.openNetwork, allow: p.egress.allow, private_destinations: p.egress.privateDestinations },
  };
}

// ---- matching ---------------------------------------------------------------

/** An egress entry the operator allows: a name within `egress.allow`, an IP or localhost listed in `private_destinations`. */
function egressPermitted(entry: string, op: OperatorPolicy): boolean {
  const { host } = splitHostPort(entry);
  if (IP_LITERAL.test(host) || host === 'localhost') return op.egress.privateDestinations.includes(entry);
  return op.egress.allow.some((p) => egressCovers(p, entry));
}

/** The operator's mount root (compared by real path) that `real` lies below, if any. */
function mountRootFor(real: string, op: OperatorPolicy): OperatorPolicy['mountRoots'][number] | undefined {
  return op.mountRoots.find((r) => {
    try {
      return isInside(realpathSync(r.path), real);
    } catch {
      return false;
    }
  });
}

/** The never-mounted rules (`validateHostMount`) as a policy violation under `key`. */
function checkDenyRules(real: string, mountContext: EffectivePolicyInput['mountContext'], label: string, key: string): void {
  try {
    validateHostMount(real, { ...mountContext, sessionId: '', workerId: '', workspace: '', prd: '', env: {} }, label);
  } catch (err) {
    if (err instanceof SandboxPolicyError) throw new PolicyViolation(key, err.message);
    throw err;
  }
}

function isHostCommand(command: readonly string[], op: OperatorPolicy): boolean {
  return op.hostCommands.some((c) => c.length === command.length && c.every((a, i) => a === command[i]));
}

function splitHostPort(entry: string): { host: string; port: string } {
  const i = entry.lastIndexOf(':');
  return { host: entry.slice(0, i), port: entry.slice(i + 1) };
}

/** Whether `pattern` (`host:port` or `*.domain:port`) covers `entry` (which may itself be a wildcard). */
export function egressCovers(pattern: string, entry: string): boolean {
  const p = splitHostPort(pattern);
  const e = splitHostPort(entry);
  if (p.port !== e.port) return false;
  if (p.host === e.host) return true;
  if (!p.host.startsWith('*.')) return false;
  const suffix = p.host.slice(1); // ".example.com"
  const host = e.host.startsWith('*.') ? e.host.slice(1) : e.host;
  return host.endsWith(suffix) && host.length > suffix.length;
}

const IP_LITERAL = /^(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-f:.]+\])$/;

function fmtBytes(n: number): string {
  if (n % GiB === 0) return `${n / GiB}g`;
  if (n % 1024 ** 2 === 0) return `${n / 1024 ** 2}m`;
  return `${n} bytes`;
}

// ---- the effective policy ------------------------------------------------------

export interface EffectivePolicyInput {
  /** The workspace's `.loki/config.yaml`, read once, now. */
  config: WorkspaceConfig;
  operator: OperatorPolicy;
  /** What the request asked for: `sandbox: false` asks for a host session. */
  requestedSandbox: boolean | undefined;
  /** `LOKI_SANDBOX_MODE` on the server: every session is sandboxed. */
  forceSandbox: boolean;
  /** The workspace's real path: no mount may expose it (or a directory holding it). */
  workspace?: string;
  /** For the mount checks (the host's protected paths). */
  mountContext: Pick<PolicyContext, 'home' | 'lokiHome' | 'dockerSocket'>;
}

/**
 * Merge a workspace config under the operator policy. Throws `PolicyViolation` for
 * anything the operator does not allow; defaults the workspace did not set are
 * capped at the operator's limits.
 */
export function effectiveSessionPolicy(i: EffectivePolicyInput): SessionPolicy {
  const { config, operator: op } = i;
  const s = config.sandbox;
  const explicit = new Set(config.explicit);
  const where = op.source ?? 'the built-in operator policy';
  const key = (k: string) => `${CONFIG_RELATIVE_PATH}: sandbox.${k}`;

  // Sandboxing is the default; a host session needs the request to ask for it and the operator to allow it.
  const host = i.requestedSandbox === false && !i.forceSandbox && !s.enabled;
  if (host && !op.hostSessions) {
    throw new PolicyViolation(
      'sandbox',
      `host sessions (sandbox: false) are not allowed by the operator (host_sessions: false in ${where}; LOKI_ALLOW_HOST_SESSIONS=true allows them)`,
      403,
    );
  }

  // What runs on the host is the operator's choice alone: a host session's command
  // must be one the policy lists, whatever the workspace's config says.
  if (host && !isHostCommand(config.provider.command, op)) {
    throw new PolicyViolation(
      `${CONFIG_RELATIVE_PATH}: provider.command`,
      `${JSON.stringify(config.provider.command)} is not one of the operator's host_commands (${where}); a host session runs only those`,
      403,
    );
  }

  const capped = (name: string, asked: number, max: number, def: number, fmt: (n: number) => string): number => {
    if (!explicit.has(name)) return Math.min(def, max);
    if (asked > max) throw new PolicyViolation(key(name), `${fmt(asked)} is above the operator's limit of ${fmt(max)} (${where})`);
    return asked;
  };
  const memoryBytes = capped('memory_limit', s.memoryBytes, op.limits.memoryBytes, SESSION_DEFAULTS.memoryBytes, fmtBytes);
  const nanoCpus = capped('cpu_limit', s.nanoCpus, op.limits.nanoCpus, SESSION_DEFAULTS.nanoCpus, (n) => `${n / 1e9} CPUs`);
  const timeoutSeconds = capped('timeout_seconds', s.timeoutSeconds, op.limits.timeoutSeconds, SESSION_DEFAULTS.timeoutSeconds, (n) => `${n} s`);
  const idleTimeoutSeconds = Math.min(s.idleTimeoutSeconds, timeoutSeconds);
  let diskBytes: number | null;
  if (op.limits.diskBytes === null) diskBytes = s.diskBytes;
  else if (s.diskBytes === null) diskBytes = Math.min(SESSION_DEFAULTS.diskBytes, op.limits.diskBytes);
  else if (s.diskBytes > op.limits.diskBytes) {
    throw new PolicyViolation(key('disk_limit'), `${fmtBytes(s.diskBytes)} is above the operator's limit of ${fmtBytes(op.limits.diskBytes)} (${where})`);
  } else diskBytes = s.diskBytes;

  if (!op.images.includes(s.image)) {
    throw new PolicyViolation(key('image'), `${JSON.stringify(s.image)} is not an allowed image (images: ${op.images.join(', ') || 'none'} in ${where})`);
  }
  const runtime = s.runtime ?? op.runtimes[0]!;
  if (!op.runtimes.includes(runtime)) {
    throw new PolicyViolation(key('runtime'), `${JSON.stringify(runtime)} is not an allowed runtime (runtimes: ${op.runtimes.join(', ')} in ${where})`);
  }
  for (const name of s.envAllowlist) {
    if (!op.envAllowlist.includes(name)) {
      throw new PolicyViolation(key('env_allowlist'), `${name} is not in the operator's env_allowlist (${op.envAllowlist.join(', ') || 'empty'} in ${where})`);
    }
  }
  if (s.network && !op.egress.openNetwork) {
    throw new PolicyViolation(key('network'), `an open network is not allowed by the operator (egress.open_network: false in ${where}); use sandbox.egress`);
  }
  for (const entry of s.egress) {
    if (!egressPermitted(entry, op)) throw new PolicyViolation(key('egress'), `${entry} is not within the operator's egress allowlist (${op.egress.allow.join(', ') || 'empty'} in ${where})`);
  }

  const mounts = s.mounts.map((m, idx) => {
    const k = key(`mounts.${idx}`);
    let real: string;
    try {
      real = realpathSync(m.host);
      statSync(real);
    } catch {
      throw new PolicyViolation(k, `${m.source}: ${m.host} does not exist`);
    }
    const root = mountRootFor(real, op);
    if (!root) {
      const roots = op.mountRoots.map((r) => r.path).join(', ');
      throw new PolicyViolation(k, `${m.source}: ${real} is not below an allowed mount root (mount_roots: ${roots || 'none'} in ${where})`);
    }
    if (i.workspace && (isInside(i.workspace, real) || isInside(real, i.workspace))) {
      throw new PolicyViolation(k, `${m.source}: ${real} overlaps the workspace; the agent works on its own worktree, never on the checkout`);
    }
    if (m.mode === 'rw' && root.mode !== 'rw') {
      throw new PolicyViolation(k, `${m.source}: read-write is not allowed below ${root.path} (mode: ro in ${where})`);
    }
    checkDenyRules(real, i.mountContext, m.source, k);
    return { host: real, container: m.container, mode: m.mode };
  });

  return {
    sandbox: !host,
    image: s.image,
    runtime,
    network: s.network,
    egress: [...s.egress],
    memory_bytes: memoryBytes,
    nano_cpus: nanoCpus,
    timeout_seconds: timeoutSeconds,
    idle_timeout_seconds: idleTimeoutSeconds,
    disk_bytes: diskBytes,
    mounts,
    env_allowlist: [...s.envAllowlist],
    cap_add: [...s.capAdd],
    user: s.user,
    command: [...config.provider.command],
  };
}

/**
 * The worker's check of a session policy it was handed, against its own copy of the
 * operator policy (the worker host's operator has a say too) and its own file system
 * (mount real paths may have changed since creation). Throws `PolicyViolation`.
 */
export function recheckSessionPolicy(p: SessionPolicy, op: OperatorPolicy, mountContext: EffectivePolicyInput['mountContext']): void {
  const where = op.source ?? 'the built-in operator policy on this worker';
  if (!p.sandbox && !op.hostSessions) throw new PolicyViolation('sandbox', `host sessions are not allowed on this worker (${where})`, 403);
  if (!p.sandbox && !isHostCommand(p.command, op)) {
    throw new PolicyViolation('command', `${JSON.stringify(p.command)} is not one of this worker's host_commands (${where})`, 403);
  }
  const over = (k: string, asked: number, max: number | null) => {
    if (max !== null && asked > max) throw new PolicyViolation(k, `${asked} is above this worker's limit of ${max} (${where})`);
  };
  over('memory_bytes', p.memory_bytes, op.limits.memoryBytes);
  over('nano_cpus', p.nano_cpus, op.limits.nanoCpus);
  over('timeout_seconds', p.timeout_seconds, op.limits.timeoutSeconds);
  if (op.limits.diskBytes !== null) {
    if (p.disk_bytes === null) throw new PolicyViolation('disk_bytes', `no disk limit, but this worker requires one (${where})`);
    over('disk_bytes', p.disk_bytes, op.limits.diskBytes);
  }
  if (p.sandbox && !op.images.includes(p.image)) throw new PolicyViolation('image', `${p.image} is not allowed on this worker (${where})`);
  if (p.sandbox && !op.runtimes.includes(p.runtime)) throw new PolicyViolation('runtime', `${p.runtime} is not allowed on this worker (${where})`);
  for (const n of p.env_allowlist) {
    if (!op.envAllowlist.includes(n) || FORBIDDEN_ENV.test(n)) throw new PolicyViolation('env_allowlist', `${n} is not allowed on this worker (${where})`);
  }
  if (p.network && !op.egress.openNetwork) throw new PolicyViolation('network', `an open network is not allowed on this worker (${where})`);
  for (const entry of p.egress) {
    if (!egressPermitted(entry, op)) throw new PolicyViolation('egress', `${entry} is not allowed on this worker (${where})`);
  }
  let user: { uid: number; gid: number } | null = null;
  try {
    user = parseUser(p.user);
  } catch {
    user = null;
  }
  if (!user || user.uid === 0 || user.gid === 0) throw new PolicyViolation('user', `${JSON.stringify(p.user)} is not a numeric non-root uid:gid`);
  for (const cap of p.cap_add) {
    if (!CAP_ADD_ALLOWED.includes(cap)) throw new PolicyViolation('cap_add', `${cap} is never allowed`);
  }
  for (const m of p.mounts) {
    let real: string;
    try {
      real = realpathSync(m.host);
    } catch {
      throw new PolicyViolation('mounts', `${m.host} does not exist on this worker`);
    }
    if (real !== m.host) throw new PolicyViolation('mounts', `${m.host} now resolves to ${real}: refused`);
    const root = mountRootFor(real, op);
    if (!root || (m.mode === 'rw' && root.mode !== 'rw')) throw new PolicyViolation('mounts', `${m.host} (${m.mode}) is not allowed on this worker (${where})`);
    checkDenyRules(real, mountContext, m.host, 'mounts');
  }
}

/** Canonical JSON (keys sorted) of a session policy, and its SHA-256: what the audit entry carries. */
export function canonicalPolicyJson(p: SessionPolicy): string {
  const sort = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(sort);
    if (v && typeof v === 'object') {
      return Object.fromEntries(
        Object.keys(v)
          .sort()
          .map((k) => [k, sort((v as Record<string, unknown>)[k])]),
      );
    }
    return v;
  };
  return JSON.stringify(sort(p));
}

export function policySha256(p: SessionPolicy): string {
  return createHash('sha256').update(canonicalPolicyJson(p)).digest('hex');
}


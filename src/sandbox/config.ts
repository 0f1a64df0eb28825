/**
 * `.loki/config.yaml` in a workspace: parsed with `yaml`, validated with zod, and
 * normalised into a `WorkspaceConfig` (sizes in bytes, CPUs in nano-CPUs, mounts
 * split). Host-side checks that need the file system (mount targets exist, are not
 * sensitive) belong to the policy, not here.
 */
import { lstatSync } from 'node:fs';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { PathError, readRegularFile, resolveInside } from '../util/paths';
import { PROMPT_PLACEHOLDER, PROVIDER_NAMES, providerPreset } from './providers';

export const CONFIG_RELATIVE_PATH = '.loki/config.yaml';
export const DEFAULT_IMAGE = 'loki-sandbox:local';
export const PRD_PLACEHOLDER = '{prd}';

/**
 * The provider command when the config names none: Claude Code in print mode with
 * JSON-lines output (its `result` line carries `total_cost_usd`, which the budget
 * reads). It deliberately does not pass `--dangerously-skip-permissions`: add it in
 * your own `provider.command` if you want the agent to act unattended in the sandbox.
 */
export const DEFAULT_PROVIDER_COMMAND: readonly string[] = [
  'claude',
  '-p',
  PRD_PLACEHOLDER,
  '--output-format',
  'stream-json',
  '--verbose',
];

/** Capabilities a config may add back after `CapDrop: ["ALL"]`; nothing else, ever. */
export const CAP_ADD_ALLOWED: readonly string[] = ['CHOWN', 'DAC_OVERRIDE', 'FOWNER', 'FSETID', 'KILL', 'NET_BIND_SERVICE'];

export interface MountSpec {
  /** Absolute host path after `~` expansion (not yet resolved through symlinks). */
  host: string;
  container: string;
  mode: 'ro' | 'rw';
  /** The entry as written, for error messages. */
  source: string;
}

export interface SandboxSettings {
  enabled: boolean;
  network: boolean;
  memoryBytes: number;
  nanoCpus: number;
  mounts: MountSpec[];
  image: string;
  timeoutSeconds: number;
  idleTimeoutSeconds: number;
  envAllowlist: string[];
  capAdd: string[];
  user: string;
  /** Docker runtime (`runc`, `runsc` for gVisor); null: the operator policy's first. */
  runtime: string | null;
  /** Egress allowlist entries (`host:port`, `*.example.com:443`). */
  egress: string[];
  /** Disk limit for the session's worktree; null: the operator policy's limit. */
  diskBytes: number | null;
}

export interface WorkspaceConfig {
  sandbox: SandboxSettings;
  provider: { command: string[] };
  /** The `sandbox.*` keys the file sets itself (the rest are defaults, capped by the operator policy). */
  explicit: string[];
}

export class SandboxConfigError extends Error {
  readonly code = 'invalid_config';
}

export interface LoadConfigOptions {
  /** Home directory used to expand `~` in mounts. */
  home: string;
}

const SIZE_UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 };
const MIN_MEMORY_BYTES = 6 * 1024 ** 2; // Docker refuses less than 6 MiB

/** "512m", "4g", "1.5g", "65536" → bytes; null when malformed. */
export function parseMemoryLimit(value: string | number): number | null {
  if (typeof value === 'number') return Number.isInteger(value) && value > 0 ? value : null;
  const m = /^(\d+(?:\.\d+)?)\s*([kmg]?)b?$/i.exec(value.trim());
  if (!m) return null;
  const bytes = Math.floor(Number(m[1]) * SIZE_UNITS[m[2]!.toLowerCase()]!);
  return Number.isFinite(bytes) && bytes > 0 ? bytes : null;
}

/** "2", "0.5", 1.25 → nano-CPUs; null when malformed or not positive. */
export function parseCpuLimit(value: string | number): number | null {
  const text = typeof value === 'number' ? String(value) : value.trim();
  if (!/^\d+(?:\.\d+)?$/.test(text)) return null;
  const nano = Math.round(Number(text) * 1e9);
  return nano > 0 ? nano : null;
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
/**
 * The worker's own credentials never reach an agent, whatever the allowlist says:
 * tokens, secrets, keys, and LOKI_DATABASE_URL (its password opens the token and
 * audit tables; an embedded worker inherits the server's environment).
 */
export const FORBIDDEN_ENV = /^LOKI_(?:(?:.*_)?(?:TOKEN|SECRET|KEY)|DATABASE_URL)$/i;

const memoryLimit = z
  .union([z.string(), z.number()])
  .transform((v, ctx) => {
    const bytes = parseMemoryLimit(v);
    if (bytes === null || bytes < MIN_MEMORY_BYTES) {
      ctx.addIssue({ code: 'custom', message: `expected a size of at least 6m like 512m or 4g, got ${JSON.stringify(v)}` });
      return z.NEVER;
    }
    return bytes;
  });

const cpuLimit = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const nano = parseCpuLimit(v);
  if (nano === null || nano > 1024e9) {
    ctx.addIssue({ code: 'custom', message: `expected a positive decimal number of CPUs like "2" or "0.5", got ${JSON.stringify(v)}` });
    return z.NEVER;
  }
  return nano;
});

const mountEntry = z.string().refine((s) => /^[^:]+:[^:]+:(?:ro|rw)$/.test(s), {
  message: 'expected "host:container:ro" or "host:container:rw"',
});

const seconds = (max: number) =>
  z
    .number({ message: 'expected a whole number of seconds' })
    .int('expected a whole number of seconds')
    .min(1, 'expected at least 1 second')
    .max(max, `expected at most ${max} seconds`);

const capName = z.string().transform((v, ctx) => {
  const name = v.trim().toUpperCase().replace(/^CAP_/, '');
  if (!CAP_ADD_ALLOWED.includes(name)) {
    ctx.addIssue({ code: 'custom', message: `${name} is never allowed (allowed: ${CAP_ADD_ALLOWED.join(', ')})` });
    return z.NEVER;
  }
  return name;
});

const envName = z.string().superRefine((v, ctx) => {
  if (!ENV_NAME.test(v)) ctx.addIssue({ code: 'custom', message: `${JSON.stringify(v)} is not an environment variable name` });
  else if (FORBIDDEN_ENV.test(v)) ctx.addIssue({ code: 'custom', message: `${v} is a Loki credential and is never passed to an agent` });
});

const user = z.string().superRefine((v, ctx) => {
  const m = /^(\d+)(?::(\d+))?$/.exec(v);
  if (!m) ctx.addIssue({ code: 'custom', message: 'expected a numeric "uid:gid" such as "1000:1000"' });
  else if (Number(m[1]) === 0 || (m[2] !== undefined && Number(m[2]) === 0)) {
    ctx.addIssue({ code: 'custom', message: 'root (uid or gid 0) is never allowed' });
  }
});

const providerCommand = z
  .array(z.string().min(1, 'arguments must not be empty'), { message: 'expected a list of arguments' })
  .min(1, 'expected at least the program name')
  .superRefine((args, ctx) => {
    args.forEach((a, i) => {
      for (const ph of [PRD_PLACEHOLDER, PROMPT_PLACEHOLDER]) {
        if (a !== ph && a.includes(ph)) {
          ctx.addIssue({ code: 'custom', path: [i], message: `${ph} must be a whole argument, not part of ${JSON.stringify(a)}` });
        }
      }
    });
  });

/** `host:port` or `*.domain:port`; an IPv6 literal in brackets. Lower-cased. */
export const EGRESS_ENTRY = /^(?:\*\.)?(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?:\d{1,5}$|^\[[0-9a-f:.]+\]:\d{1,5}$/;
const egressEntry = z
  .string()
  .transform((v) => v.trim().toLowerCase())
  .refine((v) => EGRESS_ENTRY.test(v) && Number(v.slice(v.lastIndexOf(':') + 1)) <= 65535 && Number(v.slice(v.lastIndexOf(':') + 1)) > 0, {
    message: 'expected "host:port" or "*.domain:port"',
  });

const sandboxSchema = z.strictObject({
  enabled: z.boolean().default(false),
  network: z.boolean().default(false),
  memory_limit: memoryLimit.prefault('4g'),
  cpu_limit: cpuLimit.prefault('2'),
  mounts: z.array(mountEntry).default([]),
  image: z.string().min(1).default(DEFAULT_IMAGE),
  timeout_seconds: seconds(7 * 24 * 3600).default(3600),
  idle_timeout_seconds: seconds(7 * 24 * 3600).default(900),
  env_allowlist: z.array(envName).default([]),
  cap_add: z.array(capName).default([]),
  user: user.default('1000:1000'),
  runtime: z
    .string()
    .regex(/^[a-z][a-z0-9._-]{0,63}$/, 'expected a Docker runtime name such as runc or runsc')
    .nullable()
    .default(null),
  egress: z.array(egressEntry).default([]),
  disk_limit: memoryLimit.nullable().default(null),
});

const fileSchema = z.looseObject({
  sandbox: sandboxSchema.nullish(),
  provider: z
    .strictObject({
      name: z.enum(PROVIDER_NAMES, { message: `expected one of ${PROVIDER_NAMES.join(', ')}` }).optional(),
      command: providerCommand.optional(),
    })
    .refine((p) => !(p.name && p.command), { message: 'give provider.name or provider.command, not both' })
    .nullish(),
});

/** Expand `~` / `~/x` against `home`; other relative paths are relative to the workspace. */
function expandHost(host: string, workspaceDir: string, home: string): string {
  if (host === '~') return home;
  if (host.startsWith('~/')) return path.join(home, host.slice(2));
  if (host.startsWith('~')) throw new Error('only "~" and "~/..." are supported (no ~user)');
  return path.resolve(workspaceDir, host);
}

function parseMounts(entries: string[], workspaceDir: string, home: string): MountSpec[] {
  return entries.map((source, i) => {
    const [rawHost, container, mode] = source.split(':') as [string, string, 'ro' | 'rw'];
    let host: string;
    try {
      host = expandHost(rawHost, workspaceDir, home);
    } catch (err) {
      throw new SandboxConfigError(`${CONFIG_RELATIVE_PATH}: sandbox.mounts.${i}: ${(err as Error).message}`);
    }
    const normal = path.posix.normalize(container);
    if (!container.startsWith('/') || normal !== container || (normal.length > 1 && normal.endsWith('/'))) {
      throw new SandboxConfigError(
        `${CONFIG_RELATIVE_PATH}: sandbox.mounts.${i}: container path must be absolute and normalised, got ${JSON.stringify(container)}`,
      );
    }
    if (normal === '/' || normal === '/workspace') {
      throw new SandboxConfigError(`${CONFIG_RELATIVE_PATH}: sandbox.mounts.${i}: container path ${normal} is reserved`);
    }
    return { host, container: normal, mode, source };
  });
}

function issueMessage(error: z.ZodError): string {
  const issue = error.issues[0]!;
  const at = issue.path.map(String);
  if (issue.code === 'unrecognized_keys') {
    return `${CONFIG_RELATIVE_PATH}: ${[...at, issue.keys[0]].join('.')}: unknown key`;
  }
  return `${CONFIG_RELATIVE_PATH}: ${at.join('.') || '(root)'}: ${issue.message}`;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Validate an already-parsed YAML document (exposed for tests and the server). */
export function workspaceConfigFromObject(doc: unknown, opts: { workspaceDir: string; home: string }): WorkspaceConfig {
  if (doc !== null && doc !== undefined && (typeof doc !== 'object' || Array.isArray(doc))) {
    throw new SandboxConfigError(`${CONFIG_RELATIVE_PATH}: (root): expected a mapping`);
  }
  const parsed = fileSchema.safeParse(doc ?? {});
  if (!parsed.success) throw new SandboxConfigError(issueMessage(parsed.error));
  const s = parsed.data.sandbox ?? sandboxSchema.parse({});
  return {
    sandbox: {
      enabled: s.enabled,
      network: s.network,
      memoryBytes: s.memory_limit,
      nanoCpus: s.cpu_limit,
      mounts: parseMounts(s.mounts, opts.workspaceDir, opts.home),
      image: s.image,
      timeoutSeconds: s.timeout_seconds,
      idleTimeoutSeconds: s.idle_timeout_seconds,
      envAllowlist: [...new Set(s.env_allowlist)],
      capAdd: [...new Set(s.cap_add)],
      user: s.user,
      runtime: s.runtime,
      egress: [...new Set(s.egress)],
      diskBytes: s.disk_limit,
    },
    provider: {
      command: [
        ...(parsed.data.provider?.command ?? (parsed.data.provider?.name ? providerPreset(parsed.data.provider.name) : DEFAULT_PROVIDER_COMMAND)),
      ],
    },
    explicit: Object.keys(isRecord(doc) && isRecord(doc.sandbox) ? doc.sandbox : {}),
  };
}

/** The defaults, as if the workspace had no `.loki/config.yaml`. */
export function defaultWorkspaceConfig(opts: { workspaceDir: string; home: string }): WorkspaceConfig {
  return workspaceConfigFromObject({}, opts);
}

const MAX_CONFIG_BYTES = 1024 * 1024;

/**
 * Read `<workspaceDir>/.loki/config.yaml`. A missing file gives the defaults; a file
 * that is unreadable, escapes the workspace through a symlink, is not YAML or fails
 * validation throws `SandboxConfigError` with one line naming the key.
 */
export function loadWorkspaceConfig(workspaceDir: string, opts: LoadConfigOptions): WorkspaceConfig {
  const ctx = { workspaceDir, home: opts.home };
  try {
    lstatSync(path.join(workspaceDir, CONFIG_RELATIVE_PATH));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return defaultWorkspaceConfig(ctx);
    throw new SandboxConfigError(`${CONFIG_RELATIVE_PATH}: cannot read: ${(err as NodeJS.ErrnoException).code}`);
  }
  let text: string;
  try {
    // Never blocks (a FIFO), never reads more than the cap (a huge sparse file).
    const file = resolveInside(workspaceDir, CONFIG_RELATIVE_PATH);
    text = readRegularFile(file, MAX_CONFIG_BYTES, 'the file').toString('utf8');
  } catch (err) {
    if (err instanceof SandboxConfigError) throw err;
    if (err instanceof PathError) throw new SandboxConfigError(`${CONFIG_RELATIVE_PATH}: ${err.message}`);
    throw new SandboxConfigError(`${CONFIG_RELATIVE_PATH}: cannot read: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    // The YAML library's message quotes the source on later lines; keep the first.
    const first = String((err as Error).message).split('\n')[0];
    throw new SandboxConfigError(`${CONFIG_RELATIVE_PATH}: not valid YAML: ${first}`);
  }
  return workspaceConfigFromObject(doc, ctx);
}

/** The provider argv with `{prd}` (and `{prompt}`, when given) replaced where each is a whole argument. */
export function providerArgv(command: readonly string[], prd: string, prompt?: string): string[] {
  return command.map((arg) => (arg === PRD_PLACEHOLDER ? prd : arg === PROMPT_PLACEHOLDER && prompt !== undefined ? prompt : arg));
}

/**
 * `containerOptions`: a session's effective policy plus its context → the exact
 * Docker create options. Every security property of the sandbox is written out here, in
 * one object, so a test can compare it field by field and a reviewer can read it
 * in one place. Pure apart from `realpath`/`stat` on the host paths it mounts.
 */
import { realpathSync, statSync } from 'node:fs';
import path from 'node:path';
import type { ContainerCreateOptions } from 'dockerode';
import { isInside } from '../util/paths';
import type { SessionPolicy } from '../sessions/api';
import { CAP_ADD_ALLOWED, FORBIDDEN_ENV, providerArgv } from './config';

export const CONTAINER_WORKSPACE = '/workspace';
export const LABEL_SESSION = 'loki.session';
export const LABEL_WORKER = 'loki.worker';
export const PIDS_LIMIT = 256;
/**
 * gVisor (ptrace platform) runs several host processes per process in the sandbox
 * (an idle one already uses about 50), and going over the host limit kills the whole
 * sandbox instead of failing a fork: the same ~256 processes need about 4096 here.
 */
export const PIDS_LIMIT_RUNSC = 4096;
export const NOFILE_LIMIT = 4096;
export const TMPFS_OPTIONS = 'rw,noexec,nosuid,size=64m';
export const NO_NEW_PRIVILEGES = 'no-new-privileges:true';
export const DEFAULT_DOCKER_SOCKET = '/var/run/docker.sock';

export type MountRule =
  | 'not_found'
  | 'root'
  | 'etc'
  | 'system'
  | 'docker_socket'
  | 'home'
  | 'ssh'
  | 'loki_home'
  | 'gh_config'
  | 'aws'
  | 'container_socket'
  | 'credentials';

export class SandboxPolicyError extends Error {
  readonly code = 'sandbox_policy';
  constructor(
    message: string,
    readonly rule: MountRule | 'env' | 'cap_add',
  ) {
    super(message);
  }
}

export interface PolicyContext {
  sessionId: string;
  workerId: string;
  /** The session's private worktree on this host, mounted read-write at /workspace. */
  workspace: string;
  /** The PRD path relative to the workspace, substituted for `{prd}`. */
  prd: string;
  /** Where allowlisted variables are read from (normally the worker's environment). */
  env: Readonly<Record<string, string | undefined>>;
  /** The worker user's home directory (for `$HOME`, `~/.ssh`, `~/.aws`, …). */
  home: string;
  /** `LOKI_HOME` when it is not `~/.loki`. */
  lokiHome?: string;
  /** The Docker socket the worker talks to, if not the default. */
  dockerSocket?: string;
  /**
   * Where the worker pinned each of the policy's mounts (a bind mount of the opened
   * directory under the session's own directory), in the policy's order: Docker binds
   * these, so a path swapped for a symlink after the checks changes nothing.
   */
  mountSources?: string[];
  /**
   * The session's egress proxy: its socket's directory (mounted read-only at
   * /run/loki) and the forwarder binary (mounted read-only at /opt/loki). The agent
   * runs under the forwarder, which listens on 127.0.0.1:3128 inside the container.
   */
  egress?: { socketDir: string; forwarder: string; control?: boolean };
  /** The prompt built from the PRD, for a preset's `{prompt}`. */
  prompt?: string;
}

export const EGRESS_SOCKET_DIR = '/run/loki';
export const FORWARDER_PATH = '/opt/loki/loki-forward';
export const PROXY_LISTEN = '127.0.0.1:3128';

/** What the agent is told: both spellings, since curl ignores HTTP_PROXY and busybox reads only lower case. */
export function proxyEnv(): string[] {
  const url = `http://${PROXY_LISTEN}`;
  const noProxy = 'localhost,127.0.0.1,::1';
  return [`HTTP_PROXY=${url}`, `HTTPS_PROXY=${url}`, `http_proxy=${url}`, `https_proxy=${url}`, `NO_PROXY=${noProxy}`, `no_proxy=${noProxy}`];
}

function realOrSelf(p: string): string {
  try {
    return realpathSync(p);
  } catch {
    return p;
  }
}

/** Both spellings of a protected path: as written and through symlinks. */
function spellings(p: string): string[] {
  const abs = path.resolve(p);
  return [...new Set([abs, realOrSelf(abs)])];
}

interface ProtectedPath {
  rule: MountRule;
  paths: string[];
  why: string;
}

function protectedPaths(ctx: PolicyContext): ProtectedPath[] {
  const home = ctx.home;
  const sockets = [ctx.dockerSocket ?? DEFAULT_DOCKER_SOCKET, DEFAULT_DOCKER_SOCKET, '/run/docker.sock'];
  return [
    { rule: 'docker_socket', paths: sockets.flatMap(spellings), why: 'the Docker socket (or a directory holding it) is never mounted' },
    { rule: 'ssh', paths: spellings(path.join(home, '.ssh')), why: '~/.ssh is never mounted' },
    { rule: 'loki_home', paths: [path.join(home, '.loki'), ...(ctx.lokiHome ? [ctx.lokiHome] : [])].flatMap(spellings), why: 'the Loki state directory (~/.loki) is never mounted' },
    { rule: 'gh_config', paths: spellings(path.join(home, '.config', 'gh')), why: '~/.config/gh (GitHub CLI credentials) is never mounted' },
    { rule: 'aws', paths: spellings(path.join(home, '.aws')), why: '~/.aws is never mounted' },
    {
      rule: 'container_socket',
      paths: ['/run/containerd', '/var/run/containerd', '/run/podman', '/var/run/podman', '/run/crio', '/var/run/crio'].flatMap(spellings),
      why: 'container engine sockets (containerd, podman, CRI-O) are never mounted',
    },
    {
      rule: 'credentials',
      paths: ['.docker', '.kube', '.gnupg', '.netrc', '.git-credentials', path.join('.config', 'gcloud')].flatMap((p) => spellings(path.join(home, p))),
      why: 'credential stores in the home directory (~/.docker, ~/.kube, ~/.gnupg, ~/.netrc, ~/.git-credentials, ~/.config/gcloud) are never mounted',
    },
  ];
}

const SYSTEM_DIRS = ['/proc', '/sys', '/dev', '/boot'];

/**
 * Check one host path the sandbox would mount; returns its real path. Refuses, with
 * the rule's name: a missing path, `/`, `/etc` and below, kernel file systems, `$HOME`
 * itself, and anything that is or lies inside or contains the Docker socket, `~/.ssh`,
 * `~/.loki`, `~/.config/gh` or `~/.aws`.
 */
export function validateHostMount(hostPath: string, ctx: PolicyContext, label = hostPath): string {
  let real: string;
  try {
    real = realpathSync(hostPath);
    statSync(real);
  } catch {
    throw new SandboxPolicyError(`mount ${label} refused (rule not_found): ${hostPath} does not exist`, 'not_found');
  }
  const refuse = (rule: MountRule, why: string): never => {
    throw new SandboxPolicyError(`mount ${label} refused (rule ${rule}): ${why}`, rule);
  };
  if (real === '/') refuse('root', 'the host root file system is never mounted');
  if (isInside('/etc', real)) refuse('etc', '/etc and anything inside it are never mounted');
  for (const dir of SYSTEM_DIRS) if (isInside(dir, real)) refuse('system', `${dir} is never mounted`);
  if (spellings(ctx.home).includes(real)) refuse('home', 'the home directory itself is never mounted');
  for (const p of protectedPaths(ctx)) {
    if (p.paths.some((q) => isInside(q, real) || isInside(real, q))) refuse(p.rule, p.why);
  }
  return real;
}

/** `NAME=value` for each allowlisted variable present in `env`; never a Loki credential. */
export function sandboxEnv(allowlist: readonly string[], env: PolicyContext['env']): string[] {
  const out: string[] = [];
  for (const name of allowlist) {
    if (FORBIDDEN_ENV.test(name)) continue;
    const value = env[name];
    if (value !== undefined) out.push(`${name}=${value}`);
  }
  return out;
}

/**
 * The container create options for one session, from its effective policy.
 * `ctx.workspace` is the session's private worktree (the worker made it; it lives in
 * `$LOKI_HOME/worktrees`, so it is not passed through the mount rules). Extra mounts
 * were checked against the operator's roots at creation and again by the worker;
 * the deny rules run once more here. Throws `SandboxPolicyError` on a refused mount.
 */
export function containerOptions(p: SessionPolicy, ctx: PolicyContext): ContainerCreateOptions {
  for (const cap of p.cap_add) {
    if (!CAP_ADD_ALLOWED.includes(cap)) throw new SandboxPolicyError(`cap_add ${cap} is never allowed`, 'cap_add');
  }
  const binds = [`${ctx.workspace}:${CONTAINER_WORKSPACE}:rw`];
  p.mounts.forEach((m, i) => {
    const real = validateHostMount(m.host, ctx, m.host);
    if (real !== m.host) throw new SandboxPolicyError(`mount ${m.host} refused (rule not_found): it now resolves to ${real}`, 'not_found');
    const source = ctx.mountSources?.[i];
    if (source === undefined) throw new SandboxPolicyError(`mount ${m.host} refused (rule not_found): it was not pinned by the worker`, 'not_found');
    binds.push(`${source}:${m.container}:${m.mode}`);
  });
  const { argv, env } = sessionProcess(p, ctx);
  let cmd = argv;
  if (ctx.egress) {
    binds.push(`${ctx.egress.socketDir}:${EGRESS_SOCKET_DIR}:ro`, `${ctx.egress.forwarder}:${FORWARDER_PATH}:ro`);
    cmd = ctx.egress.control ? forwarderControlArgv() : [...forwarderArgv(), '--', ...argv];
  }
  return {
    Image: p.image,
    Cmd: cmd,
    User: p.user,
    WorkingDir: CONTAINER_WORKSPACE,
    Env: env,
    Labels: { [LABEL_SESSION]: ctx.sessionId, [LABEL_WORKER]: ctx.workerId },
    AttachStdin: false,
    AttachStdout: true,
    AttachStderr: true,
    OpenStdin: false,
    Tty: false,
    HostConfig: {
      Runtime: p.runtime,
      CapDrop: ['ALL'],
      CapAdd: [...p.cap_add],
      SecurityOpt: [NO_NEW_PRIVILEGES],
      Privileged: false,
      ReadonlyRootfs: true,
      Tmpfs: { '/tmp': TMPFS_OPTIONS },
      NetworkMode: p.network ? 'bridge' : 'none',
      PortBindings: {},
      PublishAllPorts: false,
      Memory: p.memory_bytes,
      MemorySwap: p.memory_bytes,
      NanoCpus: p.nano_cpus,
      PidsLimit: p.runtime === 'runsc' ? PIDS_LIMIT_RUNSC : PIDS_LIMIT,
      Ulimits: [{ Name: 'nofile', Soft: NOFILE_LIMIT, Hard: NOFILE_LIMIT }],
      Binds: binds,
      AutoRemove: false,
      // A real init as PID 1: it reaps orphaned children (zombies count against the pids
      // limit in a long session) and forwards SIGTERM to the provider.
      Init: true,
      // The worker stores output itself, redacted and capped; nothing unredacted on disk.
      LogConfig: { Type: 'none', Config: {} },
    },
  };
}

const forwarderArgv = () => [FORWARDER_PATH, '-listen', PROXY_LISTEN, '-socket', `${EGRESS_SOCKET_DIR}/egress.sock`];
export const CONTROL_SOCKET = `${EGRESS_SOCKET_DIR}/control.sock`;
/** A warm-pool container's main process: the forwarder, waiting for the agent's argv and environment on the control socket. */
const forwarderControlArgv = () => [...forwarderArgv(), '-control', CONTROL_SOCKET];

/**
 * The agent's argv and environment in the container: the provider's argv, `HOME=/tmp`
 * (the root file system is read-only), the allowlisted variables, and the proxy
 * variables when the session has egress.
 */
export function sessionProcess(p: SessionPolicy, ctx: PolicyContext): { argv: string[]; env: string[] } {
  const argv = providerArgv(p.command, ctx.prd, ctx.prompt);
  const env = ['HOME=/tmp', ...sandboxEnv(p.env_allowlist, ctx.env)];
  if (ctx.egress && p.egress.length > 0) env.push(...proxyEnv());
  return { argv, env };
}

/** `"1000:1000"` → uid and gid (gid defaults to the uid). */
export function parseUser(user: string): { uid: number; gid: number } {
  const m = /^(\d+)(?::(\d+))?$/.exec(user);
  if (!m) throw new SandboxPolicyError(`user ${JSON.stringify(user)} is not a numeric uid:gid`, 'env');
  const uid = Number(m[1]);
  return { uid, gid: m[2] === undefined ? uid : Number(m[2]) };
}

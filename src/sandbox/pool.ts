/**
 * The warm pool: a worker keeps `size` containers of its default image and policy
 * created and started ahead of time, so a session skips container create and start.
 *
 * A pooled container runs the egress forwarder in `-control` mode as its main process
 * (under Docker's init), with the same hardening as any session container. Its
 * workspace is `<slot>/work`, bound into it with slave propagation: when a session
 * takes the slot, the worker bind-mounts the session's private worktree onto that
 * directory and the container sees it at /workspace. The session's proxy socket goes
 * into `<slot>/egress` (bound at /run/loki), next to the slot's control socket: the
 * forwarder dialled it at start and waits there for one launch message (the agent's
 * argv and environment); it then runs the agent exactly as a fresh container's
 * forwarder would, so exit codes, OOM kills and stop signals behave the same.
 *
 * A session takes a pooled container only when everything Docker fixes at create
 * time (image, user, runtime, limits, capabilities, network, binds) is exactly what
 * a fresh container for its policy would get; otherwise it gets a fresh one. A
 * pooled container serves one session and is removed after it; the pool refills in
 * the background. `close` removes every idle one (0 left).
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type Docker from 'dockerode';
import type { SessionPolicy } from '../sessions/api';
import { redactString } from '../util/redact';
import { removeContainer } from './docker';
import { bindMount, mountCommand, mountsUnder, unmount } from './mounts';
import { CONTAINER_WORKSPACE, containerOptions, LABEL_SESSION, LABEL_WORKER, type PolicyContext } from './policy';

/** Set on pooled containers (with `loki.session` = the slot id, `pool-…`). */
export const LABEL_POOL = 'loki.pool';
export const POOL_ID_PREFIX = 'pool-';
export const DEFAULT_WARM = 2;
export const MAX_WARM = 32;

export interface PoolSlot {
  /** `pool-<hex>`: the container's `loki.session` label and the slot directory's name. */
  id: string;
  /** `<root>/<id>`: a shared bind mount of itself. */
  dir: string;
  /** The session's worktree is bound here (the container's /workspace). */
  workDir: string;
  /** The session's egress proxy socket goes here (the container's /run/loki). */
  egressDir: string;
  containerId: string;
  /** The container's init process on the host (its mount table is read before the agent starts). */
  pid: number;
  /** The forwarder's connection to the slot's control socket: the launch message goes here. */
  control: net.Socket;
  /** What Docker fixed at create time (see `poolShape`). */
  shape: string;
}

export interface PoolLogger {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

export interface WarmPoolOptions {
  docker: Docker;
  size: number;
  /** The worker's default session policy: what pooled containers are made for. */
  template: SessionPolicy;
  workerId: string;
  /** Where slot directories live (`$LOKI_HOME/pool/<worker id>`). */
  root: string;
  forwarderPath: string;
  /** The host paths the mount rules protect (as for any session). */
  context: Pick<PolicyContext, 'home' | 'lokiHome' | 'dockerSocket'>;
  logger: PoolLogger;
}

const SHAPE_SLOT = '/pool-slot';
/** How long a new warm container's forwarder has to dial the control socket. */
const CONTROL_CONNECT_MS = 20_000;

const delay = (ms: number) =>
  new Promise<void>((resolve) => {
    setTimeout(resolve, ms).unref();
  });

const messageOf = (err: unknown) => redactString(err instanceof Error ? err.message : String(err));

function slotContext(o: Pick<WarmPoolOptions, 'workerId' | 'forwarderPath' | 'context'>, dir: string, id: string): PolicyContext {
  return {
    ...o.context,
    sessionId: id,
    workerId: o.workerId,
    workspace: path.join(dir, 'work'),
    prd: 'prd.md',
    env: {},
    egress: { socketDir: path.join(dir, 'egress'), forwarder: o.forwarderPath, control: true },
  };
}

/**
 * Everything Docker fixes when it creates the container for this policy, as one
 * string (slot paths replaced by a placeholder); null when the policy cannot use a
 * pooled container at all (extra mounts: their sources are pinned per session).
 */
export function poolShape(policy: SessionPolicy, o: Pick<WarmPoolOptions, 'workerId' | 'forwarderPath' | 'context'>): string | null {
  const fields = shapeFields(policy, o);
  return fields === null ? null : JSON.stringify(fields);
}

function shapeFields(policy: SessionPolicy, o: Pick<WarmPoolOptions, 'workerId' | 'forwarderPath' | 'context'>): Record<string, unknown> | null {
  if (!policy.sandbox || policy.mounts.length > 0) return null;
  let c: Docker.ContainerCreateOptions;
  try {
    c = containerOptions(policy, slotContext(o, SHAPE_SLOT, `${POOL_ID_PREFIX}shape`));
  } catch {
    return null;
  }
  return { Image: c.Image, User: c.User, WorkingDir: c.WorkingDir, ...c.HostConfig };
}

/** Which create-time settings of `policy` differ from `template`'s (for the worker's log). */
export function shapeDifference(policy: SessionPolicy, template: SessionPolicy, o: Pick<WarmPoolOptions, 'workerId' | 'forwarderPath' | 'context'>): string[] {
  const a = shapeFields(policy, o);
  const b = shapeFields(template, o);
  if (a === null || b === null) return [policy.mounts.length > 0 ? 'mounts' : 'sandbox'];
  return [...new Set([...Object.keys(a), ...Object.keys(b)])].filter((k) => JSON.stringify(a[k]) !== JSON.stringify(b[k])).sort();
}

export class WarmPool {
  private readonly ready: PoolSlot[] = [];
  private readonly inUse = new Map<string, PoolSlot>();
  private creating = 0;
  private readonly pending = new Set<Promise<void>>();
  private closed = false;
  private failures = 0;
  private readonly shape: string;
  private retryTimer: NodeJS.Timeout | null = null;

  constructor(private readonly o: WarmPoolOptions) {
    // gVisor serves a bind mount from what it opened at start: a worktree mounted
    // onto the slot afterwards would never appear in the sandbox.
    if (o.template.runtime !== 'runc') throw new Error(`the warm pool needs the runc runtime (the default policy's runtime is ${o.template.runtime}; gVisor does not see mounts made after its start)`);
    const shape = poolShape(o.template, o);
    if (shape === null) throw new Error('the default session policy cannot be pooled (it has mounts, or it is not sandboxed)');
    this.shape = shape;
  }

  /** Slot ids (`loki.session` labels) this pool owns: not orphans. */
  has(id: string): boolean {
    return this.ready.some((s) => s.id === id) || this.inUse.has(id) || (id.startsWith(POOL_ID_PREFIX) && this.creatingIds.has(id));
  }

  private readonly creatingIds = new Set<string>();

  stats(): { ready: number; in_use: number; creating: number; size: number } {
    return { ready: this.ready.length, in_use: this.inUse.size, creating: this.creating, size: this.o.size };
  }

  /**
   * Remove what a previous run of this worker left under the pool root (slot
   * mounts and directories). Its containers are removed by the orphan sweep.
   */
  async cleanStale(): Promise<void> {
    await removeStaleSlots(this.o.root, this.o.logger, (name) => this.has(name));
  }

  /** Start filling the pool (returns at once; `whenFilled` waits). */
  fill(): void {
    if (this.closed) return;
    while (this.ready.length + this.creating < this.o.size) {
      this.creating++;
      const p = this.createSlot()
        .then((slot) => {
          this.failures = 0;
          if (this.closed) return this.destroy(slot);
          this.ready.push(slot);
          this.o.logger.info('warm container ready', { slot: slot.id, container_id: slot.containerId });
        })
        .catch((err) => {
          this.failures++;
          this.o.logger.error('a warm container could not be made; sessions get fresh containers', { err: messageOf(err), failures: this.failures });
          // Retry later, backing off (an image being rebuilt, a busy engine).
          if (!this.closed && !this.retryTimer) {
            this.retryTimer = setTimeout(() => {
              this.retryTimer = null;
              this.fill();
            }, Math.min(60_000, 1_000 * 2 ** Math.min(this.failures, 6)));
            this.retryTimer.unref();
          }
        })
        .finally(() => {
          this.creating--;
          this.pending.delete(p);
        });
      this.pending.add(p);
      if (this.failures > 0) break; // one attempt at a time while failing
    }
  }

  /** Wait until the pool is full or nothing more is being made. */
  async whenFilled(): Promise<void> {
    while (this.pending.size > 0) await Promise.all([...this.pending]);
  }

  /**
   * A ready container whose create-time shape is exactly what `policy` needs, or
   * null (the session then gets a fresh container). The pool refills behind it.
   */
  take(policy: SessionPolicy): PoolSlot | null {
    if (this.closed) return null;
    if (poolShape(policy, this.o) !== this.shape) {
      this.o.logger.info('fresh container: the session policy differs from the warm pool\'s', { differs: shapeDifference(policy, this.o.template, this.o) });
      return null;
    }
    if (this.ready.length === 0) {
      this.o.logger.info('fresh container: no warm container is ready', this.stats());
      return null;
    }
    const slot = this.ready.shift()!;
    this.inUse.set(slot.id, slot);
    this.fill();
    return slot;
  }

  /** After the session: remove its container and slot (never reused). Once per slot: later calls do nothing. */
  async release(slot: PoolSlot): Promise<void> {
    if (this.inUse.get(slot.id) !== slot) return;
    try {
      await this.destroy(slot);
    } finally {
      this.inUse.delete(slot.id);
    }
  }

  private closing: Promise<void> | null = null;

  /** Stop refilling, wait for containers being made, and remove every idle one (one run, however often called). */
  close(): Promise<void> {
    this.closing ??= this.closeOnce();
    return this.closing;
  }

  private async closeOnce(): Promise<void> {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    await this.whenFilled();
    const idle = this.ready.splice(0);
    const errors: string[] = [];
    for (const slot of idle) await this.destroy(slot).catch((err) => errors.push(messageOf(err)));
    if (errors.length > 0) throw new Error(`warm pool: ${errors.length} container(s) could not be removed: ${errors[0]}`);
  }

  private async createSlot(): Promise<PoolSlot> {
    const id = `${POOL_ID_PREFIX}${randomBytes(8).toString('hex')}`;
    this.creatingIds.add(id);
    const dir = path.join(this.o.root, id);
    try {
      mkdirSync(this.o.root, { recursive: true, mode: 0o700 });
      mkdirSync(dir, { mode: 0o700 });
      // The slot is a shared mount of its own: what is mounted under it later (the
      // session's worktree) propagates into the container's slave bind.
      // Private first: a bind of a directory on a shared mount (`/` under systemd) would
      // join that mount's peer group, and the worktree mounted on work/ would be copied
      // onto the parent too. Then shared, in a peer group of its own.
      await bindMount(dir, dir);
      await mountCommand('mount', ['--make-private', dir]);
      await mountCommand('mount', ['--make-shared', dir]);
      const workDir = path.join(dir, 'work');
      const egressDir = path.join(dir, 'egress');
      // Root's and read-only: the container's init and forwarder start in this directory
      // and keep it as their working directory under the worktree mounted later, so the
      // agent can reach it through /proc/1/cwd. Writable, it would be host disk outside
      // the session's disk limit.
      mkdirSync(workDir, { mode: 0o555 });
      chmodSync(workDir, 0o555);
      mkdirSync(egressDir, { mode: 0o755 });
      // The control socket: the forwarder in the container dials it and waits for the launch message.
      const controlServer = net.createServer();
      const connected = new Promise<net.Socket>((resolve, reject) => {
        controlServer.once('connection', (c) => {
          controlServer.close();
          resolve(c);
        });
        controlServer.once('error', reject);
      });
      connected.catch(() => undefined);
      await new Promise<void>((resolve, reject) => {
        controlServer.once('error', reject);
        controlServer.listen(path.join(egressDir, 'control.sock'), () => resolve());
      });
      chmodSync(path.join(egressDir, 'control.sock'), 0o666);
      const opts = containerOptions(this.o.template, slotContext(this.o, dir, id));
      const binds = opts.HostConfig!.Binds!;
      binds[0] = `${workDir}:${CONTAINER_WORKSPACE}:rw,rslave`;
      const create: Docker.ContainerCreateOptions = {
        ...opts,
        Env: ['HOME=/tmp'],
        Labels: { [LABEL_SESSION]: id, [LABEL_WORKER]: this.o.workerId, [LABEL_POOL]: '1' },
        AttachStdout: false,
        AttachStderr: false,
      };
      const container = await this.o.docker.createContainer(create);
      try {
        await container.start();
        const control = await Promise.race([
          connected,
          delay(CONTROL_CONNECT_MS).then(() => {
            throw new Error(`the warm container's forwarder did not connect within ${CONTROL_CONNECT_MS / 1000} s`);
          }),
        ]);
        const info = await container.inspect();
        if (!info.State.Running || !info.State.Pid) throw new Error(`the warm container exited at once (exit code ${info.State.ExitCode})`);
        const slot: PoolSlot = { id, dir, workDir, egressDir, containerId: container.id, pid: info.State.Pid, control, shape: this.shape };
        control.on('error', () => undefined);
        // A forwarder gone before its session (killed, OOM while idle): the slot is dead.
        control.once('close', () => {
          const i = this.ready.indexOf(slot);
          if (i === -1) return;
          this.ready.splice(i, 1);
          this.o.logger.warn('a warm container went away while idle; replacing it', { slot: id, container_id: container.id });
          void this.destroy(slot).catch(() => undefined);
          this.fill();
        });
        return slot;
      } catch (err) {
        controlServer.close();
        await removeContainer(container).catch(() => undefined);
        throw err;
      }
    } catch (err) {
      await this.removeSlotDir(dir).catch(() => undefined);
      throw err;
    } finally {
      this.creatingIds.delete(id);
    }
  }

  /**
   * Start the agent in a taken slot: its argv and whole environment go to the
   * forwarder (one JSON line), which runs it as the container's command would.
   */
  launch(slot: PoolSlot, proc: { argv: string[]; env: string[] }): Promise<void> {
    return new Promise((resolve, reject) => {
      if (slot.control.destroyed) return reject(new Error('the warm container is gone (its forwarder closed the control socket)'));
      // The directory by name: the worktree was mounted over it after the forwarder started.
      slot.control.end(`${JSON.stringify({ argv: proc.argv, env: proc.env, dir: CONTAINER_WORKSPACE })}\n`, () => resolve());
      slot.control.once('error', reject);
    });
  }

  private async destroy(slot: PoolSlot): Promise<void> {
    slot.control.destroy();
    await removeContainer(this.o.docker.getContainer(slot.containerId));
    await this.removeSlotDir(slot.dir);
  }

  private removeSlotDir(dir: string): Promise<void> {
    return removeSlotDir(dir);
  }
}

/**
 * Unmount everything at or below a slot directory, then delete it. The mount table is
 * read again after each unmount: one unmount can take others with it (propagation).
 */
async function removeSlotDir(dir: string): Promise<void> {
  for (let i = 0; i < 64; i++) {
    const next = mountsUnder(dir)?.[0];
    if (next === undefined) break;
    await unmount(next);
  }
  const left = mountsUnder(dir);
  if (left && left.length > 0) throw new Error(`still mounted: ${left.join(', ')}`);
  try {
    lstatSync(dir);
  } catch {
    return;
  }
  rmSync(dir, { recursive: true, force: true });
}

/**
 * Remove the slot directories (and their mounts: a slot, the worktree bound on its
 * work/) that a previous run of this worker left under `root`, except those `keep`
 * names. Their containers are removed by the orphan sweep. Needs root (unmount).
 */
export async function removeStaleSlots(root: string, logger: PoolLogger, keep: (name: string) => boolean = () => false): Promise<void> {
  let names: string[] = [];
  try {
    names = readdirSync(root);
  } catch {
    return;
  }
  for (const name of names) {
    if (!name.startsWith(POOL_ID_PREFIX) || keep(name)) continue;
    await removeSlotDir(path.join(root, name)).catch((err) => logger.warn('a stale pool slot could not be removed', { slot: name, err: messageOf(err) }));
  }
}

/** Linux's major:minor of a device number, as /proc/<pid>/mountinfo writes it. */
function majorMinor(dev: number): string {
  const d = BigInt(dev);
  const major = ((d >> 8n) & 0xfffn) | ((d >> 32n) & ~0xfffn);
  const minor = (d & 0xffn) | ((d >> 12n) & ~0xffn);
  return `${major}:${minor}`;
}

/**
 * Before the agent starts: the container's own mount table must show the session's
 * worktree on top of its /workspace (propagated from the slot), on the worktree's
 * device. Anything else (propagation broken, a runtime that ignores it) would run the
 * agent on an empty directory whose work is then lost: refuse instead.
 */
export function checkWorkspaceMount(slot: PoolSlot, worktreeDir: string): void {
  let text: string;
  try {
    text = readFileSync(`/proc/${slot.pid}/mountinfo`, 'utf8');
  } catch (err) {
    throw new Error(`the warm container's mount table cannot be read (${messageOf(err)})`);
  }
  const at = text
    .split('\n')
    .map((l) => l.split(' '))
    .filter((f) => f[4] === CONTAINER_WORKSPACE);
  const top = at[at.length - 1];
  const want = majorMinor(statSync(worktreeDir).dev);
  if (at.length < 2 || !top || top[2] !== want) {
    throw new Error(`the warm container does not see the session's worktree at ${CONTAINER_WORKSPACE} (mounts there: ${at.map((f) => f[2]).join(', ') || 'none'}; want ${want} on top)`);
  }
}

/** `--warm N`: an integer from 0 to MAX_WARM, else null. */
export function parseWarm(value: string): number | null {
  if (!/^\d{1,3}$/.test(value)) return null;
  const n = Number(value);
  return n <= MAX_WARM ? n : null;
}

/**
 * Container lifecycle helpers over dockerode: graceful kill, and the worker's
 * housekeeping (orphans left by a crashed worker, stopping everything on shutdown).
 * Containers are found by the `loki.worker` / `loki.session` labels the policy sets.
 */
import type Docker from 'dockerode';
import { LABEL_SESSION, LABEL_WORKER } from './policy';

export const DEFAULT_KILL_GRACE_MS = 10_000;

/** Docker answers 304/404/409 when a container is already stopped, gone or being removed. */
export function isGoneOrStopped(err: unknown): boolean {
  const status = (err as { statusCode?: number } | null)?.statusCode;
  return status === 304 || status === 404 || status === 409;
}

const delay = (ms: number) =>
  new Promise<'timeout'>((resolve) => {
    setTimeout(() => resolve('timeout'), ms).unref();
  });

/**
 * SIGTERM, then SIGKILL if `exited` has not settled within `graceMs`. Resolves
 * `true` when SIGKILL was needed.
 */
export async function killWithGrace(container: Docker.Container, exited: Promise<unknown>, graceMs: number): Promise<boolean> {
  try {
    await container.kill({ signal: 'SIGTERM' });
  } catch (err) {
    if (isGoneOrStopped(err)) return false;
    throw err;
  }
  const first = await Promise.race([exited.then(() => 'exited' as const, () => 'exited' as const), delay(graceMs)]);
  if (first === 'exited') return false;
  try {
    await container.kill({ signal: 'SIGKILL' });
  } catch (err) {
    if (!isGoneOrStopped(err)) throw err;
  }
  return true;
}

/** Remove a container, tolerating one that is already gone. */
export async function removeContainer(container: Docker.Container): Promise<void> {
  try {
    await container.remove({ force: true, v: true });
  } catch (err) {
    if (!isGoneOrStopped(err)) throw err;
  }
}

async function listForWorker(docker: Docker, workerId: string, all: boolean): Promise<Docker.ContainerInfo[]> {
  return docker.listContainers({ all, filters: { label: [`${LABEL_WORKER}=${workerId}`] } });
}

/**
 * Remove this worker's containers that no live session owns (left behind when the
 * worker was killed). Returns the removed container ids.
 */
export async function removeOrphans(docker: Docker, workerId: string, liveSessionIds: ReadonlySet<string>): Promise<string[]> {
  const removed: string[] = [];
  for (const info of await listForWorker(docker, workerId, true)) {
    const session = info.Labels?.[LABEL_SESSION];
    if (session !== undefined && liveSessionIds.has(session)) continue;
    await removeContainer(docker.getContainer(info.Id));
    removed.push(info.Id);
  }
  return removed;
}

/**
 * Stop every running container of this worker: SIGTERM to all at once, SIGKILL to
 * those still running after `graceMs`. The sessions' own runners remove them.
 * Returns the ids it signalled.
 */
export async function stopAllForWorker(
  docker: Docker,
  workerId: string,
  opts: { graceMs?: number } = {},
): Promise<string[]> {
  const graceMs = opts.graceMs ?? DEFAULT_KILL_GRACE_MS;
  const running = await listForWorker(docker, workerId, false);
  await Promise.all(
    running.map(async (info) => {
      const container = docker.getContainer(info.Id);
      const exited = container.wait({ condition: 'not-running' }).catch(() => undefined);
      await killWithGrace(container, exited, graceMs);
    }),
  );
  return running.map((info) => info.Id);
}

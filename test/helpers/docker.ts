/**
 * Docker availability for `*.docker.test.ts`. In CI (`CI=true`) a missing engine or
 * image is a failure; on a developer machine the suite is skipped and the reason is
 * in the suite's name.
 */
import Docker from 'dockerode';
import { describe, it } from 'vitest';

export const SANDBOX_IMAGE = 'loki-sandbox:local';
export const DOCKER_SOCKET = '/var/run/docker.sock';

export type DockerProbe = { ok: true; docker: Docker } | { ok: false; reason: string };

/** Ping the engine on the local socket and check that `image` exists. */
export async function dockerAvailable(opts: { image?: string } = {}): Promise<DockerProbe> {
  const docker = new Docker({ socketPath: DOCKER_SOCKET, timeout: 5_000 });
  try {
    await docker.ping();
  } catch (err) {
    return { ok: false, reason: `no Docker engine at ${DOCKER_SOCKET} (${(err as Error).message}); run scripts/docker-up.sh` };
  }
  const image = opts.image ?? SANDBOX_IMAGE;
  try {
    await docker.getImage(image).inspect();
  } catch {
    const script = image === 'loki-agent:local' ? 'scripts/agent-image.sh' : 'scripts/sandbox-image.sh';
    return { ok: false, reason: `image ${image} missing; run ${script}` };
  }
  // The probe client has a short timeout; tests get one without.
  return { ok: true, docker: new Docker({ socketPath: DOCKER_SOCKET }) };
}

/** `describe` that runs only with an engine; fails in CI without one, else skips with the reason. */
export function describeDocker(name: string, probe: DockerProbe, fn: (docker: Docker) => void): void {
  if (probe.ok) {
    describe(name, () => fn(probe.docker));
    return;
  }
  if (process.env.CI === 'true') {
    describe(name, () => {
      it('needs a Docker engine in CI', () => {
        throw new Error(probe.reason);
      });
    });
    return;
  }
  describe.skip(`${name} (skipped: ${probe.reason})`, () => {
    it('needs a Docker engine', () => {});
  });
}

/** The exact HostConfig every sandbox container must get (pinned here, not derived from src/). */
export function expectedHostConfig(o: { workspace: string; memoryBytes: number; nanoCpus: number; runtime?: string }) {
  return {
    Runtime: o.runtime ?? 'runc',
    CapDrop: ['ALL'],
    CapAdd: [],
    SecurityOpt: ['no-new-privileges:true'],
    Privileged: false,
    ReadonlyRootfs: true,
    Tmpfs: { '/tmp': 'rw,noexec,nosuid,size=64m' },
    NetworkMode: 'none',
    PortBindings: {},
    PublishAllPorts: false,
    Memory: o.memoryBytes,
    MemorySwap: o.memoryBytes,
    NanoCpus: o.nanoCpus,
    PidsLimit: o.runtime === 'runsc' ? 4096 : 256,
    Ulimits: [{ Name: 'nofile', Soft: 4096, Hard: 4096 }],
    Binds: [`${o.workspace}:/workspace:rw`],
    AutoRemove: false,
    Init: true,
    LogConfig: { Type: 'none', Config: {} },
  };
}

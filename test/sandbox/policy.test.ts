import { mkdirSync, mkdtempSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { containerOptions, type PolicyContext, SandboxPolicyError, validateHostMount } from '../../src/sandbox/policy';
import type { SessionPolicy } from '../../src/sessions/api';
import { sessionPolicy } from '../sessions/helpers';
import { expectedHostConfig } from '../helpers/docker';

let root: string;
let home: string;
let ws: string;
let data: string;
let ctx: PolicyContext;

beforeAll(() => {
  root = realpathSync(mkdtempSync(path.join(tmpdir(), 'loki-policy-')));
  home = path.join(root, 'home');
  ws = path.join(root, 'ws');
  data = path.join(root, 'data');
  for (const d of [home, ws, data, path.join(home, '.ssh'), path.join(home, '.aws'), path.join(home, '.config', 'gh'), path.join(home, '.loki', 'dashboard'), path.join(home, 'projects')]) {
    mkdirSync(d, { recursive: true });
  }
  writeFileSync(path.join(ws, 'prd.md'), '# PRD\n');
  symlinkSync(path.join(home, '.ssh'), path.join(root, 'innocent-link'));
  ctx = {
    sessionId: 'sess1',
    workerId: 'worker-a',
    workspace: ws,
    prd: 'prd.md',
    env: { ANTHROPIC_API_KEY: 'sk-ant-xyz', LOKI_WORKER_TOKEN: 'loki_secret', LOKI_TOKEN: 'loki_other', LOKI_DATABASE_URL: 'postgres://loki:pw@db/loki', PATH: '/bin' },
    home,
  };
});
afterAll(() => {
  rmSync(root, { recursive: true, force: true });
});

function policy(patch: Partial<SessionPolicy> = {}): SessionPolicy {
  return sessionPolicy(['agent', '--prd', '{prd}'], patch);
}

describe('containerOptions', () => {
  it('builds the exact create options from the defaults', () => {
    expect(containerOptions(policy(), ctx)).toEqual({
      Image: 'loki-sandbox:local',
      Cmd: ['agent', '--prd', 'prd.md'],
      User: '1000:1000',
      WorkingDir: '/workspace',
      Env: ['HOME=/tmp'],
      Labels: { 'loki.session': 'sess1', 'loki.worker': 'worker-a' },
      AttachStdin: false,
      AttachStdout: true,
      AttachStderr: true,
      OpenStdin: false,
      Tty: false,
      HostConfig: expectedHostConfig({ workspace: ws, memoryBytes: 4 * 1024 ** 3, nanoCpus: 2e9 }),
    });
  });

  it('applies policy values: network, limits, caps, env allowlist, mounts, runtime', () => {
    const opts = containerOptions(
      policy({
        network: true,
        memory_bytes: 16 * 1024 ** 2,
        nano_cpus: 5e8,
        cap_add: ['CHOWN'],
        env_allowlist: ['ANTHROPIC_API_KEY', 'MISSING', 'LOKI_WORKER_TOKEN', 'LOKI_TOKEN', 'LOKI_DATABASE_URL'],
        mounts: [{ host: data, container: '/data', mode: 'ro' }],
        user: '1001:1002',
        image: 'other:1',
        runtime: 'runsc',
      }),
      { ...ctx, mountSources: ['/loki/worktrees/sess1/mounts/0'] },
    );
    expect(opts.Image).toBe('other:1');
    expect(opts.User).toBe('1001:1002');
    expect(opts.Env).toEqual(['HOME=/tmp', 'ANTHROPIC_API_KEY=sk-ant-xyz']);
    expect(opts.HostConfig).toMatchObject({
      NetworkMode: 'bridge',
      Runtime: 'runsc',
      Memory: 16 * 1024 ** 2,
      MemorySwap: 16 * 1024 ** 2,
      NanoCpus: 5e8,
      CapAdd: ['CHOWN'],
      CapDrop: ['ALL'],
      // Docker binds the worker's pinned copy of the mount, never the path itself.
      Binds: [`${ws}:/workspace:rw`, `/loki/worktrees/sess1/mounts/0:/data:ro`],
    });
  });

  it('refuses a mount the worker did not pin, and one whose real path changed since the checks', () => {
    expect(() => containerOptions(policy({ mounts: [{ host: data, container: '/data', mode: 'ro' }] }), ctx)).toThrow(
      `mount ${data} refused (rule not_found): it was not pinned by the worker`,
    );
    const link = path.join(root, 'data-link');
    symlinkSync(data, link);
    expect(() => containerOptions(policy({ mounts: [{ host: link, container: '/data', mode: 'ro' }] }), { ...ctx, mountSources: ['/x'] })).toThrow(
      `mount ${link} refused (rule not_found): it now resolves to ${data}`,
    );
  });

  it('passes a hostile PRD name as one argument', () => {
    const name = "a b'; rm -rf ~; $(touch /tmp/pwned).md";
    expect(containerOptions(policy({ command: ['cat', '{prd}'] }), { ...ctx, prd: name }).Cmd).toEqual(['cat', name]);
  });

  it('refuses a capability outside the allowlist even if the policy object was built by hand', () => {
    expect(() => containerOptions(policy({ cap_add: ['SETUID'] }), ctx)).toThrow(SandboxPolicyError);
  });
});

describe('mount rules', () => {
  const refused = (host: string, extra: Partial<PolicyContext> = {}): string => {
    try {
      validateHostMount(host, { ...ctx, ...extra });
    } catch (err) {
      expect(err).toBeInstanceOf(SandboxPolicyError);
      return (err as SandboxPolicyError).rule;
    }
    throw new Error(`mount ${host} was accepted`);
  };

  it.each([
    ['/nonexistent/path', 'not_found'],
    ['/', 'root'],
    ['/etc', 'etc'],
    ['/etc/ssl', 'etc'],
    ['/proc', 'system'],
  ])('refuses %s (rule %s)', (host, rule) => {
    expect(refused(host)).toBe(rule);
  });

  it('refuses home and its credential directories, inside and around them', () => {
    expect(refused(home)).toBe('home');
    expect(refused(path.join(home, '.ssh'))).toBe('ssh');
    expect(refused(path.join(home, '.aws'))).toBe('aws');
    expect(refused(path.join(home, '.config', 'gh'))).toBe('gh_config');
    expect(refused(path.join(home, '.config'))).toBe('gh_config');
    expect(refused(path.join(home, '.loki', 'dashboard'))).toBe('loki_home');
    expect(refused(root)).toBe('ssh');
    expect(refused(path.join(root, 'innocent-link'))).toBe('ssh');
  });

  it('refuses the Docker socket and directories holding it', () => {
    const sockDir = path.join(root, 'run');
    mkdirSync(sockDir, { recursive: true });
    writeFileSync(path.join(sockDir, 'docker.sock'), '');
    expect(refused(path.join(sockDir, 'docker.sock'), { dockerSocket: path.join(sockDir, 'docker.sock') })).toBe('docker_socket');
    expect(refused(sockDir, { dockerSocket: path.join(sockDir, 'docker.sock') })).toBe('docker_socket');
    expect(refused('/var/run')).toBe('docker_socket');
  });

  it('refuses a LOKI_HOME elsewhere', () => {
    expect(refused(data, { lokiHome: data })).toBe('loki_home');
  });

  it('accepts an ordinary directory and returns its real path', () => {
    expect(validateHostMount(path.join(home, 'projects'), ctx)).toBe(path.join(home, 'projects'));
  });

  it('applies the deny rules again to a handed-over policy, naming the rule and the path', () => {
    const ssh = path.join(home, '.ssh');
    expect(() => containerOptions(policy({ mounts: [{ host: ssh, container: '/k', mode: 'ro' }] }), ctx)).toThrow(
      `mount ${ssh} refused (rule ssh): ~/.ssh is never mounted`,
    );
  });
});

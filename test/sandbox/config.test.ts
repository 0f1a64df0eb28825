import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  DEFAULT_PROVIDER_COMMAND,
  loadWorkspaceConfig,
  parseCpuLimit,
  parseMemoryLimit,
  providerArgv,
  SandboxConfigError,
} from '../../src/sandbox/config';

const HOME = '/home/tester';
let ws: string;

beforeEach(() => {
  ws = mkdtempSync(path.join(tmpdir(), 'loki-config-'));
});
afterEach(() => {
  rmSync(ws, { recursive: true, force: true });
});

function write(yaml: string) {
  mkdirSync(path.join(ws, '.loki'), { recursive: true });
  writeFileSync(path.join(ws, '.loki', 'config.yaml'), yaml);
}

function loadError(yaml: string): string {
  write(yaml);
  try {
    loadWorkspaceConfig(ws, { home: HOME });
  } catch (err) {
    expect(err).toBeInstanceOf(SandboxConfigError);
    const message = (err as Error).message;
    expect(message).not.toContain('\n');
    return message;
  }
  throw new Error('expected SandboxConfigError');
}

describe('loadWorkspaceConfig', () => {
  it('gives the defaults when the file is missing', () => {
    expect(loadWorkspaceConfig(ws, { home: HOME })).toEqual({
      sandbox: {
        enabled: false,
        network: false,
        memoryBytes: 4 * 1024 ** 3,
        nanoCpus: 2e9,
        mounts: [],
        image: 'loki-sandbox:local',
        timeoutSeconds: 3600,
        idleTimeoutSeconds: 900,
        envAllowlist: [],
        capAdd: [],
        user: '1000:1000',
        runtime: null,
        egress: [],
        diskBytes: null,
      },
      provider: { command: [...DEFAULT_PROVIDER_COMMAND] },
      explicit: [],
    });
  });

  it('gives the defaults for an empty file and ignores other top-level sections', () => {
    write('');
    expect(loadWorkspaceConfig(ws, { home: HOME }).sandbox.memoryBytes).toBe(4 * 1024 ** 3);
    write('dashboard:\n  port: 1\n');
    expect(loadWorkspaceConfig(ws, { home: HOME }).sandbox.enabled).toBe(false);
  });

  it('parses every key', () => {
    write(`
sandbox:
  enabled: true
  network: true
  memory_limit: 512m
  cpu_limit: "0.5"
  mounts:
    - ~/data:/data:ro
    - ./cache:/cache:rw
  image: my-agent:1
  timeout_seconds: 60
  idle_timeout_seconds: 30
  env_allowlist: [ANTHROPIC_API_KEY, OPENAI_API_KEY]
  cap_add: [cap_chown, NET_BIND_SERVICE]
  user: "1001:1001"
  runtime: runsc
  egress: [API.Example.com:443, "*.pypi.org:443", "api.example.com:443"]
  disk_limit: 2g
provider:
  command: [codex, exec, "{prd}"]
`);
    expect(loadWorkspaceConfig(ws, { home: HOME })).toEqual({
      sandbox: {
        enabled: true,
        network: true,
        memoryBytes: 512 * 1024 ** 2,
        nanoCpus: 5e8,
        mounts: [
          { host: '/home/tester/data', container: '/data', mode: 'ro', source: '~/data:/data:ro' },
          { host: path.join(ws, 'cache'), container: '/cache', mode: 'rw', source: './cache:/cache:rw' },
        ],
        image: 'my-agent:1',
        timeoutSeconds: 60,
        idleTimeoutSeconds: 30,
        envAllowlist: ['ANTHROPIC_API_KEY', 'OPENAI_API_KEY'],
        capAdd: ['CHOWN', 'NET_BIND_SERVICE'],
        user: '1001:1001',
        runtime: 'runsc',
        // lower-cased, duplicates dropped
        egress: ['api.example.com:443', '*.pypi.org:443'],
        diskBytes: 2 * 1024 ** 3,
      },
      provider: { command: ['codex', 'exec', '{prd}'] },
      explicit: [
        'enabled',
        'network',
        'memory_limit',
        'cpu_limit',
        'mounts',
        'image',
        'timeout_seconds',
        'idle_timeout_seconds',
        'env_allowlist',
        'cap_add',
        'user',
        'runtime',
        'egress',
        'disk_limit',
      ],
    });
  });

  it('lists in `explicit` only the sandbox keys the file set (a default is not a request)', () => {
    write('sandbox:\n  memory_limit: 1g\n  image: loki-sandbox:local\nprovider:\n  command: [a, "{prd}"]\n');
    const c = loadWorkspaceConfig(ws, { home: HOME });
    expect(c.explicit).toEqual(['memory_limit', 'image']);
    expect(c.sandbox.timeoutSeconds).toBe(3600);
    write('dashboard:\n  port: 1\n');
    expect(loadWorkspaceConfig(ws, { home: HOME }).explicit).toEqual([]);
  });

  it.each([
    ['sandbox:\n  memory_limit: 4x\n', 'sandbox.memory_limit'],
    ['sandbox:\n  memory_limit: 1m\n', 'sandbox.memory_limit'],
    ['sandbox:\n  cpu_limit: "-1"\n', 'sandbox.cpu_limit'],
    ['sandbox:\n  cpu_limit: two\n', 'sandbox.cpu_limit'],
    ['sandbox:\n  enabled: maybe\n', 'sandbox.enabled'],
    ['sandbox:\n  network: "yes"\n', 'sandbox.network'],
    ['sandbox:\n  timeout_seconds: 0\n', 'sandbox.timeout_seconds'],
    ['sandbox:\n  idle_timeout_seconds: 1.5\n', 'sandbox.idle_timeout_seconds'],
    ['sandbox:\n  mounts: ["/data"]\n', 'sandbox.mounts.0'],
    ['sandbox:\n  mounts: ["/a:/b:rx"]\n', 'sandbox.mounts.0'],
    ['sandbox:\n  mounts: ["/a:relative:ro"]\n', 'sandbox.mounts.0'],
    ['sandbox:\n  mounts: ["/a:/workspace:ro"]\n', 'sandbox.mounts.0'],
    ['sandbox:\n  mounts: ["~root/x:/x:ro"]\n', 'sandbox.mounts.0'],
    ['sandbox:\n  env_allowlist: [LOKI_WORKER_TOKEN]\n', 'sandbox.env_allowlist.0'],
    ['sandbox:\n  env_allowlist: [OK, LOKI_TOKEN]\n', 'sandbox.env_allowlist.1'],
    ['sandbox:\n  env_allowlist: [LOKI_DATABASE_URL]\n', 'sandbox.env_allowlist.0'],
    ['sandbox:\n  env_allowlist: ["A=B"]\n', 'sandbox.env_allowlist.0'],
    ['sandbox:\n  cap_add: [SETUID]\n', 'sandbox.cap_add.0'],
    ['sandbox:\n  cap_add: [CHOWN, CAP_SYS_ADMIN]\n', 'sandbox.cap_add.1'],
    ['sandbox:\n  user: "0:0"\n', 'sandbox.user'],
    ['sandbox:\n  user: "1000:0"\n', 'sandbox.user'],
    ['sandbox:\n  user: root\n', 'sandbox.user'],
    ['sandbox:\n  imagee: x\n', 'sandbox.imagee: unknown key'],
    ['sandbox:\n  runtime: "Run SC"\n', 'sandbox.runtime'],
    ['sandbox:\n  runtime: 1\n', 'sandbox.runtime'],
    ['sandbox:\n  egress: [example.com]\n', 'sandbox.egress.0'],
    ['sandbox:\n  egress: ["ok.example.com:443", "x.example.com:99999"]\n', 'sandbox.egress.1'],
    ['sandbox:\n  egress: ["x.example.com:0"]\n', 'sandbox.egress.0'],
    ['sandbox:\n  egress: ["http://x.example.com:80"]\n', 'sandbox.egress.0'],
    ['sandbox:\n  egress: "x.example.com:443"\n', 'sandbox.egress'],
    ['sandbox:\n  disk_limit: 4x\n', 'sandbox.disk_limit'],
    ['sandbox:\n  disk_limit: 0\n', 'sandbox.disk_limit'],
    ['provider:\n  command: "claude {prd}"\n', 'provider.command'],
    ['provider:\n  command: []\n', 'provider.command'],
    ['provider:\n  command: [claude, "--prd={prd}"]\n', 'provider.command.1'],
    ['- a\n- b\n', '(root)'],
  ])('refuses %j naming %s', (yaml, key) => {
    expect(loadError(yaml)).toContain(key);
  });

  it('names the rule for a forbidden capability', () => {
    expect(loadError('sandbox:\n  cap_add: [SETGID]\n')).toMatch(/SETGID is never allowed/);
  });

  it('refuses malformed YAML in one line', () => {
    expect(loadError('sandbox: [unclosed\n  x: {\n')).toMatch(/not valid YAML/);
  });

  it('refuses a config symlinked out of the workspace', () => {
    const outside = mkdtempSync(path.join(tmpdir(), 'loki-outside-'));
    try {
      writeFileSync(path.join(outside, 'config.yaml'), 'sandbox:\n  enabled: true\n');
      mkdirSync(path.join(ws, '.loki'));
      symlinkSync(path.join(outside, 'config.yaml'), path.join(ws, '.loki', 'config.yaml'));
      expect(() => loadWorkspaceConfig(ws, { home: HOME })).toThrow(/escapes its root/);
    } finally {
      rmSync(outside, { recursive: true, force: true });
    }
  });
});

describe('size and CPU parsing', () => {
  it.each([
    ['4g', 4 * 1024 ** 3],
    ['4G', 4 * 1024 ** 3],
    ['512m', 512 * 1024 ** 2],
    ['1.5g', 1.5 * 1024 ** 3],
    ['64k', 65536],
    ['100mb', 100 * 1024 ** 2],
    ['65536', 65536],
  ])('memory %s', (text, bytes) => {
    expect(parseMemoryLimit(text)).toBe(bytes);
  });

  it('rejects bad sizes', () => {
    for (const bad of ['', 'g', '-1m', '4t', '1e9', '0']) expect(parseMemoryLimit(bad)).toBeNull();
  });

  it('cpus', () => {
    expect(parseCpuLimit('2')).toBe(2e9);
    expect(parseCpuLimit('0.25')).toBe(25e7);
    expect(parseCpuLimit(1.5)).toBe(15e8);
    for (const bad of ['0', '-1', 'x', '1e3', '']) expect(parseCpuLimit(bad)).toBeNull();
  });
});

describe('providerArgv', () => {
  it('replaces {prd} only as a whole argument', () => {
    const name = "a b'; rm -rf ~; $(touch /tmp/pwned).md";
    expect(providerArgv(['claude', '-p', '{prd}', 'x{prd}'], name)).toEqual(['claude', '-p', name, 'x{prd}']);
  });
});

import { describe, expect, it } from 'vitest';
import { ConfigError, checkBind, loadConfig } from '../src/env';

const D = { home: '/home/u', cwd: '/work/project' };
const bad = (env: Record<string, string>) => {
  try {
    loadConfig(env, D);
  } catch (e) {
    return e as ConfigError;
  }
  throw new Error('expected a ConfigError');
};

describe('loadConfig', () => {
  it('has the contract defaults', () => {
    const c = loadConfig({}, D);
    expect(c.host).toBe('127.0.0.1');
    expect(c.port).toBe(57374);
    expect(c.home).toBe('/home/u/.loki');
    expect(c.dbPath).toBe('/home/u/.loki/dashboard/loki.db');
    expect(c.corsOrigins).toEqual(['http://localhost:57374', 'http://127.0.0.1:57374']);
    expect(c.enterpriseAuth).toBe(false);
    expect(c.auditEnabled).toBe(true);
    expect(c.branchProtection).toBe(true);
    expect(c.workspaceRoots).toEqual(['/home/u', '/work/project']);
    expect(c.url).toBe('http://127.0.0.1:57374');
    expect(c.shutdownTimeoutMs).toBe(10_000);
    expect(c.oidc).toBeNull();
  });

  it('derives the default CORS allowlist from the actual port', () => {
    expect(loadConfig({ LOKI_DASHBOARD_PORT: '8080' }, D).corsOrigins).toEqual(['http://localhost:8080', 'http://127.0.0.1:8080']);
  });

  it.each([
    [{ LOKI_DASHBOARD_PORT: 'abc' }, 'LOKI_DASHBOARD_PORT="abc" is invalid: expected an integer from 1 to 65535'],
    [{ LOKI_DASHBOARD_PORT: '70000' }, 'LOKI_DASHBOARD_PORT="70000" is invalid: expected an integer from 1 to 65535'],
    [{ LOKI_DASHBOARD_PORT: '80.5' }, 'LOKI_DASHBOARD_PORT="80.5" is invalid: expected an integer from 1 to 65535'],
    [{ LOKI_DASHBOARD_CORS: 'localhost' }, 'LOKI_DASHBOARD_CORS="localhost" is invalid: expected comma-separated origins like http://localhost:57374, or *'],
    [{ LOKI_DASHBOARD_CORS: 'http://a.com/path' }, 'LOKI_DASHBOARD_CORS="http://a.com/path" is invalid: expected comma-separated origins like http://localhost:57374, or *'],
    [{ LOKI_ENTERPRISE_AUTH: 'maybe' }, 'LOKI_ENTERPRISE_AUTH="maybe" is invalid: expected one of true, false, 1, 0, yes, no, on, off'],
    [{ LOKI_AUDIT_SYSLOG_PROTO: 'http' }, 'LOKI_AUDIT_SYSLOG_PROTO="http" is invalid: expected one of udp, tcp, tls'],
    [{ LOKI_ENV: 'staging' }, 'LOKI_ENV="staging" is invalid: expected one of development, production'],
    [{ LOKI_BUDGET_LIMIT: '5.001' }, 'LOKI_BUDGET_LIMIT="5.001" is invalid: expected a positive amount in USD with at most 2 decimals, at most 10000'],
    [{ LOKI_SHUTDOWN_TIMEOUT_MS: '-1' }, 'LOKI_SHUTDOWN_TIMEOUT_MS="-1" is invalid: expected an integer from 0 to 600000'],
    [
      { LOKI_OIDC_ISSUER: 'http://127.0.0.1:1', LOKI_OIDC_CLIENT_ID: 'x', LOKI_OIDC_DEFAULT_ROLE: 'admin' },
      'LOKI_OIDC_DEFAULT_ROLE="admin" is invalid: expected a role other than admin (operator, viewer, auditor)',
    ],
  ])('refuses %j with one line naming variable, value and what is allowed', (env, message) => {
    const e = bad(env as Record<string, string>);
    expect(e).toBeInstanceOf(ConfigError);
    expect(e.message).toBe(message);
    expect(e.message).not.toContain('\n');
  });

  it('accepts the boolean words', () => {
    for (const w of ['true', '1', 'yes', 'TRUE', 'on']) expect(loadConfig({ LOKI_ENTERPRISE_AUTH: w }, D).enterpriseAuth).toBe(true);
    for (const w of ['false', '0', 'no', 'off']) expect(loadConfig({ LOKI_ENTERPRISE_AUTH: w }, D).enterpriseAuth).toBe(false);
  });

  it('allows a wildcard CORS entry in development only', () => {
    const c = loadConfig({ LOKI_DASHBOARD_CORS: '*' }, D);
    expect(c.corsWildcard).toBe(true);
    expect(bad({ LOKI_DASHBOARD_CORS: '*', LOKI_ENV: 'production' }).message).toBe(
      'LOKI_DASHBOARD_CORS="*" is invalid: expected explicit origins (a wildcard * is refused when LOKI_ENV=production)',
    );
  });

  it('audit switches: on by default, disabled, forced on', () => {
    expect(loadConfig({ LOKI_AUDIT_DISABLED: 'true' }, D).auditEnabled).toBe(false);
    expect(loadConfig({ LOKI_AUDIT_DISABLED: 'true', LOKI_ENTERPRISE_AUDIT: 'true' }, D).auditEnabled).toBe(true);
    // LOKI_AUDIT_WRITER_THREAD: off unless asked for (measured slower on the 2-core benchmark VM).
    expect(loadConfig({}, D).auditWriterThread).toBe(false);
    expect(loadConfig({ LOKI_AUDIT_WRITER_THREAD: 'on' }, D).auditWriterThread).toBe(true);
    expect(() => loadConfig({ LOKI_AUDIT_WRITER_THREAD: 'sometimes' }, D)).toThrow(ConfigError);
  });

  it('enables OIDC only with issuer and client id; audience defaults to the client id', () => {
    expect(loadConfig({ LOKI_OIDC_ISSUER: 'http://127.0.0.1:9' }, D).oidc).toBeNull();
    const c = loadConfig({ LOKI_OIDC_ISSUER: 'http://127.0.0.1:9', LOKI_OIDC_CLIENT_ID: 'loki' }, D);
    expect(c.oidc).toMatchObject({ clientId: 'loki', audience: 'loki', defaultRole: 'viewer' });
    expect(c.oidc?.rolesClaims).toEqual(['roles', 'groups', 'realm_access.roles', 'cognito:groups']);
  });
});

describe('operator policy and Docker settings', () => {
  it('the policy file defaults to $LOKI_HOME/policy.yaml; LOKI_POLICY_FILE must be absolute', () => {
    expect(loadConfig({}, D).policyFile).toBe('/home/u/.loki/policy.yaml');
    expect(loadConfig({ LOKI_HOME: '/srv/loki' }, D).policyFile).toBe('/srv/loki/policy.yaml');
    expect(loadConfig({ LOKI_POLICY_FILE: '/etc/loki/policy.yaml' }, D).policyFile).toBe('/etc/loki/policy.yaml');
    expect(bad({ LOKI_POLICY_FILE: 'policy.yaml' }).message).toBe('LOKI_POLICY_FILE="policy.yaml" is invalid: expected an absolute path');
  });

  it('host sessions are off unless LOKI_ALLOW_HOST_SESSIONS says otherwise', () => {
    expect(loadConfig({}, D).allowHostSessions).toBe(false);
    expect(loadConfig({ LOKI_ALLOW_HOST_SESSIONS: 'true' }, D).allowHostSessions).toBe(true);
    expect(loadConfig({ LOKI_ALLOW_HOST_SESSIONS: 'off' }, D).allowHostSessions).toBe(false);
    expect(bad({ LOKI_ALLOW_HOST_SESSIONS: 'sure' }).message).toMatch(/^LOKI_ALLOW_HOST_SESSIONS="sure" is invalid/);
  });

  it('the Docker socket comes from DOCKER_HOST when it is a unix socket', () => {
    expect(loadConfig({}, D).dockerSocket).toBe('/var/run/docker.sock');
    expect(loadConfig({ DOCKER_HOST: 'unix:///run/user/1000/docker.sock' }, D).dockerSocket).toBe('/run/user/1000/docker.sock');
    expect(loadConfig({ DOCKER_HOST: 'tcp://10.0.0.5:2376' }, D).dockerSocket).toBe('/var/run/docker.sock');
    expect(loadConfig({ DOCKER_HOST: 'ssh://me@builder' }, D).dockerSocket).toBe('/var/run/docker.sock');
    expect(bad({ DOCKER_HOST: '/var/run/docker.sock' }).message).toBe(
      'DOCKER_HOST="/var/run/docker.sock" is invalid: expected unix:///path/to/docker.sock or tcp://host:port',
    );
  });
});

describe('checkBind', () => {
  it('refuses a non-loopback host unless auth is on or the opt-out is set', () => {
    expect(() => checkBind(loadConfig({ LOKI_DASHBOARD_HOST: '0.0.0.0' }, D))).toThrow(
      'LOKI_DASHBOARD_HOST="0.0.0.0" is invalid: expected a loopback address (127.0.0.1, localhost, ::1) unless LOKI_ENTERPRISE_AUTH or OIDC is on, or LOKI_DASHBOARD_ALLOW_INSECURE_BIND=1',
    );
    expect(() => checkBind(loadConfig({ LOKI_DASHBOARD_HOST: '0.0.0.0', LOKI_ENTERPRISE_AUTH: 'yes' }, D))).not.toThrow();
    expect(() => checkBind(loadConfig({ LOKI_DASHBOARD_HOST: '0.0.0.0', LOKI_DASHBOARD_ALLOW_INSECURE_BIND: '1' }, D))).not.toThrow();
    expect(() => checkBind(loadConfig({ LOKI_DASHBOARD_HOST: '::1' }, D))).not.toThrow();
    expect(() => checkBind(loadConfig({ LOKI_DASHBOARD_HOST: 'localhost' }, D))).not.toThrow();
  });
});

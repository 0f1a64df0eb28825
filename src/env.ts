/**
 * LOKI_* configuration: parsed once, with zod, at start-up. This is the only
 * module that reads process.env (through `readProcessEnv`). A bad value stops the
 * process with exit code 2 and one line naming the variable, the value and what is
 * allowed (see `ConfigError`).
 */
import { z } from 'zod';
import { ALG_COSIGNATURE_V1, isValidKeyName, keyHash } from './audit/tlog/note';
import { fromBase64 } from './audit/tlog/sha256';
import { REDACTED } from './util/redact';

export type Role = 'admin' | 'operator' | 'viewer' | 'auditor' | 'worker';
export type SyslogProto = 'udp' | 'tcp' | 'tls';
export const SYSLOG_FORMATS = ['rfc5424', 'json', 'cef', 'ocsf'] as const;
export type SyslogFormat = (typeof SYSLOG_FORMATS)[number];
/** RFC 5424 SD-ID for our own element: `name@PEN` (SD-NAME characters, at most 32; PEN digits, optionally dotted). */
export const SYSLOG_SDID_RE = /^(?=.{3,32}$)[!#-<>-?A-\\^-~]+@\d+(?:\.\d+)*$/;
export type OidcMappedRole = Exclude<Role, 'worker'>;
export const EMBEDDED_WORKER_MODES = ['auto', 'on', 'off'] as const;
export type EmbeddedWorkerMode = (typeof EMBEDDED_WORKER_MODES)[number];

export interface Config {
  env: 'development' | 'production';
  home: string;
  dbPath: string;
  /**
   * `LOKI_DATABASE_URL` (postgres://…): the PostgreSQL store instead of SQLite at
   * `dbPath`, with `LOKI_DATABASE_POOL_SIZE` connections per process and
   * `LOKI_DATABASE_STATEMENT_TIMEOUT_MS` per statement. null: SQLite.
   */
  database: DatabaseConfig | null;
  host: string;
  port: number;
  /** `LOKI_TLS_CERT` / `LOKI_TLS_KEY`: PEM files; the server serves HTTPS and WSS (src/tls.ts reads them at start-up). null: plain HTTP. */
  tls: TlsFiles | null;
  allowInsecureBind: boolean;
  /** Allowed origins; `['*']` means any (development only). */
  corsOrigins: string[];
  corsWildcard: boolean;
  enterpriseAuth: boolean;
  oidc: null | {
    issuer: string;
    clientId: string;
    audience: string;
    rolesClaims: string[];
    defaultRole: Role;
    /** `LOKI_OIDC_ROLE_MAP`: claim value (group or role name, case-insensitive) → role; the only way to admin. */
    roleMap: Record<string, OidcMappedRole>;
    /** `LOKI_OIDC_MAX_TOKEN_LIFETIME` (seconds): a token whose exp - iat is above it is refused; null = no limit. */
    maxTokenLifetimeSec: number | null;
  };
  auditEnabled: boolean;
  /** `LOKI_AUDIT_READS`: `all` (default) records every request; `failures` leaves out successful reads and the worker's polling. */
  auditReads: 'all' | 'failures';
  /**
   * `LOKI_AUDIT_WRITER_THREAD` (SQLite): commit audit batches on a writer thread
   * instead of the event loop (default off: on the 2-core benchmark VM it measured slower).
   */
  auditWriterThread: boolean;
  /** `LOKI_AUDIT_RETENTION_DAYS`: the server prunes entries older than this behind a signed cut; null = off. */
  auditRetentionDays: number | null;
  /** `LOKI_AUDIT_RETENTION_INTERVAL_S`: how often the server applies the retention. */
  auditRetentionIntervalMs: number;
  /** `LOKI_AUDIT_ORIGIN`: the transparency log's checkpoint origin line; null = `loki.<host name>/audit`. */
  auditOrigin: string | null;
  /**
   * `LOKI_AUDIT_SYSLOG_*` (docs/siem.md): where audit events go, the message body
   * format, the structured-data id, and for TLS the CA and the client certificate
   * (absolute PEM file paths; null = system CAs / no client certificate).
   */
  syslog: null | {
    host: string;
    port: number;
    proto: SyslogProto;
    format: SyslogFormat;
    sdId: string;
    tlsCa: string | null;
    tlsCert: string | null;
    tlsKey: string | null;
  };
  /** `LOKI_AUDIT_WITNESSES`: C2SP tlog-witnesses (submission URL prefix + cosigner verifier key) the server pushes checkpoints to. */
  auditWitnesses: AuditWitnessConfig[];
  sandboxMode: boolean;
  branchProtection: boolean;
  /** `LOKI_POLICY_FILE`: the operator's sandbox policy (default `$LOKI_HOME/policy.yaml`). */
  policyFile: string;
  /** `LOKI_ALLOW_HOST_SESSIONS`: the env shortcut for `host_sessions: true` in the policy. */
  allowHostSessions: boolean;
  /** The Docker socket the worker talks to (from `DOCKER_HOST` when it is `unix://…`). */
  dockerSocket: string;
  /** `LOKI_FORWARDER`: the in-container egress forwarder binary (default: the checkout's `.tmp/loki-forward`). */
  forwarderPath: string | null;
  budgetLimitUsd: number | null;
  workspaceRoots: string[];
  url: string;
  token: string | null;
  workerToken: string | null;
  /** `LOKI_WORKER_ID`: names this worker's containers (label `loki.worker`); default: the host name. */
  workerId: string | null;
  /**
   * `LOKI_EMBEDDED_WORKER`: `loki dashboard` / `npm start` also run one sandbox worker
   * as a supervised child process. `auto` (default): when a Docker engine answers;
   * `on`: an unreachable engine is a start-up error; `off`: never.
   */
  embeddedWorker: EmbeddedWorkerMode;
  /** `LOKI_EMBEDDED_WORKER_CONCURRENCY` / `LOKI_EMBEDDED_WORKER_WARM`: the embedded worker's `--concurrency` and `--warm`. */
  embeddedWorkerConcurrency: number;
  embeddedWorkerWarm: number;
  /** `LOKI_SANDBOX_KILL_GRACE_MS`: between SIGTERM and SIGKILL when a session is stopped. */
  sandboxKillGraceMs: number;
  /** `LOKI_SANDBOX_LEASE_MS`: how long a claimed job stays leased without a heartbeat. */
  sandboxLeaseMs: number;
  /** `LOKI_SESSION_MAX_OUTPUT_BYTES`: stored output per session, then a truncation marker. */
  sessionOutputLimitBytes: number;
  shutdownTimeoutMs: number;
  maxSseConnections: number;
  maxWsClients: number;
  /** `LOKI_WS_ATTEMPTS_PER_MINUTE`: WebSocket connection attempts per address per minute. */
  wsAttemptsPerMinute: number;
  /** `LOKI_WS_PING_INTERVAL_MS`: server ping interval; a client missing two in a row is dropped. */
  wsPingIntervalMs: number;
  /** `LOKI_EVENTS_MAX_AGE_HOURS` / `LOKI_EVENTS_MAX_ROWS`: events older or beyond the newest N are pruned. */
  eventsMaxAgeMs: number;
  eventsMaxRows: number;
  /** `LOKI_EVENTS_PRUNE_INTERVAL_S`: how often the Node server prunes the events table. */
  eventsPruneIntervalMs: number;
  bodyLimitBytes: number;
}

export interface TlsFiles {
  /** `LOKI_TLS_CERT`: the certificate (chain), PEM. */
  cert: string;
  /** `LOKI_TLS_KEY`: its private key, PEM, unencrypted. */
  key: string;
}

export interface DatabaseConfig {
  url: string;
  poolSize: number;
  statementTimeoutMs: number;
}

export interface AuditWitnessConfig {
  /** The witness's submission prefix (`<url>/add-checkpoint` is posted to), no trailing slash. */
  url: string;
  /** Its verifier key, `name+keyid+base64(0x04 ‖ Ed25519 public key)`. */
  vkey: string;
}

export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    readonly value: string,
    readonly allowed: string,
  ) {
    super(`${variable}=${JSON.stringify(value)} is invalid: expected ${allowed}`);
  }
}

const TRUE_WORDS = new Set(['1', 'true', 'yes', 'on']);
const FALSE_WORDS = new Set(['0', 'false', 'no', 'off']);

type Env = Record<string, string | undefined>;

function read(env: Env, name: string): string | undefined {
  const v = env[name];
  return v === undefined || v.trim() === '' ? undefined : v.trim();
}

function bool(env: Env, name: string, dflt: boolean): boolean {
  const v = read(env, name);
  if (v === undefined) return dflt;
  const w = v.toLowerCase();
  if (TRUE_WORDS.has(w)) return true;
  if (FALSE_WORDS.has(w)) return false;
  throw new ConfigError(name, v, 'one of true, false, 1, 0, yes, no, on, off');
}

function int(env: Env, name: string, dflt: number, min: number, max: number): number {
  const v = read(env, name);
  if (v === undefined) return dflt;
  const parsed = z.coerce.number().int().min(min).max(max).safeParse(/^-?\d+$/.test(v) ? v : Number.NaN);
  if (!parsed.success) throw new ConfigError(name, v, `an integer from ${min} to ${max}`);
  return parsed.data;
}

function oneOf<T extends string>(env: Env, name: string, values: readonly T[], dflt: T): T {
  const v = read(env, name);
  if (v === undefined) return dflt;
  const w = v.toLowerCase() as T;
  if (!values.includes(w)) throw new ConfigError(name, v, `one of ${values.join(', ')}`);
  return w;
}

const HOST_RE = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*|\[?[0-9A-Fa-f:.]+\]?)$/;

/** Parse an origin (`scheme://host[:port]`, no path) or return null. */
export function parseOrigin(value: string): string | null {
  if (!/^https?:\/\/[^/?#\s]+$/i.test(value)) return null;
  try {
    const u = new URL(value);
    if (u.username || u.password || u.pathname !== '/' || u.search || u.hash) return null;
    return u.origin;
  } catch {
    return null;
  }
}

export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127(?:\.\d{1,3}){3}$/.test(h);
}

function url(env: Env, name: string, dflt: string): string {
  const v = read(env, name);
  if (v === undefined) return dflt;
  try {
    const u = new URL(v);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('scheme');
    return v.replace(/\/+$/, '');
  } catch {
    throw new ConfigError(name, v, 'an http(s) URL');
  }
}

/**
 * Build the configuration from an environment map. Throws `ConfigError` on the
 * first bad value. `defaults.home` and `defaults.cwd` come from the runtime.
 */
export function loadConfig(env: Env, defaults: { home: string; cwd: string }): Config {
  const mode = oneOf(env, 'LOKI_ENV', ['development', 'production'] as const, 'development');
  const home = read(env, 'LOKI_HOME') ?? `${defaults.home}/.loki`;
  const host = read(env, 'LOKI_DASHBOARD_HOST') ?? '127.0.0.1';
  if (!HOST_RE.test(host)) throw new ConfigError('LOKI_DASHBOARD_HOST', host, 'a host name or IP address');
  const port = int(env, 'LOKI_DASHBOARD_PORT', 57374, 1, 65535);
  const tls = tlsFrom(env);
  const scheme = tls ? 'https' : 'http';

  const corsRaw = read(env, 'LOKI_DASHBOARD_CORS');
  let corsOrigins: string[];
  let corsWildcard = false;
  if (corsRaw === undefined) {
    corsOrigins = [`${scheme}://localhost:${port}`, `${scheme}://127.0.0.1:${port}`];
  } else {
    corsOrigins = [];
    for (const part of corsRaw.split(',').map((s) => s.trim()).filter(Boolean)) {
      if (part === '*') {
        corsWildcard = true;
        continue;
      }
      const o = parseOrigin(part);
      if (!o) throw new ConfigError('LOKI_DASHBOARD_CORS', part, 'comma-separated origins like http://localhost:57374, or *');
      corsOrigins.push(o);
    }
    if (corsWildcard && mode === 'production') {
      throw new ConfigError('LOKI_DASHBOARD_CORS', corsRaw, 'explicit origins (a wildcard * is refused when LOKI_ENV=production)');
    }
  }

  const enterpriseAuth = bool(env, 'LOKI_ENTERPRISE_AUTH', false);
  const issuer = read(env, 'LOKI_OIDC_ISSUER');
  const clientId = read(env, 'LOKI_OIDC_CLIENT_ID');
  const roles = ['admin', 'operator', 'viewer', 'auditor', 'worker'] as const;
  let oidc: Config['oidc'] = null;
  if (issuer && clientId) {
    const iss = url(env, 'LOKI_OIDC_ISSUER', issuer);
    if (mode === 'production' && !iss.startsWith('https://')) {
      throw new ConfigError('LOKI_OIDC_ISSUER', issuer, 'an https URL when LOKI_ENV=production');
    }
    const defaultRole = oneOf(env, 'LOKI_OIDC_DEFAULT_ROLE', roles, 'viewer');
    if (defaultRole === 'admin' || defaultRole === 'worker') {
      throw new ConfigError('LOKI_OIDC_DEFAULT_ROLE', defaultRole, 'a role other than admin (operator, viewer, auditor)');
    }
    oidc = {
      issuer: issuer.replace(/\/+$/, '') === iss ? issuer : iss,
      clientId,
      audience: read(env, 'LOKI_OIDC_AUDIENCE') ?? clientId,
      rolesClaims: (read(env, 'LOKI_OIDC_ROLES_CLAIM') ?? 'roles,groups,realm_access.roles,cognito:groups')
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean),
      defaultRole,
      roleMap: oidcRoleMapFrom(env),
      maxTokenLifetimeSec: read(env, 'LOKI_OIDC_MAX_TOKEN_LIFETIME') === undefined ? null : int(env, 'LOKI_OIDC_MAX_TOKEN_LIFETIME', 0, 60, 31_536_000),
    };
  }

  const auditDisabled = bool(env, 'LOKI_AUDIT_DISABLED', false);
  const auditForced = bool(env, 'LOKI_ENTERPRISE_AUDIT', false);

  const syslogHost = read(env, 'LOKI_AUDIT_SYSLOG_HOST');
  const syslogPort = int(env, 'LOKI_AUDIT_SYSLOG_PORT', 514, 1, 65535);
  const syslogProto = oneOf(env, 'LOKI_AUDIT_SYSLOG_PROTO', ['udp', 'tcp', 'tls'] as const, 'udp');
  if (syslogHost !== undefined && !HOST_RE.test(syslogHost)) {
    throw new ConfigError('LOKI_AUDIT_SYSLOG_HOST', syslogHost, 'a host name or IP address');
  }
  const syslogFormat = oneOf(env, 'LOKI_AUDIT_SYSLOG_FORMAT', SYSLOG_FORMATS, 'rfc5424');
  const syslogSdId = read(env, 'LOKI_AUDIT_SYSLOG_SDID') ?? 'loki@32473';
  if (!SYSLOG_SDID_RE.test(syslogSdId)) {
    throw new ConfigError('LOKI_AUDIT_SYSLOG_SDID', syslogSdId, 'an RFC 5424 SD-ID name@enterprise-number, e.g. loki@12345 (at most 32 characters, no space, =, ] or ")');
  }
  const syslogTls = {
    tlsCa: absPath(env, 'LOKI_AUDIT_SYSLOG_TLS_CA') ?? null,
    tlsCert: absPath(env, 'LOKI_AUDIT_SYSLOG_TLS_CERT') ?? null,
    tlsKey: absPath(env, 'LOKI_AUDIT_SYSLOG_TLS_KEY') ?? null,
  };
  if ((syslogTls.tlsCert === null) !== (syslogTls.tlsKey === null)) {
    const [name, value] = syslogTls.tlsCert ? ['LOKI_AUDIT_SYSLOG_TLS_KEY', ''] : ['LOKI_AUDIT_SYSLOG_TLS_CERT', ''];
    throw new ConfigError(name, value, 'set with its pair: a client certificate needs both LOKI_AUDIT_SYSLOG_TLS_CERT and LOKI_AUDIT_SYSLOG_TLS_KEY');
  }
  for (const [name, value] of [
    ['LOKI_AUDIT_SYSLOG_TLS_CA', syslogTls.tlsCa],
    ['LOKI_AUDIT_SYSLOG_TLS_CERT', syslogTls.tlsCert],
    ['LOKI_AUDIT_SYSLOG_TLS_KEY', syslogTls.tlsKey],
  ] as const) {
    if (value !== null && syslogProto !== 'tls') throw new ConfigError(name, value, 'only with LOKI_AUDIT_SYSLOG_PROTO=tls');
  }

  const budgetRaw = read(env, 'LOKI_BUDGET_LIMIT');
  let budgetLimitUsd: number | null = null;
  if (budgetRaw !== undefined) {
    if (!/^\d+(?:\.\d{1,2})?$/.test(budgetRaw) || Number(budgetRaw) <= 0 || Number(budgetRaw) > 10000) {
      throw new ConfigError('LOKI_BUDGET_LIMIT', budgetRaw, 'a positive amount in USD with at most 2 decimals, at most 10000');
    }
    budgetLimitUsd = Number(budgetRaw);
  }

  const rootsRaw = read(env, 'LOKI_WORKSPACE_ROOTS');
  const workspaceRoots = rootsRaw
    ? rootsRaw
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean)
    : defaultWorkspaceRoots(defaults.home, defaults.cwd);
  for (const r of workspaceRoots) {
    if (!r.startsWith('/') || /^\/+$/.test(r)) {
      throw new ConfigError('LOKI_WORKSPACE_ROOTS', r, 'absolute directory paths other than /, comma-separated');
    }
  }

  const token = read(env, 'LOKI_TOKEN') ?? null;
  const config: Config = {
    env: mode,
    home,
    dbPath: read(env, 'LOKI_DB') ?? `${home}/dashboard/loki.db`,
    database: databaseFrom(env),
    host,
    port,
    tls,
    allowInsecureBind: bool(env, 'LOKI_DASHBOARD_ALLOW_INSECURE_BIND', false),
    corsOrigins,
    corsWildcard,
    enterpriseAuth,
    oidc,
    auditEnabled: auditForced || !auditDisabled,
    auditReads: oneOf(env, 'LOKI_AUDIT_READS', ['all', 'failures'] as const, 'all'),
    auditWriterThread: bool(env, 'LOKI_AUDIT_WRITER_THREAD', false),
    auditRetentionDays: read(env, 'LOKI_AUDIT_RETENTION_DAYS') === undefined ? null : int(env, 'LOKI_AUDIT_RETENTION_DAYS', 0, 1, 36_500),
    auditRetentionIntervalMs: int(env, 'LOKI_AUDIT_RETENTION_INTERVAL_S', 3_600, 1, 86_400) * 1000,
    auditOrigin: auditOriginFrom(env),
    syslog: syslogHost ? { host: syslogHost, port: syslogPort, proto: syslogProto, format: syslogFormat, sdId: syslogSdId, ...syslogTls } : null,
    auditWitnesses: auditWitnessesFrom(env),
    sandboxMode: bool(env, 'LOKI_SANDBOX_MODE', false),
    branchProtection: bool(env, 'LOKI_BRANCH_PROTECTION', true),
    policyFile: absPath(env, 'LOKI_POLICY_FILE') ?? `${home}/policy.yaml`,
    allowHostSessions: bool(env, 'LOKI_ALLOW_HOST_SESSIONS', false),
    dockerSocket: dockerSocketFrom(env),
    forwarderPath: absPath(env, 'LOKI_FORWARDER') ?? null,
    budgetLimitUsd,
    workspaceRoots,
    url: url(env, 'LOKI_URL', `${scheme}://127.0.0.1:${port}`),
    token,
    workerToken: read(env, 'LOKI_WORKER_TOKEN') ?? token,
    workerId: workerIdFrom(env),
    embeddedWorker: embeddedWorkerFrom(env),
    embeddedWorkerConcurrency: int(env, 'LOKI_EMBEDDED_WORKER_CONCURRENCY', 2, 1, 32),
    embeddedWorkerWarm: int(env, 'LOKI_EMBEDDED_WORKER_WARM', 2, 0, 32),
    sandboxKillGraceMs: int(env, 'LOKI_SANDBOX_KILL_GRACE_MS', 10_000, 0, 60_000),
    sandboxLeaseMs: int(env, 'LOKI_SANDBOX_LEASE_MS', 30_000, 1_000, 600_000),
    sessionOutputLimitBytes: int(env, 'LOKI_SESSION_MAX_OUTPUT_BYTES', 50 * 1024 * 1024, 1024, 1024 * 1024 * 1024),
    shutdownTimeoutMs: int(env, 'LOKI_SHUTDOWN_TIMEOUT_MS', 10_000, 0, 600_000),
    maxSseConnections: int(env, 'LOKI_MAX_SSE_CONNECTIONS', 100, 1, 100_000),
    maxWsClients: int(env, 'LOKI_MAX_WS_CLIENTS', 100, 1, 100_000),
    wsAttemptsPerMinute: int(env, 'LOKI_WS_ATTEMPTS_PER_MINUTE', 60, 1, 100_000),
    wsPingIntervalMs: int(env, 'LOKI_WS_PING_INTERVAL_MS', 30_000, 100, 600_000),
    eventsMaxAgeMs: int(env, 'LOKI_EVENTS_MAX_AGE_HOURS', 168, 1, 87_600) * 3_600_000,
    eventsMaxRows: int(env, 'LOKI_EVENTS_MAX_ROWS', 100_000, 100, 100_000_000),
    eventsPruneIntervalMs: int(env, 'LOKI_EVENTS_PRUNE_INTERVAL_S', 300, 1, 86_400) * 1000,
    bodyLimitBytes: int(env, 'LOKI_BODY_LIMIT', 1024 * 1024, 1024, 64 * 1024 * 1024),
  };
  if (config.database && config.auditWitnesses.length > 0) {
    throw new ConfigError('LOKI_AUDIT_WITNESSES', read(env, 'LOKI_AUDIT_WITNESSES') ?? '', 'no witnesses with LOKI_DATABASE_URL (witness pushing runs on SQLite only for now)');
  }
  return config;
}

const DATABASE_URL = z
  .string()
  .url()
  .refine((v) => {
    // zod runs refinements even after .url() failed: parse defensively.
    const u = URL.canParse(v) ? new URL(v) : null;
    return u !== null && (u.protocol === 'postgres:' || u.protocol === 'postgresql:') && u.pathname.length > 1 && !u.hash;
  });

/** `LOKI_DATABASE_URL` and its pool settings; the password never appears in an error. */
function databaseFrom(env: Env): DatabaseConfig | null {
  const v = read(env, 'LOKI_DATABASE_URL');
  if (v === undefined) return null;
  if (!DATABASE_URL.safeParse(v).success) {
    // The password may hold '/' or '@' (not percent-encoded: that may be why it is refused): up to the last '@'.
    const shown = v.replace(/^([a-z]+:\/\/[^:@/]*):[\s\S]*@/i, `$1:${REDACTED}@`).replace(/([?&]password=)[^&]*/gi, `$1${REDACTED}`);
    throw new ConfigError('LOKI_DATABASE_URL', shown, 'a PostgreSQL URL postgres://USER:PASSWORD@HOST:PORT/DATABASE (query parameters such as ?sslmode=require allowed)');
  }
  return {
    url: v,
    poolSize: int(env, 'LOKI_DATABASE_POOL_SIZE', 10, 1, 1000),
    statementTimeoutMs: int(env, 'LOKI_DATABASE_STATEMENT_TIMEOUT_MS', 10_000, 0, 3_600_000),
  };
}

const ROLE_MAP_ALLOWED = 'comma-separated CLAIM-VALUE:ROLE pairs (ROLE one of admin, operator, auditor, viewer), e.g. platform-admins:admin,/Engineering:operator';

/**
 * `LOKI_OIDC_ROLE_MAP=group-or-role:loki-role,...`: which claim values grant which
 * role. The role is after the last `:` (group names may contain one). Admin comes
 * from claims only through this map.
 */
function oidcRoleMapFrom(env: Env): Record<string, OidcMappedRole> {
  const v = read(env, 'LOKI_OIDC_ROLE_MAP');
  const out: Record<string, OidcMappedRole> = {};
  if (v === undefined) return out;
  for (const part of v.split(',').map((x) => x.trim()).filter(Boolean)) {
    const i = part.lastIndexOf(':');
    const key = i < 0 ? '' : part.slice(0, i).trim();
    const role = (i < 0 ? '' : part.slice(i + 1).trim().toLowerCase()) as OidcMappedRole;
    if (!key || !['admin', 'operator', 'auditor', 'viewer'].includes(role)) throw new ConfigError('LOKI_OIDC_ROLE_MAP', part, ROLE_MAP_ALLOWED);
    out[key] = role;
  }
  return out;
}

/**
 * `LOKI_WORKSPACE_ROOTS` when unset: the user's home directory and the server's working
 * directory (when it is not inside the home), so `loki start` works from any project
 * of the user's wherever the server was started. Never `/`: a home or working
 * directory that is `/` is left out (then no workspace is allowed until the variable
 * is set).
 */
export function defaultWorkspaceRoots(home: string, cwd: string): string[] {
  const roots: string[] = [];
  const isRoot = (p: string) => !p.startsWith('/') || /^\/+$/.test(p);
  const under = (parent: string, child: string) => child === parent || child.startsWith(`${parent.replace(/\/+$/, '')}/`);
  if (!isRoot(home)) roots.push(home.replace(/\/+$/, ''));
  if (!isRoot(cwd) && !roots.some((r) => under(r, cwd))) roots.push(cwd.replace(/\/+$/, ''));
  return roots;
}

function absPath(env: Env, name: string): string | undefined {
  const v = read(env, name);
  if (v !== undefined && !v.startsWith('/')) throw new ConfigError(name, v, 'an absolute path');
  return v;
}

/** `DOCKER_HOST=unix:///path` → that path; a TCP or SSH engine has no local socket to protect. */
function dockerSocketFrom(env: Env): string {
  const v = read(env, 'DOCKER_HOST');
  if (v === undefined) return '/var/run/docker.sock';
  const m = /^unix:\/\/(\/.+)$/.exec(v);
  if (m) return m[1]!;
  if (/^(?:tcp|ssh|http|https|npipe):\/\//.test(v)) return '/var/run/docker.sock';
  throw new ConfigError('DOCKER_HOST', v, 'unix:///path/to/docker.sock or tcp://host:port');
}

const WITNESSES_ALLOWED =
  'URL=VERIFIERKEY entries separated by spaces or commas: an http(s) URL without "=" and the witness\'s cosignature verifier key (NAME+KEYID+BASE64, type 0x04; `loki audit witness pubkey` prints it)';

/** A cosignature verifier key's syntax and key id (type 0x04, 32-byte Ed25519 key), checked without Web Crypto. */
export function isCosignatureVerifierKey(vkey: string): boolean {
  const m = /^([^+]+)\+([0-9a-fA-F]{8})\+([A-Za-z0-9+/=]+)$/.exec(vkey);
  if (!m || !isValidKeyName(m[1]!)) return false;
  const key = fromBase64(m[3]!);
  if (key?.length !== 33 || key[0] !== ALG_COSIGNATURE_V1) return false;
  return keyHash(m[1]!, key) === Number.parseInt(m[2]!, 16) >>> 0;
}

/** `LOKI_AUDIT_WITNESSES`: `URL=VKEY[ ,]URL=VKEY…`. */
function auditWitnessesFrom(env: Env): AuditWitnessConfig[] {
  const v = read(env, 'LOKI_AUDIT_WITNESSES');
  if (v === undefined) return [];
  const out: AuditWitnessConfig[] = [];
  for (const part of v.split(/[\s,]+/).filter(Boolean)) {
    const i = part.indexOf('=');
    const rawUrl = i < 0 ? '' : part.slice(0, i);
    const vkey = i < 0 ? '' : part.slice(i + 1);
    let u: URL | null = null;
    try {
      u = new URL(rawUrl);
    } catch {
      u = null;
    }
    if (!u || (u.protocol !== 'http:' && u.protocol !== 'https:') || u.username || u.password || u.search || u.hash || !isCosignatureVerifierKey(vkey)) {
      throw new ConfigError('LOKI_AUDIT_WITNESSES', part, WITNESSES_ALLOWED);
    }
    if (out.some((w) => w.vkey === vkey)) throw new ConfigError('LOKI_AUDIT_WITNESSES', part, `${WITNESSES_ALLOWED}, each witness key once`);
    out.push({ url: rawUrl.replace(/\/+$/, ''), vkey });
  }
  return out;
}

const WORKER_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/** A C2SP checkpoint origin that is also a valid note key name: no spaces, no '+'. */
function auditOriginFrom(env: Env): string | null {
  const v = read(env, 'LOKI_AUDIT_ORIGIN');
  if (v === undefined) return null;
  if (v.length > 255 || /[\s+]/u.test(v) || /[\x00-\x1f\x7f]/.test(v)) {
    throw new ConfigError('LOKI_AUDIT_ORIGIN', v, 'a log name of 1 to 255 characters without spaces or "+", such as example.com/audit');
  }
  return v;
}

/** `LOKI_TLS_CERT` and `LOKI_TLS_KEY`: both absolute paths, or neither. */
function tlsFrom(env: Env): TlsFiles | null {
  const cert = absPath(env, 'LOKI_TLS_CERT');
  const key = absPath(env, 'LOKI_TLS_KEY');
  if (cert === undefined && key === undefined) return null;
  if (cert === undefined) throw new ConfigError('LOKI_TLS_CERT', '', 'the certificate file (PEM) as an absolute path, since LOKI_TLS_KEY is set');
  if (key === undefined) throw new ConfigError('LOKI_TLS_KEY', '', 'the private key file (PEM) as an absolute path, since LOKI_TLS_CERT is set');
  return { cert, key };
}

const EMBEDDED_WORKER = z.enum(EMBEDDED_WORKER_MODES);

/** `LOKI_EMBEDDED_WORKER`: auto (default), on or off. */
function embeddedWorkerFrom(env: Env): EmbeddedWorkerMode {
  const v = read(env, 'LOKI_EMBEDDED_WORKER');
  if (v === undefined) return 'auto';
  const parsed = EMBEDDED_WORKER.safeParse(v.toLowerCase());
  if (!parsed.success) throw new ConfigError('LOKI_EMBEDDED_WORKER', v, 'one of auto, on, off');
  return parsed.data;
}

function workerIdFrom(env: Env): string | null {
  const v = read(env, 'LOKI_WORKER_ID');
  if (v === undefined) return null;
  if (!WORKER_ID_RE.test(v)) throw new ConfigError('LOKI_WORKER_ID', v, 'letters, digits, ".", "_" and "-", starting with a letter or digit, at most 64 characters');
  return v;
}

/** The bind guard: a non-loopback host needs auth, or an explicit opt-out. */
export function checkBind(config: Config): void {
  if (isLoopbackHost(config.host)) return;
  if (config.enterpriseAuth || config.oidc || config.allowInsecureBind) return;
  throw new ConfigError(
    'LOKI_DASHBOARD_HOST',
    config.host,
    'a loopback address (127.0.0.1, localhost, ::1) unless LOKI_ENTERPRISE_AUTH or OIDC is on, or LOKI_DASHBOARD_ALLOW_INSECURE_BIND=1',
  );
}

/** The only place that touches process.env. */
export function readProcessEnv(): Env {
  return { ...process.env };
}

/** Extra raw variables the sandbox worker forwards into sessions (allowlisted by config). */
export function pickEnv(names: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const n of names) {
    const v = process.env[n];
    if (v !== undefined) out[n] = v;
  }
  return out;
}

import type { Context } from 'hono';
import type { UpgradeWebSocket } from 'hono/ws';
import type { AuditActor } from '../audit/chain';
import type { AuditLog } from '../audit/log';
import type { AuditVolumeGuard } from '../audit/suppress';
import type { Role, Scope } from '../auth/roles';
import type { Store } from '../db/store';
import type { Config } from '../env';
import type { EventHub } from '../events/hub';
import type { SessionPolicy } from '../sessions/api';
import type { HeaderSink } from './headers';
import type { MetricsPort } from './routes/metrics';

export interface Identity {
  actor: AuditActor;
  role: Role | null;
  scopes: Scope[];
  /** When the credential stops being valid (ms), for long-lived streams. */
  expiresAt: number | null;
  tokenId: string | null;
  /** The worker id a worker token is bound to. */
  workerId?: string | null;
  via: 'token' | 'oidc' | 'loopback';
}

export interface Logger {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

export interface OidcVerifierPort {
  verify(token: string): Promise<{ subject: string; email: string | null; role: Role; expiresAt: number }>;
}

export interface SessionValidator {
  /**
   * Resolve and check a workspace + PRD path, read the workspace config once and
   * merge it under the operator policy. Throws ApiError 400 (`invalid_path`,
   * `validation_error`, `policy_violation`) or 403 (`policy_violation`: a host
   * session the operator does not allow).
   */
  validate(
    workspace: string,
    prd: string,
    request: { sandbox?: boolean; provider?: 'claude' | 'codex' | 'gemini' },
  ): Promise<{ workspace: string; prd: string; policy: SessionPolicy; policyJson: string; policySha256: string }>;
}

export interface AppDeps {
  config: Config;
  store: Store;
  audit: AuditLog;
  events: EventHub;
  logger: Logger;
  version: string;
  startedAt: number;
  now?: () => number;
  /** A synchronous SHA-256 (hex) where the runtime has one (Node); Web Crypto otherwise. */
  sha256?: (s: string) => string;
  oidc?: OidcVerifierPort | null;
  /** The caller's address (runtime-specific). */
  clientAddress: (c: Context) => string | null;
  /** The request path exactly as received, before URL normalisation (Node only). */
  rawPath?: (c: Context) => string | null;
  /** Where middleware writes the common response headers (default: the Hono context). */
  headers?: HeaderSink;
  /** Whether to enforce the Host allowlist (Node bound to loopback). */
  hostCheck: boolean;
  /** Serves the dashboard's static files; absent: `/` answers 404. */
  staticFiles?: (path: string) => Promise<Response | null>;
  sessions?: SessionValidator;
  /**
   * Summarises failed requests without an identity past a per-address limit
   * (`audit.suppressed`); the Node server passes one, with its flush timer.
   * Absent (Workers): every such request is recorded, with its fields capped.
   */
  auditVolume?: AuditVolumeGuard | null;
  /** Extra numbers for /api/status (syslog queue, stream listeners, …). */
  statusExtras?: () => Record<string, unknown>;
  /** Called by the shutdown path to close live streams. */
  shutdownSignal?: AbortSignal;
  /**
   * The runtime's WebSocket upgrade helper (Node: `upgradeWebSocket` from
   * @hono/node-server, with its WebSocketServer wired in src/server.ts). Absent:
   * `GET /ws` answers 501 and clients use `GET /api/events`.
   */
  // biome-ignore lint/suspicious/noExplicitAny: each runtime's helper has its own socket and option types
  upgradeWebSocket?: UpgradeWebSocket<any, any>;
  /** Prometheus metrics (Node: src/metrics.ts). Absent: `GET /metrics` answers 501 and no request is counted. */
  metrics?: MetricsPort;
}

export interface AppEnv {
  Variables: {
    requestId: string;
    errorCode: string | null;
    identity: Identity | null;
    auditDetails: Record<string, unknown>;
    auditAction: string | null;
    auditResource: { type: string; id: string | null } | null;
    deps: AppDeps;
  };
}

export type AppContext = Context<AppEnv>;

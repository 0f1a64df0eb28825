/**
 * The storage port. Handlers only see this interface; `db/` holds the
 * implementations (better-sqlite3 on Node, D1 on Workers). Every method is a
 * single statement or a batch: nothing depends on interactive transactions.
 */
import type { Role, Scope } from '../auth/roles';

export interface TokenRecord {
  id: string;
  name: string;
  hash: string;
  legacySalt: string | null;
  role: Role;
  scopes: Scope[];
  createdAt: number;
  expiresAt: number | null;
  lastUsedAt: number | null;
  revokedAt: number | null;
  createdBy: string | null;
  source: 'native' | 'legacy';
  /** A worker token's bound worker id (null: not a worker token, or created before binding). */
  workerId: string | null;
}

export const SESSION_STATES = [
  'queued',
  'running',
  'succeeded',
  'failed',
  'stopped',
  'timed_out',
  'budget_exceeded',
  'oom_killed',
  'disk_exceeded',
  'lost',
] as const;
export type SessionState = (typeof SESSION_STATES)[number];
export const TERMINAL_STATES: ReadonlySet<SessionState> = new Set(SESSION_STATES.filter((s) => s !== 'queued' && s !== 'running'));

export interface SessionRecord {
  id: string;
  name: string | null;
  workspace: string;
  prd: string;
  sandbox: boolean;
  budgetUsd: number | null;
  costUsd: number;
  status: SessionState;
  reason: string | null;
  exitCode: number | null;
  createdBy: string;
  createdAt: number;
  startedAt: number | null;
  endedAt: number | null;
  workerId: string | null;
  leaseId: string | null;
  leaseExpiresAt: number | null;
  stopRequested: boolean;
  lastEventSeq: number;
  logBytes: number;
  logLines: number;
  containerId: string | null;
  baseBranch: string | null;
  agentBranch: string | null;
  /** The effective policy fixed at creation (canonical JSON) and its SHA-256. */
  policy: string | null;
  policySha256: string | null;
  /** What the worker committed (JSON of `SessionResultView`); a copy workspace's patch is read with `resultPatch`. */
  result: string | null;
}

/** The fields a new session is created with; the rest start empty (queued, nothing run, nothing spent). */
export type NewSession = Pick<SessionRecord, 'id' | 'workspace' | 'prd' | 'sandbox' | 'createdBy' | 'createdAt'> &
  Partial<Pick<SessionRecord, 'name' | 'budgetUsd' | 'policy' | 'policySha256'>>;

/** A queued session's record, as `POST /api/sessions` inserts it. */
export function queuedSession(s: NewSession): SessionRecord {
  return {
    name: null,
    budgetUsd: null,
    policy: null,
    policySha256: null,
    ...s,
    costUsd: 0,
    status: 'queued',
    reason: null,
    exitCode: null,
    startedAt: null,
    endedAt: null,
    workerId: null,
    leaseId: null,
    leaseExpiresAt: null,
    stopRequested: false,
    lastEventSeq: 0,
    logBytes: 0,
    logLines: 0,
    containerId: null,
    baseBranch: null,
    agentBranch: null,
    result: null,
  };
}

export interface LogLine {
  line: number;
  stream: string;
  text: string;
  ts: number;
}

export interface EventRecord {
  id: number;
  type: string;
  sessionId: string | null;
  data: unknown;
  ts: number;
}

export interface TokenStore {
  insert(t: TokenRecord): Promise<void>;
  findByHash(hash: string): Promise<TokenRecord | null>;
  listLegacySalted(): Promise<TokenRecord[]>;
  rehash(id: string, newHash: string): Promise<void>;
  get(idOrName: string): Promise<TokenRecord | null>;
  list(includeRevoked: boolean): Promise<TokenRecord[]>;
  revoke(id: string, at: number): Promise<boolean>;
  touch(id: string, at: number): Promise<void>;
}

export interface SessionStore {
  insert(s: SessionRecord): Promise<void>;
  get(id: string): Promise<SessionRecord | null>;
  /** Newest first; `before` is the (createdAt, id) of the last row of the previous page. */
  list(opts: { limit: number; status?: SessionState; before?: { createdAt: number; id: string } }): Promise<SessionRecord[]>;
  counts(): Promise<Record<string, number>>;
  /** Atomically lease the oldest queued session to a worker. */
  claim(workerId: string, leaseId: string, now: number, leaseUntil: number): Promise<SessionRecord | null>;
  /** Extend a lease; false if the lease is no longer this worker's. */
  renew(id: string, leaseId: string, leaseUntil: number): Promise<boolean>;
  /** Update fields of a session still held by this lease (or any, when leaseId is null). */
  update(id: string, leaseId: string | null, patch: Partial<SessionRecord>): Promise<boolean>;
  /** Conditional move of the event sequence: only if current value === expected. */
  advanceSeq(id: string, leaseId: string, expected: number, next: number): Promise<boolean>;
  /**
   * Conditional state change: applies `patch` only while the session is in one of
   * `from` (and, when given, still held by `leaseId`). Returns the updated row or null.
   */
  transition(id: string, cond: { from: readonly SessionState[]; leaseId?: string }, patch: Partial<SessionRecord>): Promise<SessionRecord | null>;
  /**
   * Atomically add `count` lines and `bytes` to the session's log counters; returns
   * the first line number reserved and the new byte total (null: no such session).
   */
  reserveLogLines(id: string, count: number, bytes: number): Promise<{ firstLine: number; logBytes: number } | null>;
  requestStop(id: string): Promise<boolean>;
  /** Record what the worker committed (and a copy workspace's patch) while it holds the lease. */
  saveResult(id: string, leaseId: string, result: string, patch: string | null): Promise<boolean>;
  resultPatch(id: string): Promise<string | null>;
  /** Mark running sessions with expired leases as lost; returns them. */
  expireLeases(now: number): Promise<SessionRecord[]>;
  appendLogs(id: string, lines: LogLine[]): Promise<void>;
  logs(id: string, afterLine: number, limit: number): Promise<LogLine[]>;
  liveIdsForWorker(workerId: string): Promise<string[]>;
}

export interface EventFilter {
  afterId: number;
  sessionId?: string;
  types?: string[];
  limit: number;
}

export interface EventStore {
  insert(type: string, sessionId: string | null, data: unknown, ts: number): Promise<number>;
  after(f: EventFilter): Promise<EventRecord[]>;
  maxId(): Promise<number>;
  prune(olderThan: number, keepMax: number): Promise<number>;
}

export interface Store {
  kind: 'sqlite' | 'd1' | 'postgres';
  tokens: TokenStore;
  sessions: SessionStore;
  events: EventStore;
  ping(): Promise<void>;
}

/** Thrown by stores when a unique key is violated (e.g. a duplicate token name). */
export class UniqueViolation extends Error {}

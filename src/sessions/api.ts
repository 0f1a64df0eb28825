/**
 * The sessions API and the worker protocol on the wire: zod schemas for what the
 * server sends (the typed client parses responses with them) and for what the
 * worker posts (the server validates with them). Runtime-free.
 */
import { z } from 'zod';
import { SESSION_STATES, type SessionState } from '../db/store';

export const MAX_CLAIM_WAIT_MS = 25_000;
export const WORKER_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
/** Outcomes a worker may report; `lost` is the server's alone, `queued`/`running` are not outcomes. */
export const WORKER_OUTCOMES = ['succeeded', 'failed', 'stopped', 'timed_out', 'budget_exceeded', 'oom_killed', 'disk_exceeded'] as const;
export type WorkerOutcome = (typeof WORKER_OUTCOMES)[number];
export const CONTAINER_EVENTS = ['created', 'started', 'exited', 'removed', 'stopped', 'orphan_removed'] as const;
/** Runner notices a worker may forward; each becomes a live event of the same name. */
export const NOTICE_EVENTS = [
  'session_timeout',
  'disk_exceeded',
  'stop_requested',
  'output_truncated',
  'process_started',
  'process_exited',
  'session_error',
] as const;

const isoOrNull = z.string().nullable();

/**
 * A session's effective policy: the workspace config merged under the operator
 * policy when the session was created. Stored with the session and handed to the
 * worker in the claim; the worker runs exactly this and reads no workspace file.
 */
export const sessionPolicySchema = z.strictObject({
  /** false: a host session (the operator allowed it). */
  sandbox: z.boolean(),
  image: z.string().min(1).max(512),
  runtime: z.string().min(1).max(64),
  /** An open network (the operator allowed it); otherwise NetworkMode none. */
  network: z.boolean(),
  egress: z.array(z.string().max(300)).max(256),
  memory_bytes: z.number().int().positive(),
  nano_cpus: z.number().int().positive(),
  timeout_seconds: z.number().int().positive(),
  idle_timeout_seconds: z.number().int().positive(),
  /** Disk limit of the session's worktree; null only when the operator turned it off. */
  disk_bytes: z.number().int().positive().nullable(),
  mounts: z.array(z.strictObject({ host: z.string().max(4096), container: z.string().max(4096), mode: z.enum(['ro', 'rw']) })).max(64),
  env_allowlist: z.array(z.string().max(256)).max(256),
  cap_add: z.array(z.string().max(64)).max(16),
  user: z.string().max(64),
  command: z.array(z.string().max(65_536)).min(1).max(1024),
});
export type SessionPolicy = z.infer<typeof sessionPolicySchema>;

/** What the worker committed when the agent ended (null until then, or when setup failed). */
export const sessionResultSchema = z.object({
  /** `git`: a commit on `branch` in the workspace's repository; `copy`: a patch (non-git workspace). */
  kind: z.enum(['git', 'copy']),
  commit: z.string().max(128).nullable(),
  base_commit: z.string().max(128).nullable(),
  branch: z.string().max(512).nullable(),
  files_changed: z.number().int().min(0),
  insertions: z.number().int().min(0),
  deletions: z.number().int().min(0),
  diffstat: z.string().max(65_536),
  /** A copy workspace's patch is served by `GET /api/sessions/:id/patch`. */
  has_patch: z.boolean(),
  patch_too_large: z.boolean(),
  /** What the worker left out of the commit (too deep, larger than the file system), at most 100 entries. */
  skipped: z.array(z.string().max(4096)).max(101).default([]),
});
export type SessionResultView = z.infer<typeof sessionResultSchema>;

export const sessionSchema = z.object({
  id: z.string(),
  name: z.string().nullable(),
  workspace: z.string(),
  prd: z.string(),
  sandbox: z.boolean(),
  budget_usd: z.number().nullable(),
  cost_usd: z.number(),
  status: z.enum(SESSION_STATES),
  reason: z.string().nullable(),
  exit_code: z.number().nullable(),
  created_by: z.string(),
  created_at: z.string(),
  started_at: isoOrNull,
  ended_at: isoOrNull,
  worker_id: z.string().nullable(),
  lease_expires_at: isoOrNull,
  stop_requested: z.boolean(),
  last_event_seq: z.number(),
  log_lines: z.number(),
  log_bytes: z.number(),
  container_id: z.string().nullable(),
  base_branch: z.string().nullable(),
  agent_branch: z.string().nullable(),
  /** Ran on the worker host, outside the sandbox (the operator allowed it). */
  host_session: z.boolean(),
  policy: sessionPolicySchema.nullable(),
  policy_sha256: z.string().nullable(),
  result: sessionResultSchema.nullable(),
});
export type SessionView = z.infer<typeof sessionSchema>;

export const sessionListSchema = z.object({
  sessions: z.array(sessionSchema),
  next_cursor: z.string().nullable(),
});
export type SessionList = z.infer<typeof sessionListSchema>;

export const logLineSchema = z.object({
  line: z.number(),
  stream: z.string(),
  text: z.string(),
  ts: z.string(),
});
export type LogLineView = z.infer<typeof logLineSchema>;

export const logsPageSchema = z.object({
  session_id: z.string(),
  /** The session's status when the page was read: lines after a terminal status are complete. */
  status: z.enum(SESSION_STATES),
  ended: z.boolean(),
  lines: z.array(logLineSchema),
  /** Pass as `after` for the next page. */
  next_after: z.number(),
});
export type LogsPage = z.infer<typeof logsPageSchema>;

export const stopResultSchema = z.object({ session: sessionSchema, stop_requested: z.boolean() });
export type StopResult = z.infer<typeof stopResultSchema>;

export const jobSchema = z.object({
  session: sessionSchema,
  lease_id: z.string(),
  lease_expires_at: z.string(),
  /** Lease length: heartbeat well within it (clock-independent). */
  lease_ms: z.number(),
  /** The server's `LOKI_BRANCH_PROTECTION`. */
  branch_protection: z.boolean(),
  /** The session's effective policy, fixed at creation: the worker runs exactly this. */
  policy: sessionPolicySchema,
  policy_sha256: z.string(),
});
export type Job = z.infer<typeof jobSchema>;
export const claimResponseSchema = z.object({ job: jobSchema });

export const eventsAckSchema = z.object({
  ok: z.literal(true),
  last_seq: z.number(),
  /** How many of the posted events were new (the rest were retries, acknowledged only). */
  applied: z.number(),
  lease_expires_at: z.string().nullable(),
  lease_ms: z.number(),
  stop_requested: z.boolean(),
  status: z.enum(SESSION_STATES),
});
export type EventsAck = z.infer<typeof eventsAckSchema>;

export const workerJobsSchema = z.object({
  worker_id: z.string(),
  /** Sessions leased to this worker id that are still running. */
  session_ids: z.array(z.string()),
});
export type WorkerJobs = z.infer<typeof workerJobsSchema>;

// ---- requests -------------------------------------------------------------

export const createSessionBody = z.object({
  workspace: z.string().min(1).max(4096),
  prd: z.string().min(1).max(4096),
  sandbox: z.boolean().optional(),
  /** An agent preset (claude, codex, gemini): its argv replaces the workspace's provider command. */
  provider: z.enum(['claude', 'codex', 'gemini']).optional(),
  budget_usd: z.union([z.number(), z.string(), z.null()]).optional(),
  name: z
    .string()
    .trim()
    .min(1, 'must not be empty')
    .max(128, 'must be at most 128 characters')
    .regex(/^[^\p{Cc}]*$/u, 'must not contain control characters')
    .optional(),
});
export type CreateSessionInput = z.input<typeof createSessionBody>;

export const workerIdSchema = z.string().regex(WORKER_ID_PATTERN, 'must be 1-64 letters, digits, ".", "_" or "-"');

export const claimBody = z.object({
  worker_id: workerIdSchema,
  wait_ms: z.number().int().min(0).max(600_000).optional(),
});
export type ClaimInput = z.infer<typeof claimBody>;

const str = (max: number) => z.string().max(max);

export const workerEventSchema = z.discriminatedUnion('type', [
  z.object({ seq: z.number().int().min(1), type: z.literal('heartbeat'), data: z.looseObject({}).optional() }),
  z.object({
    seq: z.number().int().min(1),
    type: z.literal('output'),
    data: z.object({ stream: z.enum(['stdout', 'stderr']), lines: z.array(z.string()).max(100_000) }),
  }),
  z.object({
    seq: z.number().int().min(1),
    type: z.literal('state'),
    data: z.object({
      status: z.enum(WORKER_OUTCOMES),
      reason: str(2048).nullish(),
      exit_code: z.number().int().nullish(),
    }),
  }),
  z.object({
    seq: z.number().int().min(1),
    type: z.literal('container'),
    data: z.object({
      event: z.enum(CONTAINER_EVENTS),
      container_id: str(128),
      image: str(512).optional(),
      exit_code: z.number().int().nullish(),
      oom_killed: z.boolean().optional(),
      /** created/started: the container came from the worker's warm pool. */
      pooled: z.boolean().optional(),
    }),
  }),
  z.object({
    seq: z.number().int().min(1),
    type: z.literal('branch'),
    data: z.object({
      event: z.enum(['created', 'detached', 'violation']),
      base_branch: str(512).nullish(),
      base_commit: str(128).nullish(),
      agent_branch: str(512).nullish(),
      current_commit: str(128).nullish(),
    }),
  }),
  z.object({
    seq: z.number().int().min(1),
    type: z.literal('budget'),
    data: z.object({
      spent_usd: z.number().min(0).max(1e9),
      limit_usd: z.number().nullish(),
      warning: z.boolean().optional(),
      exceeded: z.boolean().optional(),
    }),
  }),
  z.object({
    seq: z.number().int().min(1),
    type: z.literal('result'),
    data: sessionResultSchema.omit({ has_patch: true }).extend({ patch: z.string().max(8 * 1024 * 1024).nullable() }),
  }),
  z.object({
    seq: z.number().int().min(1),
    type: z.literal('egress'),
    data: z.object({
      decision: z.enum(['allowed', 'denied']),
      host: str(300),
      port: z.number().int().min(0).max(65535),
      rule: str(400),
      method: z.enum(['CONNECT', 'HTTP']),
      address: str(100).nullish(),
      bytes_up: z.number().int().min(0).nullish(),
      bytes_down: z.number().int().min(0).nullish(),
      error: str(400).nullish(),
    }),
  }),
  z.object({
    seq: z.number().int().min(1),
    type: z.literal('setup_failed'),
    data: z.object({
      step: z.enum(['policy', 'prepare', 'disk', 'ownership', 'commit', 'fetch', 'remove', 'branch']),
      message: str(4096),
      /** Where the worker kept the agent's work when it could not be committed (nothing lost). */
      kept_at: str(4096).nullish(),
    }),
  }),
  z.object({
    seq: z.number().int().min(1),
    type: z.literal('notice'),
    data: z.object({ event: z.enum(NOTICE_EVENTS) }).catchall(z.unknown()),
  }),
]);
export type WorkerEvent = z.infer<typeof workerEventSchema>;

export const eventsBody = z.object({
  worker_id: workerIdSchema,
  lease_id: z.string().min(1).max(128),
  events: z.array(workerEventSchema).min(1).max(10_000),
});
export type EventsInput = z.infer<typeof eventsBody>;

export function isSessionState(v: unknown): v is SessionState {
  return typeof v === 'string' && (SESSION_STATES as readonly string[]).includes(v);
}

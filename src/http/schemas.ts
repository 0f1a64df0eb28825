/**
 * Wire shapes of the responses the API documents in `/api/openapi.json`
 * (src/http/openapi.ts) that are not already the client's parse schemas
 * (src/sessions/api.ts). Request shapes live beside their routes, in the
 * validators the routes run. Runtime-free.
 */
import { z } from 'zod';
import { jobSchema, sessionPolicySchema, sessionResultSchema, sessionSchema } from '../sessions/api';
import { ErrorCode } from './errors';

/**
 * Named components of the document (`#/components/schemas/<id>`), so the shapes
 * shared by several routes are written once and have a name in the generated types.
 */
const named: [z.ZodType, string][] = [
  [sessionSchema, 'Session'],
  [sessionPolicySchema, 'SessionPolicy'],
  [sessionResultSchema, 'SessionResult'],
  [jobSchema, 'Job'],
];
for (const [schema, id] of named) if (!z.globalRegistry.has(schema)) z.globalRegistry.add(schema, { id });

const isoTime = z.string().describe('ISO 8601');
const hex64 = z.string().regex(/^[0-9a-f]{64}$/);

/** `{"error":{"code","message","request_id"}}`: every error response. */
export const errorBodySchema = z.object({
  error: z.object({
    code: z.string().describe(`one of: ${Object.values(ErrorCode).join(', ')}`),
    message: z.string(),
    request_id: z.string(),
  }),
});

export const tokenSchema = z.object({
  id: z.string(),
  name: z.string(),
  role: z.string().nullable(),
  scopes: z.array(z.string()),
  created_at: isoTime,
  expires_at: isoTime.nullable(),
  last_used_at: isoTime.nullable(),
  revoked_at: isoTime.nullable(),
  created_by: z.string().nullable(),
  source: z.string(),
  worker_id: z.string().nullable(),
  status: z.enum(['active', 'expired', 'revoked']),
}).meta({ id: 'Token' });
export const tokenListSchema = z.object({ tokens: z.array(tokenSchema) });
export const createdTokenSchema = tokenSchema.extend({ token: z.string().describe('the plaintext secret, shown this once') });
export const revokedTokenSchema = z.object({ revoked: z.literal(true), token: tokenSchema });

export const auditEntrySchema = z.object({
  seq: z.number().int(),
  ts: z.number().int().describe('epoch milliseconds'),
  action: z.string(),
  resource: z.object({ type: z.string(), id: z.string().nullable() }).nullable().optional(),
  actor: z.object({ type: z.enum(['token', 'oidc', 'local', 'system', 'anonymous']), id: z.string().nullable(), name: z.string().nullable() }),
  client: z.object({ ip: z.string().nullable(), user_agent: z.string().nullable() }).nullable().optional(),
  request: z.object({ id: z.string().nullable(), method: z.string().nullable(), path: z.string().nullable() }).nullable().optional(),
  outcome: z.object({ status: z.number().int().nullable(), success: z.boolean(), error: z.string().nullable() }),
  details: z.record(z.string(), z.unknown()).nullable().optional(),
  hash: hex64,
  prev_hash: hex64,
}).meta({ id: 'AuditEntry' });
export const auditPageSchema = z.object({
  entries: z.array(auditEntrySchema),
  count: z.number().int(),
  next_after_seq: z.number().int().nullable(),
});
export const auditVerifySchema = z.object({
  valid: z.boolean(),
  entries_checked: z.number().int(),
  first_invalid_seq: z.number().int().nullable(),
  reason: z.string().nullable(),
  last_hash: z.string(),
  checkpoint: z.looseObject({ origin: z.string(), size: z.number().int(), head_hash: z.string(), time: z.number() }).nullable(),
  tree: z.object({ size: z.number().int(), root: z.string().nullable(), state: z.string() }).nullable().optional(),
});
export const auditCheckpointSchema = z.object({
  checkpoint: z
    .object({ kind: z.string(), size: z.number().int(), head_hash: z.string(), time: z.number(), jws: z.string(), note: z.string().nullable() })
    .nullable(),
});
export const inclusionProofSchema = z.object({ index: z.number().int(), size: z.number().int(), root: z.string(), proof: z.array(z.string()) });
export const consistencyProofSchema = z.object({
  old: z.number().int(),
  new: z.number().int(),
  old_root: z.string(),
  new_root: z.string(),
  proof: z.array(z.string()),
});

export const healthSchema = z.object({ status: z.literal('healthy'), service: z.string() });
export const unhealthySchema = z.object({ status: z.literal('unhealthy'), service: z.string(), database: z.literal('down') });
export const enterpriseStatusSchema = z.object({
  auth_enabled: z.boolean(),
  oidc_enabled: z.boolean(),
  audit_enabled: z.boolean(),
  sandbox_enabled: z.boolean(),
});

/** `GET /api/status`: the fields every runtime sends; the Node server adds more (syslog, witnesses, policy, …). */
export const serverStatusSchema = z.looseObject({
  status: z.string(),
  service: z.string().optional(),
  version: z.string(),
  uptime_seconds: z.number(),
  runtime: z.string().optional(),
  flags: z.record(z.string(), z.unknown()).optional(),
  sessions: z.object({ total: z.number(), by_status: z.record(z.string(), z.number()) }).optional(),
  audit: z.looseObject({ seq: z.number(), head_hash: z.string() }).nullable().optional(),
  streams: z.record(z.string(), z.unknown()).optional(),
});
export type ServerStatus = z.infer<typeof serverStatusSchema>;

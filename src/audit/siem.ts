/**
 * Audit events as a SIEM takes them (docs/siem.md): one event schema, mapped to
 * Elastic Common Schema (ECS) field names, rendered as the JSON or the CEF body
 * of a syslog message, and flattened into RFC 5424 structured data.
 *
 * Everything taken from an audit entry goes through the redaction helper. The
 * one exception is a checkpoint's JWS and C2SP note: public signed data (no
 * secret by construction) that must arrive byte for byte to stay verifiable.
 */
import net from 'node:net';
import { redactString, redactValue } from '../util/redact';
import type { CheckpointEvent, CommittedEntry } from './log';

/** The ECS version the field names follow. */
export const ECS_VERSION = '8.11.0';
export const CEF_VENDOR = 'Loki';
export const CEF_PRODUCT = 'control-plane';

export type SiemSeverity = 'warning' | 'info';

/** The signed checkpoint as forwarded: the JWS body's fields, the JWS and the C2SP note. */
export interface SiemCheckpoint {
  origin: string;
  size: number;
  head_hash: string;
  time: number;
  kind: string | null;
  jws: string | null;
  note: string | null;
}

/**
 * One audit event in ECS field names (`loki.*` for the rest). Absent fields are
 * left out, never null. See docs/siem.md for the mapping table.
 */
export interface SiemEvent {
  '@timestamp': string;
  message: string;
  ecs: { version: string };
  event: {
    kind: 'event';
    module: 'loki';
    dataset: 'loki.audit';
    action: string;
    outcome: 'success' | 'failure';
    category?: string[];
    type?: string[];
    /** The entry's position in the hash chain (seq). */
    sequence?: number;
    /** The entry's chain hash (hex SHA-256). */
    hash?: string;
    /** Syslog severity code: 4 (warning) for security-relevant actions, else 6. */
    severity: number;
  };
  log: { level: SiemSeverity };
  user?: { name?: string; id?: string };
  source?: { ip?: string; address?: string };
  user_agent?: { original: string };
  url?: { path: string; query?: string };
  http?: { request?: { method?: string; id?: string }; response?: { status_code: number } };
  error?: { message: string };
  loki: {
    actor?: { type: string };
    resource?: { type: string; id?: string };
    details?: Record<string, unknown>;
    /** Set when the details were left out to fit the message size limit. */
    details_truncated?: true;
    checkpoint?: SiemCheckpoint;
  };
}

const SEVERITY_CODE: Record<SiemSeverity, number> = { warning: 4, info: 6 };

/** ECS categorisation of an action (see the table in docs/siem.md); nothing for an unknown one. */
export function ecsCategorize(action: string, success: boolean, status: number | null): { category?: string[]; type?: string[] } {
  const [head, ...rest] = action.toLowerCase().split('.');
  const tail = rest.join('.');
  if (head === 'auth') return { category: ['authentication'], type: ['start'] };
  if (head === 'scope' || action.endsWith('_refused') || action.endsWith('.rate_limited')) return { category: ['web'], type: ['access', 'denied'] };
  if (head === 'token') {
    if (/^(create|import|generate)/.test(tail)) return { category: ['iam'], type: ['creation'] };
    if (/^(revoke|delete)/.test(tail)) return { category: ['iam'], type: ['deletion'] };
    return { category: ['iam'], type: ['info'] };
  }
  if (head === 'session') {
    if (tail === 'start') return { category: ['process'], type: ['start'] };
    if (tail === 'stop' || tail === 'kill') return { category: ['process'], type: ['end'] };
    return { category: ['process'], type: ['info'] };
  }
  if (head === 'audit' || head === 'config') {
    if (tail === 'read' || tail === 'verify') return { category: ['web'], type: ['access'] };
    if (/^prune|^suppressed|^legacy_import/.test(tail)) return { category: ['configuration'], type: ['change'] };
    return { category: ['configuration'], type: ['info'] };
  }
  if (head === 'http' || head === 'events' || head === 'sandbox' || head === 'ws') {
    return { category: ['web'], type: !success && status === 403 ? ['access', 'denied'] : ['access'] };
  }
  return {};
}

/** The one-line text of an entry (`token.create by admin POST /api/enterprise/tokens -> ok`), redacted. */
export function entrySummary(i: CommittedEntry['input']): string {
  const who = i.actor.name ?? i.actor.id ?? i.actor.type;
  const what = i.request ? `${i.request.method} ${i.request.path}` : i.resource ? `${i.resource.type} ${i.resource.id ?? ''}`.trim() : '';
  const outcome = i.outcome.success ? 'ok' : `failed ${i.outcome.status ?? ''} ${i.outcome.error ?? ''}`.trim();
  return redactString(`${i.action} by ${who}${what ? ` ${what}` : ''} -> ${outcome}`);
}

/** The ECS event for a committed audit entry (redacted). */
export function auditEvent(e: CommittedEntry, severity: SiemSeverity): SiemEvent {
  const i = e.input;
  const ev: SiemEvent = {
    '@timestamp': new Date(i.ts).toISOString(),
    message: entrySummary(i),
    ecs: { version: ECS_VERSION },
    event: {
      kind: 'event',
      module: 'loki',
      dataset: 'loki.audit',
      action: redactString(i.action),
      outcome: i.outcome.success ? 'success' : 'failure',
      ...ecsCategorize(i.action, i.outcome.success, i.outcome.status),
      sequence: e.seq,
      hash: e.hash,
      severity: SEVERITY_CODE[severity],
    },
    log: { level: severity },
    loki: { actor: { type: i.actor.type } },
  };
  const user: NonNullable<SiemEvent['user']> = {};
  if (i.actor.name) user.name = redactString(i.actor.name);
  if (i.actor.id) user.id = redactString(i.actor.id);
  if (user.name || user.id) ev.user = user;
  const ip = i.client?.ip;
  if (ip) ev.source = net.isIP(ip) ? { ip } : { address: redactString(ip) };
  if (i.client?.user_agent) ev.user_agent = { original: redactString(i.client.user_agent) };
  if (i.request?.path) {
    const path = redactString(i.request.path);
    const q = path.indexOf('?');
    ev.url = q < 0 ? { path } : { path: path.slice(0, q), query: path.slice(q + 1) };
  }
  const http: NonNullable<SiemEvent['http']> = {};
  if (i.request?.method || i.request?.id) {
    http.request = {};
    if (i.request.method) http.request.method = redactString(i.request.method);
    if (i.request.id) http.request.id = redactString(i.request.id);
  }
  if (i.outcome.status !== null) http.response = { status_code: i.outcome.status };
  if (http.request || http.response) ev.http = http;
  if (i.outcome.error) ev.error = { message: redactString(i.outcome.error) };
  if (i.resource) ev.loki.resource = i.resource.id ? { type: i.resource.type, id: redactString(i.resource.id) } : { type: i.resource.type };
  if (i.details && Object.keys(i.details).length > 0) ev.loki.details = redactValue(i.details);
  return ev;
}

/** The ECS event for a signed checkpoint: the JWS and the note verbatim. */
export function checkpointEvent(cp: CheckpointEvent): SiemEvent {
  const checkpoint: SiemCheckpoint = {
    origin: cp.origin,
    size: cp.size,
    head_hash: cp.head_hash,
    time: cp.time,
    kind: cp.kind ?? null,
    jws: cp.jws ?? null,
    note: cp.note,
  };
  return {
    '@timestamp': new Date(cp.time).toISOString(),
    message: redactString(`signed checkpoint ${cp.kind ?? ''} of ${cp.origin} size ${cp.size} head ${cp.head_hash}`.replace(/ {2,}/g, ' ')),
    ecs: { version: ECS_VERSION },
    event: {
      kind: 'event',
      module: 'loki',
      dataset: 'loki.audit',
      action: 'audit.checkpoint',
      outcome: 'success',
      category: ['configuration'],
      type: ['info'],
      severity: SEVERITY_CODE.info,
    },
    log: { level: 'info' },
    loki: { checkpoint },
  };
}

/** The event with its details left out (when the message would exceed the size limit). */
export function withoutDetails(ev: SiemEvent): SiemEvent {
  if (!ev.loki.details) return ev;
  const { details: _dropped, ...loki } = ev.loki;
  return { ...ev, loki: { ...loki, details_truncated: true } };
}

// ---------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------

/** The JSON body: one line, the ECS event. */
export function jsonBody(ev: SiemEvent): string {
  return JSON.stringify(ev);
}

// ---------------------------------------------------------------------------
// CEF (ArcSight Common Event Format, revision 25)
// ---------------------------------------------------------------------------

/** A CEF header field: `\` and `|` escaped with a backslash; line breaks are not allowed (a space). */
export function cefHeader(value: string): string {
  return value.replace(/[\\|]/g, '\\$&').replace(/\r\n|[\r\n]/g, ' ');
}

/** A CEF extension value: `\` and `=` escaped; line breaks written as `\n` / `\r`. */
export function cefValue(value: string): string {
  return value
    .replace(/[\\=]/g, '\\$&')
    .replace(/\r\n|\n/g, '\\n')
    .replace(/\r/g, '\\r');
}

/**
 * CEF severity (0–10): 8 for a security-relevant failure (`auth.failure`,
 * `scope.denied`), 6 for a security-relevant success (`token.create`), 5 for any
 * other failure, 3 otherwise.
 */
export function cefSeverity(ev: SiemEvent): number {
  const sensitive = ev.log.level === 'warning';
  const failed = ev.event.outcome === 'failure';
  if (sensitive) return failed ? 8 : 6;
  return failed ? 5 : 3;
}

/** Extension keys in the order they are written (see docs/siem.md for what each carries). */
export function cefExtension(ev: SiemEvent): [string, string][] {
  const ext: [string, string][] = [];
  const add = (k: string, v: string | number | undefined | null) => {
    if (v !== undefined && v !== null && v !== '') ext.push([k, String(v)]);
  };
  add('rt', Date.parse(ev['@timestamp']));
  add('act', ev.event.action);
  add('outcome', ev.event.outcome);
  add('suser', ev.user?.name);
  add('suid', ev.user?.id);
  add('src', ev.source?.ip);
  add('requestClientApplication', ev.user_agent?.original);
  add('request', ev.url ? (ev.url.query !== undefined ? `${ev.url.path}?${ev.url.query}` : ev.url.path) : undefined);
  add('requestMethod', ev.http?.request?.method);
  add('reason', ev.error?.message);
  if (ev.event.sequence !== undefined) {
    add('cn1Label', 'seq');
    add('cn1', ev.event.sequence);
  }
  if (ev.http?.response) {
    add('cn2Label', 'httpStatus');
    add('cn2', ev.http.response.status_code);
  }
  if (ev.loki.details) {
    add('cs1Label', 'details');
    add('cs1', JSON.stringify(ev.loki.details));
  }
  if (ev.event.hash) {
    add('cs2Label', 'hash');
    add('cs2', ev.event.hash);
  }
  if (ev.http?.request?.id) {
    add('cs3Label', 'requestId');
    add('cs3', ev.http.request.id);
  }
  if (ev.loki.actor) {
    add('cs4Label', 'actorType');
    add('cs4', ev.loki.actor.type);
  }
  if (ev.loki.resource) {
    add('cs5Label', 'resource');
    add('cs5', ev.loki.resource.id ? `${ev.loki.resource.type}/${ev.loki.resource.id}` : ev.loki.resource.type);
  }
  const cp = ev.loki.checkpoint;
  if (cp) {
    add('cs1Label', 'checkpointOrigin');
    add('cs1', cp.origin);
    add('cn1Label', 'checkpointSize');
    add('cn1', cp.size);
    add('cs2Label', 'checkpointHeadHash');
    add('cs2', cp.head_hash);
    add('cs3Label', 'checkpointKind');
    add('cs3', cp.kind);
    add('cs5Label', 'checkpointJws');
    add('cs5', cp.jws);
    add('cs6Label', 'checkpointNote');
    add('cs6', cp.note);
  }
  if (ev.loki.details_truncated) {
    add('cs6Label', 'detailsTruncated');
    add('cs6', 'true');
  }
  add('msg', ev.message);
  return ext;
}

/** The CEF body: `CEF:0|Loki|control-plane|<version>|<action>|<name>|<severity>|<extension>`. */
export function cefBody(ev: SiemEvent, version: string): string {
  const name = ev.message.length > 512 ? `${ev.message.slice(0, 509)}...` : ev.message;
  const head = ['CEF:0', CEF_VENDOR, CEF_PRODUCT, version, ev.event.action, name, String(cefSeverity(ev))].map((v, i) => (i === 0 ? v : cefHeader(v)));
  const ext = cefExtension(ev)
    .map(([k, v]) => `${k}=${cefValue(v)}`)
    .join(' ');
  return `${head.join('|')}|${ext}`;
}

// ---------------------------------------------------------------------------
// RFC 5424 structured data
// ---------------------------------------------------------------------------

export type SdValue = string | number | boolean | null;

/**
 * An entry's details as SD-PARAMs: `details.<key>`, scalars as they are,
 * arrays of scalars joined with commas, anything else as JSON.
 */
export function detailsParams(details: Record<string, unknown> | undefined): Record<string, SdValue> {
  const out: Record<string, SdValue> = {};
  if (!details) return out;
  for (const [k, v] of Object.entries(redactValue(details))) {
    const key = `details.${k}`;
    if (v === null || typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') out[key] = v;
    else if (Array.isArray(v) && v.every((x) => x === null || ['string', 'number', 'boolean'].includes(typeof x))) out[key] = v.join(',');
    else if (v !== undefined) out[key] = JSON.stringify(v);
  }
  return out;
}

// ---------------------------------------------------------------------------
// OCSF 1.1 (format `ocsf`): Authentication (3002) for `auth.*`, API Activity (6003) for the rest
// ---------------------------------------------------------------------------

export const OCSF_VERSION = '1.1.0';

/** API Activity's activity_id from the HTTP method, else from the action's verb. */
function apiActivityId(method: string | undefined, action: string): number {
  const m = method?.toUpperCase();
  if (m === 'POST') return 1;
  if (m === 'GET' || m === 'HEAD') return 2;
  if (m === 'PUT' || m === 'PATCH') return 3;
  if (m === 'DELETE') return 4;
  if (/\b(create|import|generate|start)\b/.test(action.replace(/[._]/g, ' '))) return 1;
  if (/\b(revoke|delete|prune|stop|kill)\b/.test(action.replace(/[._]/g, ' '))) return 4;
  return 99;
}

/**
 * The same event as an OCSF 1.1 object: `auth.*` as Authentication (class 3002,
 * activity Logon), everything else, checkpoints included, as API Activity (class
 * 6003, activity from the HTTP method). What OCSF has no attribute for (details,
 * resource, actor type, the signed checkpoint) is under `unmapped.loki`.
 */
export function ocsfEvent(ev: SiemEvent, version: string): Record<string, unknown> {
  const auth = ev.event.action.startsWith('auth.');
  const classUid = auth ? 3002 : 6003;
  const activityId = auth ? 1 : apiActivityId(ev.http?.request?.method, ev.event.action);
  const failed = ev.event.outcome === 'failure';
  const user = ev.user ? { ...(ev.user.name ? { name: ev.user.name } : {}), ...(ev.user.id ? { uid: ev.user.id } : {}) } : undefined;
  const out: Record<string, unknown> = {
    category_uid: auth ? 3 : 6,
    class_uid: classUid,
    activity_id: activityId,
    type_uid: classUid * 100 + activityId,
    time: Date.parse(ev['@timestamp']),
    severity_id: ev.log.level === 'warning' ? 3 : 1,
    status_id: failed ? 2 : 1,
    status: failed ? 'Failure' : 'Success',
    message: ev.message,
    metadata: {
      version: OCSF_VERSION,
      product: { name: CEF_PRODUCT, vendor_name: CEF_VENDOR, version },
      log_name: 'audit',
      event_code: ev.event.action,
      ...(ev.event.sequence !== undefined ? { sequence: ev.event.sequence } : {}),
      ...(ev.event.hash ? { uid: ev.event.hash } : {}),
    },
  };
  if (ev.http?.response) out.status_code = String(ev.http.response.status_code);
  if (ev.error) out.status_detail = ev.error.message;
  if (user) {
    if (auth) out.user = user;
    out.actor = { user };
  }
  if (ev.source) out.src_endpoint = ev.source.ip ? { ip: ev.source.ip } : { hostname: ev.source.address };
  if (ev.url || ev.http?.request || ev.user_agent) {
    out.http_request = {
      ...(ev.http?.request?.method ? { http_method: ev.http.request.method } : {}),
      ...(ev.url ? { url: { path: ev.url.path, ...(ev.url.query !== undefined ? { query_string: ev.url.query } : {}) } } : {}),
      ...(ev.user_agent ? { user_agent: ev.user_agent.original } : {}),
      ...(ev.http?.request?.id ? { uid: ev.http.request.id } : {}),
    };
  }
  if (ev.http?.response) out.http_response = { code: ev.http.response.status_code };
  if (!auth) {
    out.api = {
      operation: ev.event.action,
      ...(ev.http?.request?.id ? { request: { uid: ev.http.request.id } } : {}),
      ...(ev.http?.response ? { response: { code: ev.http.response.status_code } } : {}),
    };
  }
  const loki: Record<string, unknown> = {};
  if (ev.loki.actor) loki.actor_type = ev.loki.actor.type;
  if (ev.loki.resource) loki.resource = ev.loki.resource;
  if (ev.loki.details) loki.details = ev.loki.details;
  if (ev.loki.details_truncated) loki.details_truncated = true;
  if (ev.loki.checkpoint) loki.checkpoint = ev.loki.checkpoint;
  if (Object.keys(loki).length > 0) out.unmapped = { loki };
  return out;
}

/** The OCSF body: one line of JSON. */
export function ocsfBody(ev: SiemEvent, version: string): string {
  return JSON.stringify(ocsfEvent(ev, version));
}

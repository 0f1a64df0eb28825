/**
 * The typed fetch client for the Loki API, used by `loki start` and the sandbox
 * worker. Every response is parsed with the same zod schemas the server's wire
 * types come from (src/sessions/api.ts); every call is checked at compile time
 * against the OpenAPI document's generated types (src/http/openapi-types.ts):
 * its path and method must be a documented operation, its path parameters,
 * query and body the documented ones, and its parse schema must accept the
 * documented success body. Every failure is an `ApiClientError`
 * carrying the contract's error `code` (or `unreachable` / `timeout` /
 * `bad_response` when there is no contract answer). Runtime-free (global fetch).
 */
import type { z } from 'zod';
import type { ApiBody, ApiMethod, ApiPath, ApiQuery, ApiResult, PathParams } from './http/api-types';
import { type ServerStatus, serverStatusSchema } from './http/schemas';
import {
  type ClaimInput,
  type CreateSessionInput,
  claimResponseSchema,
  type EventsAck,
  type EventsInput,
  eventsAckSchema,
  type Job,
  type LogsPage,
  logsPageSchema,
  type SessionList,
  type SessionView,
  type StopResult,
  sessionListSchema,
  sessionSchema,
  stopResultSchema,
  workerJobsSchema,
} from './sessions/api';

export { type ServerStatus, serverStatusSchema };

export class ApiClientError extends Error {
  constructor(
    /** HTTP status; 0 when no response arrived. */
    readonly status: number,
    /** The contract's error code, or `unreachable`, `timeout`, `bad_response`. */
    readonly code: string,
    message: string,
    readonly requestId: string | null = null,
  ) {
    super(message);
    this.name = 'ApiClientError';
  }
}

/** One event of `GET /api/events`. */
export interface LiveEvent {
  id: number;
  type: string;
  session_id: string | null;
  data: unknown;
  ts: number;
}

export interface LokiClientOptions {
  /** `LOKI_URL`, e.g. http://127.0.0.1:57374 */
  url: string;
  /** Bearer token (`LOKI_TOKEN`, or `LOKI_WORKER_TOKEN` for the worker). */
  token?: string | null;
  /** Per-request timeout (the claim long-poll adds its wait). Default 30 s. */
  timeoutMs?: number;
  fetch?: typeof fetch;
}

/** The server-sent events route (read by `watchEvents` with its own stream parser). */
const EVENTS_PATH = '/api/events' satisfies ApiPath;
/** Refuses (at compile time) a parse schema that would not accept the documented success body. */
type Accepting<S extends z.ZodType, P extends ApiPath, M extends ApiMethod<P>> = [ApiResult<P, M>] extends [z.input<S>]
  ? S
  : { 'the schema does not accept the documented response': ApiResult<P, M> };

interface RequestOptions<P extends ApiPath, M extends ApiMethod<P>, S extends z.ZodType> {
  /** The path's `{name}` parameters. */
  params?: PathParams<P, M>;
  query?: ApiQuery<P, M>;
  body?: ApiBody<P, M>;
  schema: Accepting<S, P, M>;
  signal?: AbortSignal;
  timeoutMs?: number;
  /** Resolve null on 204 instead of parsing a body. */
  allowNoContent?: boolean;
}

export class LokiClient {
  readonly url: string;
  private readonly token: string | null;
  private readonly timeoutMs: number;
  private readonly fetchImpl: typeof fetch;

  constructor(opts: LokiClientOptions) {
    this.url = opts.url.replace(/\/+$/, '');
    this.token = opts.token ?? null;
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    this.fetchImpl = opts.fetch ?? fetch;
  }

  // ---- sessions ----------------------------------------------------------

  createSession(input: CreateSessionInput, signal?: AbortSignal): Promise<SessionView> {
    return this.request('post', '/api/sessions', { body: input, schema: sessionSchema, signal });
  }

  listSessions(q: { limit?: number; status?: NonNullable<ApiQuery<'/api/sessions', 'get'>['status']>; cursor?: string } = {}): Promise<SessionList> {
    return this.request('get', '/api/sessions', { query: q, schema: sessionListSchema });
  }

  getSession(id: string, signal?: AbortSignal): Promise<SessionView> {
    return this.request('get', '/api/sessions/{id}', { params: { id }, schema: sessionSchema, signal });
  }

  sessionLogs(id: string, q: { after?: number; limit?: number } = {}, signal?: AbortSignal): Promise<LogsPage> {
    return this.request('get', '/api/sessions/{id}/logs', { params: { id }, query: q, schema: logsPageSchema, signal });
  }

  stopSession(id: string): Promise<StopResult> {
    return this.request('post', '/api/sessions/{id}/stop', { params: { id }, schema: stopResultSchema });
  }

  // ---- server ------------------------------------------------------------

  /** `GET /api/status`: version, uptime, flags, session counts, audit tip, streams (and whatever else the server adds). */
  serverStatus(signal?: AbortSignal): Promise<ServerStatus> {
    return this.request('get', '/api/status', { schema: serverStatusSchema, signal });
  }

  // ---- worker protocol ---------------------------------------------------

  /** Long-poll for a job; null when none came within `wait_ms`. */
  async claimJob(input: ClaimInput, signal?: AbortSignal): Promise<Job | null> {
    const r = await this.request('post', '/api/sandbox/jobs/claim', {
      body: input,
      schema: claimResponseSchema,
      signal,
      timeoutMs: this.timeoutMs + (input.wait_ms ?? 0),
      allowNoContent: true,
    });
    return r ? r.job : null;
  }

  postJobEvents(sessionId: string, input: EventsInput, signal?: AbortSignal): Promise<EventsAck> {
    return this.request('post', '/api/sandbox/jobs/{id}/events', { params: { id: sessionId }, body: input, schema: eventsAckSchema, signal });
  }

  /** Running sessions the server has leased to this worker id. */
  async workerSessionIds(workerId: string, signal?: AbortSignal): Promise<string[]> {
    const r = await this.request('get', '/api/sandbox/jobs', { query: { worker_id: workerId }, schema: workerJobsSchema, signal });
    return r.session_ids;
  }

  // ---- live events -------------------------------------------------------

  /**
   * Follow `GET /api/events` (server-sent events) and call `onEvent` for each
   * event until `signal` aborts or the server ends the stream. Resolves when the
   * stream ends; rejects with an `ApiClientError` when it cannot be opened.
   */
  async watchEvents(
    q: { session?: string; types?: string[]; after?: number },
    onEvent: (e: LiveEvent) => void,
    signal: AbortSignal,
  ): Promise<void> {
    const url = new URL(`${this.url}${EVENTS_PATH}`);
    if (q.session) url.searchParams.set('session', q.session);
    if (q.types?.length) url.searchParams.set('types', q.types.join(','));
    if (q.after !== undefined) url.searchParams.set('after', String(q.after));
    const headers: Record<string, string> = { Accept: 'text/event-stream' };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    let res: Response;
    try {
      res = await this.fetchImpl(url, { headers, signal });
    } catch (err) {
      if (signal.aborted) return;
      throw new ApiClientError(0, 'unreachable', `cannot reach the Loki server at ${this.url} (${(err as Error).message})`);
    }
    if (!res.ok || !res.body) {
      await res.body?.cancel().catch(() => undefined);
      throw new ApiClientError(res.status, `http_${res.status}`, `GET /api/events failed with HTTP ${res.status}`);
    }
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buffer += decoder.decode(chunk, { stream: true });
        let end = buffer.indexOf('\n\n');
        while (end !== -1) {
          const frame = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = frame
            .split('\n')
            .filter((l) => l.startsWith('data:'))
            .map((l) => l.slice(5).trimStart())
            .join('\n');
          const named = frame.split('\n').some((l) => l.startsWith('event:'));
          if (data && !named) {
            try {
              onEvent(JSON.parse(data) as LiveEvent);
            } catch {
              // not an event frame
            }
          }
          end = buffer.indexOf('\n\n');
        }
      }
    } catch (err) {
      if (!signal.aborted) throw new ApiClientError(0, 'unreachable', `the event stream from ${this.url} broke (${(err as Error).message})`);
    }
  }

  // ---- transport ---------------------------------------------------------

  async request<P extends ApiPath, M extends ApiMethod<P>, S extends z.ZodType>(
    method: M,
    template: P,
    opts: RequestOptions<P, M, S> & { allowNoContent: true },
  ): Promise<z.infer<S> | null>;
  async request<P extends ApiPath, M extends ApiMethod<P>, S extends z.ZodType>(method: M, template: P, opts: RequestOptions<P, M, S>): Promise<z.infer<S>>;
  async request<P extends ApiPath, M extends ApiMethod<P>, S extends z.ZodType>(
    lowerMethod: M,
    template: P,
    opts: RequestOptions<P, M, S>,
  ): Promise<z.infer<S> | null> {
    const method = lowerMethod.toUpperCase();
    const params = (opts.params ?? {}) as Record<string, string>;
    const path = (template as string).replace(/\{([^}]+)\}/g, (_, name: string) => {
      const value = params[name] ?? '';
      // `.` and `..` would be resolved by the URL parser (encoded or not): the request would go elsewhere.
      if (value === '.' || value === '..') throw new ApiClientError(0, 'validation_error', `${name} cannot be "${value}"`);
      return encodeURIComponent(value);
    });
    const schema = opts.schema as unknown as S;
    const url = new URL(this.url + path);
    for (const [k, v] of Object.entries((opts.query ?? {}) as Record<string, string | number | null | undefined>)) if (v !== undefined && v !== null) url.searchParams.set(k, String(v));
    const headers: Record<string, string> = { Accept: 'application/json' };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
    const timeout = AbortSignal.timeout(opts.timeoutMs ?? this.timeoutMs);
    const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;

    let res: Response;
    try {
      res = await this.fetchImpl(url, {
        method,
        headers,
        body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
        signal,
      });
    } catch (err) {
      if (opts.signal?.aborted) throw opts.signal.reason ?? err;
      if (timeout.aborted) throw new ApiClientError(0, 'timeout', `the Loki server at ${this.url} did not answer ${method} ${path} in time`);
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      const why = cause?.code ?? cause?.message ?? (err as Error).message;
      throw new ApiClientError(0, 'unreachable', `cannot reach the Loki server at ${this.url} (${why})`);
    }
    const requestId = res.headers.get('x-request-id');
    let text: string;
    try {
      text = await res.text();
    } catch (err) {
      if (opts.signal?.aborted) throw opts.signal.reason ?? err;
      throw new ApiClientError(res.status, 'unreachable', `the connection to ${this.url} broke while reading the response`, requestId);
    }
    if (res.status === 204 && opts.allowNoContent) return null;
    let json: unknown;
    try {
      json = text.length ? JSON.parse(text) : null;
    } catch {
      json = undefined;
    }
    if (!res.ok) {
      const e = (json as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
      if (e && typeof e.code === 'string' && typeof e.message === 'string') throw new ApiClientError(res.status, e.code, e.message, requestId);
      throw new ApiClientError(res.status, `http_${res.status}`, `${method} ${path} failed with HTTP ${res.status}`, requestId);
    }
    const parsed = schema.safeParse(json);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new ApiClientError(
        res.status,
        'bad_response',
        `unexpected response to ${method} ${path}: ${issue ? `${issue.path.join('.') || 'body'}: ${issue.message}` : 'invalid'}`,
        requestId,
      );
    }
    return parsed.data;
  }
}

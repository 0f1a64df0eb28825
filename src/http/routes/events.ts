/**
 * GET /api/events: server-sent events from the durable events table.
 *
 * - Each event is one `message` event: `id:` is the table id, `data:` is
 *   `{"id","type","session_id","data","ts"}`. Control frames are named:
 *   `event: close` (data `{"reason"}`) just before the server ends a stream.
 * - Resume with `Last-Event-ID` (what EventSource sends) or `?after=<id>`;
 *   without either the stream starts at the newest event (only new ones follow).
 * - Filters: `?session=<id>`, `?types=a,b`.
 * - A `: keep-alive` comment every 15 s; at most config.maxSseConnections
 *   streams (then 503); closed within 5 s of a revocation or expiry.
 */
import type { Authenticator } from '../../auth/authenticate';
import type { EventRecord } from '../../db/store';
import { type CloseReason, LiveGroup, type LiveSink, LiveStream, parseCursor, parseSession, parseTypes } from '../../events/live';
import type { AppContext, AppDeps, Identity } from '../context';
import type { TypedRoute } from '../define-route';
import { ErrorCode } from '../errors';
import { errorResponse } from '../respond';

export const SSE_KEEPALIVE_MS = 15_000;
const HIGH_WATER = 64 * 1024;
const KEEPALIVE = new TextEncoder().encode(': keep-alive\n\n');

/** One SSE frame per event; `data` is JSON on one line, so no field can break the framing. */
export function sseFrame(e: EventRecord): string {
  return `id: ${e.id}\ndata: ${JSON.stringify(eventJson(e))}\n\n`;
}

// A fanned-out batch hands the same records to every stream: encode each once.
const encoder = new TextEncoder();
const frames = new WeakMap<EventRecord, Uint8Array>();
function encodedFrame(e: EventRecord): Uint8Array {
  let f = frames.get(e);
  if (!f) {
    f = encoder.encode(sseFrame(e));
    frames.set(e, f);
  }
  return f;
}

export function eventJson(e: EventRecord) {
  return { id: e.id, type: e.type, session_id: e.sessionId, data: e.data, ts: e.ts };
}

export interface LiveQuery {
  after?: number;
  sessionId?: string;
  types?: string[];
}

/** Validate the stream parameters shared by SSE and the WebSocket; a string is the error message. */
export function parseLiveQuery(c: AppContext, opts: { lastEventId: boolean }): LiveQuery | string {
  const header = opts.lastEventId ? c.req.header('last-event-id') : undefined;
  const after = parseCursor(header ?? c.req.query('after'));
  if (after === 'invalid') return `${header !== undefined ? 'Last-Event-ID' : 'after'} must be a non-negative integer event id`;
  const sessionId = parseSession(c.req.query('session'));
  if (sessionId === 'invalid') return 'session must be a session id';
  const types = parseTypes(c.req.query('types'));
  if (types === 'invalid') return 'types must be a comma-separated list of at most 32 event type names';
  return { after, sessionId, types };
}

/** What both transports share when they open a live stream. */
export interface LiveContext {
  deps: AppDeps;
  authenticator: Authenticator;
  group: LiveGroup;
  now: () => number;
}

/** The stream SSE and WebSocket both open: same hub, revocation check, cursor and filters. */
export function openLiveStream(
  ctx: LiveContext,
  o: { identity: Identity; after: number; q: LiveQuery; sink: LiveSink; release: () => void },
): LiveStream {
  return new LiveStream({
    hub: ctx.deps.events,
    identity: o.identity,
    stillValid: (id) => ctx.authenticator.stillValid(id),
    after: o.after,
    filter: { sessionId: o.q.sessionId, types: o.q.types },
    sink: o.sink,
    now: ctx.now,
    release: o.release,
    group: ctx.group,
  });
}

/** Audit details of a stream request: its cursor and filters. */
export function liveAuditDetails(q: LiveQuery) {
  return { after: q.after ?? null, session: q.sessionId ?? null, types: q.types ?? null };
}

export function eventsRoutes(route: TypedRoute, deps: AppDeps, authenticator: Authenticator): void {
  const now = deps.now ?? Date.now;
  const ctx: LiveContext = { deps, authenticator, group: new LiveGroup(deps.shutdownSignal), now };

  route('GET', '/api/events', async (c) => {
    c.set('auditAction', 'events.stream');
    const q = parseLiveQuery(c, { lastEventId: true });
    if (typeof q === 'string') return errorResponse(c, 400, ErrorCode.validation, q);
    c.set('auditDetails', liveAuditDetails(q));
    const identity = c.get('identity');
    if (!identity) return errorResponse(c, 500, ErrorCode.internal, 'no identity');
    const release = deps.events.admit('sse', deps.config.maxSseConnections);
    if (!release) {
      return errorResponse(c, 503, ErrorCode.unavailable, `too many event streams (at most ${deps.config.maxSseConnections})`, { 'Retry-After': '5' });
    }
    let after: number;
    try {
      after = q.after ?? (await deps.events.latestId());
    } catch (err) {
      release();
      throw err;
    }

    let controller: ReadableStreamDefaultController<Uint8Array> | null = null;
    let lastWrite = now();
    const write = (bytes: Uint8Array) => {
      if (!controller) return;
      try {
        controller.enqueue(bytes);
        lastWrite = now();
      } catch {
        // the client went away; cancel() closes the stream
      }
    };
    const sink: LiveSink = {
      send(events) {
        if (events.length === 1) write(encodedFrame(events[0]!));
        else write(encoder.encode(events.map(sseFrame).join('')));
      },
      buffered: () => (controller ? Math.max(0, HIGH_WATER - (controller.desiredSize ?? 0)) : 0),
      tick(t) {
        if (t - lastWrite >= SSE_KEEPALIVE_MS) write(KEEPALIVE);
      },
      closed(reason: CloseReason) {
        if (!controller) return;
        const ctl = controller;
        controller = null;
        if (reason === 'client') return;
        try {
          ctl.enqueue(encoder.encode(`event: close\ndata: ${JSON.stringify({ reason })}\n\n`));
          ctl.close();
        } catch {
          // already cancelled
        }
      },
    };
    const live = openLiveStream(ctx, { identity, after, q, sink, release });
    const body = new ReadableStream<Uint8Array>(
      {
        start(ctl) {
          controller = ctl;
          // The first bytes go out at once, so clients see the stream open.
          write(encoder.encode(`retry: 3000\n: connected after ${after}\n\n`));
        },
        cancel() {
          live.close('client');
        },
      },
      new ByteLengthQueuingStrategy({ highWaterMark: HIGH_WATER }),
    );
    c.req.raw.signal?.addEventListener('abort', () => live.close('client'), { once: true });
    live.start();
    return c.body(body, 200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-store',
      'X-Accel-Buffering': 'no',
    });
  });
}

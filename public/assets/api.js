// @ts-check
/**
 * API access for the dashboard. The token lives in sessionStorage (this tab
 * only) and travels in the Authorization header, never in a URL. Live events
 * come from GET /api/events read with fetch streaming, since EventSource cannot
 * send headers.
 *
 * Calls are type-checked (`npm run typecheck`, tsconfig.dashboard.json) against
 * the OpenAPI document's generated types: a path must be a documented one for
 * its method, its `{name}` parameters, query and body the documented ones, and
 * the result is the documented success body.
 *
 * @typedef {import('../../src/http/api-types').HttpMethod} HttpMethod
 */

const TOKEN_KEY = 'loki.token';

export function getToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) ?? '';
  } catch {
    return '';
  }
}

export function setToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // storage disabled: the token is simply not remembered
  }
}

export class ApiError extends Error {
  /**
   * @param {number} status
   * @param {string} code
   * @param {string} message
   */
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** @param {HeadersInit} extra */
function headers(extra) {
  const h = new Headers(extra);
  const token = getToken();
  if (token) h.set('Authorization', `Bearer ${token}`);
  return h;
}

/**
 * `GET` a documented path; resolves to its JSON body.
 * @template {import('../../src/http/api-types').PathWith<'get'>} P
 * @param {P} path e.g. `/api/sessions/{id}`, its parameters in `opts.params`
 * @param {import('../../src/http/api-types').CallOptions<P, 'get'>} [opts]
 * @returns {Promise<import('../../src/http/api-types').ApiResult<P, 'get'>>}
 */
export function apiGet(path, opts) {
  return call('GET', path, opts ?? {});
}

/**
 * `POST` to a documented path.
 * @template {import('../../src/http/api-types').PathWith<'post'>} P
 * @param {P} path
 * @param {import('../../src/http/api-types').CallOptions<P, 'post'>} [opts]
 * @returns {Promise<import('../../src/http/api-types').ApiResult<P, 'post'>>}
 */
export function apiPost(path, opts) {
  return call('POST', path, opts ?? {});
}

/**
 * `DELETE` a documented path.
 * @template {import('../../src/http/api-types').PathWith<'delete'>} P
 * @param {P} path
 * @param {import('../../src/http/api-types').CallOptions<P, 'delete'>} [opts]
 * @returns {Promise<import('../../src/http/api-types').ApiResult<P, 'delete'>>}
 */
export function apiDelete(path, opts) {
  return call('DELETE', path, opts ?? {});
}

/**
 * Call the API; resolves to the JSON body, rejects with ApiError (its message is shown as text).
 * @param {string} method
 * @param {string} template
 * @param {{ params?: object, query?: object, body?: unknown, signal?: AbortSignal }} opts
 * @returns {Promise<any>}
 */
async function call(method, template, { params, query: q, body, signal }) {
  const values = /** @type {Record<string, string>} */ (params ?? {});
  const path = template.replace(/\{([^}]+)\}/g, (_, name) => {
    if (values[name] === undefined) throw new ApiError(0, 'bad_call', `${template}: no value for {${name}}`);
    return encodeURIComponent(values[name]);
  });
  /** @type {RequestInit} */
  const init = { method, headers: headers(body === undefined ? {} : { 'Content-Type': 'application/json' }), signal, cache: 'no-store' };
  if (body !== undefined) init.body = JSON.stringify(body);
  let res;
  try {
    res = await fetch(path + query(q ?? {}), init);
  } catch (err) {
    throw new ApiError(0, 'network', `cannot reach the server (${err?.message ?? 'network error'})`);
  }
  let data = null;
  const type = res.headers.get('content-type') ?? '';
  if (type.includes('application/json')) {
    try {
      data = await res.json();
    } catch {
      data = null;
    }
  }
  if (!res.ok) {
    const e = data?.error;
    throw new ApiError(res.status, e?.code ?? `http_${res.status}`, e?.message ? `${e.message} (HTTP ${res.status})` : `HTTP ${res.status}`);
  }
  return data;
}

/**
 * Build a query string from an object, skipping empty values.
 * @param {Record<string, unknown>} params
 */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : '';
}

/**
 * Follow GET /api/events with fetch streaming; reconnects with Last-Event-ID so
 * nothing is lost or repeated. Returns a stop function.
 * onEvent({id, type, session_id, data, ts}); onState('open' | 'closed' | text of an error).
 * backlog: replay up to this many of the newest events first. A stream opened
 * without a cursor starts at the newest event and says so in its first comment
 * (`: connected after N`); the page then reopens it once from N - backlog, so the
 * backlog and everything after N arrive in order on the same stream.
 *
 * @param {{ types?: string, session?: string, backlog?: number, onEvent: (e: LiveEvent) => void, onState: (text: string) => void }} opts
 */
export function followEvents({ types, session, backlog = 0, onEvent, onState }) {
  const controller = new AbortController();
  let lastId = null;
  let wantBacklog = backlog > 0;
  let delay = 1000;
  let stopped = false;

  const run = async () => {
    while (!stopped) {
      /** @type {string | typeof REOPEN} */
      let message = 'disconnected';
      try {
        const h = headers({ Accept: 'text/event-stream' });
        if (lastId !== null) h.set('Last-Event-ID', String(lastId));
        const res = await fetch(`${EVENTS}${query({ types, session })}`, { headers: h, signal: controller.signal, cache: 'no-store' });
        if (!res.ok || !res.body) {
          let text = `HTTP ${res.status}`;
          try {
            const body = await res.json();
            if (body?.error?.message) text = `${body.error.message} (HTTP ${res.status})`;
          } catch {
            // not JSON
          }
          onState(text);
          if (res.status === 401 || res.status === 403) return;
        } else {
          onState('open');
          delay = 1000;
          const onComment = (text) => {
            const m = /^connected after (\d+)$/.exec(text);
            if (!wantBacklog || lastId !== null || !m) return false;
            wantBacklog = false;
            const newest = Number(m[1]);
            lastId = String(Math.max(0, newest - backlog));
            return newest > 0;
          };
          message = await readStream(
            res.body,
            (frame) => {
              if (frame.event === 'close') return;
              if (frame.id !== null) lastId = frame.id;
              try {
                onEvent(JSON.parse(frame.data));
              } catch {
                // a frame that is not JSON is skipped
              }
            },
            onComment,
          );
          if (message === REOPEN) continue;
          onState(message);
        }
      } catch (err) {
        if (stopped || err?.name === 'AbortError') return;
        onState(`stream error: ${err?.message ?? err}`);
      }
      if (stopped) return;
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 15000);
    }
  };
  void run();
  return () => {
    stopped = true;
    controller.abort();
  };
}

const REOPEN = Symbol('reopen');

/** The event stream's documented path (a rename in the server fails the type check). */
/** @type {import('../../src/http/api-types').PathWith<'get'>} */
const EVENTS = '/api/events';

/** One event of the stream: `data:` of a message frame. @typedef {{ id: number, type: string, session_id: string | null, data: any, ts: number }} LiveEvent */

/** Read SSE frames until the stream ends (its close reason) or onComment asks to reopen it (REOPEN). */
async function readStream(body, onFrame, onComment) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  let closeReason = 'disconnected';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return closeReason;
    buffer += decoder.decode(value, { stream: true });
    let end = buffer.indexOf('\n\n');
    while (end >= 0) {
      const raw = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      /** @type {{ id: string | null, event: string, data: string }} */
      const frame = { id: null, event: 'message', data: '' };
      const data = [];
      for (const line of raw.split('\n')) {
        if (line.startsWith(':')) {
          if (onComment(line.slice(1).trim())) {
            await reader.cancel().catch(() => {});
            return REOPEN;
          }
          continue;
        }
        const i = line.indexOf(':');
        const field = i < 0 ? line : line.slice(0, i);
        const val = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
        if (field === 'id') frame.id = val;
        else if (field === 'event') frame.event = val;
        else if (field === 'data') data.push(val);
      }
      frame.data = data.join('\n');
      if (frame.event === 'close') {
        try {
          closeReason = `closed by the server: ${JSON.parse(frame.data).reason}`;
        } catch {
          closeReason = 'closed by the server';
        }
      }
      if (data.length > 0) onFrame(frame);
      end = buffer.indexOf('\n\n');
    }
  }
}

/** Real stream clients for tests: SSE read with fetch streaming, WebSocket with the `ws` package. */
import WebSocket from 'ws';

export interface SseEvent {
  id: number;
  type: string;
  session_id: string | null;
  data: unknown;
  ts: number;
}

export interface SseClient {
  status: number;
  events: SseEvent[];
  /** Named control frames (`event: close`) and comments seen. */
  controls: { event: string; data: string }[];
  comments: string[];
  /** Resolves when the server ends the stream (or the client aborts). */
  ended: Promise<void>;
  /** Wait until `n` events arrived (rejects after timeoutMs). */
  waitFor(n: number, timeoutMs?: number): Promise<SseEvent[]>;
  close(): void;
}

export async function openSse(url: string, opts: { token?: string; lastEventId?: number | string; headers?: Record<string, string> } = {}): Promise<SseClient> {
  const ac = new AbortController();
  const headers = new Headers(opts.headers);
  if (opts.token) headers.set('Authorization', `Bearer ${opts.token}`);
  if (opts.lastEventId !== undefined) headers.set('Last-Event-ID', String(opts.lastEventId));
  const res = await fetch(url, { headers, signal: ac.signal });
  const client: SseClient = {
    status: res.status,
    events: [],
    controls: [],
    comments: [],
    ended: Promise.resolve(),
    waitFor: async (n, timeoutMs = 5000) => {
      const until = Date.now() + timeoutMs;
      while (client.events.length < n) {
        if (Date.now() > until) throw new Error(`timed out waiting for ${n} events (got ${client.events.length})`);
        await new Promise((r) => setTimeout(r, 10));
      }
      return client.events;
    },
    close: () => ac.abort(),
  };
  if (!res.ok || !res.body) return client;
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  client.ended = (async () => {
    let buf = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buf += decoder.decode(value, { stream: true });
        let end = buf.indexOf('\n\n');
        while (end >= 0) {
          const frame = buf.slice(0, end);
          buf = buf.slice(end + 2);
          let event = 'message';
          const data: string[] = [];
          for (const line of frame.split('\n')) {
            if (line.startsWith(':')) client.comments.push(line.slice(1).trim());
            else if (line.startsWith('event: ')) event = line.slice(7);
            else if (line.startsWith('data: ')) data.push(line.slice(6));
          }
          if (data.length > 0) {
            if (event === 'message') client.events.push(JSON.parse(data.join('\n')) as SseEvent);
            else client.controls.push({ event, data: data.join('\n') });
          }
          end = buf.indexOf('\n\n');
        }
      }
    } catch {
      // aborted by the client
    }
  })();
  return client;
}

export interface WsClient {
  ws: WebSocket;
  messages: Record<string, unknown>[];
  opened: Promise<void>;
  /** The close code and reason once closed. */
  closed: Promise<{ code: number; reason: string }>;
  /** The HTTP status when the handshake was refused. */
  refused: Promise<number | null>;
  waitFor(pred: (m: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  events(): Record<string, unknown>[];
}

export function openWs(url: string, opts: { protocols?: string[]; origin?: string; autoPong?: boolean; headers?: Record<string, string> } = {}): WsClient {
  const ws = new WebSocket(url, opts.protocols ?? [], {
    origin: opts.origin,
    headers: opts.headers,
    autoPong: opts.autoPong ?? true,
  });
  const messages: Record<string, unknown>[] = [];
  let refusedResolve: (s: number | null) => void = () => {};
  const refused = new Promise<number | null>((r) => {
    refusedResolve = r;
  });
  ws.on('unexpected-response', (_req, res) => {
    refusedResolve(res.statusCode ?? 0);
    res.resume();
    ws.terminate();
  });
  ws.on('error', () => {});
  ws.on('message', (m) => messages.push(JSON.parse(String(m)) as Record<string, unknown>));
  const opened = new Promise<void>((resolve, reject) => {
    ws.once('open', () => {
      refusedResolve(null);
      resolve();
    });
    ws.once('close', () => reject(new Error('closed before open')));
  });
  opened.catch(() => {});
  const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: String(reason) })));
  return {
    ws,
    messages,
    opened,
    closed,
    refused,
    async waitFor(pred, timeoutMs = 5000) {
      const until = Date.now() + timeoutMs;
      for (;;) {
        const m = messages.find(pred);
        if (m) return m;
        if (Date.now() > until) throw new Error(`timed out; messages: ${JSON.stringify(messages).slice(0, 500)}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    },
    events: () => messages.filter((m) => m.type === 'event').map((m) => m.event as Record<string, unknown>),
  };
}

/** Poll /api/status until the stream counters match (listeners back to 0 after disconnects). */
export async function waitForStreams(
  req: (p: string) => Promise<Response>,
  want: { listeners?: number; sse?: number; ws?: number },
  timeoutMs = 5000,
): Promise<Record<string, number>> {
  const until = Date.now() + timeoutMs;
  let last: Record<string, number> = {};
  for (;;) {
    const body = (await (await req('/api/status')).json()) as { streams: Record<string, number> };
    last = body.streams;
    if (Object.entries(want).every(([k, v]) => last[k] === v)) return last;
    if (Date.now() > until) throw new Error(`streams did not reach ${JSON.stringify(want)}: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

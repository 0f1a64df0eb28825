/**
 * A scripted Anthropic Messages API for end-to-end tests with a real agent CLI
 * (Claude Code): `node:http` on a loopback address other than 127.0.0.1 (default
 * 127.0.0.2, port 0), so an agent that honours `HTTP(S)_PROXY` with
 * `NO_PROXY=localhost,127.0.0.1,::1` must reach it through the session's egress proxy.
 *
 * The script, for `POST /v1/messages` (any query string, e.g. `?beta=true`):
 * - the conversation holds a `tool_result` → the final text answer (`finalText`);
 * - else the request offers a tool named `Write` → one `tool_use` of `Write` with
 *   `{file_path, content}`;
 * - else (a request without tools: a title, a quota check…) → a short text.
 * `stream: true` is answered with server-sent events exactly as the API streams
 * them (message_start, content_block_start/delta/stop with text_delta or
 * input_json_delta, message_delta with stop_reason and usage, message_stop);
 * otherwise with one JSON message. `POST /v1/messages/count_tokens` answers a token
 * count. Anything else is a 404 in the API's error format. Every request is
 * recorded (the body is parsed, never logged).
 */
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FakeAnthropicOptions {
  /** Default 127.0.0.2. */
  host?: string;
  /** The Write tool call of the first turn: an absolute path in the agent's file system, and its exact content. */
  write: { filePath: string; content: string };
  /** The answer once the tool result came back. */
  finalText: string;
  /** Short answer to requests without tools. */
  shortText?: string;
  /** Reported on every message (Claude Code computes its cost from these). */
  usage?: { input_tokens: number; output_tokens: number };
}

export type Reply = 'tool_use' | 'final' | 'short' | 'count_tokens' | 'not_found' | 'bad_request';

export interface RecordedRequest {
  method: string;
  /** Path and query as received. */
  url: string;
  /** Path without the query. */
  path: string;
  model: string | null;
  stream: boolean;
  /** The request offered tools (their names). */
  tools: string[];
  /** The conversation holds a tool_result block. */
  toolResult: boolean;
  /** The tool_result blocks' content as text (what the tool reported). */
  toolResultText: string[];
  /** The text blocks of the user turns (the prompt, and whatever the agent adds to it). */
  userText: string;
  /** `x-api-key` as received (tests check it arrived and leaked nowhere else). */
  apiKey: string | null;
  userAgent: string | null;
  reply: Reply;
}

export interface FakeAnthropic {
  /** `http://host:port` (no trailing slash), for ANTHROPIC_BASE_URL. */
  url: string;
  host: string;
  port: number;
  requests: RecordedRequest[];
  /** Bytes read from and written to the sockets of closed connections (what a proxy in front must have relayed). */
  bytes(): { received: number; sent: number; connections: number };
  close(): Promise<void>;
}

type Block = { type: string; [k: string]: unknown };

function readBody(req: IncomingMessage, limit = 16 * 1024 * 1024): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        reject(new Error('body too large'));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.once('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.once('error', reject);
  });
}

/** The text of a tool_result's content (a string or text blocks). */
function toolResultText(block: Block): string {
  const c = block.content;
  if (typeof c === 'string') return c;
  if (Array.isArray(c)) return c.map((b: Block) => (b.type === 'text' ? String(b.text ?? '') : '')).join('');
  return '';
}

function contentBlocks(messages: unknown): Block[] {
  if (!Array.isArray(messages)) return [];
  return messages.flatMap((m: { content?: unknown }) => (Array.isArray(m?.content) ? (m.content as Block[]) : []));
}

function userText(messages: unknown): string {
  if (!Array.isArray(messages)) return '';
  return messages
    .filter((m: { role?: unknown }) => m?.role === 'user')
    .flatMap((m: { content?: unknown }) =>
      typeof m.content === 'string' ? [m.content] : Array.isArray(m.content) ? (m.content as Block[]).filter((b) => b.type === 'text').map((b) => String(b.text ?? '')) : [],
    )
    .join('\n');
}

const id = (prefix: string) => `${prefix}_${randomBytes(12).toString('hex')}`;

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'request-id': id('req') });
  res.end(text);
}

function apiError(res: ServerResponse, status: number, type: string, message: string): void {
  sendJson(res, status, { type: 'error', error: { type, message } });
}

/** One assistant message as the API returns it without streaming. */
function message(model: string, content: Block[], stopReason: string, usage: { input_tokens: number; output_tokens: number }) {
  return {
    id: id('msg'),
    type: 'message',
    role: 'assistant',
    model,
    content,
    stop_reason: stopReason,
    stop_sequence: null,
    usage: { input_tokens: usage.input_tokens, output_tokens: usage.output_tokens, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 },
  };
}

/** The same message as the API streams it. */
function streamMessage(res: ServerResponse, msg: ReturnType<typeof message>): void {
  // keep-alive as the API sends it, although the egress proxy asked for close: the
  // proxy must still make the client open a new connection for its next request.
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive', 'request-id': id('req') });
  const event = (type: string, data: Record<string, unknown>) => res.write(`event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`);
  event('message_start', {
    message: { ...msg, content: [], stop_reason: null, stop_sequence: null, usage: { ...msg.usage, output_tokens: 1 } },
  });
  event('ping', {});
  msg.content.forEach((block, index) => {
    if (block.type === 'text') {
      event('content_block_start', { index, content_block: { type: 'text', text: '' } });
      const text = String(block.text);
      // Two deltas: the client must join them.
      const cut = Math.floor(text.length / 2);
      for (const part of [text.slice(0, cut), text.slice(cut)]) event('content_block_delta', { index, delta: { type: 'text_delta', text: part } });
    } else {
      event('content_block_start', { index, content_block: { type: 'tool_use', id: block.id, name: block.name, input: {} } });
      const json = JSON.stringify(block.input);
      const cut = Math.floor(json.length / 2);
      for (const part of [json.slice(0, cut), json.slice(cut)]) event('content_block_delta', { index, delta: { type: 'input_json_delta', partial_json: part } });
    }
    event('content_block_stop', { index });
  });
  event('message_delta', { delta: { stop_reason: msg.stop_reason, stop_sequence: null }, usage: { output_tokens: msg.usage.output_tokens } });
  event('message_stop', {});
  res.end();
}

export async function startFakeAnthropic(o: FakeAnthropicOptions): Promise<FakeAnthropic> {
  const host = o.host ?? '127.0.0.2';
  const usage = o.usage ?? { input_tokens: 1000, output_tokens: 100 };
  const requests: RecordedRequest[] = [];

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const url = req.url ?? '';
    const pathOnly = url.split('?')[0] ?? '';
    const rec: RecordedRequest = {
      method: req.method ?? '',
      url,
      path: pathOnly,
      model: null,
      stream: false,
      tools: [],
      toolResult: false,
      toolResultText: [],
      userText: '',
      apiKey: typeof req.headers['x-api-key'] === 'string' ? req.headers['x-api-key'] : null,
      userAgent: req.headers['user-agent'] ?? null,
      reply: 'not_found',
    };
    requests.push(rec);
    const raw = await readBody(req);
    if (req.method !== 'POST' || (pathOnly !== '/v1/messages' && pathOnly !== '/v1/messages/count_tokens')) {
      apiError(res, 404, 'not_found_error', `no such endpoint: ${req.method} ${pathOnly}`);
      return;
    }
    let body: { model?: unknown; stream?: unknown; tools?: unknown; messages?: unknown };
    try {
      body = JSON.parse(raw);
    } catch {
      rec.reply = 'bad_request';
      apiError(res, 400, 'invalid_request_error', 'the body is not JSON');
      return;
    }
    const model = typeof body.model === 'string' ? body.model : 'claude-sonnet-4-5';
    rec.model = typeof body.model === 'string' ? body.model : null;
    rec.stream = body.stream === true;
    rec.tools = Array.isArray(body.tools) ? body.tools.map((t: { name?: unknown }) => String(t?.name ?? '')) : [];
    const results = contentBlocks(body.messages).filter((b) => b.type === 'tool_result');
    rec.toolResult = results.length > 0;
    rec.toolResultText = results.map(toolResultText);
    rec.userText = userText(body.messages);

    if (pathOnly === '/v1/messages/count_tokens') {
      rec.reply = 'count_tokens';
      sendJson(res, 200, { input_tokens: usage.input_tokens });
      return;
    }
    let msg: ReturnType<typeof message>;
    if (rec.toolResult) {
      rec.reply = 'final';
      msg = message(model, [{ type: 'text', text: o.finalText }], 'end_turn', usage);
    } else if (rec.tools.includes('Write')) {
      rec.reply = 'tool_use';
      const input = { file_path: o.write.filePath, content: o.write.content };
      msg = message(model, [{ type: 'text', text: 'Writing the file.' }, { type: 'tool_use', id: id('toolu'), name: 'Write', input }], 'tool_use', usage);
    } else {
      rec.reply = 'short';
      msg = message(model, [{ type: 'text', text: o.shortText ?? 'OK' }], 'end_turn', usage);
    }
    if (rec.stream) streamMessage(res, msg);
    else sendJson(res, 200, msg);
  };

  const server: Server = createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) apiError(res, 500, 'api_error', 'fake server error');
      else res.destroy();
    });
  });
  const counted = { received: 0, sent: 0, connections: 0 };
  server.on('connection', (socket) => {
    socket.once('close', () => {
      counted.received += socket.bytesRead;
      counted.sent += socket.bytesWritten;
      counted.connections++;
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://${host}:${port}`,
    host,
    port,
    requests,
    bytes: () => ({ ...counted }),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

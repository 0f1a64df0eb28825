/**
 * The per-session egress proxy over real sockets: a client on its Unix socket
 * speaking CONNECT and absolute-form HTTP, a TCP echo server and a small HTTP origin
 * on 127.0.0.1 (reached through `privateDestinations`). Names are resolved by an
 * injected resolver, so nothing here touches real DNS or the internet.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { closingResponseHead, type EgressDecision, type EgressProxyOptions, specialAddress, startEgressProxy } from '../../src/sandbox/egress';
import { until } from '../helpers/process';

// ---------------------------------------------------------------------------
// Servers on the host's loopback

interface OriginRequest {
  head: string;
  body: string;
}

/** A TCP echo server (stands in for an HTTPS origin: the proxy never looks inside a tunnel). */
async function echoServer(): Promise<{ port: number; server: net.Server }> {
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => undefined);
    s.pipe(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as net.AddressInfo).port, server };
}

/** A byte-exact HTTP origin: records each request head and body, answers `hello <path>` and closes. */
async function httpOrigin(): Promise<{ port: number; server: net.Server; requests: OriginRequest[] }> {
  const requests: OriginRequest[] = [];
  const server = net.createServer((s) => {
    s.on('error', () => undefined);
    let buf = '';
    s.setEncoding('latin1');
    s.on('data', (d: string) => {
      buf += d;
      const end = buf.indexOf('\r\n\r\n');
      if (end === -1) return;
      const head = buf.slice(0, end);
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
      const body = buf.slice(end + 4);
      if (body.length < length) return;
      s.removeAllListeners('data');
      requests.push({ head, body });
      const text = `hello ${head.split(' ')[1]}`;
      s.end(`HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: ${text.length}\r\nConnection: close\r\n\r\n${text}`);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as net.AddressInfo).port, server, requests };
}

const closeServer = (s: net.Server) => new Promise<void>((r) => s.close(() => r()));

// ---------------------------------------------------------------------------
// A client on the proxy's Unix socket

interface Reply {
  raw: string;
  status: number;
  headers: Record<string, string>;
  body: string;
}

function parseReply(raw: string): Reply {
  const end = raw.indexOf('\r\n\r\n');
  const head = end === -1 ? raw : raw.slice(0, end);
  const [statusLine = '', ...lines] = head.split('\r\n');
  const headers: Record<string, string> = {};
  for (const l of lines) {
    const i = l.indexOf(':');
    if (i > 0) headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
  }
  return { raw, status: Number(statusLine.split(' ')[1] ?? 0), headers, body: end === -1 ? '' : raw.slice(end + 4) };
}

/** Write `payload`, read until the proxy closes; the whole answer. */
function exchange(socketPath: string, payload: string | Buffer): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ path: socketPath });
    let raw = '';
    s.setEncoding('latin1');
    s.on('data', (d: string) => {
      raw += d;
    });
    s.on('error', (err: NodeJS.ErrnoException) => {
      // A reset after the answer arrived is still an answer.
      if (raw) resolve(parseReply(raw));
      else reject(err);
    });
    s.on('close', () => resolve(parseReply(raw)));
    s.write(payload);
  });
}

/** A connection whose incoming bytes can be awaited piecewise. */
class Conn {
  readonly socket: net.Socket;
  data = '';
  ended = false;
  closed: Promise<void>;
  constructor(socketPath: string) {
    this.socket = net.connect({ path: socketPath });
    this.socket.setEncoding('latin1');
    this.socket.on('data', (d: string) => {
      this.data += d;
    });
    this.socket.on('error', () => undefined);
    this.socket.on('end', () => {
      this.ended = true;
    });
    this.closed = new Promise((r) => this.socket.once('close', () => r()));
  }
  static async open(socketPath: string): Promise<Conn> {
    const c = new Conn(socketPath);
    await new Promise<void>((resolve, reject) => {
      c.socket.once('connect', resolve);
      c.socket.once('error', reject);
    });
    return c;
  }
  waitFor(text: string): Promise<void> {
    return until(`${JSON.stringify(text)} from the proxy`, async () => this.data.includes(text), 5_000).then(() => undefined);
  }
}

const CONNECTED = 'HTTP/1.1 200 Connection Established\r\n\r\n';

// ---------------------------------------------------------------------------

let dir: string;
let echo: { port: number; server: net.Server };
let origin: Awaited<ReturnType<typeof httpOrigin>>;
let dead: number;

beforeAll(async () => {
  echo = await echoServer();
  origin = await httpOrigin();
  // A port with nothing listening on it.
  const tmp = net.createServer();
  await new Promise<void>((r) => tmp.listen(0, '127.0.0.1', r));
  dead = (tmp.address() as net.AddressInfo).port;
  await closeServer(tmp);
});
afterAll(async () => {
  await closeServer(echo.server);
  await closeServer(origin.server);
});

let proxies: Array<{ close(): Promise<void> }> = [];
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'loki-egress-'));
  origin.requests.length = 0;
});
afterEach(async () => {
  await Promise.all(proxies.map((p) => p.close()));
  proxies = [];
  rmSync(dir, { recursive: true, force: true });
});

/** Test names → addresses; anything else fails to resolve (never real DNS). */
const NAMES: Record<string, string[]> = {
  'echo.test': ['127.0.0.1'],
  'web.test': ['127.0.0.1'],
  'a.svc.test': ['127.0.0.1'],
  'deep.a.svc.test': ['127.0.0.1'],
  'svc.test': ['127.0.0.1'],
  'loopy.test': ['127.0.0.1'],
  'mapped.test': ['::ffff:127.0.0.1'],
  'mixed.test': ['93.184.216.34', '10.0.0.5'],
  'metadata.test': ['169.254.169.254'],
  'public.test': ['93.184.216.34'],
};

async function start(patch: Partial<EgressProxyOptions> = {}) {
  const decisions: EgressDecision[] = [];
  const lookups: string[] = [];
  const socketPath = path.join(dir, 'run', 'egress.sock');
  const proxy = await startEgressProxy({
    socketPath,
    allow: [`echo.test:${echo.port}`, `web.test:${origin.port}`, `*.svc.test:${echo.port}`],
    privateDestinations: [`127.0.0.1:${echo.port}`, `127.0.0.1:${origin.port}`],
    onDecision: (d) => decisions.push(d),
    resolve: async (host) => {
      lookups.push(host);
      const found = NAMES[host];
      if (!found) throw Object.assign(new Error(`ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
      return found;
    },
    ...patch,
  });
  proxies.push(proxy);
  return { proxy, decisions, lookups, socketPath };
}

/** The denial body for `rule` must be one line naming the destination. */
function expectDenied(r: Reply, status: number, rule: string, text: string) {
  expect(r.status).toBe(status);
  expect(r.headers['x-loki-egress-rule']).toBe(rule);
  expect(r.headers['content-type']).toBe('text/plain; charset=utf-8');
  expect(r.body).toBe(`${text}\n`);
  expect(r.headers['content-length']).toBe(String(Buffer.byteLength(r.body)));
}

describe('allowed destinations', () => {
  it('tunnels CONNECT both ways and reports exact byte counts at close', async () => {
    const { proxy, decisions, socketPath } = await start();
    const c = await Conn.open(socketPath);
    // Bytes sent together with the CONNECT head are forwarded too.
    c.socket.write(`CONNECT echo.test:${echo.port} HTTP/1.1\r\nHost: echo.test:${echo.port}\r\n\r\nearly-`);
    await c.waitFor(`${CONNECTED}early-`);
    c.socket.write('ping-0123456789');
    await c.waitFor('early-ping-0123456789');
    expect(decisions).toEqual([]);
    expect(proxy.stats()).toEqual({ allowed: 0, denied: 0, open: 1 });
    c.socket.end();
    await c.closed;
    expect(c.data).toBe(`${CONNECTED}early-ping-0123456789`);
    await until('the decision at close', async () => decisions.length === 1);
    expect(decisions[0]).toEqual({
      decision: 'allowed',
      host: 'echo.test',
      port: echo.port,
      rule: `allowlist:echo.test:${echo.port}`,
      address: '127.0.0.1',
      bytesUp: 21,
      bytesDown: 21,
      method: 'CONNECT',
    });
    await until('the connection to be counted closed', async () => proxy.stats().open === 0);
    expect(proxy.stats()).toEqual({ allowed: 1, denied: 0, open: 0 });
  });

  it('carries a large transfer both ways intact, with backpressure', async () => {
    const { decisions, socketPath } = await start();
    const size = 8 * 1024 * 1024;
    const payload = Buffer.alloc(size);
    for (let i = 0; i < size; i++) payload[i] = (i * 31 + (i >> 11)) & 0xff;
    const s = net.connect({ path: socketPath });
    const chunks: Buffer[] = [];
    let header = true;
    const done = new Promise<void>((resolve) => s.once('close', () => resolve()));
    s.on('data', (d: Buffer) => {
      if (header) {
        expect(d.toString('latin1')).toBe(CONNECTED);
        header = false;
        s.end(payload);
        return;
      }
      chunks.push(d);
    });
    s.write(`CONNECT echo.test:${echo.port} HTTP/1.1\r\n\r\n`);
    await done;
    expect(Buffer.concat(chunks).equals(payload)).toBe(true);
    await until('the decision', async () => decisions.length === 1);
    expect(decisions[0]).toMatchObject({ decision: 'allowed', bytesUp: size, bytesDown: size });
  });

  it('passes a half-close through: the origin still answers after the client finished sending', async () => {
    const { decisions, socketPath } = await start();
    const c = await Conn.open(socketPath);
    c.socket.write(`CONNECT 127.0.0.1:${echo.port} HTTP/1.1\r\n\r\n`);
    await c.waitFor(CONNECTED);
    c.socket.end('last words');
    await c.closed;
    expect(c.data).toBe(`${CONNECTED}last words`);
    await until('the decision', async () => decisions.length === 1);
    expect(decisions[0]).toMatchObject({ decision: 'allowed', rule: `private_destination:127.0.0.1:${echo.port}`, bytesUp: 10, bytesDown: 10 });
  });

  it('forwards absolute-form HTTP in origin-form, with Host rewritten and Proxy-* and hop-by-hop headers dropped', async () => {
    const { decisions, socketPath } = await start();
    const r = await exchange(
      socketPath,
      [
        `GET http://WEB.test:${origin.port}/hello?x=1 HTTP/1.1`,
        'Host: evil.example',
        'User-Agent: t',
        'Proxy-Authorization: Bearer s3cret-token',
        'Proxy-Connection: keep-alive',
        'Keep-Alive: timeout=5',
        'Connection: keep-alive, X-Hop',
        'X-Hop: drop me',
        'Accept: */*',
        '',
        '',
      ].join('\r\n'),
    );
    expect(r.status).toBe(200);
    expect(r.body).toBe('hello /hello?x=1');
    const expectedHead = [`GET /hello?x=1 HTTP/1.1`, `Host: web.test:${origin.port}`, 'User-Agent: t', 'Accept: */*', 'Connection: close'].join('\r\n');
    expect(origin.requests).toEqual([{ head: expectedHead, body: '' }]);
    await until('the decision', async () => decisions.length === 1);
    expect(decisions[0]).toEqual({
      decision: 'allowed',
      host: 'web.test',
      port: origin.port,
      rule: `allowlist:web.test:${origin.port}`,
      address: '127.0.0.1',
      bytesUp: Buffer.byteLength(`${expectedHead}\r\n\r\n`),
      bytesDown: Buffer.byteLength(r.raw),
      method: 'HTTP',
    });
    // Request headers (credentials) never reach the observer.
    expect(JSON.stringify(decisions)).not.toContain('s3cret');
  });

  it('forwards a request body and a path-less URL', async () => {
    const { socketPath } = await start();
    const r = await exchange(socketPath, `POST http://127.0.0.1:${origin.port}?q HTTP/1.0\r\nContent-Length: 5\r\n\r\nabcde`);
    expect(r.status).toBe(200);
    expect(origin.requests).toEqual([{ head: `POST /?q HTTP/1.0\r\nHost: 127.0.0.1:${origin.port}\r\nContent-Length: 5\r\nConnection: close`, body: 'abcde' }]);
  });

  it('one request per connection: a keep-alive answer is passed back as Connection: close, and a pipelined second request never leaves', async () => {
    // An origin that answers keep-alive although asked to close (as node:http does when
    // a handler sets the header), after an interim 100 Continue, then closes.
    let received = '';
    let sent = '';
    const answer = 'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok';
    const lying = net.createServer((sock) => {
      sock.on('error', () => undefined);
      sock.setEncoding('latin1');
      sock.on('data', (d: string) => {
        received += d;
        if (!received.includes('\r\n\r\nabcde') || sent) return;
        sent = answer;
        sock.write(answer);
        // Whatever else arrives in the meantime is recorded, then the origin closes.
        setTimeout(() => sock.end(), 100);
      });
    });
    await new Promise<void>((r) => lying.listen(0, '127.0.0.1', r));
    const port = (lying.address() as net.AddressInfo).port;
    try {
      const { decisions, socketPath } = await start({ allow: [`web.test:${port}`], privateDestinations: [`127.0.0.1:${port}`] });
      const first = `POST http://web.test:${port}/one HTTP/1.1\r\nHost: web.test\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nabcde`;
      const second = `POST http://evil.example/two HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyz`;
      const r = await exchange(socketPath, first + second);
      const forwardedHead = `POST /one HTTP/1.1\r\nHost: web.test:${port}\r\nContent-Length: 5\r\nConnection: close\r\n\r\n`;
      expect(received).toBe(`${forwardedHead}abcde`);
      expect(r.raw).toBe('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok');
      await until('the decision', async () => decisions.length === 1);
      // The counts are what the origin received and sent.
      expect(decisions[0]).toMatchObject({ decision: 'allowed', host: 'web.test', bytesUp: Buffer.byteLength(received), bytesDown: Buffer.byteLength(answer) });
    } finally {
      await closeServer(lying);
    }
  });

  it('closingResponseHead keeps a head that already closes and marks any other as closing', () => {
    const closing = 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close';
    expect(closingResponseHead(closing)).toBe(closing);
    expect(closingResponseHead('HTTP/1.1 204 No Content\r\nX-A: 1')).toBe('HTTP/1.1 204 No Content\r\nX-A: 1\r\nConnection: close');
    expect(closingResponseHead('HTTP/1.0 200 OK\r\nconnection : Keep-Alive\r\nkeep-alive: max=5\r\nProxy-Connection: keep-alive\r\nX-B: 2')).toBe(
      'HTTP/1.0 200 OK\r\nX-B: 2\r\nConnection: close',
    );
    expect(closingResponseHead('HTTP/1.1 200 OK\r\nConnection: close\r\nKeep-Alive: timeout=5')).toBe('HTTP/1.1 200 OK\r\nConnection: close');
  });

  it('resolves each name once, on the host, and connects to the address it checked', async () => {
    let calls = 0;
    const { decisions, socketPath } = await start({
      // A rebinding resolver: the second answer would be private.
      resolve: async () => (++calls === 1 ? ['127.0.0.1'] : ['10.9.9.9']),
    });
    const r = await exchange(socketPath, `GET http://web.test:${origin.port}/once HTTP/1.1\r\n\r\n`);
    expect(r.body).toBe('hello /once');
    expect(calls).toBe(1);
    await until('the decision', async () => decisions.length === 1);
    expect(decisions[0]).toMatchObject({ decision: 'allowed', address: '127.0.0.1' });
  });

  it('matches a wildcard against subdomains only, and only on its port', async () => {
    const { decisions, socketPath } = await start();
    for (const host of ['a.svc.test', 'deep.a.svc.test', 'A.Svc.Test.']) {
      const c = await Conn.open(socketPath);
      c.socket.write(`CONNECT ${host}:${echo.port} HTTP/1.1\r\n\r\n`);
      await c.waitFor(CONNECTED);
      c.socket.end();
      await c.closed;
    }
    await until('three decisions', async () => decisions.length === 3);
    expect(decisions.map((d) => [d.decision, d.host, d.rule])).toEqual([
      ['allowed', 'a.svc.test', `allowlist:*.svc.test:${echo.port}`],
      ['allowed', 'deep.a.svc.test', `allowlist:*.svc.test:${echo.port}`],
      ['allowed', 'a.svc.test', `allowlist:*.svc.test:${echo.port}`],
    ]);
    decisions.length = 0;
    for (const target of [`svc.test:${echo.port}`, `evilsvc.test:${echo.port}`, `a.svc.test:${origin.port}`]) {
      const r = await exchange(socketPath, `CONNECT ${target} HTTP/1.1\r\n\r\n`);
      expectDenied(r, 403, 'not_allowlisted', `loki egress: ${target} is not in the session's egress allowlist`);
    }
    expect(decisions.map((d) => `${d.decision} ${d.host}:${d.port} ${d.rule}`)).toEqual([
      `denied svc.test:${echo.port} not_allowlisted`,
      `denied evilsvc.test:${echo.port} not_allowlisted`,
      `denied a.svc.test:${origin.port} not_allowlisted`,
    ]);
  });
});

describe('denied destinations', () => {
  it('refuses a name that is not listed, without resolving it', async () => {
    const { proxy, decisions, lookups, socketPath } = await start();
    const r = await exchange(socketPath, 'CONNECT api.evil.com:443 HTTP/1.1\r\nHost: api.evil.com:443\r\n\r\n');
    expectDenied(r, 403, 'not_allowlisted', "loki egress: api.evil.com:443 is not in the session's egress allowlist");
    expect(decisions).toEqual([{ decision: 'denied', host: 'api.evil.com', port: 443, rule: 'not_allowlisted', method: 'CONNECT' }]);
    expect(lookups).toEqual([]);
    const h = await exchange(socketPath, 'GET http://api.evil.com/x HTTP/1.1\r\n\r\n');
    expectDenied(h, 403, 'not_allowlisted', "loki egress: api.evil.com:80 is not in the session's egress allowlist");
    expect(decisions[1]).toEqual({ decision: 'denied', host: 'api.evil.com', port: 80, rule: 'not_allowlisted', method: 'HTTP' });
    expect(proxy.stats()).toMatchObject({ allowed: 0, denied: 2 });
  });

  it('refuses an IP literal that is not listed, in any spelling', async () => {
    const { decisions, socketPath } = await start();
    const r = await exchange(socketPath, 'CONNECT 93.184.216.34:443 HTTP/1.1\r\n\r\n');
    expectDenied(r, 403, 'ip_literal', "loki egress: 93.184.216.34:443 is an IP address that is not in the session's egress allowlist");
    // Numeric spellings of 127.0.0.1 are IP literals too (and this port is not a private destination).
    for (const spelling of ['2130706433', '0x7f.1', '127.1', '[::ffff:127.0.0.1]']) {
      const x = await exchange(socketPath, `GET http://${spelling}:${dead}/ HTTP/1.1\r\n\r\n`);
      expect(x.status).toBe(403);
      expect(x.headers['x-loki-egress-rule']).toBe('ip_literal');
    }
    expect(decisions.map((d) => `${d.host} ${d.rule}`)).toEqual([
      '93.184.216.34 ip_literal',
      '127.0.0.1 ip_literal',
      '127.0.0.1 ip_literal',
      '127.0.0.1 ip_literal',
      '::ffff:7f00:1 ip_literal',
    ]);
  });

  it('refuses an allowlisted name that resolves to a private address (any of its addresses)', async () => {
    const { decisions, socketPath } = await start({
      allow: ['loopy.test:443', 'mapped.test:443', 'mixed.test:443', 'public.test:443'],
      privateDestinations: [],
    });
    const r = await exchange(socketPath, 'CONNECT loopy.test:443 HTTP/1.1\r\n\r\n');
    expectDenied(r, 403, 'private_address', 'loki egress: loopy.test:443 resolves to 127.0.0.1, a loopback address, which sessions may not reach');
    expect((await exchange(socketPath, 'CONNECT mapped.test:443 HTTP/1.1\r\n\r\n')).status).toBe(403);
    expect((await exchange(socketPath, 'CONNECT mixed.test:443 HTTP/1.1\r\n\r\n')).status).toBe(403);
    expect(decisions).toEqual([
      { decision: 'denied', host: 'loopy.test', port: 443, rule: 'private_address', address: '127.0.0.1', method: 'CONNECT' },
      { decision: 'denied', host: 'mapped.test', port: 443, rule: 'private_address', address: '::ffff:7f00:1', method: 'CONNECT' },
      { decision: 'denied', host: 'mixed.test', port: 443, rule: 'private_address', address: '10.0.0.5', method: 'CONNECT' },
    ]);
  });

  it('refuses a listed private address unless it is an operator private destination for that port', async () => {
    const { decisions, socketPath } = await start({
      allow: ['loopy.test:443', `10.1.2.3:80`, `loopy.test:${echo.port}`],
      privateDestinations: [`127.0.0.1:${echo.port}`],
    });
    expect((await exchange(socketPath, 'CONNECT 10.1.2.3:80 HTTP/1.1\r\n\r\n')).status).toBe(403);
    // The name's entry is allowlisted and its address is listed for this port: allowed.
    const c = await Conn.open(socketPath);
    c.socket.write(`CONNECT loopy.test:${echo.port} HTTP/1.1\r\n\r\n`);
    await c.waitFor(CONNECTED);
    c.socket.end();
    await c.closed;
    await until('two decisions', async () => decisions.length === 2);
    expect(decisions.map((d) => `${d.decision} ${d.host} ${d.rule}`)).toEqual([
      'denied 10.1.2.3 private_address',
      `allowed loopy.test allowlist:loopy.test:${echo.port}`,
    ]);
  });

  it('never reaches the metadata address 169.254.169.254:80', async () => {
    const listed = await start({ allow: ['169.254.169.254:80', 'metadata.test:80'] });
    const direct = await exchange(listed.socketPath, 'GET http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\n\r\n');
    expectDenied(direct, 403, 'private_address', 'loki egress: 169.254.169.254:80 is a link-local address, which sessions may not reach');
    const named = await exchange(listed.socketPath, 'CONNECT metadata.test:80 HTTP/1.1\r\n\r\n');
    expectDenied(named, 403, 'private_address', 'loki egress: metadata.test:80 resolves to 169.254.169.254, a link-local address, which sessions may not reach');
    await listed.proxy.close();
    const unlisted = await start();
    const r = await exchange(unlisted.socketPath, 'CONNECT 169.254.169.254:80 HTTP/1.1\r\n\r\n');
    expect(r.headers['x-loki-egress-rule']).toBe('ip_literal');
    expect([...listed.decisions, ...unlisted.decisions].map((d) => `${d.decision} ${d.rule} ${d.address ?? '-'}`)).toEqual([
      'denied private_address 169.254.169.254',
      'denied private_address 169.254.169.254',
      'denied ip_literal -',
    ]);
  });

  it('answers 502 when a name does not resolve or an allowed destination does not answer', async () => {
    const { decisions, socketPath } = await start({
      allow: ['nowhere.test:443', `echo.test:${dead}`],
      privateDestinations: [`127.0.0.1:${dead}`],
    });
    const r = await exchange(socketPath, 'CONNECT nowhere.test:443 HTTP/1.1\r\n\r\n');
    expectDenied(r, 502, 'resolve_failed', 'loki egress: nowhere.test:443 could not be resolved');
    const d = await exchange(socketPath, `CONNECT echo.test:${dead} HTTP/1.1\r\n\r\n`);
    expect(d.status).toBe(502);
    expect(d.body).toBe(`loki egress: echo.test:${dead} could not be reached\n`);
    expect(decisions).toEqual([
      { decision: 'denied', host: 'nowhere.test', port: 443, rule: 'resolve_failed', method: 'CONNECT' },
      {
        decision: 'allowed',
        host: 'echo.test',
        port: dead,
        rule: `allowlist:echo.test:${dead}`,
        address: '127.0.0.1',
        bytesUp: 0,
        bytesDown: 0,
        method: 'CONNECT',
        error: 'connect_failed: ECONNREFUSED',
      },
    ]);
  });
});

describe('malformed and hostile input', () => {
  const bad: Array<[string, string | Buffer, number]> = [
    ['garbage', 'garbage\r\n\r\n', 400],
    ['origin-form (not a proxy request)', 'GET / HTTP/1.1\r\nHost: web.test\r\n\r\n', 400],
    ['https:// absolute-form', 'GET https://web.test/ HTTP/1.1\r\n\r\n', 400],
    ['userinfo', 'GET http://u:p@web.test/ HTTP/1.1\r\n\r\n', 400],
    ['CONNECT without port', 'CONNECT web.test HTTP/1.1\r\n\r\n', 400],
    ['CONNECT port 0', 'CONNECT web.test:0 HTTP/1.1\r\n\r\n', 400],
    ['CONNECT port 99999', 'CONNECT web.test:99999 HTTP/1.1\r\n\r\n', 400],
    ['HTTP/2 version', 'CONNECT web.test:443 HTTP/2.0\r\n\r\n', 400],
    ['missing version', 'CONNECT web.test:443\r\n\r\n', 400],
    ['two spaces', 'GET  http://web.test/ HTTP/1.1\r\n\r\n', 400],
    ['header without colon', 'CONNECT web.test:443 HTTP/1.1\r\nbroken\r\n\r\n', 400],
    ['obs-fold', 'CONNECT web.test:443 HTTP/1.1\r\nX: a\r\n  b\r\n\r\n', 400],
    ['bare LF in a header', 'CONNECT web.test:443 HTTP/1.1\r\nX: a\nY: b\r\n\r\n', 400],
    ['NUL in the target', 'CONNECT web\0.test:443 HTTP/1.1\r\n\r\n', 400],
    ['CL and TE together', 'POST http://web.test/ HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n', 400],
    ['two Content-Lengths', 'POST http://web.test/ HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n', 400],
    ['bad host chars', 'CONNECT we$b.test:443 HTTP/1.1\r\n\r\n', 400],
    ['host with an empty label', 'CONNECT web..test:443 HTTP/1.1\r\n\r\n', 400],
    ['bracketed non-IPv6', 'CONNECT [web.test]:443 HTTP/1.1\r\n\r\n', 400],
    ['IPv6 zone', 'CONNECT [fe80::1%25eth0]:443 HTTP/1.1\r\n\r\n', 400],
    ['binary', Buffer.from([0xff, 0xfe, 0x00, 0x01, 0x0d, 0x0a, 0x0d, 0x0a]), 400],
    ['a head over 16 KiB', `GET http://web.test/ HTTP/1.1\r\nX: ${'a'.repeat(17 * 1024)}\r\n\r\n`, 431],
    ['16 KiB without a blank line', 'A'.repeat(17 * 1024), 431],
  ];

  it.each(bad)('%s → %i, and the proxy keeps serving', async (_name, payload, status) => {
    const { proxy, decisions, socketPath } = await start();
    const r = await exchange(socketPath, payload);
    expect(r.status).toBe(status);
    expect(r.headers['x-loki-egress-rule']).toBe(status === 431 ? 'header_too_large' : 'bad_request');
    expect(r.body).toMatch(/^loki egress: [^\n]+\n$/);
    expect(decisions).toEqual([{ decision: 'denied', host: '', port: 0, rule: status === 431 ? 'header_too_large' : 'bad_request', method: expect.any(String) }]);
    const ok = await exchange(socketPath, `GET http://web.test:${origin.port}/after HTTP/1.1\r\n\r\n`);
    expect(ok.body).toBe('hello /after');
    await until('the connections to close', async () => proxy.stats().open === 0);
  });

  it('survives fuzzed requests (random bytes and mutated valid requests)', async () => {
    const { proxy, socketPath } = await start({ headerTimeoutMs: 100 });
    let seed = 0x1234abcd;
    const rand = () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed / 0x7fffffff;
    };
    const valid = Buffer.from(`GET http://web.test:${origin.port}/f?x=1 HTTP/1.1\r\nHost: web.test\r\nX-A: b\r\n\r\n`);
    const statuses = new Set<number>();
    for (let i = 0; i < 150; i++) {
      let payload: Buffer;
      if (i % 2 === 0) {
        payload = Buffer.from(Array.from({ length: 1 + Math.floor(rand() * 300) }, () => Math.floor(rand() * 256)));
        if (rand() < 0.7) payload = Buffer.concat([payload, Buffer.from('\r\n\r\n')]);
      } else {
        payload = Buffer.from(valid);
        for (let k = 0; k < 1 + Math.floor(rand() * 4); k++) payload[Math.floor(rand() * payload.length)] = Math.floor(rand() * 256);
      }
      const r = await exchange(socketPath, payload);
      statuses.add(r.status);
      expect([200, 400, 403, 408, 502]).toContain(r.status);
    }
    expect(statuses.has(400)).toBe(true);
    const ok = await exchange(socketPath, valid);
    expect(ok.body).toBe('hello /f?x=1');
    await until('the connections to close', async () => proxy.stats().open === 0);
  });

  it('parses a pathological header in linear time', async () => {
    const { socketPath } = await start();
    const started = Date.now();
    const r = await exchange(socketPath, `GET http://web.test:${origin.port}/ws HTTP/1.1\r\nX: a${' \t'.repeat(7_000)}b\r\n\r\n`);
    expect(r.body).toBe('hello /ws');
    expect(Date.now() - started).toBeLessThan(500);
  });

  it('answers 408 when the head does not arrive in time', async () => {
    const { decisions, socketPath } = await start({ headerTimeoutMs: 200 });
    const r = await exchange(socketPath, 'CONNECT web.test:443 HTTP/1.1\r\n');
    expect(r.status).toBe(408);
    expect(decisions).toEqual([]);
  });

  it('bounds concurrent connections', async () => {
    const { proxy, decisions, socketPath } = await start({ maxConnections: 2 });
    const a = await Conn.open(socketPath);
    const b = await Conn.open(socketPath);
    await until('two open connections', async () => proxy.stats().open === 2);
    const r = await exchange(socketPath, `CONNECT echo.test:${echo.port} HTTP/1.1\r\n\r\n`);
    expectDenied(r, 503, 'too_many_connections', 'loki egress: too many open connections for this session');
    expect(decisions).toEqual([{ decision: 'denied', host: '', port: 0, rule: 'too_many_connections', method: 'HTTP' }]);
    a.socket.destroy();
    b.socket.destroy();
    await until('the connections to close', async () => proxy.stats().open === 0);
    expect((await exchange(socketPath, `GET http://web.test:${origin.port}/x HTTP/1.1\r\n\r\n`)).status).toBe(200);
  });

  it('closes an idle tunnel and reports it', async () => {
    const { decisions, socketPath } = await start({ idleTimeoutMs: 300 });
    const c = await Conn.open(socketPath);
    c.socket.write(`CONNECT echo.test:${echo.port} HTTP/1.1\r\n\r\nabc`);
    await c.waitFor(`${CONNECTED}abc`);
    await c.closed;
    await until('the decision', async () => decisions.length === 1);
    expect(decisions[0]).toMatchObject({ decision: 'allowed', bytesUp: 3, bytesDown: 3 });
  });

  it('survives an observer that throws', async () => {
    const { socketPath } = await start({
      onDecision: () => {
        throw new Error('observer failed');
      },
    });
    expect((await exchange(socketPath, 'CONNECT api.evil.com:443 HTTP/1.1\r\n\r\n')).status).toBe(403);
    expect((await exchange(socketPath, `GET http://web.test:${origin.port}/y HTTP/1.1\r\n\r\n`)).status).toBe(200);
  });
});

describe('the socket and its lifecycle', () => {
  it('creates the socket 0666 in a 0755 directory', async () => {
    const { socketPath } = await start();
    expect(lstatSync(socketPath).isSocket()).toBe(true);
    expect(lstatSync(socketPath).mode & 0o777).toBe(0o666);
    expect(lstatSync(path.dirname(socketPath)).mode & 0o777).toBe(0o755);
  });

  it('close() ends open tunnels, reports them, and removes the socket and its directory', async () => {
    const { proxy, decisions, socketPath } = await start();
    const c = await Conn.open(socketPath);
    c.socket.write(`CONNECT echo.test:${echo.port} HTTP/1.1\r\n\r\nxy`);
    await c.waitFor(`${CONNECTED}xy`);
    // One more connection still in its head.
    const idle = await Conn.open(socketPath);
    await until('two open connections', async () => proxy.stats().open === 2);
    await proxy.close();
    expect(decisions).toEqual([
      { decision: 'allowed', host: 'echo.test', port: echo.port, rule: `allowlist:echo.test:${echo.port}`, address: '127.0.0.1', bytesUp: 2, bytesDown: 2, method: 'CONNECT' },
    ]);
    expect(proxy.stats()).toEqual({ allowed: 1, denied: 0, open: 0 });
    expect(existsSync(socketPath)).toBe(false);
    expect(existsSync(path.dirname(socketPath))).toBe(false);
    await c.closed;
    await idle.closed;
    await expect(Conn.open(socketPath)).rejects.toMatchObject({ code: 'ENOENT' });
    await proxy.close();
  });

  it('close() while a name is being resolved leaves nothing behind', async () => {
    let release: (v: string[]) => void = () => undefined;
    const { proxy, decisions, socketPath } = await start({ resolve: () => new Promise<string[]>((r) => (release = r)) });
    const c = await Conn.open(socketPath);
    c.socket.write(`CONNECT echo.test:${echo.port} HTTP/1.1\r\n\r\n`);
    await until('the resolution to start', async () => proxy.stats().open === 1);
    await new Promise((r) => setTimeout(r, 50));
    await proxy.close();
    release(['127.0.0.1']);
    await c.closed;
    expect(c.data).toBe('');
    expect(decisions).toEqual([]);
    expect(existsSync(socketPath)).toBe(false);
  });

  it('replaces a stale socket but refuses to clobber another file', async () => {
    const socketPath = path.join(dir, 'run', 'egress.sock');
    mkdirSync(path.dirname(socketPath), { mode: 0o755 });
    // A socket file left by a process that died without closing its listener.
    const died = spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(socketPath)}, () => process.exit(0))`]);
    expect(died.status).toBe(0);
    expect(lstatSync(socketPath).isSocket()).toBe(true);
    const { proxy } = await start();
    expect((await exchange(socketPath, `GET http://web.test:${origin.port}/z HTTP/1.1\r\n\r\n`)).status).toBe(200);
    await proxy.close();
    // The directory was there before: it stays, the socket goes.
    expect(existsSync(socketPath)).toBe(false);
    expect(existsSync(path.dirname(socketPath))).toBe(true);

    writeFileSync(socketPath, 'not a socket');
    await expect(start()).rejects.toThrow(/not a socket/);
    expect(readFileSync(socketPath, 'utf8')).toBe('not a socket');
    rmSync(socketPath);
    chmodSync(path.dirname(socketPath), 0o777);
    await expect(start()).rejects.toThrow(/writable by others/);
  });

  it('refuses malformed list entries', async () => {
    for (const allow of [['example.com'], ['*.example.com'], ['example.com:0'], ['*.1.2.3.4:443'], ['http://x.com:80'], ['a b:80']]) {
      await expect(start({ allow })).rejects.toThrow(TypeError);
    }
    await expect(start({ privateDestinations: ['localhost:80'] })).rejects.toThrow(TypeError);
    expect(existsSync(path.join(dir, 'run'))).toBe(false);
  });
});

describe('address classification', () => {
  it.each([
    ['127.0.0.1', 'loopback'],
    ['127.255.255.254', 'loopback'],
    ['10.0.0.1', 'private'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['172.32.0.1', null],
    ['192.168.0.1', 'private'],
    ['169.254.169.254', 'link-local'],
    ['100.64.0.1', 'CGNAT'],
    ['100.127.255.255', 'CGNAT'],
    ['100.128.0.1', null],
    ['0.0.0.0', 'unspecified'],
    ['224.0.0.251', 'multicast'],
    ['255.255.255.255', 'reserved'],
    ['8.8.8.8', null],
    ['::', 'unspecified'],
    ['::1', 'loopback'],
    ['::ffff:127.0.0.1', 'loopback'],
    ['::ffff:a9fe:a9fe', 'link-local'],
    ['::ffff:8.8.8.8', null],
    ['fe80::1', 'link-local'],
    ['fd12:3456::1', 'private'],
    ['ff02::1', 'multicast'],
    ['64:ff9b::a00:1', 'private'],
    ['2002:c0a8:101::1', 'private'],
    ['2606:4700:4700::1111', null],
  ])('%s → %s', (ip, kind) => {
    expect(specialAddress(ip)).toBe(kind);
  });
});

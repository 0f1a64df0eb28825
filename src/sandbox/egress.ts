/**
 * The egress allowlist of one sandboxed session: an HTTP proxy on the host that
 * listens on a Unix socket, bind-mounted into a container that has no network of
 * its own (`NetworkMode: none`). Inside, `loki-forward` (scripts/forwarder) listens
 * on 127.0.0.1:3128 and pipes each connection here; the agent gets
 * `HTTP_PROXY`/`HTTPS_PROXY=http://127.0.0.1:3128`. Nothing else leaves the container.
 *
 * Each request is decided in one order: parse → the name (or IP literal) against the
 * session's list → resolve on the host → refuse if any resolved address is loopback,
 * link-local, private, CGNAT, multicast, unspecified or reserved (unless that exact
 * `ip:port` is one of the operator's private destinations) → connect to an address
 * that was checked. There is no second resolution, so DNS rebinding cannot move an
 * allowed connection somewhere else. `CONNECT host:port` opens a tunnel (HTTPS is
 * never inspected: the decision is made on the CONNECT target); absolute-form plain
 * HTTP is rewritten to origin-form, `Proxy-*` and hop-by-hop headers are dropped and
 * one request is sent with `Connection: close`. Its answer is passed back marked
 * `Connection: close` too (an origin answering keep-alive would otherwise invite the
 * client to send its next request down a connection decided for this one), and what
 * the client sends past a request framed by Content-Length is dropped.
 *
 * The proxy logs nothing; every decision goes to `onDecision`, without request
 * headers (they may carry credentials). A denial is answered at once (403 for the
 * policy, 400/431/502/503 for the rest) with a one-line text body and an
 * `X-Loki-Egress-Rule` header; it never throws on what a client sends.
 */
import { promises as dns } from 'node:dns';
import { chmodSync, lstatSync, mkdirSync, rmdirSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';

export interface EgressDecision {
  decision: 'allowed' | 'denied';
  /** Canonical destination host (lower case; an IPv6 literal without brackets); '' when the request could not be parsed. */
  host: string;
  port: number;
  /**
   * Allowed: `allowlist:<entry>` or `private_destination:<ip:port>`. Denied:
   * `not_allowlisted`, `ip_literal`, `private_address`, `resolve_failed`,
   * `bad_request`, `header_too_large`, `too_many_connections`.
   */
  rule: string;
  /** Allowed: the address connected to (or last tried). `private_address`: the address refused. */
  address?: string;
  /** Allowed, at close: bytes sent to the destination (for plain HTTP including the rewritten request head). */
  bytesUp?: number;
  /** Allowed, at close: bytes received from the destination. */
  bytesDown?: number;
  method: 'CONNECT' | 'HTTP';
  /** Allowed by the policy but the destination could not be reached (`connect_failed: ECONNREFUSED`, `connect_timeout`). */
  error?: string;
}

export interface EgressProxyOptions {
  /** Unix socket to listen on; made 0666. Its directory is created 0755 when missing. */
  socketPath: string;
  /** `host:port`, `*.domain:port` (any subdomain, not the apex), `ip:port` or `[ipv6]:port`. */
  allow: string[];
  /** Exact `ip:port` entries the operator allows although private or loopback. */
  privateDestinations: string[];
  /** Once per denied request; once per allowed connection, at its close, with bytes each way. */
  onDecision(d: EgressDecision): void;
  /** Default: `dns.promises.lookup(host, { all: true })`. */
  resolve?: (host: string) => Promise<string[]>;
  /** Concurrent client connections (default 64); beyond it a connection is answered 503. */
  maxConnections?: number;
  /** An open connection with no traffic either way is closed after this (default 5 min). */
  idleTimeoutMs?: number;
  /** The request head must arrive within this (default 30 s). */
  headerTimeoutMs?: number;
  /** Bounds the resolution and each connection attempt (default 10 s). */
  connectTimeoutMs?: number;
}

export interface EgressProxy {
  close(): Promise<void>;
  socketPath: string;
  stats(): { allowed: number; denied: number; open: number };
}

export const EGRESS_MAX_HEADER_BYTES = 16 * 1024;
export const EGRESS_DEFAULT_MAX_CONNECTIONS = 64;
export const EGRESS_DEFAULT_IDLE_TIMEOUT_MS = 5 * 60_000;
const DEFAULT_HEADER_TIMEOUT_MS = 30_000;
const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
/** How long a denied client may take to read its answer before it is cut off. */
const LINGER_MS = 5_000;
/** Resolved addresses tried, in order, before giving up. */
const MAX_CONNECT_ATTEMPTS = 3;
/** Linux `sun_path` is 108 bytes with the terminating NUL. */
const MAX_SOCKET_PATH_BYTES = 107;

// ---------------------------------------------------------------------------
// Addresses

type Bytes = number[];

function parseIPv4(s: string): Bytes | null {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return null;
  const b = m.slice(1).map(Number);
  return b.every((x) => x <= 255) ? b : null;
}

/** 16 bytes of an IPv6 address (zone ids refused). */
function parseIPv6(s: string): Bytes | null {
  if (!net.isIPv6(s) || s.includes('%')) return null;
  let text = s;
  const tail: number[] = [];
  const v4 = /:(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})$/.exec(text);
  if (v4) {
    const b = parseIPv4(v4[1]!);
    if (!b) return null;
    tail.push((b[0]! << 8) | b[1]!, (b[2]! << 8) | b[3]!);
    // Keep a `::` that precedes the dotted quad, drop a single `:`.
    const prefix = text.slice(0, v4.index + 1);
    text = prefix.endsWith('::') ? prefix : prefix.slice(0, -1);
  }
  const halves = text.split('::');
  if (halves.length > 2) return null;
  const groups = (h: string | undefined) => (h ? h.split(':').filter((g) => g !== '') : []);
  const left = groups(halves[0]).map((g) => Number.parseInt(g, 16));
  const right = [...groups(halves[1]).map((g) => Number.parseInt(g, 16)), ...tail];
  const fill = 8 - left.length - right.length;
  if (fill < 0 || (halves.length === 1 && fill !== 0)) return null;
  const all = [...left, ...new Array<number>(fill).fill(0), ...right];
  if (all.length !== 8 || all.some((g) => !Number.isInteger(g) || g < 0 || g > 0xffff)) return null;
  return all.flatMap((g) => [g >> 8, g & 0xff]);
}

function inPrefix(addr: Bytes, prefix: Bytes, bits: number): boolean {
  for (let i = 0; i < bits; i++) {
    const byte = i >> 3;
    const mask = 0x80 >> (i & 7);
    if (((addr[byte] ?? 0) & mask) !== ((prefix[byte] ?? 0) & mask)) return false;
  }
  return true;
}

const V4_SPECIAL: Array<[Bytes, number, string]> = [
  [[0, 0, 0, 0], 8, 'unspecified'],
  [[10, 0, 0, 0], 8, 'private'],
  [[100, 64, 0, 0], 10, 'CGNAT'],
  [[127, 0, 0, 0], 8, 'loopback'],
  [[169, 254, 0, 0], 16, 'link-local'],
  [[172, 16, 0, 0], 12, 'private'],
  [[192, 0, 0, 0], 24, 'reserved'],
  [[192, 168, 0, 0], 16, 'private'],
  [[198, 18, 0, 0], 15, 'reserved'],
  [[224, 0, 0, 0], 4, 'multicast'],
  [[240, 0, 0, 0], 4, 'reserved'],
];

const v6 = (s: string) => parseIPv6(s)!;
const V6_SPECIAL: Array<[Bytes, number, string]> = [
  [v6('::'), 128, 'unspecified'],
  [v6('::1'), 128, 'loopback'],
  [v6('64:ff9b:1::'), 48, 'reserved'],
  [v6('100::'), 64, 'reserved'],
  [v6('2001::'), 32, 'reserved'],
  [v6('2001:db8::'), 32, 'reserved'],
  [v6('fc00::'), 7, 'private'],
  [v6('fe80::'), 10, 'link-local'],
  [v6('fec0::'), 10, 'private'],
  [v6('ff00::'), 8, 'multicast'],
];

/** An IPv4 address carried inside an IPv6 one (mapped, compatible, NAT64, 6to4). */
function embeddedIPv4(b: Bytes): Bytes | null {
  if (inPrefix(b, v6('::ffff:0:0'), 96) || inPrefix(b, v6('64:ff9b::'), 96) || inPrefix(b, v6('::'), 96)) return b.slice(12);
  if (inPrefix(b, v6('2002::'), 16)) return b.slice(2, 6);
  return null;
}

/** Why an address may not be reached without the operator's say-so, or null for a public one. */
export function specialAddress(ip: string): string | null {
  const b4 = parseIPv4(ip);
  if (b4) return V4_SPECIAL.find(([p, bits]) => inPrefix(b4, p, bits))?.[2] ?? null;
  const b6 = parseIPv6(ip);
  if (!b6) return 'invalid';
  for (const [p, bits, kind] of V6_SPECIAL) if (inPrefix(b6, p, bits)) return kind;
  const inner = embeddedIPv4(b6);
  if (inner) return specialAddress(inner.join('.'));
  return null;
}

/** Canonical text of an IP (IPv6 compressed, lower case), or null. */
function canonicalIP(ip: string): string | null {
  if (parseIPv4(ip)) return ip.split('.').map(Number).join('.');
  if (!parseIPv6(ip)) return null;
  return new URL(`http://[${ip}]/`).hostname.slice(1, -1);
}

/** `1.2.3.4:80`, `[::1]:80`, `name:443`. */
function hostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** The keys under which an address appears in `privateDestinations` (an IPv4-mapped address also as IPv4). */
function addressKeys(ip: string, port: number): string[] {
  const canon = canonicalIP(ip);
  if (!canon) return [];
  const keys = [hostPort(canon, port)];
  const b6 = parseIPv6(canon);
  if (b6 && inPrefix(b6, v6('::ffff:0:0'), 96)) keys.push(hostPort(b6.slice(12).join('.'), port));
  return keys;
}

// ---------------------------------------------------------------------------
// Names and the list

interface Target {
  host: string;
  port: number;
  /** 0: a DNS name. */
  ip: 0 | 4 | 6;
}

const NAME_CHARS = /^[A-Za-z0-9._-]{1,253}$/;

/**
 * Canonical destination host: an IP (the WHATWG parser turns `0x7f.1` and
 * `2130706433` into `127.0.0.1`, so no numeric spelling slips past the IP rules) or a
 * lower-case DNS name without its trailing dot. Null when malformed.
 */
function canonicalHost(raw: string): Omit<Target, 'port'> | null {
  if (raw.startsWith('[') && raw.endsWith(']')) {
    const canon = canonicalIP(raw.slice(1, -1));
    return canon?.includes(':') ? { host: canon, ip: 6 } : null;
  }
  if (!NAME_CHARS.test(raw)) return null;
  let host: string;
  try {
    host = new URL(`http://${raw}/`).hostname;
  } catch {
    return null;
  }
  if (net.isIPv4(host)) return { host, ip: 4 };
  if (host.endsWith('.')) host = host.slice(0, -1);
  const labels = host.split('.');
  if (host.length === 0 || host.length > 253) return null;
  if (labels.some((l) => l.length === 0 || l.length > 63 || !/^[a-z0-9_-]+$/.test(l))) return null;
  // A name whose last label is a number is an IP in disguise.
  if (/^(\d+|0x[0-9a-f]*)$/.test(labels[labels.length - 1]!)) return null;
  return { host, ip: 0 };
}

function parsePort(s: string): number | null {
  if (!/^\d{1,5}$/.test(s)) return null;
  const n = Number(s);
  return n >= 1 && n <= 65535 ? n : null;
}

/** `host:port` / `[v6]:port` → target, or null. */
function parseAuthority(s: string, defaultPort: number | null): Target | null {
  const m = /^(\[[0-9A-Fa-f:.]+\]|[^:[\]]+)(?::(\d+))?$/.exec(s);
  if (!m) return null;
  const port = m[2] === undefined ? defaultPort : parsePort(m[2]);
  if (port === null) return null;
  const h = canonicalHost(m[1]!);
  return h ? { ...h, port } : null;
}

interface Policy {
  /** `host:port` (canonical) → the entry as written. */
  exact: Map<string, string>;
  wildcards: Array<{ suffix: string; port: number; entry: string }>;
  privateDestinations: Set<string>;
}

function compilePolicy(allow: readonly string[], privateDestinations: readonly string[]): Policy {
  const policy: Policy = { exact: new Map(), wildcards: [], privateDestinations: new Set() };
  for (const raw of allow) {
    const entry = String(raw).trim().toLowerCase();
    const wildcard = entry.startsWith('*.');
    const t = parseAuthority(wildcard ? entry.slice(2) : entry, null);
    if (!t || (wildcard && t.ip !== 0)) throw new TypeError(`egress allowlist entry ${JSON.stringify(raw)} is not host:port or *.domain:port`);
    if (wildcard) policy.wildcards.push({ suffix: `.${t.host}`, port: t.port, entry });
    else policy.exact.set(hostPort(t.host, t.port), entry);
  }
  for (const raw of privateDestinations) {
    const t = parseAuthority(String(raw).trim().toLowerCase(), null);
    if (!t || t.ip === 0) throw new TypeError(`egress private destination ${JSON.stringify(raw)} is not ip:port`);
    for (const key of addressKeys(t.host, t.port)) policy.privateDestinations.add(key);
  }
  return policy;
}

function matchAllowlist(policy: Policy, t: Target): string | null {
  const exact = policy.exact.get(hostPort(t.host, t.port));
  if (exact) return exact;
  if (t.ip !== 0) return null;
  return policy.wildcards.find((w) => w.port === t.port && t.host.endsWith(w.suffix) && t.host.length > w.suffix.length)?.entry ?? null;
}

// ---------------------------------------------------------------------------
// Requests

type Method = 'CONNECT' | 'HTTP';

interface Parsed {
  method: Method;
  target: Target;
  /** Plain HTTP: the request head to send upstream. */
  head?: string;
  /** Plain HTTP: the body's length (no body: 0); null when chunked (forwarded as it comes). */
  bodyBytes?: number | null;
}

class BadRequest extends Error {}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const REQUEST_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+) ([\x21-\x7e]+) (HTTP\/1\.[01])$/;
/** Never forwarded: hop-by-hop, proxy credentials, and Host (rewritten from the target). */
const DROPPED = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'upgrade', 'host']);
/** Framing headers a `Connection` token must not remove. */
const KEPT = new Set(['content-length', 'transfer-encoding']);

/** Without leading and trailing spaces and tabs. */
function trimOWS(s: string): string {
  let a = 0;
  let b = s.length;
  while (a < b && (s[a] === ' ' || s[a] === '\t')) a++;
  while (b > a && (s[b - 1] === ' ' || s[b - 1] === '\t')) b--;
  return s.slice(a, b);
}

function parseHead(head: string): Parsed {
  const lines = head.split('\r\n');
  if (lines.some((l) => /[\r\n\0]/.test(l))) throw new BadRequest('bare CR, LF or NUL');
  const m = REQUEST_LINE.exec(lines[0]!);
  if (!m) throw new BadRequest('bad request line');
  const [, method, target, version] = m as unknown as [string, string, string, string];
  const headers: Array<[string, string]> = [];
  for (const line of lines.slice(1)) {
    // Split by hand: a regex with optional whitespace on both ends of the value is quadratic.
    const colon = line.indexOf(':');
    const name = colon === -1 ? '' : line.slice(0, colon);
    if (!TOKEN.test(name)) throw new BadRequest('bad header line');
    const value = trimOWS(line.slice(colon + 1));
    if (/[\x00-\x08\x0a-\x1f\x7f]/.test(value)) throw new BadRequest('control character in a header');
    headers.push([name, value]);
  }

  if (method === 'CONNECT') {
    const t = parseAuthority(target, null);
    if (!t) throw new BadRequest('CONNECT needs host:port');
    return { method: 'CONNECT', target: t };
  }

  const u = /^http:\/\/([^/?#\\@]+)([/?][^#\\]*)?$/i.exec(target);
  if (!u) throw new BadRequest('only CONNECT and absolute http:// URLs are proxied');
  const t = parseAuthority(u[1]!, 80);
  if (!t) throw new BadRequest('bad host in the URL');
  let pathPart = u[2] ?? '/';
  if (pathPart.startsWith('?')) pathPart = `/${pathPart}`;

  const lower = headers.map(([n]) => n.toLowerCase());
  const contentLengths = new Set(headers.filter((_, i) => lower[i] === 'content-length').map(([, v]) => v));
  const chunked = lower.includes('transfer-encoding');
  if (contentLengths.size > 1 || (chunked && contentLengths.size > 0)) throw new BadRequest('ambiguous message length');
  for (const v of contentLengths) if (!/^\d{1,15}$/.test(v)) throw new BadRequest('bad Content-Length');
  const named = new Set(
    headers
      .filter((_, i) => lower[i] === 'connection')
      .flatMap(([, v]) => v.split(','))
      .map((s) => s.trim().toLowerCase())
      .filter((s) => s !== '' && !KEPT.has(s)),
  );
  const authority = t.port === 80 ? (t.ip === 6 ? `[${t.host}]` : t.host) : hostPort(t.host, t.port);
  const out = [`${method} ${pathPart} ${version}`, `Host: ${authority}`];
  headers.forEach(([name, value], i) => {
    const n = lower[i]!;
    if (DROPPED.has(n) || n.startsWith('proxy-') || named.has(n)) return;
    out.push(`${name}: ${value}`);
  });
  out.push('Connection: close');
  const [length] = contentLengths;
  return { method: 'HTTP', target: t, head: `${out.join('\r\n')}\r\n\r\n`, bodyBytes: chunked ? null : length === undefined ? 0 : Number(length) };
}

/** Headers that keep a connection open (or name what does). */
const CONNECTION_HEADER = /^(?:connection|keep-alive|proxy-connection)[ \t]*:/i;

/**
 * A response head (without its blank line) marked `Connection: close`: the proxy
 * forwards one request per connection, so the client must not send another down it.
 * A head that already says `close` and nothing else about the connection is kept as is.
 */
export function closingResponseHead(head: string): string {
  const lines = head.split('\r\n');
  const fields = lines.slice(1);
  const conn = fields.filter((l) => CONNECTION_HEADER.test(l));
  if (conn.length === 1 && /^connection[ \t]*:[ \t]*close[ \t]*$/i.test(conn[0]!)) return head;
  return [lines[0]!, ...fields.filter((l) => !CONNECTION_HEADER.test(l)), 'Connection: close'].join('\r\n');
}

/** The biggest response head rewritten; a larger one (or anything not HTTP/1.x) is passed through untouched. */
const MAX_RESPONSE_HEAD_BYTES = 64 * 1024;

/**
 * Rewrites the upstream's response heads with `closingResponseHead` as the bytes
 * arrive: interim 1xx heads pass unchanged, the final head is rewritten, then
 * everything after it passes through.
 */
function responseHeadRewriter(): { push(chunk: Buffer): Buffer; flush(): Buffer } {
  let pending: Buffer = Buffer.alloc(0);
  let done = false;
  return {
    push(chunk: Buffer): Buffer {
      if (done) return chunk;
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      const out: Buffer[] = [];
      for (;;) {
        // Not an HTTP/1.x response (as far as it arrived): passed through untouched.
        if (!'HTTP/1.'.startsWith(pending.subarray(0, 7).toString('latin1'))) {
          done = true;
          break;
        }
        const end = pending.indexOf('\r\n\r\n');
        if (end === -1) {
          if (pending.length > MAX_RESPONSE_HEAD_BYTES) done = true;
          break;
        }
        const head = pending.subarray(0, end).toString('latin1');
        const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0);
        if (status >= 100 && status < 200 && status !== 101) {
          out.push(pending.subarray(0, end + 4));
          pending = pending.subarray(end + 4);
          continue;
        }
        out.push(status === 0 || status === 101 ? pending.subarray(0, end + 4) : Buffer.from(`${closingResponseHead(head)}\r\n\r\n`, 'latin1'));
        pending = pending.subarray(end + 4);
        done = true;
        break;
      }
      if (done) {
        out.push(pending);
        pending = Buffer.alloc(0);
      }
      return out.length === 1 ? out[0]! : Buffer.concat(out);
    },
    flush(): Buffer {
      const rest = pending;
      pending = Buffer.alloc(0);
      done = true;
      return rest;
    },
  };
}

function response(status: number, reason: string, rule: string, text: string): string {
  const body = `${text}\n`;
  return [
    `HTTP/1.1 ${status} ${reason}`,
    'Content-Type: text/plain; charset=utf-8',
    `Content-Length: ${Buffer.byteLength(body)}`,
    'Connection: close',
    `X-Loki-Egress-Rule: ${rule}`,
    '',
    body,
  ].join('\r\n');
}

type Verdict =
  | { ok: true; rule: string; addresses: string[] }
  | { ok: false; rule: string; status: number; reason: string; text: string; address?: string };

class Aborted extends Error {}

// ---------------------------------------------------------------------------
// The proxy

async function defaultResolve(host: string): Promise<string[]> {
  const found = await dns.lookup(host, { all: true, verbatim: true });
  return found.map((a) => a.address);
}

/** Make the socket's directory (0755, when missing) and clear a stale socket. Returns whether the directory was made. */
function prepareSocketPath(socketPath: string): boolean {
  if (!path.isAbsolute(socketPath)) throw new TypeError(`egress socket path must be absolute: ${socketPath}`);
  if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH_BYTES) throw new TypeError(`egress socket path is longer than ${MAX_SOCKET_PATH_BYTES} bytes: ${socketPath}`);
  const dir = path.dirname(socketPath);
  let created = false;
  try {
    lstatSync(dir);
  } catch {
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    chmodSync(dir, 0o755);
    created = true;
  }
  const st = lstatSync(dir);
  if (!st.isDirectory()) throw new Error(`egress socket directory is not a directory (or is a symlink): ${dir}`);
  if ((st.mode & 0o022) !== 0) throw new Error(`egress socket directory is writable by others: ${dir}`);
  let existing: ReturnType<typeof lstatSync> | null = null;
  try {
    existing = lstatSync(socketPath);
  } catch {
    existing = null;
  }
  if (existing) {
    if (!existing.isSocket()) throw new Error(`egress socket path exists and is not a socket: ${socketPath}`);
    unlinkSync(socketPath);
  }
  return created;
}

/** Resolves once `s` has emitted 'close'. */
function whenClosed(s: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    if (s.closed) resolve();
    else s.once('close', () => resolve());
  });
}

export async function startEgressProxy(o: EgressProxyOptions): Promise<EgressProxy> {
  const policy = compilePolicy(o.allow, o.privateDestinations);
  const resolveName = o.resolve ?? defaultResolve;
  const maxConnections = o.maxConnections ?? EGRESS_DEFAULT_MAX_CONNECTIONS;
  const idleTimeoutMs = o.idleTimeoutMs ?? EGRESS_DEFAULT_IDLE_TIMEOUT_MS;
  const headerTimeoutMs = o.headerTimeoutMs ?? DEFAULT_HEADER_TIMEOUT_MS;
  const connectTimeoutMs = o.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  const socketPath = path.resolve(o.socketPath);

  const createdDir = prepareSocketPath(socketPath);
  const sockets = new Set<net.Socket>();
  const active = new Set<Promise<void>>();
  const counts = { allowed: 0, denied: 0, open: 0 };
  const closing = new AbortController();

  const report = (d: EgressDecision) => {
    if (d.decision === 'allowed') counts.allowed++;
    else counts.denied++;
    try {
      o.onDecision(d);
    } catch {
      // A failing observer must not take the proxy down.
    }
  };

  const track = (s: net.Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
    s.on('error', () => undefined);
  };

  /** Answer and close; keep reading (and discarding) so the answer is not lost to a reset. */
  const refuse = (client: net.Socket, text: string) => {
    if (client.destroyed) return;
    client.removeAllListeners('data');
    client.on('data', () => undefined);
    client.resume();
    client.end(text);
    setTimeout(() => client.destroy(), LINGER_MS).unref();
  };

  /** `p`, bounded by `ms` and by the proxy's close (which rejects with `Aborted`). */
  const bounded = <T>(p: Promise<T>, ms: number, what: string): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const onAbort = () => reject(new Aborted('proxy closed'));
      const timer = setTimeout(() => reject(new Error(what)), ms);
      timer.unref();
      const settle = () => {
        clearTimeout(timer);
        closing.signal.removeEventListener('abort', onAbort);
      };
      if (closing.signal.aborted) onAbort();
      closing.signal.addEventListener('abort', onAbort, { once: true });
      p.then(
        (v) => {
          settle();
          resolve(v);
        },
        (err) => {
          settle();
          reject(err);
        },
      );
    });

  const decide = async (t: Target): Promise<Verdict> => {
    const hp = hostPort(t.host, t.port);
    const denyPrivate = (address: string, kind: string, named: boolean): Verdict => ({
      ok: false,
      rule: 'private_address',
      status: 403,
      reason: 'Forbidden',
      address,
      text: named
        ? `loki egress: ${hp} resolves to ${address}, a ${kind} address, which sessions may not reach`
        : `loki egress: ${hp} is a ${kind} address, which sessions may not reach`,
    });

    if (t.ip !== 0) {
      const keys = addressKeys(t.host, t.port);
      const listed = matchAllowlist(policy, t);
      const privateOk = keys.some((k) => policy.privateDestinations.has(k));
      if (!listed && !privateOk) {
        return { ok: false, rule: 'ip_literal', status: 403, reason: 'Forbidden', text: `loki egress: ${hp} is an IP address that is not in the session's egress allowlist` };
      }
      const kind = specialAddress(t.host);
      if (kind && !privateOk) return denyPrivate(t.host, kind, false);
      return { ok: true, rule: privateOk ? `private_destination:${keys[0]}` : `allowlist:${listed}`, addresses: [t.host] };
    }

    const entry = matchAllowlist(policy, t);
    if (!entry) return { ok: false, rule: 'not_allowlisted', status: 403, reason: 'Forbidden', text: `loki egress: ${hp} is not in the session's egress allowlist` };
    let addresses: string[];
    try {
      const found = await bounded(Promise.resolve().then(() => resolveName(t.host)), connectTimeoutMs, 'resolution timed out');
      if (!Array.isArray(found) || found.length === 0) throw new Error('no address');
      const canon = found.map((a) => (typeof a === 'string' ? canonicalIP(a) : null));
      if (canon.some((a) => a === null)) throw new Error('not an address');
      addresses = [...new Set(canon as string[])];
    } catch (err) {
      if (err instanceof Aborted) throw err;
      return { ok: false, rule: 'resolve_failed', status: 502, reason: 'Bad Gateway', text: `loki egress: ${hp} could not be resolved` };
    }
    // Every address is checked, not only the one used: the name must not lead anywhere private.
    for (const address of addresses) {
      const kind = specialAddress(address);
      if (kind && !addressKeys(address, t.port).some((k) => policy.privateDestinations.has(k))) return denyPrivate(address, kind, true);
    }
    return { ok: true, rule: `allowlist:${entry}`, addresses };
  };

  /** Connect to the first checked address that answers (by address: no second resolution). */
  const connectUpstream = async (addresses: string[], port: number): Promise<{ socket: net.Socket | null; address: string; error?: string }> => {
    let error = 'connect_failed';
    let address = addresses[0]!;
    for (const a of addresses.slice(0, MAX_CONNECT_ATTEMPTS)) {
      address = a;
      const s = net.connect({ host: a, port, allowHalfOpen: true });
      track(s);
      try {
        await bounded(
          new Promise<void>((resolve, reject) => {
            s.once('connect', resolve);
            s.once('error', reject);
          }),
          connectTimeoutMs,
          'connect_timeout',
        );
        return { socket: s, address: a };
      } catch (err) {
        s.destroy();
        if (err instanceof Aborted) throw err;
        const code = (err as NodeJS.ErrnoException).code;
        error = code ? `connect_failed: ${code}` : (err as Error).message;
      }
    }
    return { socket: null, address, error };
  };

  /**
   * Pipe both ways (half-closes passed on) until both sockets are closed; the byte
   * counts (up: what was forwarded; down: what the destination sent). Plain HTTP:
   * `upLimit` bytes more of the client's are forwarded at most (null: no limit), and
   * the response head is marked as closing the connection.
   */
  const splice = async (
    client: net.Socket,
    upstream: net.Socket,
    sentUp: number,
    http?: { upLimit: number | null },
  ): Promise<{ up: number; down: number }> => {
    let up = sentUp;
    let down = 0;
    let remaining = http ? http.upLimit : null;
    const rewriter = http ? responseHeadRewriter() : null;
    const both = Promise.all([whenClosed(client), whenClosed(upstream)]);
    const teardown = () => {
      client.destroy();
      upstream.destroy();
    };
    client.once('close', teardown);
    upstream.once('close', teardown);
    client.on('data', (c: Buffer) => {
      let chunk = c;
      if (remaining !== null) {
        // Past the one request: dropped, never sent to a destination decided for another.
        chunk = c.subarray(0, remaining);
        remaining -= chunk.length;
        if (chunk.length === 0) return;
      }
      up += chunk.length;
      if (!upstream.write(chunk)) client.pause();
    });
    upstream.on('drain', () => client.resume());
    upstream.on('data', (c: Buffer) => {
      down += c.length;
      const out = rewriter ? rewriter.push(c) : c;
      if (out.length > 0 && !client.write(out)) upstream.pause();
    });
    client.on('drain', () => upstream.resume());
    client.once('end', () => upstream.end());
    upstream.once('end', () => {
      const rest = rewriter?.flush();
      if (rest && rest.length > 0) client.write(rest);
      client.end();
    });
    client.setTimeout(idleTimeoutMs, teardown);
    upstream.setTimeout(idleTimeoutMs, teardown);
    if (client.destroyed || upstream.destroyed || closing.signal.aborted) teardown();
    client.resume();
    await both;
    return { up, down };
  };

  const serve = async (client: net.Socket, head: string, rest: Buffer): Promise<void> => {
    let req: Parsed;
    try {
      req = parseHead(head);
    } catch (err) {
      const why = err instanceof BadRequest ? err.message : 'unparseable';
      report({ decision: 'denied', host: '', port: 0, rule: 'bad_request', method: head.startsWith('CONNECT ') ? 'CONNECT' : 'HTTP' });
      refuse(client, response(400, 'Bad Request', 'bad_request', `loki egress: malformed proxy request (${why})`));
      return;
    }
    const { target, method } = req;
    const verdict = await decide(target);
    if (!verdict.ok) {
      report({ decision: 'denied', host: target.host, port: target.port, rule: verdict.rule, method, ...(verdict.address ? { address: verdict.address } : {}) });
      refuse(client, response(verdict.status, verdict.reason, verdict.rule, verdict.text));
      return;
    }
    // The agent went away while its request was decided: nothing to connect.
    if (client.destroyed) return;
    const conn = await connectUpstream(verdict.addresses, target.port);
    const base = { decision: 'allowed' as const, host: target.host, port: target.port, rule: verdict.rule, method, address: conn.address };
    if (!conn.socket) {
      report({ ...base, bytesUp: 0, bytesDown: 0, error: conn.error });
      refuse(client, response(502, 'Bad Gateway', verdict.rule, `loki egress: ${hostPort(target.host, target.port)} could not be reached`));
      return;
    }
    const upstream = conn.socket;
    let sentUp = 0;
    if (method === 'CONNECT') {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
    } else {
      const h = Buffer.from(req.head!, 'latin1');
      upstream.write(h);
      sentUp += h.length;
    }
    // Bytes the client sent after the head (a body, or an eager TLS ClientHello); for
    // plain HTTP no more than the request's body.
    let upLimit = method === 'HTTP' ? (req.bodyBytes ?? null) : null;
    const early = upLimit === null ? rest : rest.subarray(0, upLimit);
    if (upLimit !== null) upLimit -= early.length;
    if (early.length > 0) {
      upstream.write(early);
      sentUp += early.length;
    }
    const bytes = await splice(client, upstream, sentUp, method === 'HTTP' ? { upLimit } : undefined);
    report({ ...base, bytesUp: bytes.up, bytesDown: bytes.down });
  };

  /** The request head (up to the blank line) and what followed it; null when the connection was answered or went away. */
  const readHead = (client: net.Socket) =>
    new Promise<{ head: string; rest: Buffer } | null>((resolve) => {
      let buf: Buffer = Buffer.alloc(0);
      const stop = () => {
        clearTimeout(timer);
        client.off('data', onData);
        client.off('end', onEnd);
        client.off('close', onClose);
      };
      const timer = setTimeout(() => {
        stop();
        refuse(client, response(408, 'Request Timeout', 'header_timeout', 'loki egress: the request head did not arrive in time'));
        resolve(null);
      }, headerTimeoutMs);
      timer.unref();
      const onEnd = () => {
        stop();
        client.destroy();
        resolve(null);
      };
      const onClose = () => {
        stop();
        resolve(null);
      };
      const onData = (chunk: Buffer) => {
        buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
        const end = buf.indexOf('\r\n\r\n');
        if (end === -1 ? buf.length > EGRESS_MAX_HEADER_BYTES : end + 4 > EGRESS_MAX_HEADER_BYTES) {
          stop();
          const method = buf.subarray(0, 8).toString('latin1') === 'CONNECT ' ? 'CONNECT' : 'HTTP';
          report({ decision: 'denied', host: '', port: 0, rule: 'header_too_large', method });
          refuse(client, response(431, 'Request Header Fields Too Large', 'header_too_large', `loki egress: the request head is larger than ${EGRESS_MAX_HEADER_BYTES} bytes`));
          resolve(null);
          return;
        }
        if (end === -1) return;
        stop();
        client.pause();
        resolve({ head: buf.subarray(0, end).toString('latin1'), rest: Buffer.from(buf.subarray(end + 4)) });
      };
      client.on('data', onData);
      client.once('end', onEnd);
      client.once('close', onClose);
    });

  const handle = async (client: net.Socket): Promise<void> => {
    track(client);
    counts.open++;
    const closed = whenClosed(client).then(() => {
      counts.open--;
    });
    if (closing.signal.aborted) {
      client.destroy();
    } else if (counts.open > maxConnections) {
      report({ decision: 'denied', host: '', port: 0, rule: 'too_many_connections', method: 'HTTP' });
      refuse(client, response(503, 'Service Unavailable', 'too_many_connections', 'loki egress: too many open connections for this session'));
    } else {
      const got = await readHead(client);
      if (got) {
        await serve(client, got.head, got.rest).catch(() => {
          client.destroy();
        });
      }
    }
    await closed;
  };

  const server = net.createServer({ allowHalfOpen: true });
  server.on('connection', (client) => {
    const p = handle(client);
    active.add(p);
    void p.finally(() => active.delete(p));
  });

  const removeFiles = () => {
    try {
      unlinkSync(socketPath);
    } catch {}
    if (createdDir) {
      try {
        rmdirSync(path.dirname(socketPath));
      } catch {}
    }
  };

  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, () => {
        server.off('error', reject);
        resolve();
      });
    });
    // uid 1000 in the container must be able to connect; the directory (0755) keeps it from being replaced.
    chmodSync(socketPath, 0o666);
  } catch (err) {
    server.close();
    removeFiles();
    throw err;
  }
  server.on('error', () => undefined);

  let closed: Promise<void> | null = null;
  const close = (): Promise<void> => {
    if (closed) return closed;
    closing.abort();
    closed = (async () => {
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sockets) s.destroy();
      await stopped;
      await Promise.allSettled([...active]);
      removeFiles();
    })();
    return closed;
  };

  return { close, socketPath, stats: () => ({ ...counts }) };
}

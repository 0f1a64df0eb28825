/**
 * Forwarding audit events to syslog (RFC 5424), over UDP (RFC 5426, one message
 * per datagram) or TCP / TLS (RFC 6587 / RFC 5425 octet-counting framing). The
 * message body is selectable (`LOKI_AUDIT_SYSLOG_FORMAT`, docs/siem.md): RFC 5424
 * structured data plus a text summary, an ECS JSON event, or a CEF event.
 *
 * Forwarding is best effort by design and never slows a request: `send` formats
 * and enqueues synchronously and returns; a bounded queue absorbs outages, and
 * what does not fit is dropped and counted (the audit database, not syslog, is
 * the record of truth). TCP cannot tell which bytes the peer received before a
 * connection broke, so a message in flight at that moment may be lost or, rarely,
 * delivered twice.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import os from 'node:os';
import tls from 'node:tls';
import { redactString, redactValue } from '../util/redact';
import { VERSION } from '../version';
import { cefBody, jsonBody, ocsfBody, type SiemEvent, withoutDetails } from './siem';

export type SyslogProto = 'udp' | 'tcp' | 'tls';
/** The MSG part: RFC 5424 structured data + text (default), an ECS JSON event, a CEF event, or an OCSF 1.1 event. */
export type SyslogFormat = 'rfc5424' | 'json' | 'cef' | 'ocsf';
export type SyslogSeverity = 'warning' | 'info';
export type StructuredValue = string | number | boolean | null;

export interface SyslogEntry {
  severity: SyslogSeverity;
  /** RFC 5424 MSGID, e.g. the audit action (`auth.failure`). */
  msgid: string;
  message: string;
  /** Rendered as `[loki@32473 key="value" ...]` (the SD-ID is configurable). */
  structured?: Record<string, StructuredValue>;
  /**
   * SD-PARAMs appended as they are, not redacted: public signed data only (a
   * checkpoint's JWS), which must arrive byte for byte to stay verifiable.
   */
  signed?: Record<string, string>;
  /** The message is public signed data (a C2SP checkpoint note): not redacted. */
  signedMessage?: boolean;
  /** The event for the `json` and `cef` formats (built only for them); without it those formats fall back to RFC 5424. */
  event?: () => SiemEvent;
}

export interface SyslogStats {
  /** Waiting to be written, including writes not yet flushed to the socket. */
  queued: number;
  sent: number;
  dropped: number;
  /** Always true for UDP. */
  connected: boolean;
}

export interface SyslogForwarder {
  /** Enqueue a message. Never blocks, never throws. */
  send(entry: SyslogEntry): void;
  stats(): SyslogStats;
  /** Flush what can be flushed (bounded by `closeTimeoutMs`), then close. Unsent messages count as dropped. */
  close(): Promise<void>;
}

export interface SyslogForwarderOptions {
  host: string;
  port: number;
  proto: SyslogProto;
  /** APP-NAME, default `loki`. */
  appName?: string;
  /** HOSTNAME, default `os.hostname()`. */
  hostname?: string;
  /** Messages held while the server is unreachable or slow; default 10,000. */
  maxQueue?: number;
  /** Longest message in bytes (rsyslog's default limit is 8 KB); the MSG part is cut to fit. Default 8,192. */
  maxMessageBytes?: number;
  /** Message body format; default `rfc5424`. */
  format?: SyslogFormat;
  /** The SD-ID of the structured-data element (`name@PEN`); default `SD_ID`. */
  sdId?: string;
  /** The product version in CEF headers; default `VERSION`. */
  version?: string;
  /**
   * TLS only. Certificates are verified unless `rejectUnauthorized` is explicitly
   * false; `ca` replaces the system CAs; `cert` and `key` (PEM) are the client
   * certificate for a server that requires one (mutual TLS).
   */
  tls?: {
    ca?: string | Buffer | Array<string | Buffer>;
    cert?: string | Buffer;
    key?: string | Buffer;
    rejectUnauthorized?: boolean;
    servername?: string;
  };
  /** Reconnect delay: doubles from `initialMs` (default 250) up to `maxMs` (default 30,000), with jitter. */
  backoff?: { initialMs?: number; maxMs?: number };
  /** Give up a connection attempt after this long; default 10,000 ms. */
  connectTimeoutMs?: number;
  /** How long `close` waits to flush; default 2,000 ms. */
  closeTimeoutMs?: number;
  /** Called once per outage (the first failure after a working connection, or the first attempt). */
  onError?: (err: Error) => void;
  /** Clock, for tests. */
  now?: () => Date;
}

/** Facility local0 (16). */
const FACILITY = 16;
const SEVERITY_CODE: Record<SyslogSeverity, number> = { warning: 4, info: 6 };
/**
 * The default SD-ID: name@private-enterprise-number. 32473 is the number RFC 5612
 * reserves for documentation: operators with their own IANA enterprise number
 * set `LOKI_AUDIT_SYSLOG_SDID` (docs/siem.md).
 */
export const SD_ID = 'loki@32473';

// ---------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------

/** RFC 5424 header fields: PRINTUSASCII (33–126), bounded, `-` when empty. */
function headerField(value: string, max: number): string {
  const clean = value.replace(/[^\x21-\x7e]/g, '_').slice(0, max);
  return clean.length > 0 ? clean : '-';
}

/** SD-NAME: PRINTUSASCII except `=`, space, `]` and `"`, at most 32 characters. */
function sdName(value: string): string {
  const clean = value.replace(/[^\x21-\x7e]|[=\]"]/g, '_').slice(0, 32);
  return clean.length > 0 ? clean : '_';
}

/** PARAM-VALUE: `"`, `\` and `]` must be escaped with a backslash. */
function sdValue(value: StructuredValue): string {
  return (value === null ? '' : String(value)).replace(/["\\\]]/g, '\\$&');
}

function structuredData(entry: SyslogEntry, sdId: string): string {
  if (!entry.structured && !entry.signed) return '-';
  const safe = redactValue(entry.structured ?? {});
  const params = [...Object.entries(safe), ...Object.entries(entry.signed ?? {})].map(([k, v]) => `${sdName(k)}="${sdValue(v)}"`);
  return `[${[sdId, ...params].join(' ')}]`;
}

/** Cut UTF-8 bytes to at most `max` without splitting a character. */
function truncateUtf8(bytes: Buffer, max: number): Buffer {
  if (bytes.length <= max) return bytes;
  let end = max;
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end);
}

export interface FormatOptions {
  appName: string;
  hostname: string;
  procId: string;
  timestamp: Date;
  maxMessageBytes: number;
  /** Default `rfc5424`. */
  format?: SyslogFormat;
  /** Default `SD_ID`. */
  sdId?: string;
  /** CEF header version; default `VERSION`. */
  version?: string;
}

/**
 * One RFC 5424 message: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD [MSG]`.
 * Every free-text part goes through the redaction helper (the checkpoint's
 * signed JWS and note excepted). With format `rfc5424`, if the message is too
 * long the MSG is cut; if even the header and structured data are, the
 * structured data is replaced by `-` rather than cut mid-element. With `json`,
 * `cef` and `ocsf` the SD is `-` and the MSG is the event; if it is too long the
 * details are left out (`details_truncated`), and only then is it cut.
 */
export function formatSyslogMessage(entry: SyslogEntry, o: FormatOptions): Buffer {
  const pri = FACILITY * 8 + SEVERITY_CODE[entry.severity];
  const head = [
    `<${pri}>1`,
    o.timestamp.toISOString(),
    headerField(o.hostname, 255),
    headerField(o.appName, 48),
    headerField(o.procId, 128),
    headerField(redactString(entry.msgid), 32),
  ].join(' ');
  const format = o.format ?? 'rfc5424';
  if (format !== 'rfc5424' && entry.event) {
    const event = entry.event();
    const body = (ev: SiemEvent) => (format === 'json' ? jsonBody(ev) : format === 'cef' ? cefBody(ev, o.version ?? VERSION) : ocsfBody(ev, o.version ?? VERSION));
    const render = (ev: SiemEvent) => Buffer.from(`${head} - ${body(ev)}`, 'utf8');
    const full = render(event);
    if (full.length <= o.maxMessageBytes) return full;
    return truncateUtf8(render(withoutDetails(event)), o.maxMessageBytes);
  }
  const msg = Buffer.from(entry.signedMessage ? entry.message : redactString(entry.message), 'utf8');
  for (const sd of [structuredData(entry, o.sdId ?? SD_ID), '-']) {
    const prefix = Buffer.from(`${head} ${sd}`, 'utf8');
    if (msg.length === 0 && prefix.length <= o.maxMessageBytes) return prefix;
    const room = o.maxMessageBytes - prefix.length - 1;
    if (room > 0) return Buffer.concat([prefix, Buffer.from(' '), truncateUtf8(msg, room)]);
  }
  return truncateUtf8(Buffer.from(`${head} -`, 'utf8'), o.maxMessageBytes);
}

// ---------------------------------------------------------------------------
// Severity
// ---------------------------------------------------------------------------

/**
 * Security-relevant audit actions, forwarded at severity warning (issue 4):
 * authentication failures, denied scopes, token creation and revocation, session
 * stop or kill, deletions, verification failures and insecure configuration.
 * Matched on the words of the action name (`auth.failure`, `scope.denied`,
 * `token.create`, `token.revoke`, `session.stop`, `session.kill`, `audit.prune`,
 * `audit.verify.failed`, `config.insecure` …) so the writer's naming can evolve.
 */
export function isSecuritySensitive(action: string): boolean {
  const words = new Set(action.toLowerCase().split(/[^a-z0-9]+/));
  const has = (...w: string[]) => w.some((x) => words.has(x));
  if (has('denied', 'deny', 'forbidden', 'insufficient')) return true;
  if (
    has('fail', 'failed', 'failure', 'invalid', 'unauthorized', 'tampered') &&
    has('auth', 'authn', 'authentication', 'login', 'token', 'oidc', 'verify', 'verification', 'integrity', 'checkpoint', 'signature')
  ) {
    return true;
  }
  if (has('token', 'tokens') && has('create', 'created', 'generate', 'generated', 'revoke', 'revoked', 'import', 'imported')) return true;
  if (has('session', 'sessions') && has('stop', 'stopped', 'kill', 'killed')) return true;
  if (has('delete', 'deleted', 'deletion', 'prune', 'pruned', 'purge', 'purged')) return true;
  if (has('insecure', 'wildcard')) return true;
  return false;
}

export function syslogSeverityFor(action: string): SyslogSeverity {
  return isSecuritySensitive(action) ? 'warning' : 'info';
}

// ---------------------------------------------------------------------------
// Transports
// ---------------------------------------------------------------------------

export function createSyslogForwarder(options: SyslogForwarderOptions): SyslogForwarder {
  const format: Omit<FormatOptions, 'timestamp'> = {
    appName: options.appName ?? 'loki',
    hostname: options.hostname ?? os.hostname(),
    procId: String(process.pid),
    maxMessageBytes: options.maxMessageBytes ?? 8192,
    format: options.format ?? 'rfc5424',
    sdId: options.sdId ?? SD_ID,
    version: options.version ?? VERSION,
  };
  const now = options.now ?? (() => new Date());
  const transport = options.proto === 'udp' ? udpTransport(options) : streamTransport(options);
  let closed = false;

  return {
    send(entry) {
      try {
        if (closed) {
          transport.drop();
          return;
        }
        transport.enqueue(formatSyslogMessage(entry, { ...format, timestamp: now() }));
      } catch {
        transport.drop();
      }
    },
    stats: () => transport.stats(),
    async close() {
      if (closed) return;
      closed = true;
      await transport.close(options.closeTimeoutMs ?? 2000);
    },
  };
}

interface Transport {
  enqueue(message: Buffer): void;
  drop(): void;
  stats(): SyslogStats;
  close(timeoutMs: number): Promise<void>;
}

function udpTransport(o: SyslogForwarderOptions): Transport {
  const maxQueue = o.maxQueue ?? 10_000;
  const socket = dgram.createSocket(net.isIPv6(o.host) ? 'udp6' : 'udp4');
  socket.on('error', (err) => o.onError?.(err));
  socket.unref();
  let inflight = 0;
  let sent = 0;
  let dropped = 0;
  let reported = false;
  let settle: (() => void) | null = null;

  return {
    enqueue(message) {
      if (inflight >= maxQueue) {
        dropped++;
        return;
      }
      inflight++;
      socket.send(message, o.port, o.host, (err) => {
        inflight--;
        if (err) {
          dropped++;
          if (!reported) o.onError?.(err);
          reported = true;
        } else {
          sent++;
          reported = false;
        }
        if (inflight === 0) settle?.();
      });
    },
    drop: () => void dropped++,
    stats: () => ({ queued: inflight, sent, dropped, connected: true }),
    async close(timeoutMs) {
      if (inflight > 0) await withTimeout(new Promise<void>((r) => (settle = r)), timeoutMs);
      dropped += inflight;
      inflight = 0;
      await new Promise<void>((r) => socket.close(() => r()));
    },
  };
}

function streamTransport(o: SyslogForwarderOptions): Transport {
  const maxQueue = o.maxQueue ?? 10_000;
  const initialMs = o.backoff?.initialMs ?? 250;
  const maxMs = o.backoff?.maxMs ?? 30_000;
  const connectTimeoutMs = o.connectTimeoutMs ?? 10_000;

  /** Framed messages (`LEN SP MSG`) not yet written. */
  let queue: Buffer[] = [];
  /** Written messages whose write failed when the connection broke: retried first. */
  let retry: Buffer[] = [];
  let inflight = 0;
  let sent = 0;
  let dropped = 0;
  let socket: net.Socket | null = null;
  let connected = false;
  let waitingForDrain = false;
  let attempts = 0;
  let timer: NodeJS.Timeout | null = null;
  let closing = false;
  let outageReported = false;
  let onIdle: (() => void) | null = null;
  /** Set once `close` has counted what is left; late write callbacks change nothing. */
  let finished = false;

  const frame = (message: Buffer) => Buffer.concat([Buffer.from(`${message.length} `), message]);

  function connect(): void {
    timer = null;
    if (closing) return;
    const s =
      o.proto === 'tls'
        ? tls.connect({
            host: o.host,
            port: o.port,
            ca: o.tls?.ca,
            cert: o.tls?.cert,
            key: o.tls?.key,
            rejectUnauthorized: o.tls?.rejectUnauthorized !== false,
            servername: o.tls?.servername ?? (net.isIP(o.host) ? undefined : o.host),
            minVersion: 'TLSv1.2',
          })
        : net.connect({ host: o.host, port: o.port });
    socket = s;
    s.setTimeout(connectTimeoutMs, () => {
      if (!connected) s.destroy(new Error(`syslog: connecting to ${o.host}:${o.port} timed out`));
    });
    s.once(o.proto === 'tls' ? 'secureConnect' : 'connect', () => {
      s.setTimeout(0);
      s.setKeepAlive(true, 30_000);
      s.setNoDelay(true);
      connected = true;
      attempts = 0;
      outageReported = false;
      flush();
    });
    s.on('drain', () => {
      waitingForDrain = false;
      flush();
    });
    // The server never sends anything; reading keeps an EOF from going unnoticed.
    s.on('data', () => {});
    s.on('error', (err) => {
      if (!outageReported && !closing) o.onError?.(err);
      outageReported = true;
    });
    s.on('close', () => {
      if (socket === s) socket = null;
      connected = false;
      waitingForDrain = false;
      if (!closing) scheduleReconnect();
    });
  }

  function scheduleReconnect(): void {
    if (timer || closing) return;
    const base = Math.min(maxMs, initialMs * 2 ** Math.min(attempts, 20));
    attempts++;
    const delay = base / 2 + Math.random() * (base / 2);
    timer = setTimeout(connect, delay);
    timer.unref();
  }

  function requeueFailed(): void {
    if (retry.length === 0) return;
    queue = [...retry, ...queue];
    retry = [];
    if (queue.length > maxQueue) {
      dropped += queue.length - maxQueue;
      queue = queue.slice(0, maxQueue);
    }
  }

  function flush(): void {
    requeueFailed();
    const s = socket;
    while (s && connected && !waitingForDrain && queue.length > 0) {
      const buf = queue.shift()!;
      inflight++;
      const ok = s.write(buf, (err) => {
        if (finished) return;
        inflight--;
        if (err) retry.push(buf);
        else sent++;
        if (inflight === 0 && queue.length === 0) onIdle?.();
      });
      if (!ok) waitingForDrain = true;
    }
    if (inflight === 0 && queue.length === 0) onIdle?.();
  }

  connect();

  return {
    enqueue(message) {
      if (queue.length + inflight + retry.length >= maxQueue) {
        dropped++;
        return;
      }
      queue.push(frame(message));
      if (connected && !waitingForDrain) flush();
    },
    drop: () => void dropped++,
    stats: () => ({ queued: queue.length + inflight + retry.length, sent, dropped, connected }),
    async close(timeoutMs) {
      closing = true; // no more reconnects; a live or starting connection may still flush
      if (timer) clearTimeout(timer);
      timer = null;
      const deadline = Date.now() + timeoutMs;
      const left = () => Math.max(0, deadline - Date.now());
      const s = socket;
      const pending = () => queue.length > 0 || inflight > 0 || retry.length > 0;
      if (s && !connected && pending()) {
        await withTimeout(
          new Promise<void>((r) => {
            s.once(o.proto === 'tls' ? 'secureConnect' : 'connect', () => r());
            s.once('close', () => r());
          }),
          left(),
        );
      }
      if (s && connected) {
        if (pending()) {
          await withTimeout(
            new Promise<void>((r) => {
              onIdle = r;
              flush();
            }),
            left(),
          );
        }
        const ended = new Promise<void>((r) => s.once('close', () => r()));
        s.end();
        await withTimeout(ended, left());
      }
      s?.destroy();
      finished = true;
      dropped += queue.length + retry.length + inflight;
      queue = [];
      retry = [];
      inflight = 0;
    },
  };
}

async function withTimeout(p: Promise<void>, ms: number): Promise<void> {
  let t: NodeJS.Timeout | undefined;
  await Promise.race([p, new Promise<void>((r) => (t = setTimeout(r, ms)))]);
  clearTimeout(t);
}

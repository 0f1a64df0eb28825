/**
 * A private rsyslogd for tests: foreground (`-n`), own config, work directory and
 * pid file in a temp dir, listening on 127.0.0.1 only, writing what it receives
 * to a file the test reads. Touches no system file.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import dgram from 'node:dgram';
import { existsSync, readdirSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { canConnect, completeLines, until } from './receiver';

export const RSYSLOGD = '/usr/sbin/rsyslogd';
const LOOPBACK = '127.0.0.1';

export interface RsyslogSupport {
  ok: boolean;
  /** The gtls network stream driver (Debian package rsyslog-gnutls) and openssl, needed for TLS. */
  tls: boolean;
  reason?: string;
  tlsReason?: string;
}

/** Whether rsyslogd (and its TLS driver) is installed here. */
export function rsyslogSupport(): RsyslogSupport {
  if (!existsSync(RSYSLOGD)) return { ok: false, tls: false, reason: `${RSYSLOGD} not found (Debian package rsyslog)` };
  const moduleDirs = ['/usr/lib/x86_64-linux-gnu/rsyslog', '/usr/lib/aarch64-linux-gnu/rsyslog', '/usr/lib/rsyslog', '/usr/lib64/rsyslog'];
  const gtls = moduleDirs.some((d) => existsSync(d) && readdirSync(d).includes('lmnsd_gtls.so'));
  if (!gtls) return { ok: true, tls: false, tlsReason: 'rsyslog gtls driver not found (Debian package rsyslog-gnutls)' };
  const openssl = spawnSync('openssl', ['version'], { stdio: 'ignore' }).status === 0;
  if (!openssl) return { ok: true, tls: false, tlsReason: 'openssl CLI not found (needed to make a test certificate)' };
  return { ok: true, tls: true };
}

/** A port nothing listens on right now (TCP and UDP both free). */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const port = await new Promise<number>((resolve, reject) => {
      const srv = net.createServer();
      srv.once('error', reject);
      srv.listen(0, LOOPBACK, () => {
        const { port } = srv.address() as net.AddressInfo;
        srv.close(() => resolve(port));
      });
    });
    const udpFree = await new Promise<boolean>((resolve) => {
      const s = dgram.createSocket('udp4');
      s.once('error', () => resolve(false));
      s.bind(port, LOOPBACK, () => s.close(() => resolve(true)));
    });
    if (udpFree) return port;
  }
  throw new Error('no free loopback port');
}

/** A self-signed certificate for 127.0.0.1 / localhost, valid one day. */
export function makeSelfSignedCert(dir: string): { certFile: string; keyFile: string } {
  const certFile = join(dir, 'cert.pem');
  const keyFile = join(dir, 'key.pem');
  const r = spawnSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      keyFile,
      '-out',
      certFile,
      '-days',
      '1',
      '-subj',
      '/CN=localhost',
      '-addext',
      'subjectAltName=IP:127.0.0.1,DNS:localhost',
    ],
    { encoding: 'utf8' },
  );
  if (r.status !== 0) throw new Error(`openssl failed: ${r.stderr}`);
  return { certFile, keyFile };
}

export interface ReceivedMessage {
  pri: number;
  timestamp: string;
  hostname: string;
  appName: string;
  procId: string;
  msgid: string;
  structuredData: string;
  /** rsyslog escapes control characters on receive (a newline arrives as `#012`). */
  msg: string;
  /** The input that received it: `udp`, `tcp` or `tls`. */
  input: string;
  raw: string;
}

const FIELDS = ['pri', 'timereported:::date-rfc3339', 'hostname', 'app-name', 'procid', 'msgid', 'structured-data', 'msg', 'inputname', 'rawmsg'];
const READY_APP = 'rsyslog-test-ready';

export interface RsyslogOptions {
  udp?: boolean;
  tcp?: boolean;
  tls?: boolean;
  /** Fixed ports (to listen where a client already points); free ones are picked otherwise. */
  ports?: { udp?: number; tcp?: number; tls?: number };
  /**
   * Also parse each message with rsyslog's own parsers (docs/siem.md formats):
   * mmjsonparse for a JSON body, mmnormalize with liblognorm's `cef` parser for
   * CEF, mmpstrucdata for RFC 5424 structured data; `parsed()` reads the result.
   */
  parse?: boolean;
}

/** One message as rsyslog's parsers left it: `$!all-json` (`cef`, `rfc5424-sd` or the JSON body's fields). */
export interface ParsedByRsyslog {
  msgid: string;
  parsed: Record<string, unknown>;
}

export interface Rsyslog {
  dir: string;
  ports: { udp?: number; tcp?: number; tls?: number };
  /** The CA (the self-signed certificate itself) when TLS is on. */
  caFile?: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Stop and remove the temp dir. */
  dispose(): Promise<void>;
  messages(): Promise<ReceivedMessage[]>;
  /** With `parse`: what rsyslog's parsers made of each message. */
  parsed(): Promise<ParsedByRsyslog[]>;
  /** Wait until at least `count` received messages satisfy `filter`. */
  waitFor(filter: (m: ReceivedMessage) => boolean, count?: number, timeoutMs?: number): Promise<ReceivedMessage[]>;
}

const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

export async function createRsyslog(options: RsyslogOptions): Promise<Rsyslog> {
  const dir = await mkdtemp(join(tmpdir(), 'loki-rsyslog-'));
  const work = join(dir, 'work');
  await mkdir(work);
  const outFile = join(dir, 'received.log');
  const ports: Rsyslog['ports'] = {};
  if (options.udp) ports.udp = options.ports?.udp ?? (await freePort());
  if (options.tcp) ports.tcp = options.ports?.tcp ?? (await freePort());
  if (options.tls) ports.tls = options.ports?.tls ?? (await freePort());
  const cert = options.tls ? makeSelfSignedCert(dir) : null;
  const parsedFile = join(dir, 'parsed.jsonl');
  const rulebase = join(dir, 'cef.rb');
  if (options.parse) await writeFile(rulebase, 'version=2\nrule=:%cef:cef%\n');

  const conf = [
    `global(workDirectory="${work}" maxMessageSize="64k"${
      cert
        ? ` defaultNetstreamDriverCAFile="${cert.certFile}" defaultNetstreamDriverCertFile="${cert.certFile}" defaultNetstreamDriverKeyFile="${cert.keyFile}"`
        : ''
    })`,
    options.udp ? 'module(load="imudp")' : '',
    options.tcp || options.tls ? 'module(load="imtcp")' : '',
    `template(name="received" type="string" string="${FIELDS.map((f) => `%${f}%`).join('\\t')}\\n")`,
    options.parse ? 'module(load="mmjsonparse")\nmodule(load="mmnormalize")\nmodule(load="mmpstrucdata")' : '',
    options.parse ? 'template(name="parsed" type="string" string="{\\"msgid\\":\\"%msgid:::json%\\",\\"parsed\\":%$!all-json%}\\n")' : '',
    'ruleset(name="received") {',
    `  if $app-name == "${READY_APP}" then { action(type="omfile" file="${join(dir, 'ready.log')}") stop }`,
    `  action(type="omfile" file="${outFile}" template="received")`,
    options.parse
      ? [
          `  if $msg startswith "CEF:" or $msg startswith " CEF:" then { action(type="mmnormalize" rulebase="${rulebase}") }`,
          '  else if $msg startswith "{" or $msg startswith " {" then { action(type="mmjsonparse" cookie="") }',
          '  else { action(type="mmpstrucdata") }',
          `  action(type="omfile" file="${parsedFile}" template="parsed")`,
        ].join('\n')
      : '',
    '}',
    ports.udp ? `input(type="imudp" address="${LOOPBACK}" port="${ports.udp}" ruleset="received" name="udp")` : '',
    ports.tcp ? `input(type="imtcp" address="${LOOPBACK}" port="${ports.tcp}" ruleset="received" name="tcp")` : '',
    ports.tls
      ? `input(type="imtcp" address="${LOOPBACK}" port="${ports.tls}" ruleset="received" name="tls" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")`
      : '',
    // rsyslog's own messages (e.g. a TLS probe without a handshake) go here, for debugging.
    `*.* action(type="omfile" file="${join(dir, 'rsyslogd.log')}")`,
  ]
    .filter(Boolean)
    .join('\n');
  const confFile = join(dir, 'rsyslog.conf');
  await writeFile(confFile, `${conf}\n`);

  let child: ChildProcess | null = null;
  let stderr = '';

  async function start(): Promise<void> {
    if (child) return;
    stderr = '';
    const c = spawn(RSYSLOGD, ['-n', '-f', confFile, '-i', join(dir, 'rsyslogd.pid')], { stdio: ['ignore', 'pipe', 'pipe'] });
    child = c;
    running.add(c);
    c.stdout?.on('data', (d: Buffer) => (stderr += d.toString()));
    c.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    c.once('exit', () => {
      running.delete(c);
      if (child === c) child = null;
    });
    const deadline = Date.now() + 15_000;
    const tcpPorts = [ports.tcp, ports.tls].filter((p): p is number => p !== undefined);
    for (const port of tcpPorts) await until(() => canConnect(port), deadline, () => `rsyslogd did not listen on ${port}: ${stderr}`);
    if (ports.udp) {
      const udpPort = ports.udp;
      await until(
        async () => {
          await sendUdp(udpPort, `<134>1 - - ${READY_APP} - - - probe`);
          return existsSync(join(dir, 'ready.log'));
        },
        deadline,
        () => `rsyslogd did not receive on udp ${udpPort}: ${stderr}`,
      );
    }
  }

  async function stop(): Promise<void> {
    const c = child;
    if (!c) return;
    const exited = new Promise<void>((r) => c.once('exit', () => r()));
    c.kill('SIGTERM');
    const timer = setTimeout(() => c.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }

  async function messages(): Promise<ReceivedMessage[]> {
    // Only complete lines: rsyslog may be in the middle of writing the last one.
    return (await completeLines(outFile)).map((line) => {
        const f = line.split('\t');
        return {
          pri: Number(f[0]),
          timestamp: f[1]!,
          hostname: f[2]!,
          appName: f[3]!,
          procId: f[4]!,
          msgid: f[5]!,
          structuredData: f[6]!,
          msg: f[7]!,
          input: f[8]!,
          raw: f.slice(9).join('\t'),
        };
      });
  }

  async function parsed(): Promise<ParsedByRsyslog[]> {
    return (await completeLines(parsedFile)).map((l) => JSON.parse(l) as ParsedByRsyslog);
  }

  await start();
  return {
    parsed,
    dir,
    ports,
    caFile: cert?.certFile,
    start,
    stop,
    async dispose() {
      await stop();
      await rm(dir, { recursive: true, force: true });
    },
    messages,
    async waitFor(filter, count = 1, timeoutMs = 10_000) {
      let found: ReceivedMessage[] = [];
      await until(
        async () => {
          found = (await messages()).filter(filter);
          return found.length >= count;
        },
        Date.now() + timeoutMs,
        () => `expected ${count} matching messages, got ${found.length}`,
      );
      return found;
    },
  };
}

function sendUdp(port: number, text: string): Promise<void> {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    s.send(Buffer.from(text), port, LOOPBACK, () => s.close(() => resolve()));
  });
}

/**
 * A private syslog-ng for tests, the second real receiver beside rsyslog
 * (test/helpers/rsyslog.ts): foreground (`-F`), own config, pid, persist and
 * control files in a temp dir, listening on 127.0.0.1 only (RFC 5424 over TCP,
 * and optionally TLS that requires a client certificate). Every message is
 * parsed by syslog-ng itself: `json-parser()` for JSON bodies (fields under
 * `json.`), the CEF header split by `csv-parser()` on `|` and the extension by
 * `kv-parser()` (fields under `cef.`), RFC 5424 structured data as `.SDATA.*` (`_SDATA` in the JSON);
 * and written to a file with `$(format-json)`, one JSON object per line.
 *
 * Debian's syslog-ng-core conflicts with rsyslog (both are the system log
 * daemon), so scripts/ci-deps.sh unpacks it into /opt/syslog-ng without
 * installing it; an installed /usr/sbin/syslog-ng is used when present.
 * syslog-ng 3.38 (Debian 12) has no `cef-parser()` (no syslog-ng-mod-* package
 * provides one), hence csv-parser + kv-parser: syslog-ng leaves CEF escapes
 * (`\=`, `\\`, `\n`) in the values as they were sent.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { canConnect, completeLines, until } from './receiver';
import { freePort } from './rsyslog';

const LOOPBACK = '127.0.0.1';
const UNPACKED = '/opt/syslog-ng';

function install(): { bin: string; lib: string | null; modules: string | null } | null {
  if (existsSync('/usr/sbin/syslog-ng')) return { bin: '/usr/sbin/syslog-ng', lib: null, modules: null };
  const bin = join(UNPACKED, 'usr/sbin/syslog-ng');
  const lib = join(UNPACKED, 'usr/lib/syslog-ng');
  if (!existsSync(bin) || !existsSync(lib)) return null;
  // The module directory is named after the version (3.38 in Debian 12).
  const version = readdirSync(lib).find((d) => /^\d+\.\d+$/.test(d));
  return version ? { bin, lib, modules: join(lib, version) } : null;
}

export interface SyslogNgSupport {
  ok: boolean;
  /** The openssl CLI (test certificates) for the TLS source. */
  tls: boolean;
  reason?: string;
}

export function syslogNgSupport(): SyslogNgSupport {
  if (!install()) return { ok: false, tls: false, reason: 'syslog-ng not found (scripts/ci-deps.sh unpacks Debian syslog-ng-core into /opt/syslog-ng)' };
  const openssl = spawnSync('openssl', ['version'], { stdio: 'ignore' }).status === 0;
  return { ok: true, tls: openssl, ...(openssl ? {} : { reason: 'openssl CLI not found' }) };
}

export interface TestPki {
  caFile: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
}

function openssl(args: string[]): void {
  const r = spawnSync('openssl', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl ${args[0]} failed: ${r.stderr}`);
}

/** A test CA, a server certificate for 127.0.0.1 / localhost and a client certificate, all signed by it, valid one day. */
export async function makeTestPki(dir: string): Promise<TestPki> {
  const f = (n: string) => join(dir, n);
  openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '1', '-subj', '/CN=loki-test-ca',
    '-addext', 'basicConstraints=critical,CA:true', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  const issue = async (name: string, subject: string, ext: string) => {
    await writeFile(f(`${name}.ext`), ext);
    openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', f(`${name}.key`), '-out', f(`${name}.csr`), '-subj', subject]);
    openssl(['x509', '-req', '-in', f(`${name}.csr`), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f(`${name}.pem`), '-days', '1', '-extfile', f(`${name}.ext`)]);
  };
  await issue('server', '/CN=localhost', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  await issue('client', '/CN=loki-test-client', 'extendedKeyUsage=clientAuth\n');
  return { caFile: f('ca.pem'), serverCert: f('server.pem'), serverKey: f('server.key'), clientCert: f('client.pem'), clientKey: f('client.key') };
}

/** One received message as syslog-ng parsed it (format-json of its name-value pairs). */
export interface ParsedMessage {
  MSGID?: string;
  PROGRAM?: string;
  PRIORITY?: string;
  FACILITY?: string;
  MESSAGE?: string;
  SOURCE?: string;
  /** json-parser() output: the ECS event, scalar leaves as strings. */
  json?: Record<string, unknown>;
  /** csv-parser + kv-parser output: header columns and extension keys. */
  cef?: Record<string, string>;
  /** RFC 5424 structured data: `.SDATA.<SD-ID>.<param>`, which format-json writes as `_SDATA`. */
  _SDATA?: Record<string, Record<string, unknown>>;
  [k: string]: unknown;
}

export interface SyslogNgOptions {
  /** A TLS source that requires a client certificate signed by the test CA. */
  tls?: boolean;
}

export interface SyslogNg {
  dir: string;
  ports: { tcp: number; tls?: number };
  pki?: TestPki;
  stop(): Promise<void>;
  dispose(): Promise<void>;
  messages(): Promise<ParsedMessage[]>;
  waitFor(filter: (m: ParsedMessage) => boolean, count?: number, timeoutMs?: number): Promise<ParsedMessage[]>;
  /** What syslog-ng printed (its own errors). */
  output(): string;
}

const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

const q = (s: string) => JSON.stringify(s);

export async function createSyslogNg(options: SyslogNgOptions = {}): Promise<SyslogNg> {
  const inst = install();
  if (!inst) throw new Error('syslog-ng not installed');
  const dir = await mkdtemp(join(tmpdir(), 'loki-syslog-ng-'));
  const outFile = join(dir, 'received.jsonl');
  const ports: SyslogNg['ports'] = { tcp: await freePort() };
  if (options.tls) ports.tls = await freePort();
  const pki = options.tls ? await makeTestPki(dir) : undefined;

  const conf = [
    '@version: 3.38',
    'options { stats_freq(0); keep_hostname(yes); };',
    `source s_tcp { syslog(ip(${q(LOOPBACK)}) port(${ports.tcp}) transport("tcp")); };`,
    pki
      ? `source s_tls { syslog(ip(${q(LOOPBACK)}) port(${ports.tls}) transport("tls") tls(key-file(${q(pki.serverKey)}) cert-file(${q(pki.serverCert)}) ca-file(${q(pki.caFile)}) peer-verify(required-trusted))); };`
      : '',
    'parser p_json { json-parser(prefix("json.")); };',
    'parser p_cef {',
    '  csv-parser(columns("version", "device_vendor", "device_product", "device_version", "device_event_class_id", "name", "severity", "extension")',
    '    delimiters(chars("|")) quote-pairs("") flags(greedy, escape-backslash) prefix("cef."));',
    `  kv-parser(prefix("cef.") template("\${cef.extension}"));`,
    '};',
    `destination d_file { file(${q(outFile)} template("$(format-json --scope rfc5424 --scope nv-pairs --exclude DATE --exclude LEGACY_MSGHDR)\\n")); };`,
    'log {',
    '  source(s_tcp);',
    pki ? '  source(s_tls);' : '',
    '  if (message("^CEF:0\\\\|")) { parser(p_cef); } elif (message("^\\\\{")) { parser(p_json); };',
    '  destination(d_file);',
    '};',
  ]
    .filter(Boolean)
    .join('\n');
  const confFile = join(dir, 'syslog-ng.conf');
  await writeFile(confFile, `${conf}\n`);

  let out = '';
  const args = [
    ...(inst.modules ? [`--module-path=${inst.modules}`] : []),
    '-F',
    '-f',
    confFile,
    '-p',
    join(dir, 'syslog-ng.pid'),
    '-R',
    join(dir, 'syslog-ng.persist'),
    '-c',
    join(dir, 'syslog-ng.ctl'),
  ];
  const env = { PATH: process.env.PATH ?? '', ...(inst.lib ? { LD_LIBRARY_PATH: inst.lib } : {}) };
  const child = spawn(inst.bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  running.add(child);
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((r) =>
    child.once('exit', () => {
      running.delete(child);
      r();
    }),
  );
  const deadline = Date.now() + 15_000;
  for (const port of [ports.tcp, ports.tls].filter((p): p is number => p !== undefined)) {
    await until(() => canConnect(port), deadline, () => `syslog-ng did not listen on ${port}: ${out}`, () => child.exitCode !== null);
  }

  async function messages(): Promise<ParsedMessage[]> {
    return (await completeLines(outFile)).map((l) => JSON.parse(l) as ParsedMessage);
  }

  async function stop(): Promise<void> {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }

  return {
    dir,
    ports,
    pki,
    stop,
    async dispose() {
      await stop();
      await rm(dir, { recursive: true, force: true });
    },
    messages,
    output: () => out,
    async waitFor(filter, count = 1, timeoutMs = 15_000) {
      let found: ParsedMessage[] = [];
      let all: ParsedMessage[] = [];
      await until(
        async () => {
          all = await messages();
          found = all.filter(filter);
          return found.length >= count;
        },
        Date.now() + timeoutMs,
        () => `expected ${count} matching messages from syslog-ng, got ${found.length} of ${all.length} (received: ${JSON.stringify(all.map((m) => [m.MSGID, (m.json as { http?: { request?: { id?: string } } } | undefined)?.http?.request?.id ?? m.cef?.cs3]))}): ${out}`,
      );
      return found;
    },
  };
}


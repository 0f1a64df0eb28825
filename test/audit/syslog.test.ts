import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import {
  createSyslogForwarder,
  type FormatOptions,
  formatSyslogMessage,
  isSecuritySensitive,
  syslogSeverityFor,
} from '../../src/audit/syslog';

const opts: FormatOptions = {
  appName: 'loki',
  hostname: 'host.example',
  procId: '4242',
  timestamp: new Date('2026-01-02T03:04:05.006Z'),
  maxMessageBytes: 8192,
};

describe('formatSyslogMessage (RFC 5424)', () => {
  it('formats header, structured data and message', () => {
    const out = formatSyslogMessage(
      {
        severity: 'warning',
        msgid: 'auth.failure',
        message: 'denied ghp_abcdefghijklmnopqrstuvwxyz012345',
        structured: { actor: 'ops', status: 401, ok: false, none: null, 'a b=c]"': 'x' },
      },
      opts,
    );
    expect(out.toString()).toBe(
      '<132>1 2026-01-02T03:04:05.006Z host.example loki 4242 auth.failure [loki@32473 actor="ops" status="401" ok="false" none="" a_b_c__="x"] denied [REDACTED]',
    );
  });

  it('uses PRI 134 for info and NILVALUEs where fields are empty', () => {
    const out = formatSyslogMessage({ severity: 'info', msgid: '', message: '' }, { ...opts, hostname: '', appName: '' });
    expect(out.toString()).toBe('<134>1 2026-01-02T03:04:05.006Z - - 4242 - -');
  });

  it('keeps header fields printable ASCII and within their limits', () => {
    const out = formatSyslogMessage({ severity: 'info', msgid: `séance ${'m'.repeat(40)}`, message: 'x' }, { ...opts, hostname: 'a b' });
    const [, , host, , , msgid] = out.toString().split(' ');
    expect(host).toBe('a_b');
    expect(msgid).toBe(`s_ance_${'m'.repeat(25)}`);
    expect(msgid).toHaveLength(32);
  });

  it('escapes ", \\ and ] in parameter values and redacts secret-named keys', () => {
    const out = formatSyslogMessage(
      { severity: 'info', msgid: 'm', message: '', structured: { v: 'a"b\\c]d', authorization: 'Bearer abc' } },
      opts,
    ).toString();
    expect(out).toContain('[loki@32473 v="a\\"b\\\\c\\]d" authorization="[REDACTED\\]"]');
  });

  it('cuts the message at a UTF-8 boundary to fit maxMessageBytes', () => {
    const out = formatSyslogMessage({ severity: 'info', msgid: 'm', message: '€'.repeat(100) }, { ...opts, maxMessageBytes: 120 });
    expect(out.length).toBeLessThanOrEqual(120);
    expect(out.length).toBeGreaterThan(117);
    expect(out.toString('utf8')).not.toContain('\ufffd');
  });

  it('drops structured data rather than cut it when it alone is too long', () => {
    const out = formatSyslogMessage({ severity: 'info', msgid: 'm', message: 'hello', structured: { big: 'x'.repeat(500) } }, { ...opts, maxMessageBytes: 200 });
    expect(out.toString()).toBe('<134>1 2026-01-02T03:04:05.006Z host.example loki 4242 m - hello');
  });
});

describe('isSecuritySensitive', () => {
  const warning = [
    'auth.failure',
    'auth.fail',
    'auth.token.invalid',
    'scope.denied',
    'auth.scope_denied',
    'token.create',
    'auth.token.create',
    'token.revoke',
    'token.import',
    'session.stop',
    'session.kill',
    'resource.delete',
    'audit.prune',
    'audit.verify.failed',
    'audit.checkpoint.invalid',
    'config.insecure',
    'config.cors_wildcard',
  ];
  const info = ['api.request', 'token.use', 'session.start', 'session.fail', 'sandbox.container.stop', 'audit.read', 'audit.verify', 'config.loaded'];
  it.each(warning)('%s → warning', (a) => {
    expect(isSecuritySensitive(a)).toBe(true);
    expect(syslogSeverityFor(a)).toBe('warning');
  });
  it.each(info)('%s → info', (a) => {
    expect(isSecuritySensitive(a)).toBe(false);
    expect(syslogSeverityFor(a)).toBe('info');
  });
});

describe('TCP framing (against a plain loopback socket)', () => {
  const servers: net.Server[] = [];
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
  });

  it('sends each message as `LEN SP MSG`', async () => {
    const chunks: Buffer[] = [];
    const server = net.createServer((sock) => sock.on('data', (d) => chunks.push(d)));
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as net.AddressInfo;
    const now = () => new Date('2026-01-02T03:04:05.006Z');
    const f = createSyslogForwarder({ host: '127.0.0.1', port, proto: 'tcp', hostname: 'h', appName: 'a', now });
    f.send({ severity: 'info', msgid: 'one', message: 'é' });
    f.send({ severity: 'warning', msgid: 'two', message: 'multi\nline' });
    await f.close();
    const m1 = `<134>1 2026-01-02T03:04:05.006Z h a ${process.pid} one - é`;
    const m2 = `<132>1 2026-01-02T03:04:05.006Z h a ${process.pid} two - multi\nline`;
    const framed = (m: string) => `${Buffer.byteLength(m)} ${m}`;
    await new Promise((r) => setTimeout(r, 50));
    expect(Buffer.concat(chunks).toString()).toBe(framed(m1) + framed(m2));
    expect(f.stats()).toEqual({ queued: 0, sent: 2, dropped: 0, connected: false });
  });
});

import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSyslogForwarder, formatSyslogMessage, type SyslogForwarder, type SyslogForwarderOptions } from '../../src/audit/syslog';
import { createRsyslog, freePort, type ReceivedMessage, type Rsyslog, rsyslogSupport } from '../helpers/rsyslog';

const support = rsyslogSupport();
const inCI = process.env.CI === 'true';
const CLOCK = new Date('2026-03-04T05:06:07.089Z');
const HOST = '127.0.0.1';

if (inCI) {
  // In CI a missing daemon is a failure, not a skip.
  it('rsyslogd and its TLS driver are installed', () => {
    expect(support.reason ?? support.tlsReason).toBeUndefined();
  });
}

/** A forwarder with test defaults; closed in afterAll. */
const open: SyslogForwarder[] = [];
function forwarder(o: Pick<SyslogForwarderOptions, 'port' | 'proto'> & Partial<SyslogForwarderOptions>): SyslogForwarder {
  const f = createSyslogForwarder({ host: HOST, appName: 'loki-test', hostname: 'testhost', now: () => CLOCK, ...o });
  open.push(f);
  return f;
}

async function until(check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 25));
  }
}

const byMsgid = (msgid: string) => (m: ReceivedMessage) => m.msgid === msgid;

const skipReason = support.reason ?? '';
describe.skipIf(!support.ok)(support.ok ? 'syslog forwarding to a real rsyslogd' : `syslog forwarding (skipped: ${skipReason})`, () => {
  let rs: Rsyslog;
  beforeAll(async () => {
    rs = await createRsyslog({ udp: true, tcp: true });
  });
  afterAll(async () => {
    await Promise.all(open.splice(0).map((f) => f.close()));
    await rs?.dispose();
  });

  for (const proto of ['udp', 'tcp'] as const) {
    it(`${proto}: exact PRI, header, structured data and redaction`, async () => {
      const f = forwarder({ proto, port: rs.ports[proto]! });
      f.send({
        severity: 'warning',
        msgid: `auth.failure.${proto}`,
        message: 'bad token loki_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefg from 10.0.0.1; Authorization: Bearer sk-ant-abcdefgh12345678; retry',
        structured: { path: '/ws?token=s3cr3t&x=1', status: 401, success: false, error: null, 'odd key': 'a]b"c\\d', token: 'plain' },
      });
      f.send({ severity: 'info', msgid: `api.request.${proto}`, message: 'GET /api/status 200' });

      const [warn] = await rs.waitFor(byMsgid(`auth.failure.${proto}`));
      expect(warn).toMatchObject({
        pri: 132, // local0 (16) * 8 + warning (4)
        timestamp: '2026-03-04T05:06:07.089Z',
        hostname: 'testhost',
        appName: 'loki-test',
        procId: String(process.pid),
        input: proto,
        structuredData:
          '[loki@32473 path="/ws?token=[REDACTED\\]&x=1" status="401" success="false" error="" odd_key="a\\]b\\"c\\\\d" token="[REDACTED\\]"]',
        msg: 'bad token [REDACTED] from 10.0.0.1; Authorization: [REDACTED]; retry',
      });
      const [info] = await rs.waitFor(byMsgid(`api.request.${proto}`));
      expect(info).toMatchObject({ pri: 134, structuredData: '-', msg: 'GET /api/status 200' });
      // rsyslog saw exactly the bytes we format (framing stripped)
      const expected = formatSyslogMessage(
        { severity: 'info', msgid: `api.request.${proto}`, message: 'GET /api/status 200' },
        { appName: 'loki-test', hostname: 'testhost', procId: String(process.pid), timestamp: CLOCK, maxMessageBytes: 8192 },
      );
      expect(info!.raw).toBe(expected.toString('utf8'));
      expect(f.stats()).toMatchObject({ sent: 2, dropped: 0, queued: 0 });
    });
  }

  it('udp: one datagram per message, cut to 8 KB at a character boundary', async () => {
    const f = forwarder({ proto: 'udp', port: rs.ports.udp! });
    const message = `${'é'.repeat(3000)}${'x'.repeat(4000)}`; // 10,000 bytes
    f.send({ severity: 'info', msgid: 'big.udp', message, structured: { n: 1 } });
    const [got] = await rs.waitFor(byMsgid('big.udp'));
    expect(Buffer.byteLength(got!.raw)).toBeLessThanOrEqual(8192);
    expect(Buffer.byteLength(got!.raw)).toBeGreaterThan(8180);
    expect(message.startsWith(got!.msg)).toBe(true);
    expect(got!.structuredData).toBe('[loki@32473 n="1"]');
  });

  it('tcp: octet counting keeps multi-line messages whole and in order', async () => {
    const f = forwarder({ proto: 'tcp', port: rs.ports.tcp! });
    for (let i = 0; i < 300; i++) f.send({ severity: 'info', msgid: 'bulk.tcp', message: `line ${i}\nsecond line ${i}` });
    const got = await rs.waitFor(byMsgid('bulk.tcp'), 300);
    expect(got.map((m) => m.msg)).toEqual(Array.from({ length: 300 }, (_, i) => `line ${i}#012second line ${i}`));
    await until(() => f.stats().sent === 300);
    expect(f.stats()).toMatchObject({ queued: 0, dropped: 0 });
  });

  it('tcp: queues while the server is down, drops and counts past the bound, delivers once it is up', async () => {
    const port = await freePort();
    const errors: Error[] = [];
    const f = forwarder({ proto: 'tcp', port, maxQueue: 5, backoff: { initialMs: 50, maxMs: 200 }, onError: (e) => errors.push(e) });
    for (let i = 1; i <= 8; i++) f.send({ severity: 'info', msgid: 'queued.tcp', message: `m${i}` });
    expect(f.stats()).toEqual({ queued: 5, sent: 0, dropped: 3, connected: false });
    await until(() => errors.length > 0);
    expect(errors[0]!.message).toMatch(/ECONNREFUSED/);

    const late = await createRsyslog({ tcp: true, ports: { tcp: port } });
    try {
      const got = await late.waitFor(byMsgid('queued.tcp'), 5);
      expect(got.map((m) => m.msg)).toEqual(['m1', 'm2', 'm3', 'm4', 'm5']);
      await until(() => f.stats().sent === 5);
      expect(f.stats()).toEqual({ queued: 0, sent: 5, dropped: 3, connected: true });
    } finally {
      await late.dispose();
    }
  });

  it('tcp: reconnects after the server restarts', async () => {
    const f = forwarder({ proto: 'tcp', port: rs.ports.tcp!, backoff: { initialMs: 50, maxMs: 200 } });
    f.send({ severity: 'info', msgid: 'restart.tcp', message: 'before' });
    await rs.waitFor(byMsgid('restart.tcp'), 1);
    await until(() => f.stats().connected);

    await rs.stop();
    await until(() => !f.stats().connected);
    f.send({ severity: 'warning', msgid: 'restart.tcp', message: 'during 1' });
    f.send({ severity: 'warning', msgid: 'restart.tcp', message: 'during 2' });
    expect(f.stats()).toMatchObject({ queued: 2, sent: 1 });

    await rs.start();
    const got = await rs.waitFor(byMsgid('restart.tcp'), 3);
    expect(got.map((m) => m.msg)).toEqual(['before', 'during 1', 'during 2']);
    await until(() => f.stats().sent === 3);
    expect(f.stats()).toEqual({ queued: 0, sent: 3, dropped: 0, connected: true });
  });

  it('send never throws or blocks, even after close', async () => {
    const f = forwarder({ proto: 'tcp', port: rs.ports.tcp! });
    // Never blocks: all 20,000 sends return within one synchronous loop (no await
    // between them), and what they left waiting is bounded by the queue (10,000).
    for (let i = 0; i < 20_000; i++) f.send({ severity: 'info', msgid: 'flood.tcp', message: 'x'.repeat(100) });
    const atOnce = f.stats();
    expect(atOnce.queued).toBeLessThanOrEqual(10_000);
    expect(atOnce.queued + atOnce.sent + atOnce.dropped).toBe(20_000);
    await f.close();
    const { sent, dropped } = f.stats();
    expect(sent + dropped).toBe(20_000);
    f.send({ severity: 'info', msgid: 'after.close', message: 'late' });
    expect(f.stats().dropped).toBe(dropped + 1);
  });
});

const tlsReady = support.ok && support.tls;
const tlsSkip = support.reason ?? support.tlsReason ?? '';
describe.skipIf(!tlsReady)(tlsReady ? 'syslog over TLS to a real rsyslogd' : `syslog over TLS (skipped: ${tlsSkip})`, () => {
  let rs: Rsyslog;
  beforeAll(async () => {
    rs = await createRsyslog({ tls: true });
  });
  afterAll(async () => {
    await Promise.all(open.splice(0).map((f) => f.close()));
    await rs?.dispose();
  });

  it('tls: delivers with the server certificate verified against the given CA', async () => {
    const ca = readFileSync(rs.caFile!);
    const f = forwarder({ proto: 'tls', port: rs.ports.tls!, tls: { ca } });
    f.send({ severity: 'warning', msgid: 'token.revoke', message: 'token ops revoked by admin', structured: { token_id: 'tok_1' } });
    const [got] = await rs.waitFor(byMsgid('token.revoke'));
    expect(got).toMatchObject({
      pri: 132,
      input: 'tls',
      appName: 'loki-test',
      structuredData: '[loki@32473 token_id="tok_1"]',
      msg: 'token ops revoked by admin',
    });
    expect(f.stats()).toMatchObject({ sent: 1, dropped: 0, connected: true });
  });

  it('tls: refuses a server it cannot verify and keeps the messages queued', async () => {
    const errors: Error[] = [];
    const f = forwarder({ proto: 'tls', port: rs.ports.tls!, backoff: { initialMs: 50, maxMs: 100 }, onError: (e) => errors.push(e) });
    f.send({ severity: 'info', msgid: 'unverified.tls', message: 'should not arrive' });
    await until(() => errors.length > 0);
    expect(errors[0]!.message).toMatch(/self[- ]signed/i);
    expect(f.stats()).toEqual({ queued: 1, sent: 0, dropped: 0, connected: false });
    await new Promise((r) => setTimeout(r, 300));
    expect((await rs.messages()).filter(byMsgid('unverified.tls'))).toHaveLength(0);
  });
});

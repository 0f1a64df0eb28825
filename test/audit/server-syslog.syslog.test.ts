import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRsyslog, type Rsyslog, rsyslogSupport } from '../helpers/rsyslog';
import { startTestServer, type TestServer } from '../helpers/server';
import { makeToken } from '../helpers/tokens';

const support = rsyslogSupport();
const inCi = process.env.CI === 'true';

describe('rsyslog for the server test', () => {
  it.runIf(inCi)('rsyslogd is installed in CI', () => {
    expect(support.ok).toBe(true);
  });
});

describe.skipIf(!support.ok)(support.ok ? 'the server forwards committed audit entries to a real rsyslogd' : `server syslog (skipped: ${support.reason})`, () => {
  let rs: Rsyslog;
  let s: TestServer;
  beforeAll(async () => {
    rs = await createRsyslog({ tcp: true });
    await rs.start();
    s = await startTestServer({
      LOKI_ENTERPRISE_AUTH: 'true',
      LOKI_AUDIT_SYSLOG_HOST: '127.0.0.1',
      LOKI_AUDIT_SYSLOG_PORT: String(rs.ports.tcp),
      LOKI_AUDIT_SYSLOG_PROTO: 'tcp',
    });
  });
  afterAll(async () => {
    await s?.stop();
    await rs?.dispose();
  });

  it('an authentication failure arrives as local0.warning with its chain position; a read as local0.info', async () => {
    const viewer = await makeToken(s, 'syslog-viewer', 'viewer');
    await s.req('/api/status', { token: 'loki_wrong', headers: { 'X-Request-Id': 'sys-authfail-1' } });
    await s.req('/api/status', { token: viewer.token, headers: { 'X-Request-Id': 'sys-read-1' } });
    const [fail] = await rs.waitFor((m) => m.structuredData.includes('request_id="sys-authfail-1"'));
    const [read] = await rs.waitFor((m) => m.structuredData.includes('request_id="sys-read-1"'));
    expect(fail!.pri).toBe(16 * 8 + 4);
    expect(fail!.msgid).toBe('auth.failure');
    expect(fail!.appName).toBe('loki');
    expect(read!.pri).toBe(16 * 8 + 6);
    expect(read!.msgid).toBe('http.request');
    // The syslog copy names the chain position: it matches the entry in the database.
    const seq = Number(/seq="(\d+)"/.exec(read!.structuredData)![1]);
    const hash = /hash="([0-9a-f]{64})"/.exec(read!.structuredData)![1];
    const row = s.runtime.db.prepare('SELECT hash FROM audit_log WHERE seq = ?').get(seq) as { hash: string };
    expect(row.hash).toBe(hash);
  });

  it('token creation is a warning; secrets never reach syslog', async () => {
    const admin = await makeToken(s, 'syslog-admin', 'admin');
    const r = await s.req(`/api/enterprise/tokens?token=${admin.token}`, {
      method: 'POST',
      token: admin.token,
      headers: { 'Content-Type': 'application/json', 'X-Request-Id': 'sys-create-1' },
      body: JSON.stringify({ name: 'from-syslog-test', role: 'viewer' }),
    });
    const created = await r.json();
    // The request also writes a token.create.intent entry first (same request id).
    const [m] = await rs.waitFor((x) => x.msgid === 'token.create' && x.structuredData.includes('request_id="sys-create-1"'));
    expect(m!.msgid).toBe('token.create');
    expect(m!.pri).toBe(16 * 8 + 4);
    // The entry's details travel with it (issue 14): the role and scopes of the new token.
    expect(m!.structuredData).toContain(' details.name="from-syslog-test" details.role="viewer" details.scopes="read" ');
    const all = JSON.stringify(await rs.messages());
    expect(all).not.toContain(admin.token);
    expect(all).not.toContain(created.token);
    expect(all).toContain('[REDACTED]');
  });

  it('a denied scope names the scope that was needed', async () => {
    const viewer = await makeToken(s, 'syslog-viewer-2', 'viewer');
    const r = await s.req('/api/enterprise/audit', { token: viewer.token, headers: { 'X-Request-Id': 'sys-denied-1' } });
    expect(r.status).toBe(403);
    const [m] = await rs.waitFor((x) => x.msgid === 'scope.denied' && x.structuredData.includes('request_id="sys-denied-1"'));
    expect(m!.structuredData).toContain(' details.needed_scope="audit"');
    expect(m!.pri).toBe(16 * 8 + 4);
  });

  it('a checkpoint arrives as its full C2SP note text (rsyslog shows each newline as #012 by default)', async () => {
    const cp = (await s.runtime.audit.checkpoint('manual'))!;
    expect(cp.note).toMatch(/\n\n— /);
    const [m] = await rs.waitFor((x) => x.msgid === 'audit.checkpoint' && x.structuredData.includes(`size="${cp.size}"`) && x.structuredData.includes('kind="manual"'));
    const asReceived = (t: string) => t.trim().replace(/(#012)+$/, '');
    expect(asReceived(m!.msg)).toBe(cp.note!.trimEnd().replace(/\n/g, '#012'));
    // ... and the JWS, byte for byte.
    expect(cp.jws).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);
    expect(m!.structuredData).toContain(` jws="${cp.jws}"]`);
    expect(m!.pri).toBe(16 * 8 + 6);
  });

  it('/api/status reports the syslog queue and drops', async () => {
    const admin = await makeToken(s, 'syslog-admin-2', 'admin');
    const st = await (await s.req('/api/status', { token: admin.token })).json();
    expect(st.syslog).toMatchObject({ dropped: 0, connected: true });
    expect(st.syslog.sent).toBeGreaterThan(0);
  });
});

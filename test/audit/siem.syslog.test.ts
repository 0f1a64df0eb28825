/**
 * Issue 14 item 2: every syslog body format, produced by a real spawned server,
 * fed to a second real receiver (syslog-ng) whose own parsers take it apart:
 * RFC 5424 structured data, json-parser() and CEF (csv-parser + kv-parser, see
 * test/helpers/syslog-ng.ts). And TLS that requires a client certificate.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditEntry } from '../../src/audit/chain';
import { cefValue } from '../../src/audit/siem';
import { createSyslogForwarder } from '../../src/audit/syslog';
import { runCli, type SpawnedServer, spawnServer, tempHome } from '../helpers/server';
import { createSyslogNg, type ParsedMessage, type SyslogNg, syslogNgSupport } from '../helpers/syslog-ng';

const support = syslogNgSupport();
const inCi = process.env.CI === 'true';
const SDID = 'lokitest@99999';

describe('syslog-ng for the SIEM tests', () => {
  it.runIf(inCi)('syslog-ng and openssl are installed in CI', () => {
    expect(support).toEqual({ ok: true, tls: true });
  });
});

/** A value in a parsed message by dotted path (`json.event.action`). */
function at(m: ParsedMessage, ...path: string[]): unknown {
  let v: unknown = m;
  for (const p of path) v = v && typeof v === 'object' ? (v as Record<string, unknown>)[p] : undefined;
  return v;
}

async function cliToken(home: string, name: string, role: string): Promise<string> {
  const r = await runCli(['enterprise', 'token', 'generate', name, '--role', role, '--json'], { LOKI_HOME: home, HOME: home });
  if (r.code !== 0) throw new Error(`token generate failed: ${r.stderr}`);
  return (JSON.parse(r.stdout) as { token: string }).token;
}

type Entry = AuditEntry & { hash: string };

describe.skipIf(!support.ok)(support.ok ? 'SIEM formats through a real syslog-ng' : `SIEM formats (skipped: ${support.reason})`, () => {
  let ng: SyslogNg;
  beforeAll(async () => {
    ng = await createSyslogNg({ tls: support.tls });
  }, 60_000);
  afterAll(async () => {
    await ng?.dispose();
  });

  /**
   * A spawned server forwarding in `format`: creates a viewer token (token.create)
   * whose use on the audit API is refused (scope.denied); returns both entries as
   * the audit API shows them and the latest signed checkpoint.
   */
  async function scenario(format: string, extraEnv: Record<string, string> = {}, port = ng.ports.tcp, proto = 'tcp') {
    const home = tempHome('loki-siem-');
    const adminName = `siem-admin-${format}`;
    const admin = await cliToken(home, adminName, 'admin');
    let server: SpawnedServer | null = null;
    try {
      server = await spawnServer(
        {
          LOKI_ENTERPRISE_AUTH: 'true',
          LOKI_AUDIT_SYSLOG_HOST: '127.0.0.1',
          LOKI_AUDIT_SYSLOG_PORT: String(port),
          LOKI_AUDIT_SYSLOG_PROTO: proto,
          LOKI_AUDIT_SYSLOG_FORMAT: format,
          LOKI_AUDIT_SYSLOG_SDID: SDID,
          ...extraEnv,
        },
        home,
      );
      const tag = `${format}-${proto}-${process.pid}`;
      const created = await fetch(`${server.url}/api/enterprise/tokens`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${admin}`, 'Content-Type': 'application/json', 'X-Request-Id': `create-${tag}`, 'User-Agent': 'siem-test/1.0' },
        body: JSON.stringify({ name: `siem-viewer-${format}`, role: 'viewer' }),
      });
      expect(created.status).toBe(201);
      const viewer = ((await created.json()) as { token: string }).token;
      const denied = await fetch(`${server.url}/api/enterprise/audit`, { headers: { Authorization: `Bearer ${viewer}`, 'X-Request-Id': `denied-${tag}`, 'User-Agent': 'siem-test/1.0' } });
      expect(denied.status).toBe(403);
      const auth = { headers: { Authorization: `Bearer ${admin}` } };
      const list = (await (await fetch(`${server.url}/api/enterprise/audit?limit=1000`, auth)).json()) as { entries: Entry[] };
      const create = list.entries.find((e) => e.action === 'token.create' && e.request?.id === `create-${tag}`)!;
      const deny = list.entries.find((e) => e.action === 'scope.denied' && e.request?.id === `denied-${tag}`)!;
      expect(create).toBeDefined();
      expect(deny).toBeDefined();
      return { create, deny, adminName, viewer, secrets: [admin, viewer], server, home };
    } catch (err) {
      server?.child.kill('SIGKILL');
      throw err;
    }
  }

  /**
   * Stop the server (SIGTERM): it signs a shutdown checkpoint and forwards it
   * before it exits; returns that checkpoint as `loki enterprise audit verify` shows it.
   */
  async function stop(s: { server: SpawnedServer; home: string }) {
    s.server.child.kill('SIGTERM');
    await s.server.exited;
    const r = await runCli(['enterprise', 'audit', 'verify', '--json'], { LOKI_HOME: s.home, HOME: s.home });
    const v = JSON.parse(r.stdout) as { valid: boolean; checkpoint: { kind: string; jws: string; note: string; size: number } };
    expect([v.valid, v.checkpoint.kind]).toEqual([true, 'shutdown']);
    return v.checkpoint;
  }

  it('rfc5424: the details as SD-PARAMs under the configured SD-ID, the checkpoint with its JWS', async () => {
    const s = await scenario('rfc5424');
    try {
      const sd = (m: ParsedMessage, k: string) => at(m, '_SDATA', SDID, ...k.split('.'));
      const [c] = await ng.waitFor((m) => m.MSGID === 'token.create' && sd(m, 'request_id') === s.create.request!.id);
      const [d] = await ng.waitFor((m) => m.MSGID === 'scope.denied' && sd(m, 'request_id') === s.deny.request!.id);
      expect([sd(c!, 'seq'), sd(c!, 'actor'), sd(c!, 'success'), sd(c!, 'client_ip'), sd(c!, 'details.role'), sd(c!, 'details.scopes')]).toEqual([
        String(s.create.seq),
        s.adminName,
        'true',
        '127.0.0.1',
        'viewer',
        'read',
      ]);
      expect(c!.PRIORITY).toBe('warning');
      expect(c!.FACILITY).toBe('local0');
      expect([sd(d!, 'seq'), sd(d!, 'actor'), sd(d!, 'success'), sd(d!, 'status'), sd(d!, 'client_ip'), sd(d!, 'details.needed_scope')]).toEqual([
        String(s.deny.seq),
        `siem-viewer-rfc5424`,
        'false',
        '403',
        '127.0.0.1',
        'audit',
      ]);
    } catch (err) {
      s.server.child.kill('SIGKILL');
      throw err;
    }
    const checkpoint = await stop(s);
    const sd = (m: ParsedMessage, k: string) => at(m, '_SDATA', SDID, ...k.split('.'));
    const [cp] = await ng.waitFor((m) => m.MSGID === 'audit.checkpoint' && sd(m, 'jws') === checkpoint.jws);
    expect(cp!.MESSAGE?.trimEnd()).toBe(checkpoint.note.trimEnd());
    expect(sd(cp!, 'size')).toBe(String(checkpoint.size));
    const all = JSON.stringify(await ng.messages());
    for (const secret of s.secrets) expect(all).not.toContain(secret);
  }, 90_000);

  it('json: json-parser() reads the ECS event: action, outcome, user, source ip, seq, details', async () => {
    const s = await scenario('json');
    try {
      const j = (m: ParsedMessage, k: string) => at(m, 'json', ...k.split('.'));
      const [c] = await ng.waitFor((m) => j(m, 'event.action') === 'token.create' && j(m, 'http.request.id') === s.create.request!.id);
      const [d] = await ng.waitFor((m) => j(m, 'event.action') === 'scope.denied' && j(m, 'http.request.id') === s.deny.request!.id);
      const fields = ['event.action', 'event.outcome', 'user.name', 'source.ip', 'event.sequence', 'event.hash', 'url.path', 'http.request.method', 'http.response.status_code', 'user_agent.original'];
      expect(Object.fromEntries(fields.map((f) => [f, j(c!, f)]))).toEqual({
        'event.action': 'token.create',
        'event.outcome': 'success',
        'user.name': s.adminName,
        'source.ip': '127.0.0.1',
        'event.sequence': String(s.create.seq),
        'event.hash': s.create.hash,
        'url.path': '/api/enterprise/tokens',
        'http.request.method': 'POST',
        'http.response.status_code': '201',
        'user_agent.original': 'siem-test/1.0',
      });
      expect([j(c!, 'loki.details.role'), j(c!, 'loki.details.name')]).toEqual(['viewer', 'siem-viewer-json']);
      expect(Object.fromEntries(fields.slice(0, 5).map((f) => [f, j(d!, f)]))).toEqual({
        'event.action': 'scope.denied',
        'event.outcome': 'failure',
        'user.name': 'siem-viewer-json',
        'source.ip': '127.0.0.1',
        'event.sequence': String(s.deny.seq),
      });
      expect(j(d!, 'loki.details.needed_scope')).toBe('audit');
      expect(c!.MSGID).toBe('token.create');
      expect(c!._SDATA).toBeUndefined();
    } catch (err) {
      s.server.child.kill('SIGKILL');
      throw err;
    }
    const checkpoint = await stop(s);
    const j = (m: ParsedMessage, k: string) => at(m, 'json', ...k.split('.'));
    const [cp] = await ng.waitFor((m) => j(m, 'event.action') === 'audit.checkpoint' && j(m, 'loki.checkpoint.jws') === checkpoint.jws);
    expect(j(cp!, 'loki.checkpoint.note')).toBe(checkpoint.note);
    expect(j(cp!, 'loki.checkpoint.size')).toBe(String(checkpoint.size));
  }, 90_000);

  it('cef: the header and the standard extension keys as syslog-ng splits them', async () => {
    const s = await scenario('cef');
    try {
      const c0 = (m: ParsedMessage, k: string) => m.cef?.[k];
      const [c] = await ng.waitFor((m) => c0(m, 'act') === 'token.create' && c0(m, 'cs3') === s.create.request!.id);
      const [d] = await ng.waitFor((m) => c0(m, 'act') === 'scope.denied' && c0(m, 'cs3') === s.deny.request!.id);
      const keys = ['version', 'device_vendor', 'device_product', 'device_event_class_id', 'severity', 'act', 'outcome', 'suser', 'src', 'request', 'requestMethod', 'cn1Label', 'cn1', 'cs1Label', 'cs2', 'cn2', 'requestClientApplication'];
      expect(Object.fromEntries(keys.map((k) => [k, c0(c!, k)]))).toEqual({
        version: 'CEF:0',
        device_vendor: 'Loki',
        device_product: 'control-plane',
        device_event_class_id: 'token.create',
        severity: '6',
        act: 'token.create',
        outcome: 'success',
        suser: s.adminName,
        src: '127.0.0.1',
        request: '/api/enterprise/tokens',
        requestMethod: 'POST',
        cn1Label: 'seq',
        cn1: String(s.create.seq),
        cs1Label: 'details',
        cs2: s.create.hash,
        cn2: '201',
        requestClientApplication: 'siem-test/1.0',
      });
      expect(JSON.parse(c0(c!, 'cs1')!)).toMatchObject({ name: 'siem-viewer-cef', role: 'viewer', scopes: ['read'] });
      expect([c0(d!, 'act'), c0(d!, 'outcome'), c0(d!, 'suser'), c0(d!, 'src'), c0(d!, 'cn1'), c0(d!, 'cn2'), c0(d!, 'severity')]).toEqual([
        'scope.denied',
        'failure',
        'siem-viewer-cef',
        '127.0.0.1',
        String(s.deny.seq),
        '403',
        '8',
      ]);
      expect(JSON.parse(c0(d!, 'cs1')!)).toEqual({ needed_scope: 'audit' });
    } catch (err) {
      s.server.child.kill('SIGKILL');
      throw err;
    }
    // The checkpoint: the JWS as is, the note with CEF escapes (syslog-ng 3.38 leaves them in).
    const checkpoint = await stop(s);
    const c0 = (m: ParsedMessage, k: string) => m.cef?.[k];
    const [cp] = await ng.waitFor((m) => c0(m, 'act') === 'audit.checkpoint' && c0(m, 'cs5') === checkpoint.jws);
    expect(c0(cp!, 'cs6')).toBe(cefValue(checkpoint.note));
    expect(c0(cp!, 'cn1')).toBe(String(checkpoint.size));
  }, 90_000);

  describe.skipIf(!support.tls)('TLS with a required client certificate', () => {
    it('a spawned server with LOKI_AUDIT_SYSLOG_TLS_CA/_CERT/_KEY is received', async () => {
      const pki = ng.pki!;
      const s = await scenario('json', { LOKI_AUDIT_SYSLOG_TLS_CA: pki.caFile, LOKI_AUDIT_SYSLOG_TLS_CERT: pki.clientCert, LOKI_AUDIT_SYSLOG_TLS_KEY: pki.clientKey }, ng.ports.tls!, 'tls');
      try {
        const [c] = await ng.waitFor((m) => at(m, 'json', 'event', 'action') === 'token.create' && at(m, 'json', 'http', 'request', 'id') === s.create.request!.id);
        expect(c!.SOURCE).toBe('s_tls');
        expect(at(c!, 'json', 'loki', 'details', 'role')).toBe('viewer');
      } finally {
        await stop(s);
      }
    }, 90_000);

    it('without a client certificate syslog-ng refuses the connection: nothing arrives', async () => {
      const pki = ng.pki!;
      const errors: string[] = [];
      const ca = readFileSync(pki.caFile);
      const base = { host: '127.0.0.1', port: ng.ports.tls!, proto: 'tls' as const, appName: 'loki-mtls', closeTimeoutMs: 1000 };
      const bare = createSyslogForwarder({ ...base, tls: { ca }, onError: (e) => errors.push(e.message) });
      bare.send({ severity: 'info', msgid: 'mtls.without-cert', message: 'must not arrive' });
      // A client with the certificate, after it: its message arriving means the other had its chance.
      const withCert = createSyslogForwarder({ ...base, tls: { ca, cert: readFileSync(pki.clientCert), key: readFileSync(pki.clientKey) } });
      await new Promise((r) => setTimeout(r, 1000));
      withCert.send({ severity: 'info', msgid: 'mtls.with-cert', message: 'arrives' });
      await ng.waitFor((m) => m.MSGID === 'mtls.with-cert');
      await new Promise((r) => setTimeout(r, 500));
      await withCert.close();
      await bare.close();
      expect((await ng.messages()).filter((m) => m.MSGID === 'mtls.without-cert')).toEqual([]);
      expect(errors.some((e) => /certificate required/.test(e))).toBe(true);
    }, 30_000);
  });
});

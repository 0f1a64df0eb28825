import { describe, expect, it } from 'vitest';
import type { CommittedEntry } from '../../src/audit/log';
import { syslogCheckpointMessage, syslogMessageFor } from '../../src/audit/node-audit';
import { auditEvent, cefBody, cefHeader, cefValue, checkpointEvent, detailsParams, ocsfEvent } from '../../src/audit/siem';
import { formatSyslogMessage } from '../../src/audit/syslog';
import { ConfigError, loadConfig } from '../../src/env';

const TS = Date.parse('2026-12-01T10:00:00.000Z');
const opts = { appName: 'loki', hostname: 'h', procId: '7', timestamp: new Date(TS), maxMessageBytes: 8192 };

function entry(over: Partial<CommittedEntry['input']> = {}, seq = 42): CommittedEntry {
  return {
    seq,
    hash: 'a'.repeat(64),
    input: {
      ts: TS,
      action: 'token.create',
      actor: { type: 'token', id: 'tok_1', name: 'admin' },
      client: { ip: '127.0.0.1', user_agent: 'curl/8.0' },
      request: { id: 'req-1', method: 'POST', path: '/api/enterprise/tokens' },
      resource: { type: 'token', id: 'tok_2' },
      outcome: { status: 201, success: true, error: null },
      details: { name: 'ci', role: 'viewer', scopes: ['read'], token: 'loki_abcdefghijklmnop' },
      ...over,
    },
  };
}

const CHECKPOINT = {
  origin: 'loki.example/audit',
  size: 9,
  head_hash: 'b'.repeat(64),
  time: TS,
  kind: 'manual',
  jws: 'eyJhbGciOiJFZERTQSJ9.eyJzaXplIjo5fQ.sk-AAAAAAAAAAAAAAAAAAAA-loki_BBBBBBBBBB',
  note: 'loki.example/audit\n9\nq83vEjRWeJA=\n\n— loki.example/audit AbCd+/=\n',
};

describe('the ECS event', () => {
  it('maps an entry to ECS fields, details redacted', () => {
    const ev = auditEvent(entry(), 'warning');
    expect(ev).toEqual({
      '@timestamp': '2026-12-01T10:00:00.000Z',
      message: 'token.create by admin POST /api/enterprise/tokens -> ok',
      ecs: { version: '8.11.0' },
      event: {
        kind: 'event',
        module: 'loki',
        dataset: 'loki.audit',
        action: 'token.create',
        outcome: 'success',
        category: ['iam'],
        type: ['creation'],
        sequence: 42,
        hash: 'a'.repeat(64),
        severity: 4,
      },
      log: { level: 'warning' },
      user: { name: 'admin', id: 'tok_1' },
      source: { ip: '127.0.0.1' },
      user_agent: { original: 'curl/8.0' },
      url: { path: '/api/enterprise/tokens' },
      http: { request: { method: 'POST', id: 'req-1' }, response: { status_code: 201 } },
      loki: {
        actor: { type: 'token' },
        resource: { type: 'token', id: 'tok_2' },
        details: { name: 'ci', role: 'viewer', scopes: ['read'], token: '[REDACTED]' },
      },
    });
  });

  it('a denied scope: web access denied, failure, the query string split off and redacted', () => {
    const ev = auditEvent(
      entry({
        action: 'scope.denied',
        request: { id: 'r', method: 'GET', path: '/api/enterprise/audit?token=loki_secretsecretsecret&x=1' },
        outcome: { status: 403, success: false, error: 'insufficient_scope' },
        details: { needed_scope: 'audit' },
        client: { ip: 'unix-socket', user_agent: null },
      }),
      'warning',
    );
    expect(ev.event).toMatchObject({ action: 'scope.denied', outcome: 'failure', category: ['web'], type: ['access', 'denied'] });
    expect(ev.url).toEqual({ path: '/api/enterprise/audit', query: 'token=[REDACTED]&x=1' });
    expect(ev.source).toEqual({ address: 'unix-socket' });
    expect(ev.user_agent).toBeUndefined();
    expect(ev.error).toEqual({ message: 'insufficient_scope' });
    expect(ev.loki.details).toEqual({ needed_scope: 'audit' });
  });

  it('a checkpoint carries its JWS and note verbatim (public signed data)', () => {
    const ev = checkpointEvent(CHECKPOINT);
    expect(ev.event.action).toBe('audit.checkpoint');
    expect(ev.loki.checkpoint).toEqual({ ...CHECKPOINT });
  });
});

describe('CEF', () => {
  it('escapes header fields: backslash and pipe; a line break becomes a space', () => {
    expect(cefHeader('a|b\\c\nd')).toBe('a\\|b\\\\c d');
  });

  it('escapes extension values: backslash, equals sign and line breaks', () => {
    expect(cefValue('a=b\\c\nd\r\ne\rf|g')).toBe('a\\=b\\\\c\\nd\\ne\\rf|g');
  });

  it('renders a token.create with the standard keys and the details in cs1', () => {
    const body = cefBody(auditEvent(entry(), 'warning'), '0.1.0');
    expect(body).toBe(
      [
        `CEF:0|Loki|control-plane|0.1.0|token.create|token.create by admin POST /api/enterprise/tokens -> ok|6|rt=${TS}`,
        'act=token.create outcome=success suser=admin suid=tok_1 src=127.0.0.1 requestClientApplication=curl/8.0',
        'request=/api/enterprise/tokens requestMethod=POST cn1Label=seq cn1=42 cn2Label=httpStatus cn2=201',
        'cs1Label=details cs1={"name":"ci","role":"viewer","scopes":["read"],"token":"[REDACTED]"}',
        `cs2Label=hash cs2=${'a'.repeat(64)} cs3Label=requestId cs3=req-1 cs4Label=actorType cs4=token cs5Label=resource cs5=token/tok_2`,
        'msg=token.create by admin POST /api/enterprise/tokens -> ok',
      ].join(' '),
    );
  });

  it('severity: 8 for a security failure, 6 for a security success, 5 for another failure, 3 otherwise', () => {
    const sev = (action: string, success: boolean, level: 'warning' | 'info') =>
      cefBody(auditEvent(entry({ action, outcome: { status: success ? 200 : 500, success, error: null } }), level), '1').split('|')[6];
    expect([sev('auth.failure', false, 'warning'), sev('token.create', true, 'warning'), sev('session.start', false, 'info'), sev('http.request', true, 'info')]).toEqual([
      '8',
      '6',
      '5',
      '3',
    ]);
  });

  it('a checkpoint: the JWS in cs5, the note in cs6 with its newlines escaped', () => {
    const body = cefBody(checkpointEvent(CHECKPOINT), '0.1.0');
    expect(body).toContain(`cs5Label=checkpointJws cs5=${CHECKPOINT.jws} `);
    expect(body).toContain('cs6Label=checkpointNote cs6=loki.example/audit\\n9\\nq83vEjRWeJA\\=\\n\\n— loki.example/audit AbCd+/\\=\\n ');
    expect(body).toContain('cn1Label=checkpointSize cn1=9');
  });
});

describe('OCSF 1.1', () => {
  it('token.create over POST: API Activity (6003) Create, the details unmapped', () => {
    expect(ocsfEvent(auditEvent(entry(), 'warning'), '0.1.0')).toEqual({
      category_uid: 6,
      class_uid: 6003,
      activity_id: 1,
      type_uid: 600301,
      time: TS,
      severity_id: 3,
      status_id: 1,
      status: 'Success',
      status_code: '201',
      message: 'token.create by admin POST /api/enterprise/tokens -> ok',
      metadata: { version: '1.1.0', product: { name: 'control-plane', vendor_name: 'Loki', version: '0.1.0' }, log_name: 'audit', event_code: 'token.create', sequence: 42, uid: 'a'.repeat(64) },
      actor: { user: { name: 'admin', uid: 'tok_1' } },
      src_endpoint: { ip: '127.0.0.1' },
      http_request: { http_method: 'POST', url: { path: '/api/enterprise/tokens' }, user_agent: 'curl/8.0', uid: 'req-1' },
      http_response: { code: 201 },
      api: { operation: 'token.create', request: { uid: 'req-1' }, response: { code: 201 } },
      unmapped: {
        loki: { actor_type: 'token', resource: { type: 'token', id: 'tok_2' }, details: { name: 'ci', role: 'viewer', scopes: ['read'], token: '[REDACTED]' } },
      },
    });
  });

  it('auth.failure: Authentication (3002) Logon, Failure, the user; scope.denied over GET: API Activity Read, Failure', () => {
    const authFail = ocsfEvent(
      auditEvent(entry({ action: 'auth.failure', request: { id: 'r', method: 'GET', path: '/api/status' }, outcome: { status: 401, success: false, error: 'invalid_token' }, details: { reason: 'unknown' } }), 'warning'),
      '1',
    );
    expect([authFail.class_uid, authFail.category_uid, authFail.type_uid, authFail.status, authFail.status_detail, authFail.user, authFail.api]).toEqual([
      3002,
      3,
      300201,
      'Failure',
      'invalid_token',
      { name: 'admin', uid: 'tok_1' },
      undefined,
    ]);
    const denied = ocsfEvent(auditEvent(entry({ action: 'scope.denied', request: { id: 'r', method: 'GET', path: '/x' }, outcome: { status: 403, success: false, error: null } }), 'warning'), '1');
    expect([denied.class_uid, denied.type_uid, denied.status_id, denied.status_code]).toEqual([6003, 600302, 2, '403']);
  });

  it('a checkpoint: API Activity, the signed checkpoint unmapped verbatim', () => {
    const o = ocsfEvent(checkpointEvent(CHECKPOINT), '1');
    expect([o.class_uid, o.activity_id]).toEqual([6003, 99]);
    expect(o.unmapped).toEqual({ loki: { checkpoint: CHECKPOINT } });
  });

  it('format ocsf: SD "-" and the OCSF event as MSG', () => {
    const out = formatSyslogMessage(syslogMessageFor(entry()), { ...opts, format: 'ocsf', version: '2.0.0' }).toString();
    expect(JSON.parse(out.slice(out.indexOf(' - ') + 3))).toEqual(ocsfEvent(auditEvent(entry(), 'warning'), '2.0.0'));
  });
});

describe('syslog message bodies', () => {
  it('rfc5424 (default): the details as details.<key> SD-PARAMs, redacted', () => {
    const out = formatSyslogMessage(syslogMessageFor(entry()), opts).toString();
    expect(out).toContain('[loki@32473 seq="42" ');
    expect(out).toContain(' details.name="ci" details.role="viewer" details.scopes="read" details.token="[REDACTED\\]"]');
    expect(out).not.toContain('loki_abcdefghijklmnop');
  });

  it('a configured SD-ID replaces loki@32473', () => {
    const out = formatSyslogMessage(syslogMessageFor(entry()), { ...opts, sdId: 'loki@99999.1' }).toString();
    expect(out).toMatch(/ token\.create \[loki@99999\.1 seq="42" /);
  });

  it('json: SD "-" and the ECS event as MSG', () => {
    const out = formatSyslogMessage(syslogMessageFor(entry()), { ...opts, format: 'json' }).toString();
    const prefix = `<132>1 2026-12-01T10:00:00.000Z h loki 7 token.create - `;
    expect(out.startsWith(prefix)).toBe(true);
    expect(JSON.parse(out.slice(prefix.length))).toEqual(auditEvent(entry(), 'warning'));
  });

  it('cef: SD "-" and the CEF event as MSG', () => {
    const out = formatSyslogMessage(syslogMessageFor(entry()), { ...opts, format: 'cef', version: '9.9.9' }).toString();
    expect(out).toBe(`<132>1 2026-12-01T10:00:00.000Z h loki 7 token.create - ${cefBody(auditEvent(entry(), 'warning'), '9.9.9')}`);
  });

  it('json over the size limit: the details are left out first, the event stays valid JSON', () => {
    const big = entry({ details: { role: 'viewer', blob: 'x'.repeat(5000) } });
    const out = formatSyslogMessage(syslogMessageFor(big), { ...opts, format: 'json', maxMessageBytes: 2000 }).toString();
    const ev = JSON.parse(out.slice(out.indexOf(' - ') + 3));
    expect(ev.loki.details).toBeUndefined();
    expect(ev.loki.details_truncated).toBe(true);
    expect(ev.event.sequence).toBe(42);
  });

  it('checkpoints: the full signed checkpoint in every format, the JWS never redacted', () => {
    const m = syslogCheckpointMessage(CHECKPOINT);
    const rfc = formatSyslogMessage(m, opts).toString();
    expect(rfc).toContain(` jws="${CHECKPOINT.jws}"]`);
    expect(rfc.endsWith(` ${CHECKPOINT.note}`)).toBe(true);
    const json = formatSyslogMessage(m, { ...opts, format: 'json' }).toString();
    const ev = JSON.parse(json.slice(json.indexOf(' - ') + 3));
    expect(ev.loki.checkpoint.jws).toBe(CHECKPOINT.jws);
    expect(ev.loki.checkpoint.note).toBe(CHECKPOINT.note);
    const cef = formatSyslogMessage(m, { ...opts, format: 'cef' }).toString();
    expect(cef).toContain(`cs5=${CHECKPOINT.jws} `);
  });

  it('detailsParams: scalars as they are, scalar arrays joined, objects as JSON', () => {
    expect(detailsParams({ a: 1, b: [1, 'x'], c: { d: true }, e: null })).toEqual({ 'details.a': 1, 'details.b': '1,x', 'details.c': '{"d":true}', 'details.e': null });
  });
});

describe('LOKI_AUDIT_SYSLOG_* parsing', () => {
  const base = { LOKI_AUDIT_SYSLOG_HOST: '127.0.0.1' };
  const load = (env: Record<string, string>) => loadConfig({ ...base, ...env }, { home: '/tmp/h', cwd: '/tmp' });
  const error = (env: Record<string, string>) => {
    try {
      load(env);
    } catch (err) {
      return err instanceof ConfigError ? err.message : `not a ConfigError: ${String(err)}`;
    }
    return 'no error';
  };

  it('defaults: rfc5424, loki@32473, no TLS files', () => {
    expect(load({}).syslog).toEqual({ host: '127.0.0.1', port: 514, proto: 'udp', format: 'rfc5424', sdId: 'loki@32473', tlsCa: null, tlsCert: null, tlsKey: null });
  });

  it('format, SD-ID and TLS files are parsed', () => {
    const c = load({
      LOKI_AUDIT_SYSLOG_FORMAT: 'cef',
      LOKI_AUDIT_SYSLOG_SDID: 'audit@12345.7',
      LOKI_AUDIT_SYSLOG_PROTO: 'tls',
      LOKI_AUDIT_SYSLOG_TLS_CA: '/etc/ca.pem',
      LOKI_AUDIT_SYSLOG_TLS_CERT: '/etc/c.pem',
      LOKI_AUDIT_SYSLOG_TLS_KEY: '/etc/k.pem',
    }).syslog;
    expect(c).toMatchObject({ format: 'cef', sdId: 'audit@12345.7', proto: 'tls', tlsCa: '/etc/ca.pem', tlsCert: '/etc/c.pem', tlsKey: '/etc/k.pem' });
  });

  it('bad values are one clear error naming the variable', () => {
    expect(error({ LOKI_AUDIT_SYSLOG_FORMAT: 'leef' })).toMatch(/^LOKI_AUDIT_SYSLOG_FORMAT="leef" is invalid: expected /);
    for (const bad of ['loki', 'lo ki@1', 'lo=ki@1', 'loki@', 'loki@x1', 'a]@1', '@123', `${'x'.repeat(30)}@123`, 'a"b@1', 'a@b@1']) {
      expect(error({ LOKI_AUDIT_SYSLOG_SDID: bad }), bad).toMatch(/^LOKI_AUDIT_SYSLOG_SDID=.* is invalid: expected an RFC 5424 SD-ID/);
    }
    expect(error({ LOKI_AUDIT_SYSLOG_PROTO: 'tls', LOKI_AUDIT_SYSLOG_TLS_CERT: '/c.pem' })).toMatch(/^LOKI_AUDIT_SYSLOG_TLS_KEY=.* needs both/);
    expect(error({ LOKI_AUDIT_SYSLOG_PROTO: 'tls', LOKI_AUDIT_SYSLOG_TLS_CA: 'ca.pem' })).toMatch(/^LOKI_AUDIT_SYSLOG_TLS_CA="ca.pem" is invalid: expected an absolute path/);
    expect(error({ LOKI_AUDIT_SYSLOG_PROTO: 'tcp', LOKI_AUDIT_SYSLOG_TLS_CA: '/ca.pem' })).toMatch(/^LOKI_AUDIT_SYSLOG_TLS_CA="\/ca.pem" is invalid: expected only with LOKI_AUDIT_SYSLOG_PROTO=tls/);
  });
});

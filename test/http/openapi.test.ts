/**
 * Issue 14: `GET /api/openapi.json`, the OpenAPI 3.1 document generated from the
 * routes' own validators and the route table. Checked with a real OpenAPI
 * validator, against the app's registered routes and scopes, and against real
 * responses of a running server (ajv, JSON Schema 2020-12).
 */
import { readFileSync, rmSync } from 'node:fs';
import { Validator } from '@seriousme/openapi-schema-validator';
import { Ajv2020 } from 'ajv/dist/2020';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TYPES_FILE, typesFromDocument } from '../../scripts/openapi-types';
import { createLokiApp } from '../../src/app';
import { DOCUMENTED_ROUTES } from '../../src/http/openapi';
import { ROUTES } from '../../src/http/scopes';
import { rawRequest } from '../helpers/raw-http';
import { startTestServer, type TestServer } from '../helpers/server';
import { withAuditFailing } from '../helpers/audit';
import { makeToken } from '../helpers/tokens';
import { makeWorkspace, tempRoot } from '../sessions/helpers';

// biome-ignore lint/suspicious/noExplicitAny: the document and bodies are checked by the validators
type Json = any;

/** Hono's pattern as the document writes it. */
const docPath = (p: string) => p.replace(/:([A-Za-z_]\w*)/g, '{$1}').replace(/\/\*$/, '/{tile}');
const pointer = (s: string) => s.replace(/~/g, '~0').replace(/\//g, '~1');

describe('GET /api/openapi.json (real server, auth on)', () => {
  let s: TestServer;
  let doc: Json;
  let raw: string;
  let admin: string;
  let viewer: string;
  let worker: string;
  let root: string;
  let ws: string;
  const ajv = new Ajv2020({ strict: false, allErrors: true, validateFormats: false });
  const json = { 'Content-Type': 'application/json' };

  /** The errors of `body` against the document's schema for that response; [] when it fits. */
  function check(method: string, path: string, status: number, body: unknown): string[] {
    const op = doc.paths[docPath(path)]?.[method.toLowerCase()];
    if (!op) return [`no operation ${method} ${path}`];
    if (!op.responses[String(status)]) return [`${method} ${path} declares no ${status} response`];
    const ref = `openapi.json#/paths/${pointer(docPath(path))}/${method.toLowerCase()}/responses/${status}/content/application~1json/schema`;
    const validate = ajv.getSchema(ref) ?? ajv.compile({ $ref: ref });
    return validate(body) ? [] : (validate.errors ?? []).map((e) => `${e.instancePath} ${e.message}`);
  }

  /** The errors of a request body against the document's request schema; [] when it fits. */
  function checkRequest(method: string, path: string, body: unknown): string[] {
    const ref = `openapi.json#/paths/${pointer(docPath(path))}/${method.toLowerCase()}/requestBody/content/application~1json/schema`;
    const validate = ajv.getSchema(ref) ?? ajv.compile({ $ref: ref });
    return validate(body) ? [] : (validate.errors ?? []).map((e) => `${e.instancePath} ${e.message}`);
  }

  /** A real response: its status as expected, JSON, and its body fitting the document. */
  async function conforms(r: Response, method: string, path: string, status: number): Promise<Json> {
    expect(r.status).toBe(status);
    expect(r.headers.get('content-type')).toMatch(/^application\/json/);
    const body = await r.json();
    expect(check(method, path, status, body)).toEqual([]);
    return body;
  }

  beforeAll(async () => {
    root = tempRoot();
    ws = makeWorkspace(root, 'ws');
    s = await startTestServer({ LOKI_ENTERPRISE_AUTH: 'true', LOKI_WORKSPACE_ROOTS: root });
    admin = (await makeToken(s, 'root', 'admin')).token;
    viewer = (await makeToken(s, 'view', 'viewer')).token;
    worker = (await makeToken(s, 'w1', 'worker', { workerId: 'w1' })).token;
    const r = await s.req('/api/openapi.json', { headers: { 'X-Request-Id': 'trace-openapi-1' } });
    expect(r.status).toBe(200);
    raw = await r.text();
    doc = JSON.parse(raw);
    ajv.addSchema(doc, 'openapi.json');
  });
  afterAll(async () => {
    await s?.stop();
    rmSync(root, { recursive: true, force: true });
  });

  it('is served without a token, as JSON, and audited like the other public routes', async () => {
    await s.runtime.audit.drain();
    const entries = (await s.runtime.audit.query({ afterSeq: 0, limit: 1000 })).map((row) => JSON.parse(row.entry));
    expect(entries.find((e) => e.request?.id === 'trace-openapi-1')).toMatchObject({
      action: 'http.request',
      actor: { type: 'anonymous', id: null, name: null },
      request: { method: 'GET', path: '/api/openapi.json' },
      outcome: { status: 200, success: true, error: null },
    });
    const again = await s.req('/api/openapi.json', { token: viewer });
    expect(again.headers.get('content-type')).toMatch(/^application\/json/);
    // Built once, served from memory: the same bytes.
    expect(await again.text()).toBe(raw);
  });

  it('is a valid OpenAPI 3.1 document (@seriousme/openapi-schema-validator)', async () => {
    const validator = new Validator();
    const res = await validator.validate(structuredClone(doc));
    expect(res.errors ?? []).toEqual([]);
    expect(res.valid).toBe(true);
    expect(validator.version).toBe('3.1');
    expect(doc.openapi).toBe('3.1.0');
    // The API's version, not the server's release (public document; the release is behind `read`).
    expect(doc.info.version).toBe('1.0.0');
    expect(doc.components.securitySchemes).toEqual({ bearer: expect.objectContaining({ type: 'http', scheme: 'bearer' }) });
  });

  it('has every registered route, and nothing else, with its scope from the route table as its security', () => {
    const { app } = createLokiApp(s.runtime.deps);
    const registered = [...new Set(app.routes.filter((r) => r.method !== 'ALL' && r.path !== '/*').map((r) => `${r.method} ${r.path}`))];
    expect(registered.length).toBe(ROUTES.length);
    const documented: string[] = [];
    for (const [p, ops] of Object.entries(doc.paths as Record<string, Record<string, Json>>)) {
      for (const m of Object.keys(ops)) documented.push(`${m.toUpperCase()} ${p}`);
    }
    expect(documented.sort()).toEqual(registered.map((k) => k.replace(/ (.*)$/, (_, p: string) => ` ${docPath(p)}`)).sort());
    for (const key of registered) {
      const [method, path] = key.split(' ') as [string, string];
      const spec = ROUTES.find((r) => r.method === method && r.path === path);
      expect(spec, key).toBeDefined();
      const op = doc.paths[docPath(path)][method.toLowerCase()];
      const expected = spec!.scope === 'public' ? [] : [{ bearer: [spec!.scope === 'admin' ? '*' : spec!.scope] }];
      expect(op.security, key).toEqual(expected);
      // Every error status is the shared error body, and names its codes.
      for (const [status, res] of Object.entries(op.responses as Record<string, Json>)) {
        if (Number(status) < 400 || (path === '/health' && status === '503')) continue;
        const schema = res.content['application/json'].schema;
        expect(schema.allOf[0], `${key} ${status}`).toEqual({ $ref: '#/components/schemas/Error' });
        expect(schema.allOf[1].properties.error.properties.code.enum.length, `${key} ${status}`).toBeGreaterThan(0);
      }
      // A route behind the guard documents the guard's answers; a public one does not.
      expect(Object.keys(op.responses).includes('401'), key).toBe(spec!.scope !== 'public');
      expect(Object.keys(op.responses).includes('503'), key).toBe(true);
    }
  });

  it('describes exactly the routes of the route table (no stale entry)', () => {
    expect([...DOCUMENTED_ROUTES].sort()).toEqual(ROUTES.map((r) => `${r.method} ${r.path}`).sort());
  });

  it('describes parameters and bodies from the validators the routes run', () => {
    const create = doc.paths['/api/sessions'].post;
    const body = create.requestBody.content['application/json'].schema;
    expect(body.required).toEqual(['workspace', 'prd']);
    expect(Object.keys(body.properties).sort()).toEqual(['budget_usd', 'name', 'prd', 'provider', 'sandbox', 'workspace']);
    const logs = doc.paths['/api/sessions/{id}/logs'].get.parameters.map((p: Json) => `${p.in} ${p.name}${p.required ? '!' : ''}`);
    expect(logs.sort()).toEqual(['path id!', 'query after', 'query limit']);
    const audit = doc.paths['/api/enterprise/audit'].get.parameters.map((p: Json) => p.name);
    expect(audit.sort()).toEqual(['action', 'actor', 'after_seq', 'limit', 'order', 'since']);
    expect(doc.paths['/api/sandbox/jobs'].get.parameters).toEqual([expect.objectContaining({ in: 'query', name: 'worker_id', required: true })]);
    expect(doc.paths['/api/enterprise/tokens'].post.requestBody.content['application/json'].schema.required).toEqual(['name']);
    // The codes per status: the validator's, the handler's and the middleware's.
    const codes = (p: string, m: string, st: number) => doc.paths[p][m].responses[String(st)].content['application/json'].schema.allOf[1].properties.error.properties.code.enum;
    expect(codes('/api/sessions', 'post', 400)).toEqual(['bad_request', 'invalid_path', 'policy_violation', 'validation_error']);
    expect(codes('/api/sessions', 'post', 503)).toEqual(['audit_unavailable', 'service_unavailable']);
    expect(codes('/api/sessions', 'post', 413)).toEqual(['payload_too_large']);
    expect(codes('/api/enterprise/tokens/{id}', 'delete', 409)).toEqual(['conflict']);
    expect(codes('/api/status', 'get', 401)).toEqual(['invalid_token']);
    expect(codes('/api/status', 'get', 403)).toEqual(['forbidden', 'forbidden_host', 'insufficient_scope']);
    expect(codes('/api/enterprise/status', 'get', 403)).toEqual(['forbidden_host']);
    expect(doc.paths['/health'].get.responses['503'].content['application/json'].schema.properties.status).toEqual({ type: 'string', const: 'unhealthy' });
  });

  it('real token responses fit the document: 201 create, 200 list, 200 revoke, 409, 400, 401, 403, 503', async () => {
    const created = await conforms(
      await s.req('/api/enterprise/tokens', { method: 'POST', token: admin, headers: json, body: JSON.stringify({ name: 'ci', role: 'operator', expires_days: 30 }) }),
      'POST',
      '/api/enterprise/tokens',
      201,
    );
    expect(created.token).toMatch(/^loki_/);
    await conforms(await s.req('/api/enterprise/tokens?all=true', { token: admin }), 'GET', '/api/enterprise/tokens', 200);
    await conforms(await s.req(`/api/enterprise/tokens/${created.id}`, { method: 'DELETE', token: admin }), 'DELETE', '/api/enterprise/tokens/:id', 200);
    const again = await conforms(await s.req(`/api/enterprise/tokens/${created.id}`, { method: 'DELETE', token: admin }), 'DELETE', '/api/enterprise/tokens/:id', 409);
    expect(again.error.code).toBe('conflict');
    const bad = await conforms(
      await s.req('/api/enterprise/tokens', { method: 'POST', token: admin, headers: json, body: JSON.stringify({ name: 'x', role: 'emperor' }) }),
      'POST',
      '/api/enterprise/tokens',
      400,
    );
    expect(bad.error.code).toBe('validation_error');
    const anonymous = await conforms(await s.req('/api/enterprise/tokens'), 'GET', '/api/enterprise/tokens', 401);
    expect(anonymous.error.code).toBe('invalid_token');
    const denied = await conforms(await s.req('/api/enterprise/tokens', { token: viewer }), 'GET', '/api/enterprise/tokens', 403);
    expect(denied.error.code).toBe('insufficient_scope');
    const failing = await withAuditFailing(s.runtime.audit, () =>
      s.req('/api/enterprise/tokens', { method: 'POST', token: admin, headers: json, body: JSON.stringify({ name: 'never', role: 'viewer' }) }),
    );
    expect((await conforms(failing, 'POST', '/api/enterprise/tokens', 503)).error.code).toBe('audit_unavailable');
  });

  it('request bodies: what the server accepts fits the documented schema, what its validator refuses does not', () => {
    expect(checkRequest('POST', '/api/sessions', { workspace: ws, prd: 'prd.md', budget_usd: '5.00', name: 'doc' })).toEqual([]);
    expect(checkRequest('POST', '/api/sessions', { workspace: ws, prd: 'prd.md', sandbox: false, provider: 'codex', budget_usd: 5 })).toEqual([]);
    expect(checkRequest('POST', '/api/sessions', { workspace: 5 }).length).toBeGreaterThan(0);
    expect(checkRequest('POST', '/api/sessions', { workspace: ws, prd: 'prd.md', provider: 'gpt' }).length).toBeGreaterThan(0);
    expect(checkRequest('POST', '/api/enterprise/tokens', { name: 'ci', role: 'operator', expires_days: 30 })).toEqual([]);
    expect(checkRequest('POST', '/api/enterprise/tokens', { role: 'operator' }).length).toBeGreaterThan(0);
    expect(checkRequest('POST', '/api/sandbox/jobs/claim', { worker_id: 'w1', wait_ms: 0 })).toEqual([]);
    expect(checkRequest('POST', '/api/sandbox/jobs/claim', { worker_id: '../w1' }).length).toBeGreaterThan(0);
    expect(checkRequest('POST', '/api/sandbox/jobs/:id/events', { worker_id: 'w1', lease_id: 'l', events: [{ seq: 1, type: 'heartbeat', data: {} }] })).toEqual([]);
    expect(checkRequest('POST', '/api/sandbox/jobs/:id/events', { worker_id: 'w1', lease_id: 'l', events: [{ seq: 1, type: 'teleport', data: {} }] }).length).toBeGreaterThan(0);
  });

  it('real session and worker responses fit the document', async () => {
    const invalid = await conforms(
      await s.req('/api/sessions', { method: 'POST', token: admin, headers: json, body: JSON.stringify({ workspace: 5 }) }),
      'POST',
      '/api/sessions',
      400,
    );
    expect(invalid.error.code).toBe('validation_error');
    const outside = await conforms(
      await s.req('/api/sessions', { method: 'POST', token: admin, headers: json, body: JSON.stringify({ workspace: '/etc', prd: 'passwd' }) }),
      'POST',
      '/api/sessions',
      400,
    );
    expect(outside.error.code).toBe('invalid_path');
    const malformed = await conforms(await s.req('/api/sessions', { method: 'POST', token: admin, headers: json, body: '{"workspace":' }), 'POST', '/api/sessions', 400);
    expect(malformed.error.code).toBe('bad_request');
    const session = await conforms(
      await s.req('/api/sessions', { method: 'POST', token: admin, headers: json, body: JSON.stringify({ workspace: ws, prd: 'prd.md', budget_usd: '5.00', name: 'doc' }) }),
      'POST',
      '/api/sessions',
      201,
    );
    await conforms(await s.req('/api/sessions?limit=5', { token: viewer }), 'GET', '/api/sessions', 200);
    await conforms(await s.req(`/api/sessions/${session.id}`, { token: viewer }), 'GET', '/api/sessions/:id', 200);
    await conforms(await s.req(`/api/sessions/${session.id}/logs`, { token: viewer }), 'GET', '/api/sessions/:id/logs', 200);
    expect((await conforms(await s.req('/api/sessions/ses_nope', { token: viewer }), 'GET', '/api/sessions/:id', 404)).error.code).toBe('not_found');

    const claim = await conforms(
      await s.req('/api/sandbox/jobs/claim', { method: 'POST', token: worker, headers: json, body: JSON.stringify({ worker_id: 'w1', wait_ms: 0 }) }),
      'POST',
      '/api/sandbox/jobs/claim',
      200,
    );
    expect(claim.job.session.id).toBe(session.id);
    const ack = await conforms(
      await s.req(`/api/sandbox/jobs/${session.id}/events`, {
        method: 'POST',
        token: worker,
        headers: json,
        body: JSON.stringify({ worker_id: 'w1', lease_id: claim.job.lease_id, events: [{ seq: 1, type: 'heartbeat', data: {} }] }),
      }),
      'POST',
      '/api/sandbox/jobs/:id/events',
      200,
    );
    expect(ack.applied).toBe(1);
    const other = await conforms(await s.req('/api/sandbox/jobs?worker_id=w2', { token: worker }), 'GET', '/api/sandbox/jobs', 403);
    expect(other.error.code).toBe('forbidden');
    expect((await conforms(await s.req('/api/sandbox/jobs?worker_id=w1', { token: worker }), 'GET', '/api/sandbox/jobs', 200)).session_ids).toEqual([session.id]);
    const stop = await s.req(`/api/sessions/${session.id}/stop`, { method: 'POST', token: admin });
    await conforms(stop, 'POST', '/api/sessions/:id/stop', 202);
  });

  it('real audit and status responses fit the document', async () => {
    const page = await conforms(await s.req('/api/enterprise/audit?limit=50', { token: admin }), 'GET', '/api/enterprise/audit', 200);
    expect(page.count).toBeGreaterThan(0);
    await conforms(await s.req('/api/enterprise/audit/verify', { token: admin }), 'GET', '/api/enterprise/audit/verify', 200);
    await conforms(await s.req('/api/enterprise/audit/checkpoint', { token: admin }), 'GET', '/api/enterprise/audit/checkpoint', 200);
    await conforms(await s.req('/api/enterprise/audit/tlog/proof/inclusion?index=0&size=1', { token: admin }), 'GET', '/api/enterprise/audit/tlog/proof/inclusion', 200);
    expect((await conforms(await s.req('/api/enterprise/audit?limit=0', { token: admin }), 'GET', '/api/enterprise/audit', 400)).error.code).toBe('validation_error');
    await conforms(await s.req('/api/status', { token: viewer }), 'GET', '/api/status', 200);
    await conforms(await s.req('/status', { token: viewer }), 'GET', '/status', 200);
    await conforms(await s.req('/api/enterprise/status'), 'GET', '/api/enterprise/status', 200);
    await conforms(await s.req('/health'), 'GET', '/health', 200);
    // Path safety answers before any route: a traversal under a route's prefix, checked against that route.
    const traversal = await rawRequest(s.port, '/api/sessions/%2e%2e', { headers: { Authorization: `Bearer ${viewer}` } });
    expect(traversal.status).toBe(400);
    const refused = JSON.parse(traversal.body);
    expect(refused.error.code).toBe('invalid_path');
    expect(check('GET', '/api/sessions/:id', 400, refused)).toEqual([]);
  });

  it('the committed types (src/http/openapi-types.ts, used by the client and the dashboard) are what the served document generates', async () => {
    const committed = readFileSync(TYPES_FILE, 'utf8');
    expect(await typesFromDocument(doc), 'run `npm run openapi:types`').toBe(committed);
    // A drift shows: the same document with a field renamed generates other types.
    const drifted = structuredClone(doc);
    const props = drifted.components.schemas.Session.properties;
    props.workspace_path = props.workspace;
    delete props.workspace;
    expect(await typesFromDocument(drifted)).not.toBe(committed);
  });

  it('the checks can fail: a body that does not fit is refused', () => {
    const body = { error: { code: 'validation_error', message: 'x', request_id: 'req_1' } };
    expect(check('POST', '/api/sessions', 400, body)).toEqual([]);
    // A code the route does not answer with that status.
    expect(check('POST', '/api/sessions', 400, { error: { ...body.error, code: 'conflict' } }).length).toBeGreaterThan(0);
    // A missing request id; an error body where a token is declared.
    expect(check('POST', '/api/sessions', 400, { error: { code: 'validation_error', message: 'x' } }).length).toBeGreaterThan(0);
    expect(check('POST', '/api/enterprise/tokens', 201, body).length).toBeGreaterThan(0);
    expect(check('GET', '/api/enterprise/tokens', 404, body)).toEqual(['GET /api/enterprise/tokens declares no 404 response']);
  });
});

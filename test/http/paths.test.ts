import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pathViolation } from '../../src/http/middleware/paths';
import { rawRequest } from '../helpers/raw-http';
import { startTestServer, type TestServer } from '../helpers/server';

// Traversal variants, each appended to a route with a path parameter.
const CORPUS = [
  '..',
  '../',
  '../../etc/passwd',
  './../x',
  '.',
  'a/../../b',
  '..%2f',
  '..%2F..%2Fetc%2Fpasswd',
  '%2e%2e',
  '%2E%2E',
  '%2e%2e/',
  '%2e%2e%2f',
  '%2e%2e%2F',
  '%2e.',
  '.%2e',
  '%2e%2e%5c',
  '..%5c',
  '..%5C..%5Cwindows',
  '%5c..%5c',
  '%252e%252e',
  '%252e%252e%252f',
  '..%252f',
  '%252f',
  '%255c',
  '%25252e%25252e',
  '%c0%ae%c0%ae/',
  '%c0%ae%c0%ae%c0%af',
  '..%c0%af',
  '%c1%9c',
  '%e0%80%ae%e0%80%ae',
  '%u002e%u002e',
  '%uff0e%uff0e',
  '..%u2215',
  'x%00',
  '%00',
  'a%00.json',
  '%2500',
  '%2fetc%2fpasswd',
  '%2Fetc',
  '/etc/passwd',
  '//etc/passwd',
  '....//....//etc',
  '..;/',
  '..%3b/',
  'valid/..',
  'valid/../..',
  '%2e%2e;',
  '..%00/',
  '%%32%65%%32%65',
  '%%32%66',
  '.%252e/',
  '..%255c',
  '%5c',
  '.../.../',
];

describe('pathViolation (pure)', () => {
  it('has a corpus of at least 50 traversal variants', () => {
    expect(CORPUS.length).toBeGreaterThanOrEqual(50);
  });

  it.each(CORPUS)('refuses /api/sessions/%s', (v) => {
    expect(pathViolation(`/api/sessions/${v}`)).not.toBeNull();
  });

  it.each(['..\\windows', 'a\\b', 'a\0b', '\\\\server\\share'])('refuses raw backslash or NUL: %j', (v) => {
    expect(pathViolation(`/api/sessions/${v}`)).not.toBeNull();
  });

  it.each(['/api/sessions/ses_0123abcd', '/api/sessions/ses_1/logs', '/api/enterprise/tokens/tok_abc', '/', '/health', '/api/status?x=..', '/assets/app.js'])(
    'accepts %s',
    (p) => {
      expect(pathViolation(p)).toBeNull();
    },
  );
});

describe('path safety over the wire', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(async () => {
    await server.stop();
  });

  it.each(CORPUS.filter((v) => !v.includes('\\')))('GET /api/sessions/%s → 400 invalid_path', async (v) => {
    const r = await rawRequest(server.port, `/api/sessions/${v}`);
    expect(r.status).toBe(400);
    expect(JSON.parse(r.body).error.code).toBe('invalid_path');
  });

  it('refuses traversal on the token route too, and a raw backslash', async () => {
    for (const p of ['/api/enterprise/tokens/..%2f..%2fx', '/api/enterprise/tokens/%2e%2e', '/api/sessions/..\\..\\x']) {
      const r = await rawRequest(server.port, p, { method: p.includes('tokens') ? 'DELETE' : 'GET' });
      expect(r.status).toBe(400);
      expect(JSON.parse(r.body).error.code).toBe('invalid_path');
    }
  });

  it('keeps serving after the corpus', async () => {
    const r = await server.req('/health');
    expect(r.status).toBe(200);
  });
});

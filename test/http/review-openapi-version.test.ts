/**
 * Review finding: the server version is behind the `read` scope on /api/status, but
 * the public OpenAPI document carried it as info.version, so an anonymous caller could
 * fingerprint the exact release. The document now carries the API's version.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VERSION } from '../../src/version';
import { startTestServer, type TestServer } from '../helpers/server';

describe('server version exposure (review)', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer({ LOKI_ENTERPRISE_AUTH: 'true' });
  });
  afterAll(async () => {
    await s?.stop();
  });

  it('an anonymous caller does not learn the server version', async () => {
    expect((await s.req('/api/status')).status).toBe(401);
    const doc = await (await s.req('/api/openapi.json')).json();
    expect(doc.info.version).not.toBe(VERSION);
  });
});

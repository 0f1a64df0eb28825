/**
 * Review of the typed client (src/client.ts): a path parameter (a session id from
 * the command line) is one path segment, always. `/`, `?`, `#` and `%` are
 * encoded; `.` and `..` cannot be (the URL parser resolves them, and `%2E` too),
 * so the client refuses them instead of sending the request elsewhere
 * (`loki stop ..` must not become `POST /api/stop`).
 */
import { createServer, type Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiClientError, LokiClient } from '../../src/client';

describe('LokiClient path parameters (review)', () => {
  let server: Server;
  let url: string;
  const seen: string[] = [];
  beforeAll(async () => {
    server = createServer((req, res) => {
      seen.push(`${req.method} ${req.url}`);
      res.writeHead(404, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ error: { code: 'not_found', message: 'no such session', request_id: 'req_x' } }));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  });
  afterAll(async () => {
    await new Promise<void>((r) => server.close(() => r()));
  });

  it('encodes /, ?, #, % and spaces into the one segment', async () => {
    const c = new LokiClient({ url });
    const cases: [string, string][] = [
      ['a/b', 'a%2Fb'],
      ['a%2Fb', 'a%252Fb'],
      ['x?limit=1', 'x%3Flimit%3D1'],
      ['x#frag', 'x%23frag'],
      ['a b', 'a%20b'],
      ['..%2F..', '..%252F..'],
      ['...', '...'],
    ];
    for (const [id, segment] of cases) {
      seen.length = 0;
      await expect(c.stopSession(id)).rejects.toMatchObject({ status: 404, code: 'not_found' });
      expect(seen, id).toEqual([`POST /api/sessions/${segment}/stop`]);
    }
  });

  it('refuses . and .. as a path parameter without sending anything', async () => {
    const c = new LokiClient({ url });
    for (const id of ['.', '..']) {
      seen.length = 0;
      const calls = [() => c.stopSession(id), () => c.getSession(id), () => c.sessionLogs(id), () => c.postJobEvents(id, { seq: 1, events: [] } as never)];
      for (const call of calls) {
        const err = await call().catch((e: unknown) => e);
        expect(err, id).toBeInstanceOf(ApiClientError);
        expect(err, id).toMatchObject({ status: 0, code: 'validation_error' });
      }
      expect(seen, id).toEqual([]);
    }
  });
});

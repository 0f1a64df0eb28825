/**
 * The witness's HTTP interface (c2sp.org/tlog-witness), one prefix for
 * submission and monitoring:
 *
 *   POST /add-checkpoint              old size, consistency proof, checkpoint → cosignature
 *   GET  /<sha256(origin) hex>/checkpoint  the latest cosigned checkpoint (monitors)
 *   GET  /                            {name, verifier_key, logs} (plain facts, no secrets)
 *
 * There is no authentication beyond the log's signature on the checkpoint, as
 * the spec says.
 */
import type { AddressInfo } from 'node:net';
import { createAdaptorServer } from '@hono/node-server';
import { Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import type { Logger } from '../http/context';
import { MAX_ADD_CHECKPOINT_BYTES, type Witness } from './witness';
import { originHash } from './witness-state';

const TEXT = 'text/plain; charset=utf-8';

export function witnessApp(witness: Witness, logger: Logger): Hono {
  const app = new Hono();
  const text = (status: number, body: string, contentType = TEXT) =>
    new Response(body, { status, headers: { 'Content-Type': contentType, 'Cache-Control': 'no-store', 'X-Content-Type-Options': 'nosniff' } });

  app.post(
    '/add-checkpoint',
    bodyLimit({ maxSize: MAX_ADD_CHECKPOINT_BYTES, onError: () => text(413, 'request body too large\n') }),
    async (c) => {
      const r = await witness.addCheckpoint(new Uint8Array(await c.req.arrayBuffer()));
      const fields = { status: r.status, ...r.info };
      if (r.status === 200) logger.info('add-checkpoint cosigned', fields);
      else if (r.status === 409 || r.status === 422) logger.warn('add-checkpoint refused', fields);
      else logger.info('add-checkpoint refused', fields);
      return text(r.status, r.body, r.contentType);
    },
  );
  app.all('/add-checkpoint', () => new Response('use POST\n', { status: 405, headers: { Allow: 'POST', 'Content-Type': TEXT } }));

  const byHash = () => new Map(witness.origins.map((o) => [originHash(o), o]));
  app.get('/:hash{[0-9a-f]{64}}/checkpoint', (c) => {
    const origin = byHash().get(c.req.param('hash'));
    const state = origin ? witness.latest(origin) : null;
    if (!state) return text(404, 'no cosigned checkpoint for that log\n');
    return text(200, state.checkpoint);
  });
  app.get('/', (c) => c.json({ name: witness.name, verifier_key: witness.vkey, logs: witness.origins }));
  app.notFound(() => text(404, 'not found\n'));
  app.onError((err) => {
    logger.error('witness request failed', { err: String(err) });
    return text(500, 'internal error\n');
  });
  return app;
}

export interface RunningWitness {
  url: string;
  port: number;
  close(): Promise<void>;
}

/** Serve the witness on host:port (port 0: any free port). */
export async function serveWitness(witness: Witness, opts: { host: string; port: number; logger: Logger }): Promise<RunningWitness> {
  const app = witnessApp(witness, opts.logger);
  const server = createAdaptorServer({ fetch: app.fetch, hostname: opts.host });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  return {
    url: `http://${host}:${addr.port}`,
    port: addr.port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        (server as unknown as { closeIdleConnections?: () => void }).closeIdleConnections?.();
      }),
  };
}

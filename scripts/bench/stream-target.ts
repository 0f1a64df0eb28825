/**
 * The server for bench:streams, in its own process (run with --expose-gc): the
 * real server (startServer) configured by the LOKI_* environment. Heap figures
 * are answered over the IPC channel only, so nothing about them is in the
 * product: on {cmd: 'heap'} it runs a full GC and replies {heapUsed}.
 * Prints `READY <port>` on stdout, exits on SIGTERM.
 */
import { configOrExit } from '../../src/node';
import { startServer } from '../../src/server';
import { createLogger } from '../../src/util/logger';

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc || !process.send) {
  process.stderr.write('stream-target.ts needs --expose-gc and an IPC channel\n');
  process.exit(2);
}
const server = await startServer(configOrExit(), { logger: createLogger({ quiet: true }) });
process.on('message', async (msg: { cmd?: string }) => {
  if (msg?.cmd !== 'heap') return;
  // Several passes with pauses between them, so finalizers and weak refs settle.
  for (let i = 0; i < 4; i++) {
    gc();
    await new Promise((r) => setTimeout(r, 50));
  }
  const m = process.memoryUsage();
  process.send?.({ heapUsed: m.heapUsed, rss: m.rss, external: m.external });
});
process.on('SIGTERM', () => {
  void server.stop(2000).then(() => process.exit(0));
});
process.stdout.write(`READY ${server.port}\n`);

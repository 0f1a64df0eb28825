/**
 * The other end of `bench:sandbox`'s egress figure, in its own process (as an agent
 * and a destination are, apart from the worker's proxy): a loopback origin that
 * sends N MiB on every connection, and a client that downloads from it directly, or
 * through a CONNECT over the proxy's Unix socket or a forwarder's TCP port. Reads
 * commands from stdin, one per line (`direct`, `unix PATH`, `tcp PORT`), and prints
 * the milliseconds each download took; the first line printed is the origin's port.
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import readline from 'node:readline';

const mb = Number(process.argv[2] ?? 256);
const bytes = mb * 1024 * 1024;
const chunk = Buffer.alloc(1024 * 1024, 0x61);

const origin = net.createServer((s) => {
  s.on('error', () => undefined);
  let sent = 0;
  const pump = () => {
    while (sent < bytes) {
      sent += chunk.length;
      if (!s.write(chunk)) return void s.once('drain', pump);
    }
    s.end();
  };
  pump();
});
await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
const port = (origin.address() as net.AddressInfo).port;
process.stdout.write(`${port}\n`);

function download(connect: () => net.Socket, request: string | null): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const sock = connect();
    let got = 0;
    let headDone = request === null;
    let head = '';
    sock.once('error', reject);
    sock.once('connect', () => {
      if (request !== null) sock.write(request);
    });
    sock.on('data', (d: Buffer) => {
      if (!headDone) {
        head += d.toString('latin1');
        const end = head.indexOf('\r\n\r\n');
        if (end === -1) return;
        if (!/^HTTP\/1\.[01] 200/.test(head)) return reject(new Error(`refused: ${head.split('\r\n')[0]}`));
        headDone = true;
        got += Buffer.byteLength(head.slice(end + 4), 'latin1');
      } else got += d.length;
      if (got >= bytes) {
        sock.destroy();
        resolve(performance.now() - t0);
      }
    });
    sock.once('close', () => {
      if (got < bytes) reject(new Error(`closed after ${got} of ${bytes} bytes`));
    });
  });
}

const connectReq = `CONNECT 127.0.0.1:${port} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`;
for await (const line of readline.createInterface({ input: process.stdin })) {
  const [cmd, arg] = line.trim().split(' ');
  try {
    const ms =
      cmd === 'direct'
        ? await download(() => net.connect(port, '127.0.0.1'), null)
        : cmd === 'unix'
          ? await download(() => net.connect(arg!), connectReq)
          : await download(() => net.connect(Number(arg), '127.0.0.1'), connectReq);
    process.stdout.write(`${ms}\n`);
  } catch (err) {
    process.stdout.write(`error ${(err as Error).message}\n`);
  }
}
origin.close();

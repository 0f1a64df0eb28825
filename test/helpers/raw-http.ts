import { connect } from 'node:net';

/** Send an HTTP/1.1 request with the path exactly as given (no client-side normalisation). */
export function rawRequest(
  port: number,
  rawPath: string,
  opts: { method?: string; host?: string; headers?: Record<string, string> } = {},
): Promise<{ status: number; headers: Record<string, string>; body: string }> {
  return new Promise((resolve, reject) => {
    const sock = connect(port, '127.0.0.1');
    let data = '';
    sock.setEncoding('latin1');
    sock.on('data', (d) => {
      data += d;
    });
    sock.on('error', reject);
    sock.on('end', () => {
      const [head = '', ...rest] = data.split('\r\n\r\n');
      const [statusLine = '', ...headerLines] = head.split('\r\n');
      const headers: Record<string, string> = {};
      for (const l of headerLines) {
        const i = l.indexOf(':');
        if (i > 0) headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
      }
      resolve({ status: Number(statusLine.split(' ')[1]), headers, body: rest.join('\r\n\r\n') });
    });
    const extra = Object.entries(opts.headers ?? {})
      .map(([k, v]) => `${k}: ${v}\r\n`)
      .join('');
    sock.write(`${opts.method ?? 'GET'} ${rawPath} HTTP/1.1\r\nHost: ${opts.host ?? `127.0.0.1:${port}`}\r\n${extra}Connection: close\r\n\r\n`, 'latin1');
  });
}

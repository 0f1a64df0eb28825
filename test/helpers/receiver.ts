/** What the syslog receivers started by the tests share (test/helpers/rsyslog.ts, test/helpers/syslog-ng.ts). */
import { readFile } from 'node:fs/promises';
import net from 'node:net';

const LOOPBACK = '127.0.0.1';

/** Polls `check` every 50 ms until it holds; throws `why()` past `deadline` or once `dead()`. */
export async function until(check: () => Promise<boolean>, deadline: number, why: () => string, dead: () => boolean = () => false): Promise<void> {
  for (;;) {
    if (await check()) return;
    if (dead() || Date.now() > deadline) throw new Error(why());
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Whether something accepts TCP connections on the loopback port. */
export function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: LOOPBACK, port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** The complete lines of a receiver's output file (it may be writing the last one); none before it exists. */
export async function completeLines(file: string): Promise<string[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    return [];
  }
  return text
    .slice(0, text.lastIndexOf('\n') + 1)
    .split('\n')
    .filter((l) => l.length > 0);
}

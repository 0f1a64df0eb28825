/**
 * Mount points and bind mounts on the worker host (session worktrees, warm-pool
 * slots). Programs run with argument arrays and a fixed PATH; every failure is an
 * Error naming the program and its first line of stderr.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { redactString } from '../util/redact';

const SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

function unescapeMountPath(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(Number.parseInt(oct, 8)));
}

/** Mount points at `dir` or below it (deepest first), from /proc/self/mountinfo; null when it cannot be read. */
export function mountsUnder(dir: string): string[] | null {
  let text: string;
  try {
    text = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return null;
  }
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const field = line.split(' ')[4];
    if (!field) continue;
    const mp = unescapeMountPath(field);
    if (mp === dir || mp.startsWith(`${dir}/`)) out.push(mp);
  }
  return out.sort((a, b) => b.length - a.length);
}

/** Run `mount`/`umount` with these arguments; rejects with the program's first stderr line. */
export function mountCommand(program: 'mount' | 'umount', args: string[], timeoutMs = 60_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(program, args, { stdio: ['ignore', 'ignore', 'pipe'], env: { PATH: SYSTEM_PATH, LC_ALL: 'C' } });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => {
      if (stderr.length < 4096) stderr += d.toString('utf8');
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    timer.unref();
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`${program} could not be started: ${err.message}`));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) return resolve();
      const line = stderr.split('\n').find((l) => l.trim()) ?? (signal ? `killed by ${signal}` : `exit code ${code}`);
      reject(new Error(`${program} ${args.join(' ')} failed: ${redactString(line.trim())}`));
    });
  });
}

/** Bind `source` onto `target` (both existing directories). */
export function bindMount(source: string, target: string): Promise<void> {
  return mountCommand('mount', ['--no-canonicalize', '--bind', source, target]);
}

/** Unmount `target`; when it is busy, detach it lazily (the kernel finishes when it is released). */
export async function unmount(target: string): Promise<void> {
  try {
    await mountCommand('umount', [target]);
  } catch {
    await mountCommand('umount', ['-l', target]);
  }
}

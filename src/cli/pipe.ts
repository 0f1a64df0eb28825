/**
 * A closed pipe (`loki enterprise audit tail -n 200 | head -1`): Node ignores
 * SIGPIPE, so a write to a pipe whose reader is gone fails with EPIPE and,
 * unhandled, ends the process with a stack trace. Unix tools (`cat`, `seq`) are
 * killed by SIGPIPE instead: nothing on stderr, and the shell reports status 141
 * (128 + 13), which `set -o pipefail` sees. The CLI does the same: on EPIPE on
 * stdout or stderr it restores SIGPIPE's default action and raises it.
 */

let closing = false;
let serving = false;

/**
 * A long-running process (`loki dashboard`, `loki sandbox worker`): a closed log
 * pipe loses the log lines, never the process (dying of SIGPIPE would skip the
 * graceful shutdown: sessions, the audit's shutdown checkpoint, the embedded worker).
 */
export function keepServingOnClosedPipe(): void {
  serving = true;
}

/** End the process the way a Unix tool ends on a closed pipe. */
export function dieOfClosedPipe(): void {
  if (closing) return;
  closing = true;
  // Node starts with SIGPIPE ignored; a listener added and removed leaves it at
  // its default action (terminate), which the kill below then takes.
  const noop = () => {};
  process.on('SIGPIPE', noop);
  process.off('SIGPIPE', noop);
  process.kill(process.pid, 'SIGPIPE');
  // Should the signal not end the process, exit with the status the shell would show.
  setTimeout(() => process.exit(141), 200).unref();
  process.exitCode = 141;
}

function onStreamError(stream: NodeJS.WriteStream, err: NodeJS.ErrnoException): void {
  if (err.code === 'EPIPE' || err.code === 'ERR_STREAM_DESTROYED') {
    if (!serving) dieOfClosedPipe();
    return;
  }
  // Any other write error on our own output: one line on stderr if it is still there.
  if (stream !== process.stderr) process.stderr.write(`loki: cannot write to stdout: ${err.message}\n`);
  process.exit(1);
}

/** Install the handlers on stdout and stderr (once, in the CLI entry). */
export function exitQuietlyOnClosedPipe(): void {
  process.stdout.on('error', (err: NodeJS.ErrnoException) => onStreamError(process.stdout, err));
  process.stderr.on('error', (err: NodeJS.ErrnoException) => onStreamError(process.stderr, err));
}

import type { Logger } from '../http/context';
import { redactString, redactValue } from './redact';

/** JSON-lines logger to stderr; every message and field is redacted. */
export function createLogger(opts: { quiet?: boolean } = {}): Logger {
  const write = (level: string, msg: string, fields?: Record<string, unknown>) => {
    if (opts.quiet && level === 'info') return;
    const line = JSON.stringify({ time: new Date().toISOString(), level, msg: redactString(msg), ...(fields ? redactValue(fields) : {}) });
    process.stderr.write(`${line}\n`);
  };
  return {
    info: (m, f) => write('info', m, f),
    warn: (m, f) => write('warn', m, f),
    error: (m, f) => write('error', m, f),
  };
}

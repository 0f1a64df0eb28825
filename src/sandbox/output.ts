/**
 * Session output: bytes from stdout/stderr → UTF-8 lines → redacted → capped.
 * Every line (before redaction) also goes to `onRawLine` so the budget still sees
 * cost lines after the cap is reached; nothing past the cap is stored or published.
 */
import { StringDecoder } from 'node:string_decoder';
import { redactString } from '../util/redact';

export type OutputStream = 'stdout' | 'stderr';

export const DEFAULT_MAX_OUTPUT_BYTES = 50 * 1024 * 1024;
/** A line longer than this is cut (a provider printing one endless line cannot exhaust memory). */
export const MAX_LINE_CHARS = 1024 * 1024;

export interface OutputCollectorOptions {
  maxBytes?: number;
  maxLineChars?: number;
  onLine(stream: OutputStream, line: string): void;
  onRawLine?(stream: OutputStream, line: string): void;
  /** Called once, when the cap is reached, after the marker line was emitted. */
  onTruncated?(maxBytes: number): void;
  /** Called for every chunk received (idle-output detection). */
  onActivity?(): void;
  /** The redaction applied to every stored line (default: the secret patterns). */
  redact?: (line: string) => string;
}

export interface OutputCollector {
  write(stream: OutputStream, chunk: Buffer | string): void;
  /** Flush partial last lines. */
  end(): void;
  readonly truncated: boolean;
  /** Bytes stored so far (redacted lines plus newlines). */
  readonly storedBytes: number;
}

export function truncationMarker(maxBytes: number): string {
  return `[loki] output truncated: the session reached its limit of ${Math.round(maxBytes / (1024 * 1024))} MB; further output is discarded`;
}

export function createOutputCollector(opts: OutputCollectorOptions): OutputCollector {
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_OUTPUT_BYTES;
  const maxLine = opts.maxLineChars ?? MAX_LINE_CHARS;
  const state: Record<OutputStream, { decoder: StringDecoder; pending: string }> = {
    stdout: { decoder: new StringDecoder('utf8'), pending: '' },
    stderr: { decoder: new StringDecoder('utf8'), pending: '' },
  };
  let stored = 0;
  let truncated = false;
  const redact = opts.redact ?? redactString;

  const emit = (stream: OutputStream, raw: string) => {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    opts.onRawLine?.(stream, line);
    if (truncated) return;
    const clean = redact(line);
    const size = Buffer.byteLength(clean) + 1;
    if (stored + size > maxBytes) {
      truncated = true;
      opts.onLine(stream, truncationMarker(maxBytes));
      opts.onTruncated?.(maxBytes);
      return;
    }
    stored += size;
    opts.onLine(stream, clean);
  };

  const drain = (stream: OutputStream) => {
    const s = state[stream];
    let start = 0;
    for (;;) {
      const nl = s.pending.indexOf('\n', start);
      if (nl === -1) break;
      emit(stream, s.pending.slice(start, nl));
      start = nl + 1;
    }
    s.pending = s.pending.slice(start);
    while (s.pending.length > maxLine) {
      emit(stream, s.pending.slice(0, maxLine));
      s.pending = s.pending.slice(maxLine);
    }
  };

  return {
    write(stream, chunk) {
      opts.onActivity?.();
      const s = state[stream];
      s.pending += typeof chunk === 'string' ? chunk : s.decoder.write(chunk);
      drain(stream);
    },
    end() {
      for (const stream of ['stdout', 'stderr'] as const) {
        const s = state[stream];
        s.pending += s.decoder.end();
        drain(stream);
        if (s.pending.length > 0) emit(stream, s.pending);
        s.pending = '';
      }
    },
    get truncated() {
      return truncated;
    },
    get storedBytes() {
      return stored;
    },
  };
}

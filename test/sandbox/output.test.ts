import { describe, expect, it } from 'vitest';
import { createOutputCollector, type OutputStream, truncationMarker } from '../../src/sandbox/output';
import { REDACTED, secretRedactor } from '../../src/util/redact';

function collect(opts: { maxBytes?: number; maxLineChars?: number } = {}) {
  const lines: [OutputStream, string][] = [];
  const raw: string[] = [];
  let truncatedAt: number | null = null;
  let activity = 0;
  const c = createOutputCollector({
    ...opts,
    onLine: (s, l) => lines.push([s, l]),
    onRawLine: (_s, l) => raw.push(l),
    onTruncated: (n) => {
      truncatedAt = n;
    },
    onActivity: () => {
      activity++;
    },
  });
  return { c, lines, raw, truncated: () => truncatedAt, activity: () => activity };
}

describe('createOutputCollector', () => {
  it('splits lines across chunks per stream, strips CR and flushes the tail', () => {
    const { c, lines, activity } = collect();
    c.write('stdout', Buffer.from('hel'));
    c.write('stderr', Buffer.from('err1\r\ner'));
    c.write('stdout', Buffer.from('lo\nwor'));
    c.write('stderr', Buffer.from('r2\n'));
    c.end();
    expect(lines).toEqual([
      ['stderr', 'err1'],
      ['stdout', 'hello'],
      ['stderr', 'err2'],
      ['stdout', 'wor'],
    ]);
    expect(activity()).toBe(4);
  });

  it('decodes UTF-8 split across chunks', () => {
    const { c, lines } = collect();
    const bytes = Buffer.from('héllo ✓\n');
    for (const b of bytes) c.write('stdout', Buffer.from([b]));
    c.end();
    expect(lines).toEqual([['stdout', 'héllo ✓']]);
  });

  it('redacts each line but feeds the raw line to onRawLine', () => {
    const { c, lines, raw } = collect();
    c.write('stdout', 'key sk-ant-abcdefghijklmnop here\n');
    expect(lines).toEqual([['stdout', 'key [REDACTED] here']]);
    expect(raw).toEqual(['key sk-ant-abcdefghijklmnop here']);
  });

  it('stops storing at the cap with one marker line, still feeding raw lines', () => {
    const { c, lines, raw, truncated } = collect({ maxBytes: 20 });
    c.write('stdout', '0123456789\n'); // 11 bytes
    c.write('stdout', 'abcdefgh\n'); // 9 bytes: exactly 20
    c.write('stdout', 'x\ny\n');
    c.write('stderr', 'z\n');
    expect(lines).toEqual([
      ['stdout', '0123456789'],
      ['stdout', 'abcdefgh'],
      ['stdout', truncationMarker(20)],
    ]);
    expect(raw).toEqual(['0123456789', 'abcdefgh', 'x', 'y', 'z']);
    expect(truncated()).toBe(20);
    expect(c.truncated).toBe(true);
    expect(c.storedBytes).toBe(20);
  });

  it('cuts an endless line', () => {
    const { c, lines } = collect({ maxLineChars: 4 });
    c.write('stdout', 'abcdefghij');
    expect(lines).toEqual([
      ['stdout', 'abcd'],
      ['stdout', 'efgh'],
    ]);
    c.end();
    expect(lines.at(-1)).toEqual(['stdout', 'ij']);
  });
});

describe('value redaction of the credentials a session was handed', () => {
  // A multi-line credential (a PEM key) and one with characters JSON escapes: printed
  // raw (one output line per line of the value) and inside a JSON line, as an agent
  // with --output-format stream-json prints a tool result that echoed them.
  const pem = ['-----BEGIN PRIVATE KEY-----', 'MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7', 'q8w0BAQEFAASCBKcwggSjAgEAAoIBAQC7MIIEvQIBADANBgkq', '-----END PRIVATE KEY-----'].join('\n');
  const password = 'pa"ss\\word-123';

  it('redacts a multi-line value printed raw and both values inside a JSON-escaped line', () => {
    const lines: string[] = [];
    const c = createOutputCollector({ onLine: (_s, l) => lines.push(l), redact: secretRedactor([pem, password]) });
    c.write('stdout', `${pem}\n`);
    c.write('stdout', `${JSON.stringify({ type: 'tool_result', content: `DB_PASSWORD=${password}\nKEY=${pem}` })}\n`);
    c.write('stdout', `raw ${password}\n`);
    c.end();
    const all = lines.join('\n');
    for (const part of [...pem.split('\n').slice(1, 3), password, JSON.stringify(password).slice(1, -1)]) expect(all).not.toContain(part);
    expect(lines.slice(0, 4)).toEqual([REDACTED, REDACTED, REDACTED, REDACTED]);
    expect(lines[4]).toBe(`{"type":"tool_result","content":"DB_PASSWORD=${REDACTED}\\nKEY=${REDACTED}"}`);
    expect(lines[5]).toBe(`raw ${REDACTED}`);
  });
});

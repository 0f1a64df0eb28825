import { describe, expect, it } from 'vitest';
import { createOutputCollector } from '../../src/sandbox/output';
import { MIN_SECRET_VALUE_CHARS, REDACTED, secretRedactor } from '../../src/util/redact';

describe('secretRedactor', () => {
  it('replaces every occurrence of a handed-over value, longest first, then the patterns', () => {
    const r = secretRedactor(['plain-provider-key', 'plain-provider-key-longer', 'abc']);
    expect(r('a plain-provider-key-longer b plain-provider-key c plain-provider-key')).toBe(`a ${REDACTED} b ${REDACTED} c ${REDACTED}`);
    // Pattern-shaped secrets are still caught.
    expect(r('sk-ant-abcdefghijklmnop')).toBe(REDACTED);
    // Values under the minimum length are not redacted by value.
    expect('abc'.length).toBeLessThan(MIN_SECRET_VALUE_CHARS);
    expect(r('abc abc')).toBe('abc abc');
  });

  it('is what the output collector stores', () => {
    const lines: string[] = [];
    const c = createOutputCollector({ onLine: (_s, l) => lines.push(l), redact: secretRedactor(['key-from-the-allowlist']) });
    c.write('stdout', 'using key-from-the-allowlist now\nand key-from-');
    c.write('stdout', 'the-allowlist across chunks\n');
    c.end();
    expect(lines).toEqual([`using ${REDACTED} now`, `and ${REDACTED} across chunks`]);
  });
});

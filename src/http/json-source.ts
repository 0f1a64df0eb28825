/**
 * What JSON.parse forgets: how a number was written. Node 20's JSON.parse has no
 * source-text access in its reviver, so this reads the raw body text of an object
 * that JSON.parse already accepted.
 */

const NUMBER = /-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/y;

/**
 * The source text of every number that is the value of `key` in the top-level
 * object of `text` (duplicates included: JSON.parse keeps the last one). Only call
 * it on text JSON.parse accepted; anything else gives [].
 */
export function topLevelNumberSources(text: string, key: string): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < text.length && /\s/.test(text[i]!)) i++;
  if (text[i] !== '{') return out;
  let depth = 0;
  // Inside the top-level object: is the next string a key, and which key is being given a value.
  let expectKey = false;
  let currentKey: string | null = null;
  while (i < text.length) {
    const ch = text[i]!;
    if (ch === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      if (depth === 1 && expectKey) {
        currentKey = JSON.parse(text.slice(i, j + 1)) as string;
        expectKey = false;
      }
      i = j + 1;
      continue;
    }
    if (ch === '{' || ch === '[') {
      depth++;
      if (depth === 1) expectKey = true;
    } else if (ch === '}' || ch === ']') {
      depth--;
    } else if (ch === ',' && depth === 1) {
      expectKey = true;
      currentKey = null;
    } else if (depth === 1 && (ch === '-' || (ch >= '0' && ch <= '9'))) {
      NUMBER.lastIndex = i;
      const m = NUMBER.exec(text);
      if (m) {
        if (currentKey === key) out.push(m[0]);
        i += m[0].length;
        continue;
      }
    }
    i++;
  }
  return out;
}

/** A JSON number written with an exponent (`1e2`, `1.5E+1`). */
export function isExponentForm(source: string): boolean {
  return /[eE]/.test(source);
}

/**
 * node:crypto behind the transparency log's injected hash (Node only): the
 * same RFC 6962 hashes as the plain TypeScript SHA-256 in tlog/sha256.ts, several
 * times faster. A test checks the two agree.
 */
import * as crypto from 'node:crypto';
import type { Hash, TreeHasher } from './tlog/merkle';
import type { Sha256 } from './tlog/sha256';

type OneShot = (alg: string, data: string | Uint8Array, enc: 'buffer') => Buffer;
// crypto.hash (one-shot, Node ≥ 20.12) is about twice as fast as createHash.
const oneShot = (crypto as unknown as { hash?: OneShot }).hash;

const digest = (data: string | Uint8Array): Uint8Array => {
  const b = oneShot ? oneShot('sha256', data, 'buffer') : crypto.createHash('sha256').update(data).digest();
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
};

export const nodeSha256: Sha256 = (...parts) => digest(parts.length === 1 ? parts[0]! : Buffer.concat(parts));

// One scratch buffer for 0x01 ‖ left ‖ right: hashing is synchronous, so it is never shared.
const NODE = Buffer.alloc(65);
NODE[0] = 0x01;

export interface NodeTreeHasher extends TreeHasher {
  /** The leaf hash of an entry given as text: SHA-256(0x00 ‖ UTF-8(text)). */
  leafOfText(text: string): Hash;
}

export const nodeTreeHasher: NodeTreeHasher = {
  recordHash: (data) => digest(Buffer.concat([Buffer.from([0x00]), data])),
  nodeHash: (left, right) => {
    NODE.set(left, 1);
    NODE.set(right, 33);
    return digest(NODE);
  },
  // U+0000 is the single byte 0x00 in UTF-8, so the prefix can be part of the string.
  leafOfText: (text) => digest(`\u0000${text}`),
};

/**
 * RFC 6962 Merkle trees with the stored-hash layout of Go's
 * golang.org/x/mod/sumdb/tlog (tlog.go), ported function by function so that
 * proofs made here check with Go's CheckRecord/CheckTree and vice versa.
 * Runtime-free; hashing is injected (`treeHasher`), reads are a `HashReader`.
 *
 *   leaf hash  = SHA-256(0x00 ‖ entry)
 *   node hash  = SHA-256(0x01 ‖ left ‖ right)
 *
 * Numbers: tree sizes and indexes are JavaScript numbers (exact up to 2^53);
 * no 32-bit bitwise operator touches them.
 *
 * For the stored hash index ordering see section 3.3 of Crosby and Wallach,
 * "Efficient Data Structures for Tamper-Evident Logging".
 */
import { bytesEqual, type Sha256, sha256 } from './sha256';

export const HASH_SIZE = 32;
export type Hash = Uint8Array;

export interface TreeHasher {
  recordHash(data: Uint8Array): Hash;
  nodeHash(left: Hash, right: Hash): Hash;
}

const ZERO = new Uint8Array([0x00]);
const ONE = new Uint8Array([0x01]);

export function treeHasher(sha: Sha256 = sha256): TreeHasher {
  return {
    recordHash: (data) => sha(ZERO, data),
    nodeHash: (left, right) => sha(ONE, left, right),
  };
}

/** The pure-TypeScript hasher (any runtime). Node code injects node:crypto for speed. */
export const defaultHasher = treeHasher();

/** Go's TreeHash(0): the all-zero hash. (RFC 6962's empty tree is SHA-256 of nothing: see EMPTY_TREE_ROOT.) */
export const ZERO_HASH: Hash = new Uint8Array(HASH_SIZE);
/** RFC 6962 §2.1: MTH({}) = SHA-256(). Used for a checkpoint of an empty log. */
export const EMPTY_TREE_ROOT: Hash = sha256();

/** Reads stored hashes by stored hash index; must return exactly one hash per index. */
export type HashReader = (indexes: number[]) => Hash[] | Promise<Hash[]>;
export type SyncHashReader = (indexes: number[]) => Hash[];

export class TlogError extends Error {
  constructor(
    readonly code: 'invalid_input' | 'proof_failed' | 'bad_read',
    message: string,
  ) {
    super(message);
    this.name = 'TlogError';
  }
}

const proofFailed = () => new TlogError('proof_failed', 'invalid transparency proof');

// Powers of two by table: `2 ** l` with a variable exponent is slow in V8.
const POW2 = Array.from({ length: 64 }, (_, i) => 2 ** i);
const pow2 = (l: number) => POW2[l]!;
const shr = (n: number, k: number) => Math.floor(n / POW2[k]!);

/** k, the largest power of 2 smaller than n, and l = log₂ k (Go's maxpow2). */
export function maxpow2(n: number): [k: number, l: number] {
  if (n <= 2) return [1, 0];
  let l: number;
  if (n <= 0x100000000) l = 31 - Math.clz32(n - 1);
  else {
    l = 32;
    while (pow2(l + 1) < n) l++;
  }
  return [pow2(l), l];
}

function trailingZeros(n: number): number {
  if (n === 0) return 64;
  let c = 0;
  while (n % 2 === 0) {
    n /= 2;
    c++;
  }
  return c;
}

function checkInt(...ns: number[]): void {
  for (const n of ns) if (!Number.isSafeInteger(n)) throw new TlogError('invalid_input', `tlog: ${n} is not a safe integer`);
}

/** Maps tree coordinates (level, n) to the dense linear stored-hash ordering. */
export function storedHashIndex(level: number, n: number): number {
  // Level L's n'th hash is written right after level L+1's 2n+1'th hash.
  for (let l = level; l > 0; l--) n = 2 * n + 1;
  // Level 0's n'th hash is written at n+n/2+n/4+... (eventually n/2ⁱ hits zero).
  let i = 0;
  for (; n > 0; n = Math.floor(n / 2)) i += n;
  return i + level;
}

/** The inverse of storedHashIndex. */
export function splitStoredHashIndex(index: number): [level: number, n: number] {
  // StoredHashIndex(0, n) < 2*n, so the n we want is in [index/2, index/2+log₂(index)].
  let n = Math.floor(index / 2);
  let indexN = storedHashIndex(0, n);
  if (indexN > index) throw new Error('tlog: bad math in splitStoredHashIndex');
  for (;;) {
    // Each new record n adds 1 + trailingZeros(n) hashes.
    const x = indexN + 1 + trailingZeros(n + 1);
    if (x > index) break;
    n++;
    indexN = x;
  }
  // The hash we want was committed with record n: one of (0, n), (1, n/2), (2, n/4), ...
  const level = index - indexN;
  return [level, shr(n, level)];
}

/** The number of stored hashes for a tree with n records. */
export function storedHashCount(n: number): number {
  if (n === 0) return 0;
  let numHash = storedHashIndex(0, n - 1) + 1;
  for (let i = n - 1; i % 2 === 1; i = Math.floor(i / 2)) numHash++;
  return numHash;
}

/** The stored-hash indexes StoredHashes reads when writing record n. */
export function storedHashesIndexes(n: number): number[] {
  const m = trailingZeros(n + 1);
  const indexes = new Array<number>(m);
  for (let i = 0; i < m; i++) indexes[m - 1 - i] = storedHashIndex(i, shr(n, i) - 1);
  return indexes;
}

/**
 * The hashes to store (starting at storedHashIndex(0, n)) when writing record n
 * whose record hash is `h`, given the hashes at storedHashesIndexes(n).
 */
export function storedHashesFromHashes(n: number, h: Hash, old: Hash[], hasher: TreeHasher = defaultHasher): Hash[] {
  const m = trailingZeros(n + 1);
  if (old.length !== m) throw new TlogError('bad_read', `tlog: ReadHashes(${m} indexes) = ${old.length} hashes`);
  const hashes = [h];
  for (let i = 0; i < m; i++) {
    h = hasher.nodeHash(old[m - 1 - i]!, h);
    hashes.push(h);
  }
  return hashes;
}

export async function storedHashesForRecordHash(n: number, h: Hash, r: HashReader, hasher: TreeHasher = defaultHasher): Promise<Hash[]> {
  checkInt(n);
  return storedHashesFromHashes(n, h, await r(storedHashesIndexes(n)), hasher);
}

export async function storedHashes(n: number, data: Uint8Array, r: HashReader, hasher: TreeHasher = defaultHasher): Promise<Hash[]> {
  return storedHashesForRecordHash(n, hasher.recordHash(data), r, hasher);
}

/** The storage indexes needed for the hash of the subtree of records [lo, hi). */
export function subTreeIndex(lo: number, hi: number, need: number[] = []): number[] {
  while (lo < hi) {
    const [k, level] = maxpow2(hi - lo + 1);
    if (lo % k !== 0) throw new Error('tlog: bad math in subTreeIndex');
    need.push(storedHashIndex(level, shr(lo, level)));
    lo += k;
  }
  return need;
}

/** The hash of the subtree [lo, hi) from the hashes subTreeIndex listed; returns the leftover hashes. */
export function subTreeHash(lo: number, hi: number, hashes: Hash[], hasher: TreeHasher = defaultHasher): [Hash, Hash[]] {
  let numTree = 0;
  while (lo < hi) {
    const [k] = maxpow2(hi - lo + 1);
    if (lo % k !== 0 || lo >= hi) throw new Error('tlog: bad math in subTreeHash');
    numTree++;
    lo += k;
  }
  if (hashes.length < numTree) throw new Error('tlog: bad index math in subTreeHash');
  let h = hashes[numTree - 1]!;
  for (let i = numTree - 2; i >= 0; i--) h = hasher.nodeHash(hashes[i]!, h);
  return [h, hashes.slice(numTree)];
}

/** The indexes TreeHash reads (at most 1 + log₂ n). */
export function treeHashIndexes(n: number): number[] {
  return n === 0 ? [] : subTreeIndex(0, n);
}

export function treeHashFromHashes(n: number, hashes: Hash[], hasher: TreeHasher = defaultHasher): Hash {
  if (n === 0) return ZERO_HASH;
  const want = treeHashIndexes(n).length;
  if (hashes.length !== want) throw new TlogError('bad_read', `tlog: ReadHashes(${want} indexes) = ${hashes.length} hashes`);
  const [h, rest] = subTreeHash(0, n, hashes, hasher);
  if (rest.length !== 0) throw new Error('tlog: bad index math in TreeHash');
  return h;
}

/** The root hash of the tree with n records (Go: the all-zero hash for n = 0). */
export async function treeHash(n: number, r: HashReader, hasher: TreeHasher = defaultHasher): Promise<Hash> {
  checkInt(n);
  if (n === 0) return ZERO_HASH;
  return treeHashFromHashes(n, await r(treeHashIndexes(n)), hasher);
}

export function treeHashSync(n: number, r: SyncHashReader, hasher: TreeHasher = defaultHasher): Hash {
  if (n === 0) return ZERO_HASH;
  return treeHashFromHashes(n, r(treeHashIndexes(n)), hasher);
}

/** A proof that a tree contains a record: RFC 6962's Merkle audit path, leaf's sibling first. */
export type RecordProof = Hash[];
/** A proof that a tree contains an earlier tree as a prefix: RFC 6962's consistency proof. */
export type TreeProof = Hash[];

function leafProofIndex(lo: number, hi: number, n: number, need: number[]): number[] {
  if (!(lo <= n && n < hi)) throw new Error('tlog: bad math in leafProofIndex');
  if (lo + 1 === hi) return need;
  const [k] = maxpow2(hi - lo);
  if (n < lo + k) {
    leafProofIndex(lo, lo + k, n, need);
    subTreeIndex(lo + k, hi, need);
  } else {
    subTreeIndex(lo, lo + k, need);
    leafProofIndex(lo + k, hi, n, need);
  }
  return need;
}

function leafProof(lo: number, hi: number, n: number, hashes: Hash[], hasher: TreeHasher): [RecordProof, Hash[]] {
  if (!(lo <= n && n < hi)) throw new Error('tlog: bad math in leafProof');
  if (lo + 1 === hi) return [[], hashes]; // the verifier knows the leaf hash
  let p: RecordProof;
  let th: Hash;
  const [k] = maxpow2(hi - lo);
  if (n < lo + k) {
    [p, hashes] = leafProof(lo, lo + k, n, hashes, hasher);
    [th, hashes] = subTreeHash(lo + k, hi, hashes, hasher);
  } else {
    [th, hashes] = subTreeHash(lo, lo + k, hashes, hasher);
    [p, hashes] = leafProof(lo + k, hi, n, hashes, hasher);
  }
  p.push(th);
  return [p, hashes];
}

export function proveRecordIndexes(t: number, n: number): number[] {
  checkInt(t, n);
  if (t < 0 || n < 0 || n >= t) throw new TlogError('invalid_input', 'tlog: invalid inputs in ProveRecord');
  return leafProofIndex(0, t, n, []);
}

export function proveRecordFromHashes(t: number, n: number, hashes: Hash[], hasher: TreeHasher = defaultHasher): RecordProof {
  const want = proveRecordIndexes(t, n).length;
  if (want === 0) return [];
  if (hashes.length !== want) throw new TlogError('bad_read', `tlog: ReadHashes(${want} indexes) = ${hashes.length} hashes`);
  const [p, rest] = leafProof(0, t, n, hashes, hasher);
  if (rest.length !== 0) throw new Error('tlog: bad index math in ProveRecord');
  return p;
}

/** The proof that the tree of size t contains the record with index n. */
export async function proveRecord(t: number, n: number, r: HashReader, hasher: TreeHasher = defaultHasher): Promise<RecordProof> {
  const indexes = proveRecordIndexes(t, n);
  if (indexes.length === 0) return [];
  return proveRecordFromHashes(t, n, await r(indexes), hasher);
}

function runRecordProof(p: RecordProof, lo: number, hi: number, n: number, leafHash: Hash, hasher: TreeHasher): Hash {
  if (!(lo <= n && n < hi)) throw new Error('tlog: bad math in runRecordProof');
  if (lo + 1 === hi) {
    // The proof must not have any unnecessary hashes.
    if (p.length !== 0) throw proofFailed();
    return leafHash;
  }
  if (p.length === 0) throw proofFailed();
  const [k] = maxpow2(hi - lo);
  const last = p[p.length - 1]!;
  if (n < lo + k) return hasher.nodeHash(runRecordProof(p.slice(0, -1), lo, lo + k, n, leafHash, hasher), last);
  return hasher.nodeHash(last, runRecordProof(p.slice(0, -1), lo + k, hi, n, leafHash, hasher));
}

/** Throws TlogError('proof_failed') unless p proves that the tree of size t with hash th has record n with hash h. */
export function checkRecord(p: RecordProof, t: number, th: Hash, n: number, h: Hash, hasher: TreeHasher = defaultHasher): void {
  checkInt(t, n);
  if (t < 0 || n < 0 || n >= t) throw new TlogError('invalid_input', 'tlog: invalid inputs in CheckRecord');
  for (const x of p) if (x.length !== HASH_SIZE) throw proofFailed();
  const th2 = runRecordProof(p, 0, t, n, h, hasher);
  if (!bytesEqual(th2, th)) throw proofFailed();
}

function treeProofIndex(lo: number, hi: number, n: number, need: number[]): number[] {
  if (!(lo < n && n <= hi)) throw new Error('tlog: bad math in treeProofIndex');
  if (n === hi) {
    if (lo === 0) return need;
    return subTreeIndex(lo, hi, need);
  }
  const [k] = maxpow2(hi - lo);
  if (n <= lo + k) {
    treeProofIndex(lo, lo + k, n, need);
    subTreeIndex(lo + k, hi, need);
  } else {
    subTreeIndex(lo, lo + k, need);
    treeProofIndex(lo + k, hi, n, need);
  }
  return need;
}

function treeProof(lo: number, hi: number, n: number, hashes: Hash[], hasher: TreeHasher): [TreeProof, Hash[]] {
  if (!(lo < n && n <= hi)) throw new Error('tlog: bad math in treeProof');
  if (n === hi) {
    if (lo === 0) return [[], hashes]; // exactly the old tree: the verifier knows its hash
    const [th, rest] = subTreeHash(lo, hi, hashes, hasher);
    return [[th], rest];
  }
  let p: TreeProof;
  let th: Hash;
  const [k] = maxpow2(hi - lo);
  if (n <= lo + k) {
    [p, hashes] = treeProof(lo, lo + k, n, hashes, hasher);
    [th, hashes] = subTreeHash(lo + k, hi, hashes, hasher);
  } else {
    [th, hashes] = subTreeHash(lo, lo + k, hashes, hasher);
    [p, hashes] = treeProof(lo + k, hi, n, hashes, hasher);
  }
  p.push(th);
  return [p, hashes];
}

export function proveTreeIndexes(t: number, n: number): number[] {
  checkInt(t, n);
  if (t < 1 || n < 1 || n > t) throw new TlogError('invalid_input', 'tlog: invalid inputs in ProveTree');
  return treeProofIndex(0, t, n, []);
}

export function proveTreeFromHashes(t: number, n: number, hashes: Hash[], hasher: TreeHasher = defaultHasher): TreeProof {
  const want = proveTreeIndexes(t, n).length;
  if (want === 0) return [];
  if (hashes.length !== want) throw new TlogError('bad_read', `tlog: ReadHashes(${want} indexes) = ${hashes.length} hashes`);
  const [p, rest] = treeProof(0, t, n, hashes, hasher);
  if (rest.length !== 0) throw new Error('tlog: bad index math in ProveTree');
  return p;
}

/** The proof that the tree of size t contains as a prefix all records of the tree of size n. */
export async function proveTree(t: number, n: number, r: HashReader, hasher: TreeHasher = defaultHasher): Promise<TreeProof> {
  const indexes = proveTreeIndexes(t, n);
  if (indexes.length === 0) return [];
  return proveTreeFromHashes(t, n, await r(indexes), hasher);
}

function runTreeProof(p: TreeProof, lo: number, hi: number, n: number, old: Hash, hasher: TreeHasher): [Hash, Hash] {
  if (!(lo < n && n <= hi)) throw new Error('tlog: bad math in runTreeProof');
  if (n === hi) {
    if (lo === 0) {
      if (p.length !== 0) throw proofFailed();
      return [old, old];
    }
    if (p.length !== 1) throw proofFailed();
    return [p[0]!, p[0]!];
  }
  if (p.length === 0) throw proofFailed();
  const [k] = maxpow2(hi - lo);
  const last = p[p.length - 1]!;
  if (n <= lo + k) {
    const [oh, th] = runTreeProof(p.slice(0, -1), lo, lo + k, n, old, hasher);
    return [oh, hasher.nodeHash(th, last)];
  }
  const [oh, th] = runTreeProof(p.slice(0, -1), lo + k, hi, n, old, hasher);
  return [hasher.nodeHash(last, oh), hasher.nodeHash(last, th)];
}

/** Throws TlogError('proof_failed') unless p proves that the tree of size t with hash th contains the tree of size n with hash h. */
export function checkTree(p: TreeProof, t: number, th: Hash, n: number, h: Hash, hasher: TreeHasher = defaultHasher): void {
  checkInt(t, n);
  if (t < 1 || n < 1 || n > t) throw new TlogError('invalid_input', 'tlog: invalid inputs in CheckTree');
  for (const x of p) if (x.length !== HASH_SIZE) throw proofFailed();
  const [h2, th2] = runTreeProof(p, 0, t, n, h, hasher);
  if (!bytesEqual(th2, th) || !bytesEqual(h2, h)) throw proofFailed();
}

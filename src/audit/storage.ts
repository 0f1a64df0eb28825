/** The audit storage port: implemented in db/ for SQLite and D1. */
import type { AuditInput, ChainRow } from './chain';

export interface Tip {
  seq: number;
  hash: string;
}

export interface AuditQuery {
  afterSeq: number;
  limit: number;
  action?: string;
  actor?: string;
  since?: number;
  order?: 'asc' | 'desc';
}

export interface StoredCheckpoint {
  id: number;
  kind: string;
  size: number;
  headHash: string;
  time: number;
  jws: string;
  /** The same checkpoint as a C2SP signed note (null where no note key signed it). */
  note: string | null;
}

/** Where the stored Merkle tree stands relative to the entries. */
export interface TreeStatus {
  /** Leaves in the stored tree (tiles). */
  size: number;
  /** The log's tip (seq of the newest entry, or the prune cut when no entry remains). */
  logSize: number;
  /**
   * `complete`: the tree covers every entry; `behind`: entries not yet in the
   * tree (a backfill is due); `unavailable`: entries the tree lacks were pruned
   * before the tree existed, it can never cover the log; `ahead`: the tree has
   * more leaves than the log has entries (the log's tail was deleted);
   * `damaged`: the stored tiles do not form a tree (edited or lost rows).
   */
  state: 'complete' | 'behind' | 'unavailable' | 'ahead' | 'damaged';
}

export interface AuditStorage {
  /** Append entries atomically after the current tip; returns their positions. */
  appendBatch(inputs: AuditInput[]): Promise<Tip[]>;
  /**
   * true: `appendBatch` may be called again before an earlier call settled; the
   * batches are committed (and settle) in call order (the SQLite writer thread).
   */
  readonly pipelined?: boolean;
  tip(): Promise<Tip>;
  query(q: AuditQuery): Promise<ChainRow[]>;
  /** Rows with seq in [from, to], ascending. */
  range(from: number, to: number): Promise<ChainRow[]>;
  bounds(): Promise<{ first: number | null; last: number | null; count: number }>;
  insertCheckpoint(cp: Omit<StoredCheckpoint, 'id'>): Promise<void>;
  latestCheckpoint(kind?: string): Promise<StoredCheckpoint | null>;
  /** The checkpoint with a note for the largest tree (the latest signed tree head). */
  latestNote(): Promise<StoredCheckpoint | null>;
  checkpoints(): Promise<StoredCheckpoint[]>;
  /** Delete entries with seq <= cutSeq. */
  deleteThrough(cutSeq: number): Promise<number>;
  /** Highest seq whose ts is before `ts`. */
  lastSeqBefore(ts: number): Promise<Tip | null>;

  // The RFC 6962 Merkle tree over the entries, stored as tlog-tiles (height 8).
  /** The tree against the log. */
  treeStatus(): Promise<TreeStatus>;
  /** The stored data of hash tile (level, n), possibly wider than a caller needs; null when absent. */
  readTile(level: number, n: number): Promise<Uint8Array | null>;
  /** Stored tiles of one level with n in [fromN, toN], ascending (verification). */
  tileRange(level: number, fromN: number, toN: number): Promise<{ n: number; data: Uint8Array }[]>;
  /** Stored hashes by stored-hash index (see tlog/merkle.ts), read from the tiles. */
  readHashes(indexes: number[]): Promise<Uint8Array[]>;
  /** Add the entries the tree lacks (backfill after an upgrade), in bounded transactions. */
  syncTree(): Promise<TreeStatus>;
}

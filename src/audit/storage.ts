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
}

export interface AuditStorage {
  /** Append entries atomically after the current tip; returns their positions. */
  appendBatch(inputs: AuditInput[]): Promise<Tip[]>;
  tip(): Promise<Tip>;
  query(q: AuditQuery): Promise<ChainRow[]>;
  /** Rows with seq in [from, to], ascending. */
  range(from: number, to: number): Promise<ChainRow[]>;
  bounds(): Promise<{ first: number | null; last: number | null; count: number }>;
  insertCheckpoint(cp: Omit<StoredCheckpoint, 'id'>): Promise<void>;
  latestCheckpoint(kind?: string): Promise<StoredCheckpoint | null>;
  checkpoints(): Promise<StoredCheckpoint[]>;
  /** Delete entries with seq <= cutSeq. */
  deleteThrough(cutSeq: number): Promise<number>;
  /** Highest seq whose ts is before `ts`. */
  lastSeqBefore(ts: number): Promise<Tip | null>;
}

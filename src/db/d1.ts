/**
 * Workers storage: the drizzle store over a D1 binding. D1 has no interactive
 * transactions; the store's methods are single statements, and the audit
 * storage (d1-audit.ts) appends with an atomic `batch` plus an optimistic insert.
 *
 * The few D1 types used here are declared locally, so that the project needs no
 * `@cloudflare/workers-types` (and its global declarations) to type-check.
 */
import { drizzle } from 'drizzle-orm/d1';
import { type AnyDb, createDrizzleStore } from './drizzle-store';
import * as schema from './schema';
import type { Store } from './store';

export interface D1Meta {
  changes?: number;
  last_row_id?: number;
  [key: string]: unknown;
}

export interface D1Result<T = Record<string, unknown>> {
  results: T[];
  success: boolean;
  meta: D1Meta;
}

export interface D1PreparedStatement {
  bind(...values: unknown[]): D1PreparedStatement;
  first<T = Record<string, unknown>>(): Promise<T | null>;
  all<T = Record<string, unknown>>(): Promise<D1Result<T>>;
  run<T = Record<string, unknown>>(): Promise<D1Result<T>>;
}

/** The subset of the D1 binding (`env.DB`) this project uses. */
export interface D1Database {
  prepare(query: string): D1PreparedStatement;
  /** Runs the statements as one SQL transaction: all commit or none. */
  batch<T = Record<string, unknown>>(statements: D1PreparedStatement[]): Promise<D1Result<T>[]>;
}

export function createD1Store(binding: D1Database): Store {
  // drizzle's D1 driver is typed against @cloudflare/workers-types' global
  // D1Database; the local interface above is the part of it drizzle calls.
  const db = drizzle(binding as unknown as Parameters<typeof drizzle>[0], { schema });
  return createDrizzleStore(db as unknown as AnyDb, 'd1');
}

/**
 * Node storage: better-sqlite3 file with WAL, synchronous=FULL, 0700 directory
 * and 0600 files; migrations from migrations/ applied and reported.
 */
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { drizzle } from 'drizzle-orm/better-sqlite3';
import { createDrizzleStore } from './drizzle-store';
import type { CountsCacheOptions } from './session-counts';
import * as schema from './schema';
import type { Store } from './store';

export type SqliteDb = Database.Database;

export const MIGRATIONS_DIR = fileURLToPath(new URL('../../migrations', import.meta.url));

/** Create the state directory 0700 (tightening an existing one). */
export function ensurePrivateDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  if ((statSync(dir).mode & 0o777) !== 0o700) chmodSync(dir, 0o700);
}

/** Tighten the database file and its WAL/SHM companions to 0600. */
export function tightenDbFiles(dbPath: string): void {
  for (const f of [dbPath, `${dbPath}-wal`, `${dbPath}-shm`]) {
    if (existsSync(f) && (statSync(f).mode & 0o777) !== 0o600) chmodSync(f, 0o600);
  }
}

export function openSqlite(dbPath: string, opts: { readonly?: boolean } = {}): SqliteDb {
  if (!opts.readonly) ensurePrivateDir(path.dirname(dbPath));
  const db = new Database(dbPath, { readonly: opts.readonly ?? false, fileMustExist: opts.readonly ?? false });
  db.pragma('busy_timeout = 10000');
  if (!opts.readonly) {
    db.pragma('journal_mode = WAL');
    // FULL: a commit is fsynced to the WAL before it returns, so an acknowledged
    // audit entry survives SIGKILL and power loss.
    db.pragma('synchronous = FULL');
    tightenDbFiles(dbPath);
  }
  return db;
}

interface JournalEntry {
  idx: number;
  tag: string;
}

/** Apply pending migrations; returns the tags applied (empty when up to date). */
export function migrate(db: SqliteDb, dir = MIGRATIONS_DIR): string[] {
  const journal = JSON.parse(readFileSync(path.join(dir, 'meta', '_journal.json'), 'utf8')) as { entries: JournalEntry[] };
  db.exec('CREATE TABLE IF NOT EXISTS _migrations (tag TEXT PRIMARY KEY, sha256 TEXT NOT NULL, applied_at INTEGER NOT NULL)');
  const applied: string[] = [];
  const run = db.transaction((tag: string, sqlText: string) => {
    const done = db.prepare('SELECT sha256 FROM _migrations WHERE tag = ?').get(tag) as { sha256: string } | undefined;
    if (done) return false;
    for (const stmt of sqlText.split('--> statement-breakpoint')) {
      if (stmt.trim()) db.exec(stmt);
    }
    db.prepare('INSERT INTO _migrations (tag, sha256, applied_at) VALUES (?, ?, ?)').run(
      tag,
      createHash('sha256').update(sqlText).digest('hex'),
      Date.now(),
    );
    return true;
  });
  for (const e of [...journal.entries].sort((a, b) => a.idx - b.idx)) {
    const sqlText = readFileSync(path.join(dir, `${e.tag}.sql`), 'utf8');
    if (run.immediate(e.tag, sqlText)) applied.push(e.tag);
  }
  return applied;
}

export function createSqliteStore(db: SqliteDb, counts: CountsCacheOptions = {}): Store {
  return createDrizzleStore(drizzle(db, { schema }), 'sqlite', counts);
}

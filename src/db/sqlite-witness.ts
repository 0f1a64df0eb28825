/**
 * SQLite side of the witness pusher (src/audit/witness-client.ts): the
 * `audit_witness_cosignatures` table, the stored checkpoint notes with their
 * cosignatures added (what `verify --witness-key` checks), and a watcher that
 * hands each new checkpoint note to the pusher, whichever process wrote it
 * (server, CLI).
 */
import type { StoredCheckpoint } from '../audit/storage';
import type { CosignatureRecord, CosignatureStore } from '../audit/witness-client';
import type { SqliteDb } from './sqlite';

const COLUMNS = 'witness_key AS witnessKey, origin, size, root_hash AS rootHash, timestamp, signature, received_at AS receivedAt';

export function createSqliteCosignatureStore(db: SqliteDb): CosignatureStore & { forCheckpoint(origin: string, size: number, rootHash: string): CosignatureRecord[] } {
  const latestAny = db.prepare(`SELECT ${COLUMNS} FROM audit_witness_cosignatures WHERE witness_key = ? ORDER BY size DESC, received_at DESC LIMIT 1`);
  const latestOrigin = db.prepare(`SELECT ${COLUMNS} FROM audit_witness_cosignatures WHERE witness_key = ? AND origin = ? ORDER BY size DESC LIMIT 1`);
  const forCp = db.prepare(`SELECT ${COLUMNS} FROM audit_witness_cosignatures WHERE origin = ? AND size = ? AND root_hash = ? ORDER BY witness_key`);
  const upsert = db.prepare(
    `INSERT INTO audit_witness_cosignatures (witness_key, origin, size, root_hash, timestamp, signature, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)
     ON CONFLICT (witness_key, origin, size) DO UPDATE SET root_hash = excluded.root_hash, timestamp = excluded.timestamp, signature = excluded.signature, received_at = excluded.received_at`,
  );
  return {
    latest(witnessKey, origin) {
      const r = origin === undefined ? latestAny.get(witnessKey) : latestOrigin.get(witnessKey, origin);
      return (r as CosignatureRecord | undefined) ?? null;
    },
    save(r) {
      upsert.run(r.witnessKey, r.origin, r.size, r.rootHash, r.timestamp, r.signature, r.receivedAt);
    },
    forCheckpoint(origin, size, rootHash) {
      return forCp.all(origin, size, rootHash) as CosignatureRecord[];
    },
  };
}

/** Origin, size and base64 root of a checkpoint note (no signature check), or null. */
function noteHead(note: string): { origin: string; size: number; root: string } | null {
  const m = /^([^\n]+)\n(0|[1-9][0-9]*)\n([A-Za-z0-9+/=]{44})\n/.exec(note);
  return m ? { origin: m[1]!, size: Number(m[2]), root: m[3]! } : null;
}

/**
 * A stored checkpoint's note with the stored witness cosignatures appended
 * (for `AuditLog.verify({ witnesses, cosignedNote })`); null without a note.
 * The cosignature lines are only added, never trusted: verification checks
 * each against the witness keys it is given.
 */
export function cosignedNoteReader(db: SqliteDb): (cp: Pick<StoredCheckpoint, 'note'>) => Promise<string | null> {
  const store = createSqliteCosignatureStore(db);
  return async (cp) => {
    if (!cp.note) return null;
    const head = noteHead(cp.note);
    if (!head) return cp.note;
    const have = new Set(cp.note.split('\n'));
    const extra = store
      .forCheckpoint(head.origin, head.size, head.root)
      .map((r) => r.signature)
      .filter((line) => !have.has(line));
    if (extra.length === 0) return cp.note;
    return `${cp.note.endsWith('\n') ? cp.note : `${cp.note}\n`}${extra.map((l) => `${l}\n`).join('')}`;
  };
}

/**
 * Hand each new checkpoint note in `audit_checkpoints` to `onNote`: first the
 * note of the largest tree (at start), then every note written after that, in
 * order, by any process, checked every `intervalMs`. Reads by rowid only.
 */
export function watchCheckpointNotes(db: SqliteDb, onNote: (note: string) => void, opts: { intervalMs?: number; onError?: (err: unknown) => void } = {}): { stop(): void } {
  const maxId = db.prepare('SELECT coalesce(max(id), 0) FROM audit_checkpoints').pluck();
  const latest = db.prepare('SELECT note FROM audit_checkpoints WHERE note IS NOT NULL ORDER BY size DESC, id DESC LIMIT 1').pluck();
  const after = db.prepare('SELECT id, note FROM audit_checkpoints WHERE id > ? ORDER BY id LIMIT 1000');
  let last = 0;
  let stopped = false;
  const tick = () => {
    if (stopped) return;
    try {
      for (;;) {
        const rows = after.all(last) as { id: number; note: string | null }[];
        for (const r of rows) {
          last = r.id;
          if (r.note) onNote(r.note);
        }
        if (rows.length < 1000) break;
      }
    } catch (err) {
      opts.onError?.(err);
    }
  };
  try {
    last = maxId.get() as number;
    const note = latest.get() as string | undefined;
    if (note) onNote(note);
  } catch (err) {
    opts.onError?.(err);
  }
  const timer = setInterval(tick, opts.intervalMs ?? 1_000);
  timer.unref();
  return {
    stop() {
      stopped = true;
      clearInterval(timer);
    },
  };
}

import { z } from 'zod';
import { entryFromRow } from '../../audit/log';
import { proveRecord, proveTree } from '../../audit/tlog/merkle';
import { toBase64, utf8 } from '../../audit/tlog/sha256';
import { ENTRIES_LEVEL, EntryBundleError, formatEntryBundle, parseTilePath, TILE_WIDTH, type Tile, TilePathError } from '../../audit/tlog/tiles';
import type { AppDeps } from '../context';
import type { TypedRoute } from '../define-route';
import { ApiError, ErrorCode } from '../errors';
import { validate } from '../validate';

const TLOG = '/api/enterprise/audit/tlog';
const IMMUTABLE = 'public, max-age=31536000, immutable';

const count = (what: string) => z.string().regex(/^(0|[1-9]\d{0,14})$/, `must be ${what}`).transform(Number);
const inclusionQuery = z.object({ index: count('a leaf index (0 or more)'), size: count('a tree size (1 or more)') });
const consistencyQuery = z.object({ old: count('a tree size (1 or more)'), new: count('a tree size (1 or more)') });

/** Hashes the tree of `size` leaves has stored at tile (level, n): 256 below the edge, the edge's width there, else 0. */
function storedWidth(size: number, level: number, n: number): number {
  const at = Math.floor(size / TILE_WIDTH ** level);
  const full = Math.floor(at / TILE_WIDTH);
  if (n < full) return TILE_WIDTH;
  return n === full ? at % TILE_WIDTH : 0;
}

const sinceSchema = z.string().transform((s, ctx) => {
  const ms = /^\d+$/.test(s) ? Number(s) : Date.parse(s);
  if (!Number.isFinite(ms)) {
    ctx.addIssue({ code: 'custom', message: 'must be an ISO 8601 date or epoch milliseconds' });
    return z.NEVER;
  }
  return ms;
});

const auditQuery = z.object({
  after_seq: z.string().regex(/^\d{1,15}$/, 'must be a non-negative integer').transform(Number).optional(),
  limit: z
    .string()
    .regex(/^\d{1,7}$/, 'must be an integer from 1 to 1000')
    .transform(Number)
    .pipe(z.number().int().min(1, 'must be an integer from 1 to 1000').max(1000, 'must be an integer from 1 to 1000'))
    .optional(),
  action: z.string().max(128).optional(),
  actor: z.string().max(255).optional(),
  since: sinceSchema.optional(),
  order: z.enum(['asc', 'desc']).optional(),
});

const verifyQuery = z.object({ checkpoint: z.string().max(4096).optional() });

export function auditRoutes(route: TypedRoute, deps: AppDeps): void {
  route('GET', '/api/enterprise/audit', validate('query', auditQuery), async (c) => {
    const q = c.req.valid('query');
    c.set('auditAction', 'audit.read');
    c.set('auditDetails', { filters: q });
    const rows = await deps.audit.query({
      afterSeq: q.after_seq ?? 0,
      limit: q.limit ?? 100,
      action: q.action,
      actor: q.actor,
      since: q.since,
      order: q.order,
    });
    const entries = rows.map(entryFromRow);
    return c.json({ entries, count: entries.length, next_after_seq: entries.length ? entries[entries.length - 1]!.seq : null });
  });

  route('GET', '/api/enterprise/audit/verify', validate('query', verifyQuery), async (c) => {
    const q = c.req.valid('query');
    c.set('auditAction', 'audit.verify');
    await deps.audit.drain();
    const result = await deps.audit.verify({ external: q.checkpoint ?? null });
    c.set('auditDetails', { valid: result.valid, first_invalid_seq: result.first_invalid_seq, reason: result.reason });
    if (!result.valid) c.set('auditAction', 'audit.verify_failed');
    await deps.events
      .publish('audit_verified', null, { valid: result.valid, entries_checked: result.entries_checked, first_invalid_seq: result.first_invalid_seq, reason: result.reason })
      .catch(() => {});
    return c.json(result);
  });

  // --- C2SP tlog-tiles: the signed tree head, hash tiles and entry bundles; proofs as JSON.

  route('GET', `${TLOG}/checkpoint`, async (c) => {
    c.set('auditAction', 'audit.tlog_read');
    const cp = await deps.audit.storage.latestNote();
    if (!cp?.note) throw new ApiError(404, ErrorCode.notFound, 'no checkpoint note yet');
    return c.body(cp.note, 200, { 'Content-Type': 'text/plain; charset=utf-8', 'Cache-Control': 'no-cache' });
  });

  route('GET', `${TLOG}/tile/*`, async (c) => {
    c.set('auditAction', 'audit.tlog_read');
    const rel = c.req.path.slice(TLOG.length + 1);
    let tile: Tile;
    try {
      tile = parseTilePath(rel);
    } catch (err) {
      if (err instanceof TilePathError) throw new ApiError(400, ErrorCode.badRequest, `${rel} is not a tile path: tile/<L>/<N>[.p/<W>] or tile/entries/<N>[.p/<W>], N as x001/x234/067`);
      throw err;
    }
    const storage = deps.audit.storage;
    const tree = await storage.treeStatus();
    const level = tile.L === ENTRIES_LEVEL ? 0 : tile.L;
    if (tree.state === 'damaged' || tile.W > storedWidth(tree.size, level, tile.N)) throw new ApiError(404, ErrorCode.notFound, `${rel} is not in the tree of size ${tree.size}`);
    const headers = { 'Content-Type': 'application/octet-stream', 'Cache-Control': tile.W === TILE_WIDTH ? IMMUTABLE : 'no-cache' };
    c.set('auditDetails', { tile: rel });
    if (tile.L === ENTRIES_LEVEL) {
      const first = tile.N * TILE_WIDTH + 1;
      const rows = await storage.range(first, first + tile.W - 1);
      if (rows.length !== tile.W) throw new ApiError(404, ErrorCode.notFound, `${rel}: entries of this bundle were pruned`);
      try {
        return c.body(formatEntryBundle(rows.map((r) => utf8(r.entry))) as Uint8Array<ArrayBuffer>, 200, headers);
      } catch (err) {
        if (err instanceof EntryBundleError) throw new ApiError(501, ErrorCode.notImplemented, `${rel}: ${err.message}`);
        throw err;
      }
    }
    const data = await storage.readTile(tile.L, tile.N);
    if (!data || data.length < tile.W * 32) throw new ApiError(404, ErrorCode.notFound, `${rel} is not stored`);
    return c.body(data.slice(0, tile.W * 32) as Uint8Array<ArrayBuffer>, 200, headers);
  });

  route('GET', `${TLOG}/proof/inclusion`, validate('query', inclusionQuery), async (c) => {
    const q = c.req.valid('query');
    c.set('auditAction', 'audit.tlog_read');
    c.set('auditDetails', { proof: 'inclusion', index: q.index, size: q.size });
    const treeSize = await deps.audit.treeSizeFor(q.size);
    if (q.size < 1 || q.size > treeSize) throw new ApiError(400, ErrorCode.validation, `size: must be a tree size from 1 to ${treeSize}`);
    if (q.index >= q.size) throw new ApiError(400, ErrorCode.validation, `index: must be below size (${q.size})`);
    const read = (idx: number[]) => deps.audit.storage.readHashes(idx);
    const [proof, root] = await Promise.all([proveRecord(q.size, q.index, read, deps.audit.hasher), deps.audit.rootAt(q.size)]);
    return c.json({ index: q.index, size: q.size, root: toBase64(root), proof: proof.map(toBase64) });
  });

  route('GET', `${TLOG}/proof/consistency`, validate('query', consistencyQuery), async (c) => {
    const q = c.req.valid('query');
    c.set('auditAction', 'audit.tlog_read');
    c.set('auditDetails', { proof: 'consistency', old: q.old, new: q.new });
    const treeSize = await deps.audit.treeSizeFor(q.new);
    if (q.new < 1 || q.new > treeSize) throw new ApiError(400, ErrorCode.validation, `new: must be a tree size from 1 to ${treeSize}`);
    if (q.old < 1 || q.old > q.new) throw new ApiError(400, ErrorCode.validation, `old: must be a tree size from 1 to new (${q.new})`);
    const read = (idx: number[]) => deps.audit.storage.readHashes(idx);
    const h = deps.audit.hasher;
    const [proof, oldRoot, newRoot] = await Promise.all([
      proveTree(q.new, q.old, read, h),
      deps.audit.rootAt(q.old),
      deps.audit.rootAt(q.new),
    ]);
    return c.json({ old: q.old, new: q.new, old_root: toBase64(oldRoot), new_root: toBase64(newRoot), proof: proof.map(toBase64) });
  });

  route('GET', '/api/enterprise/audit/checkpoint', async (c) => {
    c.set('auditAction', 'audit.checkpoint_read');
    const cp = await deps.audit.storage.latestCheckpoint();
    return c.json({ checkpoint: cp ? { kind: cp.kind, size: cp.size, head_hash: cp.headHash, time: cp.time, jws: cp.jws, note: cp.note } : null });
  });
}

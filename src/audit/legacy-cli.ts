/** CLI glue for Loki Mode's JSONL audit logs: verify-legacy and import-legacy. */
import { existsSync, statSync } from 'node:fs';
import type { AuditActor } from './chain';
import { readLegacyEntries, verifyLegacyDir } from './legacy';
import type { AuditLog } from './log';

export async function verifyLegacyDirCli(dir: string, json: boolean): Promise<number> {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    process.stderr.write(`loki: no such directory: ${dir}\n`);
    return 2;
  }
  let result: Awaited<ReturnType<typeof verifyLegacyDir>>;
  try {
    result = await verifyLegacyDir(dir);
  } catch (err) {
    process.stderr.write(`loki: cannot verify ${dir}: ${(err as Error).message}\n`);
    return 2;
  }
  if (json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  else if (result.valid) {
    process.stdout.write(`legacy audit log valid: ${result.entries_checked} entries in ${result.files.length} file(s) (${result.files.join(' → ')}), tip ${result.tip_hash}\n`);
  } else {
    const f = result.first_invalid!;
    process.stdout.write(`legacy audit log INVALID: ${f.file} line ${f.line}: ${f.reason} (${result.entries_checked} entries verified before it)\n`);
  }
  return result.valid ? 0 : 1;
}

function str(v: unknown): string | null {
  return v === null || v === undefined ? null : String(v);
}

/** Import verified legacy entries into the chain, then a marker entry carrying the legacy tip hash. */
export async function importLegacyAudit(audit: AuditLog, dir: string, actor: AuditActor) {
  const check = await verifyLegacyDir(dir);
  if (!check.valid) {
    const f = check.first_invalid!;
    throw new Error(`the legacy log does not verify (${f.file} line ${f.line}: ${f.reason}); nothing imported`);
  }
  const pending: Promise<unknown>[] = [];
  let imported = 0;
  for await (const e of readLegacyEntries(dir)) {
    const x = e.entry;
    const ts = Date.parse(String(x.timestamp ?? ''));
    pending.push(
      audit.append({
        ts: Number.isFinite(ts) ? ts : Date.now(),
        action: `legacy.${String(x.action ?? 'event')}`,
        resource: x.resource_type ? { type: String(x.resource_type), id: str(x.resource_id) } : null,
        actor: { type: x.token_id ? 'token' : 'local', id: str(x.token_id), name: str(x.user_id) },
        client: { ip: str(x.ip_address), user_agent: str(x.user_agent) },
        outcome: { status: null, success: x.success !== false, error: str(x.error) },
        details: { legacy: x, legacy_hash: e.hash, legacy_file: e.file, legacy_line: e.line },
      }),
    );
    imported++;
    if (pending.length >= 512) await Promise.all(pending.splice(0));
  }
  await Promise.all(pending);
  const marker = await audit.append({
    ts: Date.now(),
    action: 'audit.legacy_import',
    actor,
    outcome: { status: null, success: true, error: null },
    details: { legacy_tip_hash: check.tip_hash, files: check.files, entries: imported },
  });
  return { imported, tipHash: check.tip_hash, markerSeq: marker.seq };
}

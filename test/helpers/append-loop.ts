/**
 * What the appending test processes share (test/helpers/append-proc.ts for SQLite,
 * test/audit/pg-append-proc.ts and test/cluster/append-proc.ts for PostgreSQL): a
 * file barrier so their appends overlap, and the append loop itself.
 */
import { readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { AuditLog } from '../../src/audit/log';

/** Marks this process ready in `dir`, then waits until `processes` are. */
export async function barrier(dir: string, label: string, processes: number): Promise<void> {
  writeFileSync(path.join(dir, `ready-${label}`), '');
  const ready = () => readdirSync(dir).filter((f) => f.startsWith('ready-')).length;
  while (ready() < processes) await new Promise((r) => setTimeout(r, 5));
}

/**
 * `count` entries labelled `label` (details `{ label, i }`), awaited in groups of
 * `group`; `afterGroup(i)` runs after each group (a pause, or a wait for the others).
 */
export async function appendAll(
  audit: Pick<AuditLog, 'append'>,
  label: string,
  count: number,
  group: number,
  afterGroup?: (i: number) => Promise<void>,
): Promise<void> {
  let pending: Promise<unknown>[] = [];
  for (let i = 1; i <= count; i++) {
    pending.push(
      audit.append({
        ts: Date.now(),
        action: 'test.append',
        actor: { type: 'system', id: null, name: label },
        outcome: { status: null, success: true, error: null },
        details: { label, i },
      }),
    );
    if (pending.length >= group) {
      await Promise.all(pending);
      pending = [];
      await afterGroup?.(i);
    }
  }
  await Promise.all(pending);
}

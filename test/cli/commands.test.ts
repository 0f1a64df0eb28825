/**
 * The command tree as a whole: every command that prints data has --json (a new
 * command without it fails here), and the --json forms added for issue 13 print
 * what they say, run as real processes.
 */
import type { Command } from 'commander';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildProgram } from '../../src/cli/index';
import { makeAuditLog } from '../helpers/audit';
import { runCli, tempHome } from '../helpers/server';

/** Commands that print no data of their own, and why. */
const NO_DATA: Record<string, string> = {
  'loki dashboard': 'runs the server; its log lines are JSON already',
  'loki db migrate': 'says which migrations it applied',
  'loki start': "streams the agent's output (loki logs --json has it as JSON)",
  'loki sandbox worker': 'runs the worker; its log lines are JSON already',
};

/** Every command that runs something (has an action), named by its path: `loki enterprise token list`. */
function leaves(cmd: Command, prefix = 'loki'): { name: string; cmd: Command }[] {
  return cmd.commands
    .filter((c) => c.name() !== 'help')
    .flatMap((c) => {
      const name = `${prefix} ${c.name()}`;
      const runs = Boolean((c as unknown as { _actionHandler: unknown })._actionHandler);
      return [...(runs ? [{ name, cmd: c }] : []), ...leaves(c, name)];
    });
}

describe('the command tree', () => {
  const all = leaves(buildProgram());

  it('lists the commands of issue 13', () => {
    expect(all.map((l) => l.name)).toEqual(expect.arrayContaining(['loki sessions', 'loki sessions branches', 'loki logs', 'loki stop', 'loki status']));
  });

  it('every command that prints data has --json', () => {
    const missing = all.filter((l) => !(l.name in NO_DATA) && !l.cmd.options.some((o) => o.long === '--json')).map((l) => l.name);
    expect(missing).toEqual([]);
    // The exemptions are real commands (a renamed one would leave a stale entry).
    expect(Object.keys(NO_DATA).filter((n) => !all.some((l) => l.name === n))).toEqual([]);
  });
});

describe('--json where it was missing', () => {
  it('token revoke --json: the revoked token, never a secret', async () => {
    const home = tempHome();
    const made = JSON.parse((await runCli(['enterprise', 'token', 'generate', 'ci-bot', '--json'], { LOKI_HOME: home })).stdout);
    const r = await runCli(['enterprise', 'token', 'revoke', 'ci-bot', '--json'], { LOKI_HOME: home });
    expect(r.code).toBe(0);
    const t = JSON.parse(r.stdout);
    expect(t).toMatchObject({ id: made.id, name: 'ci-bot', role: 'viewer', status: 'revoked' });
    expect(r.stdout).not.toContain(made.token);
  }, 180_000);

  it('audit export, pubkey --note, checkpoint --note and prune --json', async () => {
    const t = await makeAuditLog({ entries: 40 });
    t.close();
    const env = { LOKI_HOME: t.dir };
    const out = path.join(tempHome(), 'a.jsonl');
    const e = await runCli(['enterprise', 'audit', 'export', '--out', out, '--json'], env);
    expect(e.code).toBe(0);
    expect(JSON.parse(e.stdout)).toEqual({ file: out, entries: 40 });
    const pk = await runCli(['enterprise', 'audit', 'pubkey', '--note', '--json'], env);
    expect(JSON.parse(pk.stdout)).toEqual({ note_vkey: expect.stringMatching(/^[^+\s]+\+[0-9a-f]{8}\+[A-Za-z0-9+/=]+$/) });
    const cp = await runCli(['enterprise', 'audit', 'checkpoint', '--note', '--json'], env);
    expect(JSON.parse(cp.stdout)).toEqual({ note: expect.stringMatching(/^\S+\n4\d\n[A-Za-z0-9+/=]{44}\n\n/) });
    const p = await runCli(['enterprise', 'audit', 'prune', '--before', new Date(1_790_000_000_000 + 10_500).toISOString(), '--json'], env);
    expect(p.code).toBe(0);
    expect(JSON.parse(p.stdout)).toEqual({ status: 'pruned', deleted: 10, cut_seq: 10, cut_hash: expect.stringMatching(/^[0-9a-f]{64}$/) });
  }, 180_000);
});

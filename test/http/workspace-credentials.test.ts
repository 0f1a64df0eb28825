/**
 * LOKI_WORKSPACE_ROOTS defaults to the home directory, so ~/.ssh, ~/.aws and the
 * other credential stores lie inside a root. A session's workspace is copied into
 * the agent's worktree and its PRD becomes the agent's prompt: a workspace that is,
 * lies inside, or contains a path the sandbox never mounts (src/sandbox/policy.ts)
 * is refused with 400 invalid_path, whoever asks (an operator is not the host's owner).
 */
import { mkdirSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type SpawnedServer, spawnServer, tempHome } from '../helpers/server';

describe('credential stores in the home directory are never a workspace (spawned server, default roots)', () => {
  let home: string;
  let server: SpawnedServer;
  const post = (body: unknown) =>
    fetch(`${server.url}/api/sessions`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });

  beforeAll(async () => {
    home = realpathSync(tempHome('loki-cred-home-'));
    for (const dir of ['.ssh', '.aws', path.join('.config', 'gh'), 'projects/app']) mkdirSync(path.join(home, dir), { recursive: true });
    writeFileSync(path.join(home, '.ssh', 'id_ed25519'), '-----BEGIN OPENSSH PRIVATE KEY-----\n');
    writeFileSync(path.join(home, '.aws', 'credentials'), '[default]\n');
    writeFileSync(path.join(home, '.config', 'gh', 'hosts.yml'), 'github.com:\n');
    writeFileSync(path.join(home, 'projects', 'app', 'prd.md'), '# PRD\n');
    // LOKI_HOME outside the home directory, so the home itself is not refused for containing it.
    server = await spawnServer({ HOME: home, LOKI_HOME: path.join(home, 'projects', '..', '..', `${path.basename(home)}-state`) }, home);
  });
  afterAll(async () => {
    server?.child.kill('SIGTERM');
    await server?.exited;
    rmSync(home, { recursive: true, force: true });
    rmSync(`${home}-state`, { recursive: true, force: true });
  });

  it.each([
    ['.ssh', 'id_ed25519', 'ssh'],
    ['.aws', 'credentials', 'aws'],
    [path.join('.config', 'gh'), 'hosts.yml', 'gh_config'],
    ['.config', 'gh/hosts.yml', 'gh_config'],
    ['', 'projects/app/prd.md', 'home'],
  ])('workspace ~/%s (prd %s): 400 invalid_path naming rule %s', async (dir, prd, rule) => {
    const workspace = path.join(home, dir);
    const r = await post({ workspace, prd });
    expect(r.status).toBe(400);
    const { error } = (await r.json()) as { error: { code: string; message: string } };
    expect(error.code).toBe('invalid_path');
    expect(error.message).toContain(`workspace ${workspace} refused (rule ${rule})`);
  });

  it('a project in the home directory is still accepted', async () => {
    const r = await post({ workspace: path.join(home, 'projects', 'app'), prd: 'prd.md' });
    expect(r.status).toBe(201);
  });
});

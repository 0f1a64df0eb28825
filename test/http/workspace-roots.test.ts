/**
 * Issue 13: LOKI_WORKSPACE_ROOTS used to default to the server's working directory,
 * so the first real `loki start` failed unless the server was started in the right
 * place. Unset, it is now the user's home directory (and the working directory when
 * that is elsewhere), never `/`; the refusal names the roots and the variable.
 */
import { mkdirSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, defaultWorkspaceRoots, loadConfig } from '../../src/env';
import { startServer, type RunningServer } from '../../src/server';
import { captureLogger, freePort, tempHome } from '../helpers/server';
import { makeWorkspace } from '../sessions/helpers';

describe('the default workspace roots (src/env.ts)', () => {
  it('home and working directory; the working directory only when outside the home; never /', () => {
    expect(defaultWorkspaceRoots('/home/u', '/srv/checkout')).toEqual(['/home/u', '/srv/checkout']);
    expect(defaultWorkspaceRoots('/home/u', '/home/u/projects/app')).toEqual(['/home/u']);
    expect(defaultWorkspaceRoots('/home/u/', '/home/u')).toEqual(['/home/u']);
    expect(defaultWorkspaceRoots('/', '/srv/checkout')).toEqual(['/srv/checkout']);
    expect(defaultWorkspaceRoots('/home/u', '/')).toEqual(['/home/u']);
    expect(defaultWorkspaceRoots('/', '/')).toEqual([]);
    expect(loadConfig({}, { home: '/home/u', cwd: '/' }).workspaceRoots).toEqual(['/home/u']);
  });
  it('an explicit list replaces the default; / is refused', () => {
    expect(loadConfig({ LOKI_WORKSPACE_ROOTS: '/srv/a, /srv/b' }, { home: '/home/u', cwd: '/' }).workspaceRoots).toEqual(['/srv/a', '/srv/b']);
    expect(() => loadConfig({ LOKI_WORKSPACE_ROOTS: '/srv/a,/' }, { home: '/home/u', cwd: '/' })).toThrow(ConfigError);
    expect(() => loadConfig({ LOKI_WORKSPACE_ROOTS: '/' }, { home: '/home/u', cwd: '/' })).toThrow(
      'LOKI_WORKSPACE_ROOTS="/" is invalid: expected absolute directory paths other than /, comma-separated',
    );
  });
});

describe('a server started outside the project, LOKI_WORKSPACE_ROOTS unset (real server)', () => {
  let home: string;
  let elsewhere: string;
  let server: RunningServer;
  const post = (body: unknown) =>
    fetch(`${server.url}/api/sessions`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });

  beforeAll(async () => {
    // A user's home with a project in it; the server runs from another directory, as a service would.
    home = realpathSync(tempHome('loki-user-home-'));
    elsewhere = realpathSync(tempHome('loki-server-cwd-'));
    mkdirSync(path.join(home, 'projects'));
    const port = await freePort();
    const config = loadConfig({ LOKI_DASHBOARD_PORT: String(port) }, { home, cwd: elsewhere });
    expect(config.home).toBe(path.join(home, '.loki'));
    server = await startServer(config, { logger: captureLogger() });
  });
  afterAll(async () => {
    await server?.stop();
    rmSync(home, { recursive: true, force: true });
    rmSync(elsewhere, { recursive: true, force: true });
  });

  it('the first loki start from a project in the home directory is accepted', async () => {
    const ws = makeWorkspace(path.join(home, 'projects'), 'app');
    const r = await post({ workspace: ws, prd: 'prd.md' });
    expect(r.status).toBe(201);
    expect((await r.json()).workspace).toBe(ws);
  });

  it('a workspace outside the roots: 400 invalid_path naming the roots and LOKI_WORKSPACE_ROOTS', async () => {
    const outside = realpathSync(tempHome('loki-outside-'));
    try {
      const ws = makeWorkspace(outside, 'app');
      const r = await post({ workspace: ws, prd: 'prd.md' });
      expect(r.status).toBe(400);
      expect((await r.json()).error).toMatchObject({
        code: 'invalid_path',
        message: `workspace ${ws} is outside the allowed roots (${home}, ${elsewhere}); set LOKI_WORKSPACE_ROOTS on the server to comma-separated absolute directories that include it, and restart the server`,
      });
    } finally {
      rmSync(outside, { recursive: true, force: true });
    }
  });

  it('the home directory itself (it holds LOKI_HOME: tokens, signing keys) is not a workspace', async () => {
    writeFileSync(path.join(home, 'prd.md'), '# PRD\n');
    const r = await post({ workspace: home, prd: 'prd.md' });
    expect(r.status).toBe(400);
    expect((await r.json()).error).toMatchObject({
      code: 'invalid_path',
      message: `workspace ${home} contains the server's state directory (LOKI_HOME ${path.join(home, '.loki')}); use a project directory instead`,
    });
  });

  it('a directory inside LOKI_HOME (the token database and signing keys) is not a workspace either', async () => {
    // ~/.loki/dashboard holds loki.db and audit-signing-key; the home directory is a default root.
    const state = path.join(home, '.loki', 'dashboard');
    const r = await post({ workspace: state, prd: 'loki.db' });
    expect(r.status).toBe(400);
    expect((await r.json()).error).toMatchObject({
      code: 'invalid_path',
      message: `workspace ${state} is inside the server's state directory (LOKI_HOME ${path.join(home, '.loki')}); use a project directory instead`,
    });
    const r2 = await post({ workspace: path.join(home, '.loki'), prd: 'dashboard/loki.db' });
    expect(r2.status).toBe(400);
    expect((await r2.json()).error.code).toBe('invalid_path');
  });
});

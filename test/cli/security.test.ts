import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli, tempHome } from '../helpers/server';

describe('loki security check', () => {
  it('finds open file modes, a missing .gitignore entry and a secret (never printing it)', async () => {
    const home = tempHome();
    expect((await runCli(['db', 'migrate'], { LOKI_HOME: home })).code).toBe(0);
    chmodSync(path.join(home, 'dashboard', 'loki.db'), 0o644);
    const ws = tempHome('loki-ws-');
    writeFileSync(path.join(ws, '.gitignore'), 'node_modules/\n');
    mkdirSync(path.join(ws, 'src'));
    const secret = `ghp_${'a1B2'.repeat(9)}`;
    writeFileSync(path.join(ws, 'src', 'config.js'), `const x = 1;\nconst token = "${secret}";\n`);
    const r = await runCli(['security', 'check', '--workspace', ws], { LOKI_HOME: home });
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(`error: ${path.join(home, 'dashboard', 'loki.db')} is mode 644; expected 600`);
    expect(r.stdout).toContain('warning: .gitignore does not list .loki/');
    expect(r.stdout).toContain('error: src/config.js:2: looks like a secret (40 characters; not shown)');
    expect(r.stdout).not.toContain(secret);
  }, 180_000);

  it('a clean workspace and state → exit 0', async () => {
    const home = tempHome();
    await runCli(['db', 'migrate'], { LOKI_HOME: home });
    const ws = tempHome('loki-ws-');
    writeFileSync(path.join(ws, '.gitignore'), '.loki/\n.env\n');
    writeFileSync(path.join(ws, 'README.md'), '# nothing secret\n');
    const r = await runCli(['security', 'check', '--workspace', ws], { LOKI_HOME: home });
    expect(r.stdout).toBe('security check: no findings\n');
    expect(r.code).toBe(0);
  }, 180_000);

  /** A git workspace whose .gitignore lists .loki/ and .env, with an ignored .env of mode `mode`. */
  function gitWorkspace(mode: number): string {
    const ws = tempHome('loki-ws-');
    expect(spawnSync('git', ['init', '-q', ws]).status).toBe(0);
    writeFileSync(path.join(ws, '.gitignore'), '.loki/\n.env\n.env.*\n');
    writeFileSync(path.join(ws, '.env'), 'ANTHROPIC_API_KEY=sk-ant-api03-abcdefghijklmnopqrstuvwx\n');
    chmodSync(path.join(ws, '.env'), mode);
    return ws;
  }

  it('an ignored .env readable by others is still reported; its secrets are not (an ignored .env is where they belong)', async () => {
    const home = tempHome();
    await runCli(['db', 'migrate'], { LOKI_HOME: home });
    const ws = gitWorkspace(0o644);
    mkdirSync(path.join(ws, 'api'));
    writeFileSync(path.join(ws, 'api', '.env.local'), 'X=1\n');
    chmodSync(path.join(ws, 'api', '.env.local'), 0o640);
    const r = await runCli(['security', 'check', '--workspace', ws], { LOKI_HOME: home });
    expect(r.stdout).toBe('warning: .env is readable by others (mode 644)\nwarning: api/.env.local is readable by others (mode 640)\n');
    expect(r.code).toBe(0);
    const json = await runCli(['security', 'check', '--workspace', ws, '--json'], { LOKI_HOME: home });
    expect(JSON.parse(json.stdout)).toEqual({
      ok: false,
      findings: [
        { level: 'warning', what: '.env is readable by others (mode 644)' },
        { level: 'warning', what: 'api/.env.local is readable by others (mode 640)' },
      ],
    });
    chmodSync(path.join(ws, '.env'), 0o600);
    chmodSync(path.join(ws, 'api', '.env.local'), 0o600);
    const clean = await runCli(['security', 'check', '--workspace', ws], { LOKI_HOME: home });
    expect(clean).toEqual({ code: 0, stdout: 'security check: no findings\n', stderr: '' });
  }, 180_000);

  it('each secret is reported once, also where the patterns overlap (sk-ant- is also sk-; ?token=loki_… is also a token parameter)', async () => {
    const home = tempHome();
    await runCli(['db', 'migrate'], { LOKI_HOME: home });
    const ws = gitWorkspace(0o600);
    const anthropic = 'sk-ant-api03-abcdefghijklmnopqrstuvwx';
    writeFileSync(path.join(ws, 'app.js'), `const k = "${anthropic}";\nconst u = "https://x.test/?token=loki_abcdefghijklmnop";\nconst a = "${anthropic}", b = "${anthropic}";\n`);
    const r = await runCli(['security', 'check', '--workspace', ws], { LOKI_HOME: home });
    expect(r.code).toBe(1);
    expect(r.stdout).toBe(
      [
        'error: app.js:1: looks like a secret (37 characters; not shown)',
        'error: app.js:2: looks like a secret (28 characters; not shown)',
        'error: app.js:3: looks like 2 secrets (37 and 37 characters; not shown)',
        '',
      ].join('\n'),
    );
    expect(r.stdout).not.toContain('abcdefghijklmnop');
  }, 180_000);
});

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
  });

  it('a clean workspace and state → exit 0', async () => {
    const home = tempHome();
    await runCli(['db', 'migrate'], { LOKI_HOME: home });
    const ws = tempHome('loki-ws-');
    writeFileSync(path.join(ws, '.gitignore'), '.loki/\n.env\n');
    writeFileSync(path.join(ws, 'README.md'), '# nothing secret\n');
    const r = await runCli(['security', 'check', '--workspace', ws], { LOKI_HOME: home });
    expect(r.stdout).toBe('security check: no findings\n');
    expect(r.code).toBe(0);
  });
});

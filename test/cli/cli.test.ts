import { statSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { runCli, tempHome } from '../helpers/server';

describe('loki CLI skeleton', () => {
  it('--version', async () => {
    const r = await runCli(['--version']);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe('0.1.0');
  });

  it.each([[['--help']], [['dashboard', '--help']], [['db', 'migrate', '--help']], [['enterprise', 'token', 'generate', '--help']], [['enterprise', 'audit', 'verify', '--help']]])(
    '%j prints usage and exits 0',
    async (args) => {
      const r = await runCli(args);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain('Usage: loki');
    },
  );

  it('an unknown command is a usage error: exit 2, commander\'s message on one line', async () => {
    const r = await runCli(['frobnicate']);
    expect(r).toEqual({ code: 2, stdout: '', stderr: "error: unknown command 'frobnicate' (run with --help for usage)\n" });
    const near = await runCli(['sesions']);
    expect(near).toEqual({ code: 2, stdout: '', stderr: "error: unknown command 'sesions' (Did you mean sessions?) (run with --help for usage)\n" });
  });

  it.each([
    [['dashboard', '--bogus'], "error: unknown option '--bogus'"],
    [['enterprise', 'audit', 'tail', '--bogus'], "error: unknown option '--bogus'"],
    [['logs'], "error: missing required argument 'id'"],
    [['stop'], "error: missing required argument 'id'"],
    [['enterprise', 'token', 'generate'], "error: missing required argument 'name'"],
    [['security', 'check', '--workspace'], "error: option '--workspace <dir>' argument missing"],
    [['enterprise', 'audit', 'prove', '1'], "error: required option '--out <file.tlog-proof>' not specified"],
    [['status', 'extra'], "error: too many arguments for 'status'. Expected 0 arguments but got 1."],
  ])('%j: commander\'s usage error, exit 2, one line, no stack', async (args, message) => {
    const r = await runCli(args, { LOKI_HOME: tempHome() });
    expect(r).toEqual({ code: 2, stdout: '', stderr: `${message} (run with --help for usage)\n` });
  });

  it('a command group without its subcommand: commander shows its help as an error → exit 2', async () => {
    const r = await runCli(['enterprise']);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('Usage: loki enterprise [options] [command]');
  });

  it('options after a subcommand belong to it: `sessions branches --json` is the branches listing', async () => {
    const repo = tempHome('loki-repo-');
    const r = await runCli(['sessions', 'branches', '--json', '--repo', repo], { LOKI_HOME: tempHome() });
    // Not a repository: the branches command answered (the sessions list would have needed a server).
    expect(r).toEqual({ code: 2, stdout: '', stderr: `loki: ${repo} is not inside a git repository\n` });
  });

  it('db migrate applies, then says it is up to date; dir 0700, db 0600', async () => {
    const home = tempHome();
    const first = await runCli(['db', 'migrate'], { LOKI_HOME: home });
    expect(first.code).toBe(0);
    expect(first.stdout).toBe(
      `applied 4 migration(s) to ${home}/dashboard/loki.db: 0000_init, 0001_sessions_policy_worker_binding, 0002_audit_tlog, 0003_audit_witness_cosignatures\n`,
    );
    const again = await runCli(['db', 'migrate'], { LOKI_HOME: home });
    expect(again.stdout).toBe(`database ${home}/dashboard/loki.db is up to date\n`);
    expect(statSync(`${home}/dashboard`).mode & 0o777).toBe(0o700);
    expect(statSync(`${home}/dashboard/loki.db`).mode & 0o777).toBe(0o600);
  });

  it.each([
    [{ LOKI_DASHBOARD_PORT: 'abc' }, 'loki: LOKI_DASHBOARD_PORT="abc" is invalid: expected an integer from 1 to 65535\n'],
    [{ LOKI_DASHBOARD_PORT: '70000' }, 'loki: LOKI_DASHBOARD_PORT="70000" is invalid: expected an integer from 1 to 65535\n'],
    [{ LOKI_DASHBOARD_CORS: 'localhost' }, 'loki: LOKI_DASHBOARD_CORS="localhost" is invalid: expected comma-separated origins like http://localhost:57374, or *\n'],
    [{ LOKI_ENTERPRISE_AUTH: 'sure' }, 'loki: LOKI_ENTERPRISE_AUTH="sure" is invalid: expected one of true, false, 1, 0, yes, no, on, off\n'],
    [
      { LOKI_DASHBOARD_HOST: '0.0.0.0' },
      'loki: LOKI_DASHBOARD_HOST="0.0.0.0" is invalid: expected a loopback address (127.0.0.1, localhost, ::1) unless LOKI_ENTERPRISE_AUTH or OIDC is on, or LOKI_DASHBOARD_ALLOW_INSECURE_BIND=1\n',
    ],
  ])('dashboard refuses %j: exit 2 with one line', async (env, line) => {
    const r = await runCli(['dashboard'], { LOKI_HOME: tempHome(), ...env });
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(line);
  });

  it('--port on the command line is validated like the variable', async () => {
    const r = await runCli(['dashboard', '--port', 'abc'], { LOKI_HOME: tempHome() });
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('loki: LOKI_DASHBOARD_PORT="abc" is invalid: expected an integer from 1 to 65535\n');
  });
});

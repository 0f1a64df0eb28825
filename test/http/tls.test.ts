/**
 * Native TLS (LOKI_TLS_CERT / LOKI_TLS_KEY) on a real `loki dashboard` process:
 * certificates from the real `openssl`, HTTPS checked with the real `curl`
 * (trusted with --cacert, refused without), WSS with the `ws` client, and
 * start-up refusals (missing, mismatched, not PEM, half configured): exit 2 and
 * one line on stderr.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { testStoreEnv } from '../helpers/postgres';
import { freePort, LOKI_BIN, runCli, tempHome } from '../helpers/server';
import { makeCerts, run, type TestCerts } from './tls-certs';

/** curl with only PATH in its environment (no CURL_CA_BUNDLE, no proxy). */
function curl(args: string[]) {
  return run('curl', ['--silent', '--show-error', '--max-time', '10', ...args]);
}

describe('HTTPS and WSS with LOKI_TLS_CERT / LOKI_TLS_KEY', () => {
  let dir: string;
  let home: string;
  let certs: TestCerts;
  let child: ChildProcess;
  let out = '';
  let port: number;
  let base: string;
  let admin: string;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'loki-tls-'));
    home = tempHome('loki-tls-home-');
    certs = await makeCerts(dir);
    // The store under test (LOKI_TEST_STORE): the CLI below and the server use the same database.
    const store = await testStoreEnv(home);
    const made = await runCli(['enterprise', 'token', 'generate', 'admin', '--role', 'admin', '--json'], { LOKI_HOME: home });
    expect(made.code, made.stderr).toBe(0);
    admin = JSON.parse(made.stdout).token;
    port = await freePort();
    base = `https://127.0.0.1:${port}`;
    child = spawn(process.execPath, [LOKI_BIN, 'dashboard'], {
      env: {
        PATH: process.env.PATH ?? '',
        HOME: home,
        LOKI_HOME: home,
        LOKI_EMBEDDED_WORKER: 'off',
        ...store,
        LOKI_ENTERPRISE_AUTH: 'true',
        LOKI_DASHBOARD_PORT: String(port),
        LOKI_TLS_CERT: certs.cert,
        LOKI_TLS_KEY: certs.key,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout?.on('data', (d) => {
      out += d;
    });
    child.stderr?.on('data', (d) => {
      out += d;
    });
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`server exited early (${child.exitCode}): ${out}`);
      if (out.includes('loki dashboard listening')) break;
      if (Date.now() > deadline) throw new Error(`server did not start: ${out}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  });

  afterAll(async () => {
    if (child && child.exitCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
    rmSync(home, { recursive: true, force: true });
  });

  it('announces an https URL and the certificate at start-up', () => {
    const lines = out
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.find((l) => l.msg === 'loki dashboard listening')?.url).toBe(base);
    const tls = lines.find((l) => l.msg === 'serving HTTPS and WSS');
    expect(tls?.subject).toBe('CN=localhost');
    expect(tls?.alt_names).toBe('IP Address:127.0.0.1, DNS:localhost');
    // The key never reaches the log.
    const keyBody = readFileSync(certs.key, 'utf8').split('\n')[1]!;
    expect(out.includes(keyBody)).toBe(false);
  });

  it('curl --cacert ca.pem reaches /health; without the CA curl refuses the certificate (exit 60)', async () => {
    const ok = await curl(['--cacert', certs.ca, `${base}/health`]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout)).toEqual({ status: 'healthy', service: 'loki-dashboard' });
    const refused = await curl([`${base}/health`]);
    expect(refused.code).toBe(60);
    expect(refused.stdout).toBe('');
    // By name too (the certificate names localhost).
    const byName = await curl(['--cacert', certs.ca, `https://localhost:${port}/health`]);
    expect(byName.code, byName.stderr).toBe(0);
  });

  it('plain HTTP on the TLS port gets no API answer; the API over HTTPS still wants a token', async () => {
    const plain = await curl(['--output', '/dev/null', '--write-out', '%{http_code}', `http://127.0.0.1:${port}/api/status`]);
    expect(plain.stdout).not.toBe('200');
    const noToken = await curl(['--cacert', certs.ca, '--output', '/dev/null', '--write-out', '%{http_code}', `${base}/api/status`]);
    expect(noToken.stdout).toBe('401');
    const withToken = await curl(['--cacert', certs.ca, '--header', `Authorization: Bearer ${admin}`, `${base}/api/status`]);
    expect(withToken.code, withToken.stderr).toBe(0);
    expect(JSON.parse(withToken.stdout).status).toBe('running');
  });

  it('a WSS client trusting the CA opens /ws and is counted as a live stream; without the CA the handshake fails', async () => {
    const ws = new WebSocket(`wss://127.0.0.1:${port}/ws`, [`loki.bearer.${admin}`], { ca: readFileSync(certs.ca) });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    expect(ws.protocol).toBe(`loki.bearer.${admin}`);
    const st = await curl(['--cacert', certs.ca, '--header', `Authorization: Bearer ${admin}`, `${base}/api/status`]);
    expect(JSON.parse(st.stdout).streams.ws).toBe(1);
    const closed = new Promise<number>((r) => ws.once('close', (code) => r(code)));
    ws.close(1000);
    expect(await closed).toBe(1000);

    const untrusted = new WebSocket(`wss://127.0.0.1:${port}/ws`, [`loki.bearer.${admin}`]);
    const err = await new Promise<Error>((resolve) => {
      untrusted.once('open', () => resolve(new Error('opened')));
      untrusted.once('error', resolve);
    });
    expect((err as NodeJS.ErrnoException).code).toBe('UNABLE_TO_VERIFY_LEAF_SIGNATURE');
  });
});

describe('TLS settings that stop start-up (exit 2, one line)', () => {
  let dir: string;
  let certs: TestCerts;
  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'loki-tls-bad-'));
    certs = await makeCerts(dir);
    writeFileSync(path.join(dir, 'garbage.pem'), 'not a certificate\n');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const start = async (env: Record<string, string>) => {
    const home = tempHome('loki-tls-bad-home-');
    try {
      return await runCli(['dashboard'], { LOKI_HOME: home, LOKI_EMBEDDED_WORKER: 'off', LOKI_DASHBOARD_PORT: String(await freePort()), ...env });
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  };

  it.each([
    ['a missing certificate', () => ({ LOKI_TLS_CERT: path.join(dir, 'missing.pem'), LOKI_TLS_KEY: certs.key }), () => `loki: LOKI_TLS_CERT=${path.join(dir, 'missing.pem')} does not exist\n`],
    ['a missing key', () => ({ LOKI_TLS_CERT: certs.cert, LOKI_TLS_KEY: path.join(dir, 'missing.key') }), () => `loki: LOKI_TLS_KEY=${path.join(dir, 'missing.key')} does not exist\n`],
    ['a directory', () => ({ LOKI_TLS_CERT: dir, LOKI_TLS_KEY: certs.key }), () => `loki: LOKI_TLS_CERT=${dir} is a directory\n`],
    ['a key of another certificate', () => ({ LOKI_TLS_CERT: certs.cert, LOKI_TLS_KEY: certs.otherKey }), () => `loki: LOKI_TLS_KEY=${certs.otherKey} does not match the certificate in LOKI_TLS_CERT=${certs.cert}\n`],
    ['a certificate that is not PEM', () => ({ LOKI_TLS_CERT: path.join(dir, 'garbage.pem'), LOKI_TLS_KEY: certs.key }), () => `loki: LOKI_TLS_CERT=${path.join(dir, 'garbage.pem')} is not a PEM certificate\n`],
    ['a key that is not PEM', () => ({ LOKI_TLS_CERT: certs.cert, LOKI_TLS_KEY: path.join(dir, 'garbage.pem') }), () => `loki: LOKI_TLS_KEY=${path.join(dir, 'garbage.pem')} is not an unencrypted PEM private key\n`],
    ['the certificate without a key', () => ({ LOKI_TLS_CERT: certs.cert }), () => 'loki: LOKI_TLS_KEY="" is invalid: expected the private key file (PEM) as an absolute path, since LOKI_TLS_CERT is set\n'],
    ['a relative path', () => ({ LOKI_TLS_CERT: 'server.pem', LOKI_TLS_KEY: certs.key }), () => 'loki: LOKI_TLS_CERT="server.pem" is invalid: expected an absolute path\n'],
  ])('%s', async (_name, env, expected) => {
    const r = await start(env());
    expect(r.stderr).toBe(expected());
    expect(r.code).toBe(2);
  });
});

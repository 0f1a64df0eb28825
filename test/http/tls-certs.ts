/**
 * Test certificates made with the real `openssl` (argument arrays, no shell): a
 * private CA and a server certificate it signed for 127.0.0.1 and localhost,
 * plus an unrelated key (for the mismatch case). `spki` is the base64 SHA-256 of
 * the server key's SubjectPublicKeyInfo, as Chromium's
 * --ignore-certificate-errors-spki-list takes it.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';

export interface TestCerts {
  ca: string;
  cert: string;
  key: string;
  otherKey: string;
  spki: string;
}

/**
 * Run a program to completion with stdin closed (argument array, only PATH in its
 * environment). test/helpers/process.ts writes to stdin, which raises EPIPE when
 * the program has already exited.
 */
export function run(cmd: string, args: string[], cwd?: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, env: { PATH: process.env.PATH ?? '' }, stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      stdout += d;
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

async function openssl(args: string[], cwd: string): Promise<void> {
  const r = await run('openssl', args, cwd);
  if (r.code !== 0) throw new Error(`openssl ${args[0]} failed (${r.code}): ${r.stderr}`);
}

export async function makeCerts(dir: string): Promise<TestCerts> {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  await openssl(['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=loki test CA'], dir);
  await openssl(['req', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost'], dir);
  writeFileSync(path.join(dir, 'ext.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n');
  await openssl(['x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.pem', '-days', '2', '-extfile', 'ext.cnf'], dir);
  await openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', 'other.key'], dir);
  const cert = path.join(dir, 'server.pem');
  const der = new X509Certificate(readFileSync(cert)).publicKey.export({ type: 'spki', format: 'der' });
  return {
    ca: path.join(dir, 'ca.pem'),
    cert,
    key: path.join(dir, 'server.key'),
    otherKey: path.join(dir, 'other.key'),
    spki: createHash('sha256').update(der).digest('base64'),
  };
}

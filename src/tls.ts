/**
 * Native TLS for the Node server: `LOKI_TLS_CERT` / `LOKI_TLS_KEY` (PEM files,
 * paths parsed in src/env.ts) are read once at start-up and the server serves
 * HTTPS and WSS (src/server.ts). A file that is missing, unreadable, not PEM, or
 * a key that does not belong to the certificate stops start-up with one line
 * (`TlsSetupError`; `loki dashboard` exits 2). Error messages name the variable
 * and the path, never the key's content.
 */
import { readFileSync } from 'node:fs';
import { createPrivateKey, type KeyObject, X509Certificate } from 'node:crypto';
import { createSecureContext } from 'node:tls';
import type { TlsFiles } from './env';

export class TlsSetupError extends Error {}

export interface TlsMaterial {
  cert: Buffer;
  key: Buffer;
  /** The leaf certificate's subject and subject alternative names, for the start-up log line. */
  subject: string;
  altNames: string | null;
  /** When the leaf certificate expires (ms). */
  validTo: number;
}

function readPem(variable: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'read error';
    const why = code === 'ENOENT' ? 'does not exist' : code === 'EACCES' ? 'cannot be read (permission denied)' : code === 'EISDIR' ? 'is a directory' : `cannot be read (${code})`;
    throw new TlsSetupError(`${variable}=${file} ${why}`);
  }
}

/** Read and check the certificate and key; throws `TlsSetupError` with one line. */
export function loadTls(files: TlsFiles): TlsMaterial {
  const cert = readPem('LOKI_TLS_CERT', files.cert);
  const key = readPem('LOKI_TLS_KEY', files.key);
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(cert);
  } catch {
    throw new TlsSetupError(`LOKI_TLS_CERT=${files.cert} is not a PEM certificate`);
  }
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(key);
  } catch {
    throw new TlsSetupError(`LOKI_TLS_KEY=${files.key} is not an unencrypted PEM private key`);
  }
  if (!x509.checkPrivateKey(privateKey)) {
    throw new TlsSetupError(`LOKI_TLS_KEY=${files.key} does not match the certificate in LOKI_TLS_CERT=${files.cert}`);
  }
  try {
    createSecureContext({ cert, key });
  } catch (err) {
    throw new TlsSetupError(`LOKI_TLS_CERT=${files.cert} and LOKI_TLS_KEY=${files.key} cannot be used: ${(err as Error).message.split('\n')[0]}`);
  }
  return { cert, key, subject: x509.subject.replace(/\n/g, ', '), altNames: x509.subjectAltName ?? null, validTo: Date.parse(x509.validTo) };
}

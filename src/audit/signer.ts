/**
 * Ed25519 checkpoint signing with jose. The key lives in
 * `$LOKI_HOME/dashboard/audit-signing-key` (PKCS#8 PEM, 0600), created on first use.
 */
import { closeSync, existsSync, openSync, readFileSync, writeSync } from 'node:fs';
import { CompactSign, calculateJwkThumbprint, compactVerify, exportJWK, exportPKCS8, generateKeyPair, importJWK, importPKCS8, type JWK } from 'jose';
import type { CheckpointBody } from './chain';
import type { CheckpointSigner } from './log';

type Key = Awaited<ReturnType<typeof importPKCS8>>;

const TYP = 'loki-audit-checkpoint+jws';

async function loadOrCreate(path: string): Promise<{ privateKey: Key; publicJwk: JWK }> {
  if (!existsSync(path)) {
    const { privateKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
    const pem = await exportPKCS8(privateKey);
    try {
      const fd = openSync(path, 'wx', 0o600); // never overwrite a key another process just made
      writeSync(fd, pem);
      closeSync(fd);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
  const pem = readFileSync(path, 'utf8');
  const privateKey = await importPKCS8(pem, 'EdDSA', { extractable: true });
  const jwk = await exportJWK(privateKey);
  const publicJwk: JWK = { kty: jwk.kty, crv: jwk.crv, x: jwk.x };
  return { privateKey, publicJwk };
}

/** A verifier for checkpoints from a public JWK alone (offline verification). */
export async function checkpointVerifier(publicJwk: JWK): Promise<(jws: string) => Promise<CheckpointBody | null>> {
  const key = await importJWK(publicJwk, 'EdDSA');
  return async (jws) => {
    try {
      const { payload, protectedHeader } = await compactVerify(jws, key, { algorithms: ['EdDSA'] });
      if (protectedHeader.typ !== TYP) return null;
      return JSON.parse(new TextDecoder().decode(payload)) as CheckpointBody;
    } catch {
      return null;
    }
  };
}

export async function createFileSigner(keyPath: string): Promise<CheckpointSigner & { kid: string }> {
  const { privateKey, publicJwk } = await loadOrCreate(keyPath);
  const kid = await calculateJwkThumbprint(publicJwk);
  const verify = await checkpointVerifier(publicJwk);
  return {
    kid,
    origin: `loki-audit/${kid}`,
    async sign(body) {
      return new CompactSign(new TextEncoder().encode(JSON.stringify(body)))
        .setProtectedHeader({ alg: 'EdDSA', typ: TYP, kid })
        .sign(privateKey);
    },
    verify,
    async publicJwk() {
      return { ...publicJwk, kid, alg: 'EdDSA', use: 'sig' };
    },
  };
}

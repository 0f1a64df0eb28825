/**
 * OIDC verification throughput with cached keys: a real provider (oidc-provider
 * on 127.0.0.1) issues one RS256 JWT access token, and the verifier checks it in
 * a tight loop on this one thread for ~3 s.
 *
 *   npx tsx scripts/bench/oidc.ts   → {"verifications_per_sec":…,"jwks_fetches":…}
 */
import { pathToFileURL } from 'node:url';
import { createOidcVerifier } from '../../src/auth/oidc';
import { startOidcProvider } from '../../test/helpers/oidc-provider';

export interface OidcBenchResult {
  verifications_per_sec: number;
  jwks_fetches: number;
  verifications: number;
  duration_ms: number;
  alg: string;
}

export async function benchOidc(opts: { durationMs?: number } = {}): Promise<OidcBenchResult> {
  const durationMs = opts.durationMs ?? 3_000;
  const idp = await startOidcProvider({ roles: ['operator'] });
  try {
    const verifier = createOidcVerifier({ issuer: idp.issuer, clientId: idp.clientId });
    const token = await idp.getToken();
    const jwks0 = idp.jwksFetchCount();
    // Warm-up: discovery, JWKS fetch, key import, JIT.
    for (let i = 0; i < 200; i++) await verifier.verify(token);

    let n = 0;
    const start = performance.now();
    const end = start + durationMs;
    while (performance.now() < end) {
      for (let i = 0; i < 100; i++) await verifier.verify(token);
      n += 100;
    }
    const elapsed = performance.now() - start;
    return {
      verifications_per_sec: Math.round((n / elapsed) * 1000),
      jwks_fetches: idp.jwksFetchCount() - jwks0,
      verifications: n,
      duration_ms: Math.round(elapsed),
      alg: 'RS256',
    };
  } finally {
    await idp.close();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  benchOidc().then(
    (r) => console.log(JSON.stringify(r)),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}

/**
 * OIDC verification throughput with cached keys: a real provider (oidc-provider
 * on 127.0.0.1) issues one RS256 JWT access token, and the verifier checks it in
 * a tight loop on this one thread for ~3 s (three 1-s windows, median reported),
 * then for 1 s with 16 verifications in flight.
 *
 *   npx tsx scripts/bench/oidc.ts   → {"verifications_per_sec":…,"jwks_fetches":…}
 */
import { pathToFileURL } from 'node:url';
import { createOidcVerifier } from '../../src/auth/oidc';
import { startOidcProvider } from '../../test/helpers/oidc-provider';

export interface OidcBenchResult {
  /** Median of three 1-s windows of back-to-back verifications (one in flight). */
  verifications_per_sec: number;
  /** JWKS fetches during the whole run (warm-up included): 1 when keys are cached. */
  jwks_fetches: number;
  window_rates: number[];
  /** The same token with 16 verifications in flight (how a busy server calls it). */
  concurrent_verifications_per_sec: number;
  verifications: number;
  alg: string;
}

async function windowRate(ms: number, inFlight: number, verifyOnce: () => Promise<unknown>): Promise<{ rate: number; n: number }> {
  let n = 0;
  const start = performance.now();
  const end = start + ms;
  while (performance.now() < end) {
    if (inFlight === 1) {
      for (let i = 0; i < 100; i++) await verifyOnce();
      n += 100;
    } else {
      await Promise.all(Array.from({ length: inFlight }, verifyOnce));
      n += inFlight;
    }
  }
  return { rate: Math.round((n / (performance.now() - start)) * 1000), n };
}

export async function benchOidc(opts: { windowMs?: number } = {}): Promise<OidcBenchResult> {
  const windowMs = opts.windowMs ?? 1_000;
  const idp = await startOidcProvider({ roles: ['operator'] });
  try {
    const jwks0 = idp.jwksFetchCount();
    const verifier = createOidcVerifier({ issuer: idp.issuer, clientId: idp.clientId });
    const token = await idp.getToken();
    const verifyOnce = async () => {
      const id = await verifier.verify(token);
      if (id.role !== 'operator') throw new Error('unexpected role');
    };
    // Warm-up (0.5 s): discovery, JWKS fetch, key import, JIT.
    await windowRate(500, 1, verifyOnce);

    let total = 0;
    const rates: number[] = [];
    for (let w = 0; w < 3; w++) {
      const { rate, n } = await windowRate(windowMs, 1, verifyOnce);
      rates.push(rate);
      total += n;
    }
    const concurrent = await windowRate(windowMs, 16, verifyOnce);
    total += concurrent.n;
    return {
      verifications_per_sec: [...rates].sort((a, b) => a - b)[1]!,
      jwks_fetches: idp.jwksFetchCount() - jwks0,
      window_rates: rates,
      concurrent_verifications_per_sec: concurrent.rate,
      verifications: total,
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

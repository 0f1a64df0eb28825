/**
 * OIDC verification against a real provider (`oidc-provider` on 127.0.0.1,
 * client-credentials JWT access tokens with a resource indicator), plus forged
 * tokens crafted with jose.
 */
import { createHmac, createPublicKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { base64url, exportSPKI, generateKeyPair, importJWK, type JWTPayload, SignJWT, UnsecuredJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOidcVerifier, looksLikeJwt, OidcError, type OidcErrorCode, type OidcVerifier } from '../../src/auth/oidc';
import { startOidcProvider, type TestOidcProvider } from '../helpers/oidc-provider';

let idp: TestOidcProvider;
let verifier: OidcVerifier;

beforeAll(async () => {
  idp = await startOidcProvider();
  verifier = createOidcVerifier({ issuer: idp.issuer, clientId: idp.clientId });
  await verifier.ready();
});
afterAll(async () => {
  await idp?.close();
});

const nowSec = () => Math.floor(Date.now() / 1000);

/** Valid-looking claims for forged tokens. */
function claims(extra: JWTPayload = {}): JWTPayload {
  return { iss: idp.issuer, aud: idp.clientId, sub: 'mallory', roles: ['admin'], iat: nowSec(), exp: nowSec() + 300, ...extra };
}

async function refusal(token: string, v: OidcVerifier = verifier): Promise<OidcErrorCode> {
  try {
    await v.verify(token);
  } catch (err) {
    expect(err).toBeInstanceOf(OidcError);
    const e = err as OidcError;
    // Never echo the token (or its signature) back.
    if (token.length >= 8) expect(e.message).not.toContain(token);
    const sig = token.split('.')[2];
    if (sig && sig.length >= 8) expect(e.message).not.toContain(sig);
    return e.code;
  }
  throw new Error('token was accepted');
}

const rsaKey = () => idp.signingKeys().find((k) => k.alg === 'RS256')!;

describe('looksLikeJwt', () => {
  it('routes JWTs (including alg none) to OIDC and loki tokens elsewhere', () => {
    expect(looksLikeJwt('eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln')).toBe(true);
    expect(looksLikeJwt('eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.')).toBe(true);
    expect(looksLikeJwt('loki_abcDEF0123456789abcDEF0123456789abcDEF01234567')).toBe(false);
    expect(looksLikeJwt('a.b')).toBe(false);
    expect(looksLikeJwt('a.b.c.d.e')).toBe(false);
    expect(looksLikeJwt('a.b.c d')).toBe(false);
    expect(looksLikeJwt('')).toBe(false);
  });
});

describe('createOidcVerifier options', () => {
  const base = { issuer: 'https://idp.example.com', clientId: 'loki' };
  it('refuses admin (or worker) as the default role', () => {
    expect(() => createOidcVerifier({ ...base, defaultRole: 'admin' })).toThrow(/admin/);
    expect(() => createOidcVerifier({ ...base, defaultRole: 'worker' })).toThrow(/default OIDC role/);
    expect(() => createOidcVerifier({ ...base, defaultRole: 'auditor' })).not.toThrow();
  });
  it('refuses symmetric algorithms and plain-http issuers off loopback', () => {
    expect(() => createOidcVerifier({ ...base, algorithms: ['RS256', 'HS256'] })).toThrow(/asymmetric/);
    expect(() => createOidcVerifier({ ...base, algorithms: ['none'] })).toThrow(/asymmetric/);
    expect(() => createOidcVerifier({ ...base, issuer: 'http://idp.example.com' })).toThrow(/https/);
    expect(() => createOidcVerifier({ ...base, issuer: 'http://127.0.0.1:9' })).not.toThrow();
  });
  it('does not fetch anything at construction', () => {
    let calls = 0;
    createOidcVerifier({
      ...base,
      fetch: async () => {
        calls++;
        return new Response('{}');
      },
    });
    expect(calls).toBe(0);
  });
});

describe('valid tokens from the real provider', () => {
  it('verifies a client-credentials JWT access token: subject, email, role, claims', async () => {
    const token = await idp.getToken({ roles: ['operator'] });
    const id = await verifier.verify(token);
    expect(id.subject).toBe('user-0001');
    expect(id.email).toBe('user-0001@example.test');
    expect(id.role).toBe('operator');
    expect(id.claims.client_id).toBe(idp.clientId);
    expect(id.claims.aud).toBe(idp.clientId);
    expect(id.expiresAt).toBe((id.claims.exp as number) * 1000);
  });

  it('accepts ES256 and EdDSA tokens', async () => {
    for (const alg of ['ES256', 'EdDSA'] as const) {
      const id = await verifier.verify(await idp.getToken({ alg, roles: ['auditor'], subject: `svc-${alg}` }));
      expect(id).toMatchObject({ subject: `svc-${alg}`, role: 'auditor' });
    }
  });

  it('takes the highest role across values and claims', async () => {
    // `admin` in a claim is not ours to trust without a role map (issue 13): operator is the highest here.
    expect((await verifier.verify(await idp.getToken({ roles: ['viewer', 'admin', 'operator'] }))).role).toBe('operator');
    const mixed = await idp.getToken({
      roles: ['viewer'],
      claims: { groups: ['engineering', 'loki-operator'], realm_access: { roles: ['auditor'] } },
    });
    expect((await verifier.verify(mixed)).role).toBe('operator');
    const cognito = await idp.getToken({ roles: [], claims: { 'cognito:groups': ['Operator'] } });
    expect((await verifier.verify(cognito)).role).toBe('operator');
    const single = await idp.getToken({ roles: [], claims: { groups: 'AUDITOR' } });
    expect((await verifier.verify(single)).role).toBe('auditor');
  });

  it('never derives worker, ignores unknown names, and supports a role map and custom claim paths', async () => {
    const token = await idp.getToken({ roles: ['worker', 'superuser', 'root'] });
    expect((await verifier.verify(token)).role).toBe('viewer');
    const mapped = createOidcVerifier({
      issuer: idp.issuer,
      clientId: idp.clientId,
      rolesClaims: ['https://example.com/claims.teams', 'app.perms'],
      roleMap: { 'Platform-Admins': 'admin' },
    });
    const t2 = await idp.getToken({ roles: ['admin'], claims: { 'https://example.com/claims.teams': ['platform-admins'] } });
    expect((await mapped.verify(t2)).role).toBe('admin');
    const t3 = await idp.getToken({ roles: ['admin'], claims: { app: { perms: ['operator'] } } });
    // `roles` is not among this verifier's claims: only app.perms counts.
    expect((await mapped.verify(t3)).role).toBe('operator');
  });

  it('falls back to the default role when no claim names one', async () => {
    const token = await idp.getToken({ roles: [] });
    expect((await verifier.verify(token)).role).toBe('viewer');
    const auditorDefault = createOidcVerifier({ issuer: idp.issuer, clientId: idp.clientId, defaultRole: 'auditor' });
    expect((await auditorDefault.verify(token)).role).toBe('auditor');
  });

  it('reports no email when absent or unverified', async () => {
    expect((await verifier.verify(await idp.getToken({ email: null }))).email).toBeNull();
    expect((await verifier.verify(await idp.getToken({ claims: { email_verified: false } }))).email).toBeNull();
  });

  it('honours a custom audience', async () => {
    const aud = 'https://loki.example/api';
    const v = createOidcVerifier({ issuer: idp.issuer, clientId: idp.clientId, audience: aud });
    expect((await v.verify(await idp.getToken({ resource: aud }))).subject).toBe('user-0001');
    expect(await refusal(await idp.getToken(), v)).toBe('bad_audience');
  });

  it('allows a small clock skew on exp', async () => {
    const token = await idp.getToken({ claims: { exp: nowSec() - 10 } });
    expect((await verifier.verify(token)).subject).toBe('user-0001');
  });
});

describe('refused tokens (exact reasons)', () => {
  it('a token signed by another key with the same kid: bad_signature', async () => {
    const { privateKey } = await generateKeyPair('RS256');
    const forged = await new SignJWT(claims()).setProtectedHeader({ alg: 'RS256', kid: rsaKey().kid, typ: 'at+jwt' }).sign(privateKey);
    expect(await refusal(forged)).toBe('bad_signature');
  });

  it('a token signed by another key with an unknown kid: bad_signature', async () => {
    const { privateKey } = await generateKeyPair('ES256');
    const forged = await new SignJWT(claims()).setProtectedHeader({ alg: 'ES256', kid: 'attacker-key' }).sign(privateKey);
    expect(await refusal(forged)).toBe('bad_signature');
    const noKid = await new SignJWT(claims()).setProtectedHeader({ alg: 'ES256' }).sign(privateKey);
    expect(await refusal(noKid)).toBe('bad_signature');
  });

  it('a real token with a tampered payload: bad_signature', async () => {
    const [h, , s] = (await idp.getToken({ roles: ['viewer'] })).split('.');
    const payload = base64url.encode(JSON.stringify(claims({ roles: ['admin'] })));
    expect(await refusal(`${h}.${payload}.${s}`)).toBe('bad_signature');
  });

  it('an expired token: expired', async () => {
    const token = await idp.getToken({ claims: { iat: nowSec() - 7200, exp: nowSec() - 3600 } });
    expect(await refusal(token)).toBe('expired');
  });

  it('a token for another audience: bad_audience', async () => {
    const token = await idp.getToken({ resource: 'https://other-service.example/api' });
    expect(await refusal(token)).toBe('bad_audience');
  });

  it('a token from another issuer: bad_issuer', async () => {
    const token = await idp.getToken({ claims: { iss: 'https://evil.example' } });
    expect(await refusal(token)).toBe('bad_issuer');
  });

  it('alg none: bad_algorithm', async () => {
    const unsecured = new UnsecuredJWT(claims()).encode();
    expect(unsecured.endsWith('.')).toBe(true);
    expect(await refusal(unsecured)).toBe('bad_algorithm');
    // Variants: "None", and a bogus signature appended.
    const header = base64url.encode(JSON.stringify({ alg: 'None', kid: rsaKey().kid }));
    const payload = base64url.encode(JSON.stringify(claims()));
    expect(await refusal(`${header}.${payload}.`)).toBe('bad_algorithm');
    expect(await refusal(`${unsecured}c2ln`)).toBe('bad_algorithm');
  });

  it('HS256 signed with the RSA public key (key confusion): bad_algorithm', async () => {
    const { kid, publicJwk } = rsaKey();
    const pem = await exportSPKI((await importJWK(publicJwk, 'RS256', { extractable: true })) as CryptoKey);
    const der = createPublicKey({ key: publicJwk as never, format: 'jwk' }).export({ type: 'spki', format: 'der' });
    const secrets: Uint8Array[] = [
      new TextEncoder().encode(pem),
      new TextEncoder().encode(`${pem.trim()}`),
      new TextEncoder().encode(JSON.stringify(publicJwk)),
      new Uint8Array(der),
      base64url.decode(publicJwk.n!),
    ];
    for (const secret of secrets) {
      const forged = await new SignJWT(claims()).setProtectedHeader({ alg: 'HS256', kid, typ: 'at+jwt' }).sign(secret);
      expect(await refusal(forged)).toBe('bad_algorithm');
    }
    // The same, by hand: HMAC-SHA256 over header.payload keyed with the PEM bytes.
    const h = base64url.encode(JSON.stringify({ alg: 'HS256', typ: 'JWT', kid }));
    const p = base64url.encode(JSON.stringify(claims()));
    const mac = createHmac('sha256', pem).update(`${h}.${p}`).digest('base64url');
    expect(await refusal(`${h}.${p}.${mac}`)).toBe('bad_algorithm');
    for (const alg of ['HS384', 'HS512']) {
      const hh = base64url.encode(JSON.stringify({ alg, kid }));
      const m = createHmac(`sha${alg.slice(2)}`, pem).update(`${hh}.${p}`).digest('base64url');
      expect(await refusal(`${hh}.${p}.${m}`)).toBe('bad_algorithm');
    }
  });

  it('a real token without exp: missing_claim', async () => {
    const token = await idp.getToken({ omitClaims: ['exp'] });
    expect(await refusal(token)).toBe('missing_claim');
  });

  it('a real token without iss or sub: missing_claim', async () => {
    expect(await refusal(await idp.getToken({ omitClaims: ['iss'] }))).toBe('missing_claim');
    expect(await refusal(await idp.getToken({ omitClaims: ['sub'] }))).toBe('missing_claim');
  });

  it('a token not valid yet: not_yet_valid', async () => {
    const token = await idp.getToken({ claims: { nbf: nowSec() + 3600 } });
    expect(await refusal(token)).toBe('not_yet_valid');
  });

  it('garbage, truncated and oversized tokens: malformed', async () => {
    expect(await refusal('abc.def.ghi')).toBe('malformed');
    expect(await refusal('a.b')).toBe('malformed');
    expect(await refusal('')).toBe('malformed');
    const real = await idp.getToken();
    expect(await refusal(real.slice(0, real.lastIndexOf('.')))).toBe('malformed');
    const [h, , s] = real.split('.');
    // The signature is checked before the payload is parsed: a swapped payload never verifies.
    expect(await refusal(`${h}.${base64url.encode('not json')}.${s}`)).toBe('bad_signature');
    expect(await refusal(`${h}.${'A'.repeat(10_000)}.${s}`)).toBe('malformed');
    expect(await refusal(`${base64url.encode('{"alg":')}.${real.split('.')[1]}.${s}`)).toBe('malformed');
  });
});

describe('JWKS caching', () => {
  it('100 verifications cost one discovery and one JWKS fetch', async () => {
    const v = createOidcVerifier({ issuer: idp.issuer, clientId: idp.clientId });
    const token = await idp.getToken({ roles: ['operator'] });
    const jwks0 = idp.jwksFetchCount();
    const disc0 = idp.discoveryFetchCount();
    for (let i = 0; i < 100; i++) expect((await v.verify(token)).role).toBe('operator');
    expect(idp.jwksFetchCount() - jwks0).toBe(1);
    expect(idp.discoveryFetchCount() - disc0).toBe(1);
  });

  it('concurrent first verifications share one discovery and one JWKS fetch', async () => {
    const v = createOidcVerifier({ issuer: idp.issuer, clientId: idp.clientId });
    const token = await idp.getToken();
    const jwks0 = idp.jwksFetchCount();
    const disc0 = idp.discoveryFetchCount();
    const ids = await Promise.all(Array.from({ length: 50 }, () => v.verify(token)));
    expect(ids.every((id) => id.subject === 'user-0001')).toBe(true);
    expect(idp.jwksFetchCount() - jwks0).toBe(1);
    expect(idp.discoveryFetchCount() - disc0).toBe(1);
  });

  it('an unknown kid triggers at most one refetch within the cooldown', async () => {
    const cooldownMs = 1_000;
    const { privateKey } = await generateKeyPair('RS256');
    const forge = (i: number) => new SignJWT(claims()).setProtectedHeader({ alg: 'RS256', kid: `unknown-${i}` }).sign(privateKey);
    const early = await Promise.all(Array.from({ length: 20 }, (_, i) => forge(i)));
    const late = await Promise.all(Array.from({ length: 20 }, (_, i) => forge(100 + i)));

    const v = createOidcVerifier({ issuer: idp.issuer, clientId: idp.clientId, cooldownMs });
    const jwks0 = idp.jwksFetchCount();
    await v.ready();
    const fetchedAt = Date.now();
    expect(idp.jwksFetchCount() - jwks0).toBe(1);

    // Right after a fetch the cooldown is in effect: unknown kids cause no refetch at all.
    for (const t of early) expect(await refusal(t, v)).toBe('bad_signature');
    expect(Date.now() - fetchedAt).toBeLessThan(cooldownMs); // (the phase really ran inside the cooldown)
    expect(idp.jwksFetchCount() - jwks0).toBe(1);

    // Once the cooldown has passed: a burst of unknown kids (sequential, then concurrent) → exactly one refetch.
    await new Promise((r) => setTimeout(r, cooldownMs + 100));
    for (const t of late.slice(0, 10)) expect(await refusal(t, v)).toBe('bad_signature');
    const codes = await Promise.all(late.slice(10).map((t) => refusal(t, v)));
    expect(new Set(codes)).toEqual(new Set(['bad_signature']));
    expect(idp.jwksFetchCount() - jwks0).toBe(2);
  });

  it('picks up a rotated signing key with one refetch', async () => {
    const v = createOidcVerifier({ issuer: idp.issuer, clientId: idp.clientId, cooldownMs: 0, roleMap: { admin: 'admin' } });
    await v.verify(await idp.getToken());
    const jwks0 = idp.jwksFetchCount();
    const fresh = await idp.rotateKeys();
    const token = await idp.getToken({ roles: ['admin'] });
    expect(JSON.parse(new TextDecoder().decode(base64url.decode(token.split('.')[0]!))).kid).toBe(fresh.kid);
    expect((await v.verify(token)).role).toBe('admin');
    expect((await v.verify(token)).role).toBe('admin');
    expect(idp.jwksFetchCount() - jwks0).toBe(1);
  });

  it('keeps serving the last good keys while the provider is unreachable, and backs off', async () => {
    let down = false;
    let jwksAttempts = 0;
    const flaky: typeof fetch = async (input, init) => {
      const url = String(input instanceof Request ? input.url : input);
      if (url.endsWith('/jwks')) jwksAttempts++;
      if (down) throw new TypeError('fetch failed');
      return fetch(input, init);
    };
    const v = createOidcVerifier({ issuer: idp.issuer, clientId: idp.clientId, fetch: flaky, cacheMaxAgeMs: 100, minBackoffMs: 5_000 });
    const token = await idp.getToken({ roles: ['operator'] });
    expect((await v.verify(token)).role).toBe('operator');
    expect(jwksAttempts).toBe(1);
    down = true;
    await new Promise((r) => setTimeout(r, 150));
    for (let i = 0; i < 10; i++) expect((await v.verify(token)).role).toBe('operator');
    // One failed refetch, then the backoff keeps it from trying on every request.
    expect(jwksAttempts).toBe(2);
  });
});

describe('discovery', () => {
  it('refuses a discovery document naming a different issuer: unavailable', async () => {
    const lying: typeof fetch = async (input, init) => {
      const res = await fetch(input, init);
      if (!String(input).endsWith('/openid-configuration')) return res;
      const doc = (await res.json()) as Record<string, unknown>;
      return Response.json({ ...doc, issuer: 'https://evil.example' });
    };
    const v = createOidcVerifier({ issuer: idp.issuer, clientId: idp.clientId, fetch: lying });
    expect(await refusal(await idp.getToken(), v)).toBe('unavailable');
    await expect(v.ready()).rejects.toMatchObject({ code: 'unavailable' });
  });

  it('tolerates a trailing-slash difference in the configured issuer', async () => {
    const v = createOidcVerifier({ issuer: `${idp.issuer}/`, clientId: idp.clientId });
    expect((await v.verify(await idp.getToken({ roles: ['auditor'] }))).role).toBe('auditor');
    // …but the token's iss must still be the provider's exact issuer.
    expect(await refusal(await idp.getToken({ claims: { iss: `${idp.issuer}/` } }), v)).toBe('bad_issuer');
  });

  it('retries a failed discovery with backoff, never on every request', async () => {
    // A port that was just closed: connections are refused.
    const srv = createServer();
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    const { port } = srv.address() as AddressInfo;
    await new Promise<void>((r) => srv.close(() => r()));

    let t = Date.now();
    let calls = 0;
    const v = createOidcVerifier({
      issuer: `http://127.0.0.1:${port}`,
      clientId: 'loki',
      now: () => t,
      fetch: async (input, init) => {
        calls++;
        return fetch(input, init);
      },
    });
    const token = await new SignJWT(claims()).setProtectedHeader({ alg: 'ES256' }).sign((await generateKeyPair('ES256')).privateKey);
    for (let i = 0; i < 20; i++) expect(await refusal(token, v)).toBe('unavailable');
    expect(calls).toBe(1);
    t += 1_100; // first backoff is 1 s
    expect(await refusal(token, v)).toBe('unavailable');
    expect(calls).toBe(2);
    t += 1_100; // second backoff is 2 s: still waiting
    expect(await refusal(token, v)).toBe('unavailable');
    expect(calls).toBe(2);
    t += 1_000;
    expect(await refusal(token, v)).toBe('unavailable');
    expect(calls).toBe(3);
  });
});

describe('runtime neutrality', () => {
  it('src/auth/oidc.ts imports only jose, zod and local modules (no node:*)', () => {
    const src = readFileSync(fileURLToPath(new URL('../../src/auth/oidc.ts', import.meta.url)), 'utf8');
    const specifiers = [...src.matchAll(/from\s+'([^']+)'/g)].map((m) => m[1]);
    expect(specifiers.length).toBeGreaterThan(0);
    for (const s of specifiers) expect(['jose', 'zod', './roles']).toContain(s);
    expect(src).not.toMatch(/process\.env|require\(/);
  });
});

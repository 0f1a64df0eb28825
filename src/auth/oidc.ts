/**
 * OIDC bearer-token verification with jose, runtime-free (web APIs only: fetch,
 * WebCrypto), so it runs on Node and on Cloudflare Workers alike.
 *
 * - Discovery (`<issuer>/.well-known/openid-configuration`) happens once, lazily,
 *   shared by concurrent callers; a failure is retried with exponential backoff,
 *   never on every request. The document's `issuer` must equal the configured one
 *   (up to a trailing slash); tokens' `iss` must equal the document's.
 * - Keys come from `jwks_uri` through jose's `createRemoteJWKSet`: cached for
 *   `cacheMaxAgeMs`, an unknown `kid` triggers a refetch at most once per
 *   `cooldownMs`. If the provider is unreachable, the last good key set keeps
 *   working (stale-if-error) and refetches back off.
 * - Only asymmetric algorithms; `exp`, `iss`, `aud` and `sub` are required.
 * - Role: the highest role named by any of the configured claims (dotted paths,
 *   string or array values, case-insensitive); none → the default role, which
 *   may never be admin. Claim values name `viewer`, `operator` and `auditor` (also
 *   as `loki-<role>`) by themselves; `admin` only through the operator's explicit
 *   role map (`LOKI_OIDC_ROLE_MAP`): an identity provider's group called `admin`
 *   or `/Admin` grants nothing beyond the default role. `worker` is never derived
 *   from OIDC claims.
 * - An optional maximum lifetime (`maxTokenLifetimeSec`): a token whose `exp - iat`
 *   (or whose remaining validity) is above it is refused; `iat` is then required.
 *
 * Errors are `OidcError`s carrying a short reason code; messages never contain
 * the token.
 */
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  customFetch,
  decodeProtectedHeader,
  errors,
  type JWSHeaderParameters,
  type JWTPayload,
  type JWTVerifyGetKey,
  jwtVerify,
} from 'jose';
import { z } from 'zod';
import { ROLE_RANK, type Role } from './roles';

export type OidcRole = Exclude<Role, 'worker'>;

export type OidcErrorCode =
  | 'expired'
  | 'not_yet_valid'
  | 'bad_signature'
  | 'bad_audience'
  | 'bad_issuer'
  | 'missing_claim'
  | 'bad_algorithm'
  | 'malformed'
  | 'too_long_lived'
  | 'unavailable';

const MESSAGES: Record<OidcErrorCode, string> = {
  expired: 'the token has expired',
  not_yet_valid: 'the token is not valid yet',
  bad_signature: 'the token signature does not verify against the issuer keys',
  bad_audience: 'the token audience is not this service',
  bad_issuer: 'the token issuer is not the configured issuer',
  missing_claim: 'the token lacks a required claim',
  bad_algorithm: 'the token algorithm is not allowed',
  malformed: 'the token is malformed',
  too_long_lived: 'the token lifetime is above the configured maximum',
  unavailable: 'the identity provider cannot be reached',
};

/** A refused or unverifiable token. `code` is the reason; the message never contains the token. */
export class OidcError extends Error {
  override readonly name = 'OidcError';
  constructor(
    readonly code: OidcErrorCode,
    /** Extra detail for server logs (never the token, never claim values). */
    readonly detail?: string,
  ) {
    super(`OIDC ${code}: ${MESSAGES[code]}${detail ? ` (${detail})` : ''}`);
  }
  get reason(): OidcErrorCode {
    return this.code;
  }
}

export interface OidcIdentity {
  subject: string;
  /** The `email` claim; null when absent or when `email_verified` is false. */
  email: string | null;
  role: OidcRole;
  /** When the token expires (ms since the epoch), for long-lived streams. */
  expiresAt: number;
  claims: JWTPayload;
}

export interface OidcVerifierOptions {
  issuer: string;
  clientId: string;
  /** Expected `aud`; defaults to the client id. */
  audience?: string;
  /** Dotted claim paths to read roles from. */
  rolesClaims?: readonly string[];
  /** Role when no claim names one; never admin (or worker). Default viewer. */
  defaultRole?: Role;
  /**
   * Claim value → role mappings (case-insensitive keys, a leading `/` ignored), e.g.
   * `{ 'platform-admins': 'admin' }`: the only way a claim grants admin.
   */
  roleMap?: Readonly<Record<string, Role>>;
  /** Longest accepted token lifetime (`exp - iat`, seconds); absent = no limit. */
  maxTokenLifetimeSec?: number | null;
  /** Accepted JWS algorithms; asymmetric only. */
  algorithms?: readonly string[];
  fetch?: typeof fetch;
  /** Minimum time between JWKS refetches triggered by an unknown `kid`. Default 30 s. */
  cooldownMs?: number;
  /** How long fetched keys are trusted before a refetch. Default 10 min. */
  cacheMaxAgeMs?: number;
  /** How long the last good keys keep working while the provider is unreachable. Default 1 h. */
  staleIfErrorMs?: number;
  /** Clock skew allowed on exp/nbf. Default 30 s. */
  clockToleranceSec?: number;
  /** HTTP timeout for discovery and JWKS requests. Default 5 s. */
  timeoutMs?: number;
  /** First retry delay after a failed discovery/JWKS fetch (doubles up to `maxBackoffMs`). Default 1 s. */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** Longest token accepted (characters). Default 8192. */
  maxTokenLength?: number;
  /** Allow http:// issuer / jwks_uri on non-loopback hosts (never do this in production). */
  allowInsecureHttp?: boolean;
  now?: () => number;
}

export interface OidcVerifier {
  verify(token: string): Promise<OidcIdentity>;
  /** Run discovery and fetch the keys now (start-up warm-up); throws OidcError('unavailable'). */
  ready(): Promise<void>;
}

export const DEFAULT_ROLES_CLAIMS = ['roles', 'groups', 'realm_access.roles', 'cognito:groups'] as const;
export const DEFAULT_ALGORITHMS = ['RS256', 'ES256', 'EdDSA', 'PS256', 'RS384', 'RS512', 'ES384', 'Ed25519'] as const;
const ASYMMETRIC = new Set(['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519']);
type RemoteJwks = ReturnType<typeof createRemoteJWKSet>;
/** Roles a claim value may name by itself; admin needs the operator's role map. */
const CLAIMABLE_ROLES: readonly OidcRole[] = ['operator', 'auditor', 'viewer'];

const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

/** Three base64url segments (the last may be empty): route the bearer token to OIDC. */
export function looksLikeJwt(token: string): boolean {
  return JWT_SHAPE.test(token);
}

const optionsSchema = z.object({
  issuer: z.url({ protocol: /^https?$/ }),
  clientId: z.string().min(1),
  audience: z.string().min(1).optional(),
  rolesClaims: z.array(z.string().min(1)).min(1).optional(),
  defaultRole: z.enum(['operator', 'auditor', 'viewer'], { error: 'the default OIDC role must be operator, auditor or viewer (never admin or worker)' }).optional(),
  roleMap: z.record(z.string().min(1), z.enum(['admin', 'operator', 'auditor', 'viewer'])).optional(),
  algorithms: z
    .array(z.string().refine((a) => ASYMMETRIC.has(a), { error: 'only asymmetric JWS algorithms are allowed' }))
    .min(1)
    .optional(),
  cooldownMs: z.number().int().nonnegative().optional(),
  cacheMaxAgeMs: z.number().int().positive().optional(),
  staleIfErrorMs: z.number().int().nonnegative().optional(),
  clockToleranceSec: z.number().int().min(0).max(300).optional(),
  timeoutMs: z.number().int().positive().optional(),
  minBackoffMs: z.number().int().positive().optional(),
  maxBackoffMs: z.number().int().positive().optional(),
  maxTokenLength: z.number().int().positive().optional(),
  maxTokenLifetimeSec: z.number().int().positive().nullable().optional(),
  allowInsecureHttp: z.boolean().optional(),
});

const discoverySchema = z.object({
  issuer: z.string(),
  jwks_uri: z.string(),
});

function isLoopbackHost(hostname: string): boolean {
  return hostname === 'localhost' || hostname === '[::1]' || /^127(\.\d{1,3}){3}$/.test(hostname);
}

function checkTransport(url: URL, allowHttp: boolean, what: string): void {
  if (url.protocol === 'https:') return;
  if (url.protocol === 'http:' && (allowHttp || isLoopbackHost(url.hostname))) return;
  throw new TypeError(`${what} must be an https URL (http is allowed on loopback only)`);
}

/** Value at a claim path: the literal key first (namespaced claims contain dots), then dotted traversal. */
function claimAt(payload: JWTPayload, path: string): unknown {
  if (Object.hasOwn(payload, path)) return payload[path];
  let cur: unknown = payload;
  for (const part of path.split('.')) {
    if (cur === null || typeof cur !== 'object' || Array.isArray(cur) || !Object.hasOwn(cur, part)) return undefined;
    cur = (cur as Record<string, unknown>)[part];
  }
  return cur;
}

function normalizeRoleValue(v: string): string {
  return v.trim().toLowerCase().replace(/^\//, '');
}

export function createOidcVerifier(options: OidcVerifierOptions): OidcVerifier {
  const parsed = optionsSchema.safeParse(options);
  if (!parsed.success) {
    throw new TypeError(`invalid OIDC verifier options: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  }
  if (options.defaultRole === 'admin') throw new TypeError('the default OIDC role may never be admin');

  const issuer = options.issuer;
  const allowHttp = options.allowInsecureHttp ?? false;
  checkTransport(new URL(issuer), allowHttp, 'the OIDC issuer');
  const audience = options.audience ?? options.clientId;
  const rolesClaims = [...(options.rolesClaims ?? DEFAULT_ROLES_CLAIMS)];
  const defaultRole: OidcRole = (options.defaultRole as OidcRole | undefined) ?? 'viewer';
  const algorithms = [...(options.algorithms ?? DEFAULT_ALGORITHMS)];
  const allowedAlgs = new Set(algorithms);
  const cooldownMs = options.cooldownMs ?? 30_000;
  const cacheMaxAgeMs = options.cacheMaxAgeMs ?? 600_000;
  const staleIfErrorMs = options.staleIfErrorMs ?? 3_600_000;
  const clockTolerance = options.clockToleranceSec ?? 30;
  const timeoutMs = options.timeoutMs ?? 5_000;
  const minBackoffMs = options.minBackoffMs ?? 1_000;
  const maxBackoffMs = Math.max(options.maxBackoffMs ?? 60_000, minBackoffMs);
  const maxTokenLength = options.maxTokenLength ?? 8192;
  const maxLifetime = options.maxTokenLifetimeSec ?? null;
  const now = options.now ?? Date.now;
  // Always call through a wrapper: Workers' fetch throws "Illegal invocation" when detached.
  const userFetch = options.fetch;
  const doFetch: typeof fetch = (input, init) => (userFetch ? userFetch(input, init) : fetch(input, init));

  // Role lookup table: the non-admin role names, `loki-<role>` / `loki_<role>` / `loki:<role>`,
  // and the operator's role map (the only source of admin).
  const roleTable = new Map<string, OidcRole>();
  for (const r of CLAIMABLE_ROLES) {
    roleTable.set(r, r);
    for (const sep of ['-', '_', ':']) roleTable.set(`loki${sep}${r}`, r);
  }
  for (const [k, v] of Object.entries(options.roleMap ?? {})) roleTable.set(normalizeRoleValue(k), v as OidcRole);

  // ---- discovery + JWKS, with backoff ---------------------------------------------------------

  let remote: RemoteJwks | null = null;
  let tokenIssuer = issuer;
  let discovering: Promise<RemoteJwks> | null = null;
  let discoveryFailures = 0;
  let discoveryRetryAt = 0;
  let lastDiscoveryError = '';

  const backoff = (failures: number) => Math.min(maxBackoffMs, minBackoffMs * 2 ** Math.min(failures - 1, 20));

  async function discover(): Promise<RemoteJwks> {
    const url = `${issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`;
    let res: Response;
    try {
      res = await doFetch(url, { headers: { accept: 'application/json' }, redirect: 'manual', signal: AbortSignal.timeout(timeoutMs) });
    } catch (err) {
      throw new OidcError('unavailable', `discovery request failed: ${(err as Error).name}`);
    }
    if (res.status !== 200) {
      await res.body?.cancel().catch(() => {});
      throw new OidcError('unavailable', `discovery answered HTTP ${res.status}`);
    }
    let doc: z.infer<typeof discoverySchema>;
    try {
      doc = discoverySchema.parse(await res.json());
    } catch {
      throw new OidcError('unavailable', 'discovery document is not valid JSON with issuer and jwks_uri');
    }
    // Spec: identical. Tolerated: a trailing-slash difference (Auth0-style issuers); tokens must then carry the discovered form.
    if (doc.issuer !== issuer && doc.issuer.replace(/\/+$/, '') !== issuer.replace(/\/+$/, '')) {
      throw new OidcError('unavailable', 'discovery document names a different issuer');
    }
    tokenIssuer = doc.issuer;
    let jwksUrl: URL;
    try {
      jwksUrl = new URL(doc.jwks_uri);
      checkTransport(jwksUrl, allowHttp, 'jwks_uri');
    } catch {
      throw new OidcError('unavailable', 'discovery document has an unusable jwks_uri');
    }
    return createRemoteJWKSet(jwksUrl, {
      cooldownDuration: cooldownMs,
      cacheMaxAge: cacheMaxAgeMs,
      timeoutDuration: timeoutMs,
      [customFetch]: async (url, init) => {
        const res = await doFetch(url, init);
        if (res.status === 200) fetchedSinceSnapshot = true;
        return res;
      },
    });
  }

  function getRemote(): Promise<RemoteJwks> {
    if (remote) return Promise.resolve(remote);
    if (discovering) return discovering;
    if (now() < discoveryRetryAt) {
      return Promise.reject(new OidcError('unavailable', `discovery failed recently, retrying later (${lastDiscoveryError})`));
    }
    discovering = discover().then(
      (r) => {
        remote = r;
        discovering = null;
        discoveryFailures = 0;
        return r;
      },
      (err: unknown) => {
        discovering = null;
        discoveryFailures += 1;
        discoveryRetryAt = now() + backoff(discoveryFailures);
        lastDiscoveryError = err instanceof OidcError && err.detail ? err.detail : 'discovery failed';
        throw err instanceof OidcError ? err : new OidcError('unavailable', 'discovery failed');
      },
    );
    return discovering;
  }

  // JWKS fetch failures back off; meanwhile the last good key set keeps serving
  // for up to `staleIfErrorMs` after it was fetched (stale-if-error).
  let jwksFailures = 0;
  let jwksRetryAt = 0;
  let fetchedSinceSnapshot = false;
  let stale: { jwks: ReturnType<typeof createLocalJWKSet>; at: number } | null = null;

  const isKeySelectionError = (err: unknown) =>
    err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWKSMultipleMatchingKeys || err instanceof errors.JOSENotSupported;

  function staleKey(header: JWSHeaderParameters, token: Parameters<JWTVerifyGetKey>[1]) {
    if (!stale || now() - stale.at > staleIfErrorMs) throw new OidcError('unavailable', 'the JWKS cannot be fetched');
    return stale.jwks(header, token);
  }

  function snapshot(r: RemoteJwks): void {
    jwksFailures = 0;
    jwksRetryAt = 0;
    if (!fetchedSinceSnapshot) return;
    fetchedSinceSnapshot = false;
    const keys = r.jwks();
    if (keys) stale = { jwks: createLocalJWKSet(keys), at: now() };
  }

  function jwksFailed(): void {
    jwksFailures += 1;
    jwksRetryAt = now() + backoff(jwksFailures);
  }

  const getKey: JWTVerifyGetKey = async (header, token) => {
    const r = await getRemote();
    if (now() < jwksRetryAt && !r.fresh) return staleKey(header, token);
    try {
      const key = await r(header, token);
      snapshot(r);
      return key;
    } catch (err) {
      if (isKeySelectionError(err)) {
        snapshot(r);
        throw err;
      }
      jwksFailed();
      return staleKey(header, token);
    }
  };

  // ---- roles ----------------------------------------------------------------------------------

  function roleOf(payload: JWTPayload): OidcRole {
    let best: OidcRole | null = null;
    for (const path of rolesClaims) {
      const v = claimAt(payload, path);
      const values = typeof v === 'string' ? [v] : Array.isArray(v) ? v : [];
      for (const item of values) {
        if (typeof item !== 'string') continue;
        const role = roleTable.get(normalizeRoleValue(item));
        if (role && (best === null || ROLE_RANK[role] > ROLE_RANK[best])) best = role;
      }
    }
    return best ?? defaultRole;
  }

  // ---- verify ---------------------------------------------------------------------------------

  function mapError(err: unknown): OidcError {
    if (err instanceof OidcError) return err;
    if (err instanceof errors.JWTExpired) return new OidcError('expired');
    if (err instanceof errors.JWTClaimValidationFailed) {
      if (err.reason === 'missing') return new OidcError('missing_claim', `"${err.claim}" is required`);
      if (err.claim === 'aud') return new OidcError('bad_audience');
      if (err.claim === 'iss') return new OidcError('bad_issuer');
      if (err.claim === 'nbf') return new OidcError('not_yet_valid');
      return new OidcError('malformed', `"${err.claim}" claim is invalid`);
    }
    if (err instanceof errors.JOSEAlgNotAllowed) return new OidcError('bad_algorithm');
    if (err instanceof errors.JWSSignatureVerificationFailed) return new OidcError('bad_signature');
    if (err instanceof errors.JWKSNoMatchingKey) return new OidcError('bad_signature', 'no matching key in the issuer JWKS');
    if (err instanceof errors.JWKSMultipleMatchingKeys) return new OidcError('bad_signature', 'ambiguous key selection');
    if (err instanceof errors.JWSInvalid || err instanceof errors.JWTInvalid || err instanceof errors.JOSENotSupported) {
      return new OidcError('malformed');
    }
    if (err instanceof errors.JWKSTimeout || err instanceof errors.JWKSInvalid) return new OidcError('unavailable');
    return new OidcError('malformed');
  }

  async function verify(token: string): Promise<OidcIdentity> {
    if (typeof token !== 'string' || token.length > maxTokenLength || !looksLikeJwt(token)) throw new OidcError('malformed');
    let header: JWSHeaderParameters;
    try {
      header = decodeProtectedHeader(token) as JWSHeaderParameters;
    } catch {
      throw new OidcError('malformed');
    }
    // Refuse none / HS* / unknown algorithms before any key lookup (no JWKS refetch for forgeries).
    if (typeof header.alg !== 'string' || !allowedAlgs.has(header.alg)) throw new OidcError('bad_algorithm');
    if (header.kid !== undefined && typeof header.kid !== 'string') throw new OidcError('malformed');

    await getRemote(); // discovery first: it settles the issuer tokens must carry
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, getKey, {
        issuer: tokenIssuer,
        audience,
        algorithms,
        requiredClaims: ['exp', 'iss', 'aud', 'sub'],
        clockTolerance,
        currentDate: new Date(now()),
      }));
    } catch (err) {
      throw mapError(err);
    }
    if (typeof payload.sub !== 'string' || payload.sub.length === 0) throw new OidcError('missing_claim', '"sub" is required');
    if (typeof payload.exp !== 'number') throw new OidcError('missing_claim', '"exp" is required');
    if (maxLifetime !== null) {
      if (typeof payload.iat !== 'number') throw new OidcError('missing_claim', '"iat" is required when a maximum token lifetime is set');
      const remaining = payload.exp - Math.floor(now() / 1000);
      if (payload.exp - payload.iat > maxLifetime || remaining > maxLifetime + clockTolerance) {
        throw new OidcError('too_long_lived', `exp - iat = ${payload.exp - payload.iat} s, maximum ${maxLifetime} s`);
      }
    }
    const email = typeof payload.email === 'string' && payload.email_verified !== false ? payload.email : null;
    return { subject: payload.sub, email, role: roleOf(payload), expiresAt: payload.exp * 1000, claims: payload };
  }

  async function ready(): Promise<void> {
    const r = await getRemote();
    if (r.fresh) return;
    try {
      await r.reload();
    } catch (err) {
      jwksFailed();
      throw new OidcError('unavailable', `the JWKS cannot be fetched (${(err as Error).name})`);
    }
    snapshot(r);
  }

  return { verify, ready };
}

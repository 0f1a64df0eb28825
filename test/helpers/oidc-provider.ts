/**
 * A real OpenID provider (the `oidc-provider` package) in-process on 127.0.0.1,
 * issuing JWT access tokens through the client-credentials grant with a resource
 * indicator. Used by the OIDC tests and the auth benchmark.
 *
 * - One confidential client (`client_secret_basic`); its default resource's
 *   tokens carry `aud` = the client id. Any other absolute-URI resource gets
 *   `aud` = that resource (for wrong-audience tests).
 * - `roles`, `email` and a stable `sub` go into the access token through the
 *   provider's own `extraTokenClaims` / JWT customizer hooks; per-token
 *   overrides travel in a request header to those hooks.
 * - Keys: RS256, ES256 and EdDSA signing keys generated per start; `rotateKeys()`
 *   swaps in a fresh RS256 key (the old one stays published).
 * - `jwksFetchCount()` counts GETs of the JWKS endpoint at the HTTP layer.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, type JWK } from 'jose';
// @ts-expect-error oidc-provider ships no type declarations (typed locally below).
import ProviderModule from 'oidc-provider';

export type SigningAlg = 'RS256' | 'ES256' | 'EdDSA';

export interface StartOidcProviderOptions {
  clientId?: string;
  clientSecret?: string;
  /** Roles put into every token's `roles` claim unless getToken overrides; [] = no claim. */
  roles?: string[];
  /** Default `sub` of every token. */
  subject?: string;
  /** Default `email` (null: no email claim). */
  email?: string | null;
  /** Further claims in every token (e.g. `{ groups: [...] }`). */
  claims?: Record<string, unknown>;
  /** Access token lifetime, seconds. Default 300. */
  accessTokenTTL?: number;
}

export interface GetTokenOptions {
  /** `roles` claim; [] = no claim. */
  roles?: string[];
  /** Resource indicator; default: the resource whose audience is the client id. */
  resource?: string;
  subject?: string;
  email?: string | null;
  alg?: SigningAlg;
  /** Merged into the signed payload last: may override `iss`, `exp`, `aud`, … */
  claims?: Record<string, unknown>;
  /** Removed from the signed payload (e.g. `['exp']`). */
  omitClaims?: string[];
}

export interface SigningKeyInfo {
  kid: string;
  alg: SigningAlg;
  publicJwk: JWK;
}

export interface TestOidcProvider {
  issuer: string;
  clientId: string;
  clientSecret: string;
  /** The default resource indicator (audience = client id). */
  resource: string;
  getToken(opts?: GetTokenOptions): Promise<string>;
  jwksFetchCount(): number;
  discoveryFetchCount(): number;
  /** Public halves of the current signing keys (first RS256 one signs RS256 tokens). */
  signingKeys(): SigningKeyInfo[];
  /** Publish a new RS256 key and sign with it from now on (the old key stays in the JWKS). */
  rotateKeys(): Promise<SigningKeyInfo>;
  close(): Promise<void>;
}

// ---- the minimal slice of oidc-provider's API used here -------------------------------------

interface KoaLikeContext {
  get(header: string): string;
}
interface StructuredJwt {
  header?: Record<string, unknown>;
  payload: Record<string, unknown>;
}
interface ProviderInstance {
  callback(): (req: IncomingMessage, res: ServerResponse) => void;
  on(event: string, listener: (...args: unknown[]) => void): void;
}
type ProviderCtor = new (issuer: string, config: Record<string, unknown>) => ProviderInstance;
const Provider = ProviderModule as ProviderCtor;

/** Storage for the provider (avoids the library's dev-only adapter and its warning). */
function memoryAdapterFactory() {
  const store = new Map<string, { payload: Record<string, unknown>; expiresAt: number }>();
  const live = (key: string) => {
    const hit = store.get(key);
    if (!hit) return undefined;
    if (hit.expiresAt <= Date.now()) {
      store.delete(key);
      return undefined;
    }
    return hit.payload;
  };
  return class MemoryAdapter {
    constructor(readonly model: string) {}
    private key(id: string) {
      return `${this.model}:${id}`;
    }
    async upsert(id: string, payload: Record<string, unknown>, expiresIn?: number) {
      store.set(this.key(id), { payload, expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : Number.POSITIVE_INFINITY });
    }
    async find(id: string) {
      return live(this.key(id));
    }
    async findByUid(uid: string) {
      for (const [k, v] of store) if (k.startsWith(`${this.model}:`) && v.payload.uid === uid) return live(k);
      return undefined;
    }
    async findByUserCode(code: string) {
      for (const [k, v] of store) if (k.startsWith(`${this.model}:`) && v.payload.userCode === code) return live(k);
      return undefined;
    }
    async consume(id: string) {
      const hit = store.get(this.key(id));
      if (hit) hit.payload.consumed = Math.floor(Date.now() / 1000);
    }
    async destroy(id: string) {
      store.delete(this.key(id));
    }
    async revokeByGrantId(grantId: string) {
      for (const [k, v] of store) if (v.payload.grantId === grantId) store.delete(k);
    }
  };
}

async function newKey(alg: SigningAlg): Promise<{ info: SigningKeyInfo; privateJwk: JWK }> {
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true, ...(alg === 'EdDSA' ? { crv: 'Ed25519' } : {}) });
  const kid = `${alg.toLowerCase()}-${randomBytes(6).toString('hex')}`;
  const privateJwk: JWK = { ...(await exportJWK(privateKey)), kid, alg, use: 'sig' };
  const publicJwk: JWK = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
  return { info: { kid, alg, publicJwk }, privateJwk };
}

const OVERRIDE_HEADER = 'x-test-token-overrides';

export async function startOidcProvider(options: StartOidcProviderOptions = {}): Promise<TestOidcProvider> {
  const clientId = options.clientId ?? 'loki-dashboard';
  const clientSecret = options.clientSecret ?? randomBytes(24).toString('base64url');
  const ttl = options.accessTokenTTL ?? 300;
  const defaults = {
    roles: options.roles ?? [],
    subject: options.subject ?? 'user-0001',
    email: options.email === undefined ? 'user-0001@example.test' : options.email,
    claims: options.claims ?? {},
  };
  const overrides = new Map<string, GetTokenOptions>();
  const overridesFor = (ctx: KoaLikeContext | undefined): GetTokenOptions => {
    const id = ctx?.get(OVERRIDE_HEADER);
    return (id && overrides.get(id)) || {};
  };

  let keys = await Promise.all((['RS256', 'ES256', 'EdDSA'] as const).map(newKey));
  let jwksFetches = 0;
  let discoveryFetches = 0;
  let handler: ((req: IncomingMessage, res: ServerResponse) => void) | null = null;

  const server = createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (req.method === 'GET' && path === '/jwks') jwksFetches += 1;
    if (req.method === 'GET' && path === '/.well-known/openid-configuration') discoveryFetches += 1;
    if (!handler) {
      res.statusCode = 503;
      res.end();
      return;
    }
    handler(req, res);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const issuer = `http://127.0.0.1:${port}`;
  const resource = `${issuer}/loki-api`;
  const AdapterClass = memoryAdapterFactory();

  const build = () => {
    const provider = new Provider(issuer, {
      adapter: AdapterClass,
      clients: [
        {
          client_id: clientId,
          client_secret: clientSecret,
          grant_types: ['client_credentials'],
          redirect_uris: [],
          response_types: [],
          token_endpoint_auth_method: 'client_secret_basic',
        },
      ],
      jwks: { keys: keys.map((k) => k.privateJwk) },
      cookies: { keys: [randomBytes(32).toString('base64url')] },
      ttl: { ClientCredentials: ttl, AccessToken: ttl },
      enabledJWA: { idTokenSigningAlgValues: ['RS256', 'ES256', 'EdDSA'] },
      features: {
        devInteractions: { enabled: false },
        clientCredentials: { enabled: true },
        resourceIndicators: {
          enabled: true,
          defaultResource: async (_ctx: unknown, _client: unknown, oneOf?: string | string[]) => oneOf ?? resource,
          useGrantedResource: async () => true,
          getResourceServerInfo: async (ctx: KoaLikeContext, indicator: string) => ({
            scope: 'loki',
            audience: indicator === resource ? clientId : indicator,
            accessTokenFormat: 'jwt',
            accessTokenTTL: ttl,
            jwt: { sign: { alg: overridesFor(ctx).alg ?? 'RS256' } },
          }),
        },
      },
      extraTokenClaims: async (ctx: KoaLikeContext) => {
        const o = overridesFor(ctx);
        const roles = o.roles ?? defaults.roles;
        const email = o.email === undefined ? defaults.email : o.email;
        return {
          ...defaults.claims,
          ...(roles.length > 0 ? { roles } : {}),
          ...(email !== null ? { email } : {}),
        };
      },
      formats: {
        customizers: {
          jwt: async (ctx: KoaLikeContext, _token: unknown, jwt: StructuredJwt) => {
            const o = overridesFor(ctx);
            jwt.payload.sub = o.subject ?? defaults.subject;
            Object.assign(jwt.payload, o.claims ?? {});
            for (const name of o.omitClaims ?? []) delete jwt.payload[name];
          },
        },
      },
    });
    provider.on('server_error', (_ctx: unknown, err: unknown) => {
      console.error('oidc-provider server_error', err);
    });
    handler = provider.callback();
  };
  build();

  async function getToken(opts: GetTokenOptions = {}): Promise<string> {
    const id = randomUUID();
    overrides.set(id, opts);
    try {
      const body = new URLSearchParams({ grant_type: 'client_credentials', resource: opts.resource ?? resource, scope: 'loki' });
      const basic = Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(clientSecret)}`).toString('base64');
      const res = await fetch(`${issuer}/token`, {
        method: 'POST',
        headers: { authorization: `Basic ${basic}`, 'content-type': 'application/x-www-form-urlencoded', [OVERRIDE_HEADER]: id },
        body,
      });
      const json = (await res.json()) as { access_token?: string; error?: string; error_description?: string };
      if (res.status !== 200 || !json.access_token) {
        throw new Error(`token request failed: HTTP ${res.status} ${json.error ?? ''} ${json.error_description ?? ''}`);
      }
      return json.access_token;
    } finally {
      overrides.delete(id);
    }
  }

  return {
    issuer,
    clientId,
    clientSecret,
    resource,
    getToken,
    jwksFetchCount: () => jwksFetches,
    discoveryFetchCount: () => discoveryFetches,
    signingKeys: () => keys.map((k) => k.info),
    async rotateKeys() {
      const fresh = await newKey('RS256');
      keys = [fresh, ...keys];
      build();
      return fresh.info;
    },
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((err) => (err ? reject(err) : resolve()));
      }),
  };
}

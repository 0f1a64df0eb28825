/**
 * Bearer credential → identity. `loki_…` tokens are checked offline (format and
 * checksum) before the store is asked; JWTs go to the OIDC verifier.
 */
import type { TokenRecord, TokenStore } from '../db/store';
import type { Identity, OidcVerifierPort } from '../http/context';
import { looksLikeJwt } from './oidc';
import { ROLE_SCOPES } from './roles';
import { sha256Hex, timingSafeEqualHex, tokenShape } from './tokens';

export type AuthFailure = 'missing' | 'malformed' | 'unknown' | 'revoked' | 'expired' | 'oidc_rejected' | 'oidc_unavailable';

const TOUCH_INTERVAL_MS = 60_000;

/** Parse `Authorization: Bearer <token>` strictly: one space, exact scheme, visible ASCII. */
export function parseBearer(header: string | undefined): string | null {
  if (header === undefined) return null;
  const m = /^Bearer ([\x21-\x7e]{1,8192})$/.exec(header);
  return m ? m[1]! : null;
}

export class Authenticator {
  private lastTouch = new Map<string, number>();

  constructor(
    private readonly tokens: TokenStore,
    private readonly opts: { now: () => number; oidc?: OidcVerifierPort | null; sha256?: ((s: string) => string) | undefined },
  ) {}

  async authenticate(token: string): Promise<Identity | { failure: AuthFailure }> {
    const shape = tokenShape(token);
    if (shape === 'invalid') {
      if (this.opts.oidc && looksLikeJwt(token)) return this.viaOidc(token);
      return { failure: 'malformed' };
    }
    const hash = this.opts.sha256 ? this.opts.sha256(token) : await sha256Hex(token);
    let row = await this.tokens.findByHash(hash);
    if (!row && shape === 'legacy') row = await this.legacySalted(token, hash);
    if (!row) return { failure: 'unknown' };
    const now = this.opts.now();
    if (row.revokedAt !== null) return { failure: 'revoked' };
    if (row.expiresAt !== null && row.expiresAt <= now) return { failure: 'expired' };
    this.touch(row, now);
    return {
      actor: { type: 'token', id: row.id, name: row.name },
      role: row.role,
      scopes: row.scopes,
      expiresAt: row.expiresAt,
      tokenId: row.id,
      workerId: row.workerId,
      via: 'token',
    };
  }

  /** Is the token behind this identity still valid (for open streams)? */
  async stillValid(identity: Identity): Promise<boolean> {
    const now = this.opts.now();
    if (identity.expiresAt !== null && identity.expiresAt <= now) return false;
    if (identity.via !== 'token' || !identity.tokenId) return true;
    const row = await this.tokens.get(identity.tokenId);
    return Boolean(row && row.revokedAt === null && (row.expiresAt === null || row.expiresAt > now));
  }

  private async legacySalted(token: string, plainHash: string): Promise<TokenRecord | null> {
    // Loki Mode stored sha256(salt + token). Compare against each salted import
    // once; on a match, re-hash it so later lookups are a single index probe.
    for (const cand of await this.tokens.listLegacySalted()) {
      const h = this.opts.sha256 ? this.opts.sha256(cand.legacySalt + token) : await sha256Hex(cand.legacySalt + token);
      if (timingSafeEqualHex(h, cand.hash)) {
        await this.tokens.rehash(cand.id, plainHash);
        return { ...cand, hash: plainHash, legacySalt: null };
      }
    }
    return null;
  }

  private touch(row: TokenRecord, now: number): void {
    const last = Math.max(this.lastTouch.get(row.id) ?? 0, row.lastUsedAt ?? 0);
    if (now - last < TOUCH_INTERVAL_MS) return;
    this.lastTouch.set(row.id, now);
    if (this.lastTouch.size > 10_000) this.lastTouch.clear();
    this.tokens.touch(row.id, now).catch(() => {});
  }

  private async viaOidc(token: string): Promise<Identity | { failure: AuthFailure }> {
    try {
      const id = await this.opts.oidc!.verify(token);
      return {
        actor: { type: 'oidc', id: id.subject, name: id.email ?? id.subject },
        role: id.role,
        scopes: [...ROLE_SCOPES[id.role]],
        expiresAt: id.expiresAt,
        tokenId: null,
        via: 'oidc',
      };
    } catch (err) {
      const code = (err as { code?: string }).code;
      return { failure: code === 'unavailable' ? 'oidc_unavailable' : 'oidc_rejected' };
    }
  }
}

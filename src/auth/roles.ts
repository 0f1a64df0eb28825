/** Roles and scopes, as in Loki Mode (plus `worker`). */
export const ROLES = ['admin', 'operator', 'viewer', 'auditor', 'worker'] as const;
export type Role = (typeof ROLES)[number];

export const SCOPES = ['*', 'control', 'write', 'read', 'audit', 'sandbox'] as const;
export type Scope = (typeof SCOPES)[number];

export const ROLE_SCOPES: Record<Role, readonly Scope[]> = {
  admin: ['*'],
  operator: ['control', 'read', 'write'],
  viewer: ['read'],
  auditor: ['read', 'audit'],
  worker: ['sandbox'],
};

/** Rank for "highest role wins" (OIDC). Worker is never derived from OIDC claims. */
export const ROLE_RANK: Record<Role, number> = { admin: 4, operator: 3, auditor: 2, viewer: 1, worker: 0 };

/** What each scope implies: `*` everything; control ⇒ write ⇒ read. */
const IMPLIES: Record<Scope, readonly Scope[]> = {
  '*': SCOPES,
  control: ['control', 'write', 'read'],
  write: ['write', 'read'],
  read: ['read'],
  audit: ['audit'],
  sandbox: ['sandbox'],
};

export function isRole(v: unknown): v is Role {
  return typeof v === 'string' && (ROLES as readonly string[]).includes(v);
}
export function isScope(v: unknown): v is Scope {
  return typeof v === 'string' && (SCOPES as readonly string[]).includes(v);
}

/** The full set of scopes a list of granted scopes amounts to. */
export function expandScopes(granted: readonly Scope[]): Set<Scope> {
  const out = new Set<Scope>();
  for (const g of granted) for (const s of IMPLIES[g]) out.add(s);
  return out;
}

export function hasScope(granted: readonly Scope[], needed: Scope): boolean {
  // Checked on every request: no allocation.
  for (const g of granted) if (IMPLIES[g].includes(needed)) return true;
  return false;
}

/**
 * Narrow a role's scopes to `requested`. Every requested scope must be implied by
 * the role; returns the error message for the first that is not.
 */
export function narrowScopes(role: Role, requested: readonly string[] | undefined): { scopes: Scope[] } | { error: string } {
  if (!requested || requested.length === 0) return { scopes: [...ROLE_SCOPES[role]] };
  const allowed = expandScopes(ROLE_SCOPES[role]);
  const out: Scope[] = [];
  for (const s of requested) {
    if (!isScope(s)) return { error: `unknown scope "${s}" (allowed: ${SCOPES.join(', ')})` };
    // A narrowed token may hold `*` only if its role does.
    if (s === '*' ? role !== 'admin' : !allowed.has(s)) return { error: `scope "${s}" is wider than role ${role} allows` };
    if (!out.includes(s)) out.push(s);
  }
  return { scopes: out };
}

/** The smallest role whose scopes cover `scopes` (for legacy imports with bare scope lists). */
export function smallestRoleFor(scopes: readonly Scope[]): Role {
  for (const role of ['viewer', 'auditor', 'worker', 'operator', 'admin'] as const) {
    const allowed = expandScopes(ROLE_SCOPES[role]);
    if (scopes.every((s) => (s === '*' ? role === 'admin' : allowed.has(s)))) return role;
  }
  return 'admin';
}

import { createToken } from '../../src/auth/token-service';
import type { Role } from '../../src/auth/roles';
import type { TestServer } from './server';

/**
 * Create a token straight in the server's store (as the CLI would); returns the plaintext.
 * A `worker` token must be bound to a worker id (`workerId`), as `createToken` requires.
 */
export async function makeToken(
  s: TestServer,
  name: string,
  role: Role,
  extra: { scopes?: string[]; expiresDays?: number; workerId?: string } = {},
) {
  const { record, plaintext } = await createToken(
    s.runtime.deps.store.tokens,
    { name, role, scopes: extra.scopes, expiresDays: extra.expiresDays, workerId: extra.workerId, createdBy: 'test' },
    Date.now(),
  );
  return { id: record.id, token: plaintext };
}

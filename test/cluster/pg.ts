/**
 * PostgreSQL for the cluster tests: `describePg` runs the suite with a real
 * server (test/helpers/postgres.ts); without one it fails in CI (`CI=true`) and
 * is skipped with the reason elsewhere.
 */
import { describe, it } from 'vitest';
import { postgresMissing } from '../helpers/postgres';

export function describePg(name: string, fn: () => void): void {
  const missing = postgresMissing();
  if (!missing) {
    describe(name, fn);
    return;
  }
  if (process.env.CI === 'true') {
    describe(name, () => {
      it('needs PostgreSQL in CI', () => {
        throw new Error(missing);
      });
    });
    return;
  }
  describe.skip(`${name} (skipped: ${missing})`, fn);
}

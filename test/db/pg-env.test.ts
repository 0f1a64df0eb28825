/** LOKI_DATABASE_URL and its pool settings, parsed in src/env.ts. */
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/env';

const load = (env: Record<string, string>) => loadConfig({ LOKI_HOME: '/tmp/h', ...env }, { home: '/tmp', cwd: '/tmp' });
const error = (env: Record<string, string>) => {
  try {
    load(env);
  } catch (err) {
    if (err instanceof ConfigError) return err.message;
    throw err;
  }
  return null;
};

describe('LOKI_DATABASE_URL', () => {
  it('unset: SQLite', () => {
    expect(load({}).database).toBeNull();
  });

  it('a postgres:// or postgresql:// URL with the defaults, or the pool settings given', () => {
    expect(load({ LOKI_DATABASE_URL: 'postgres://loki:pw@db.internal:5432/loki?sslmode=require' }).database).toEqual({
      url: 'postgres://loki:pw@db.internal:5432/loki?sslmode=require',
      poolSize: 10,
      statementTimeoutMs: 10_000,
    });
    expect(
      load({ LOKI_DATABASE_URL: 'postgresql://127.0.0.1/loki', LOKI_DATABASE_POOL_SIZE: '32', LOKI_DATABASE_STATEMENT_TIMEOUT_MS: '0' }).database,
    ).toEqual({ url: 'postgresql://127.0.0.1/loki', poolSize: 32, statementTimeoutMs: 0 });
  });

  it('refuses another scheme, no database name or a non-URL, never echoing the password', () => {
    const allowed = 'expected a PostgreSQL URL postgres://USER:PASSWORD@HOST:PORT/DATABASE (query parameters such as ?sslmode=require allowed)';
    expect(error({ LOKI_DATABASE_URL: 'mysql://root:hunter22@db/loki' })).toBe(`LOKI_DATABASE_URL="mysql://root:[REDACTED]@db/loki" is invalid: ${allowed}`);
    expect(error({ LOKI_DATABASE_URL: 'postgres://u:hunter22@db' })).toBe(`LOKI_DATABASE_URL="postgres://u:[REDACTED]@db" is invalid: ${allowed}`);
    expect(error({ LOKI_DATABASE_URL: 'loki.db' })).toBe(`LOKI_DATABASE_URL="loki.db" is invalid: ${allowed}`);
    // A password holding '/' or '@' (not percent-encoded), or given as a query parameter, is hidden too.
    expect(error({ LOKI_DATABASE_URL: 'postgres://u:hunter/22@db/loki' })).toBe(`LOKI_DATABASE_URL="postgres://u:[REDACTED]@db/loki" is invalid: ${allowed}`);
    expect(error({ LOKI_DATABASE_URL: 'postgres://u:hun@ter22@db:99999/loki' })).toBe(`LOKI_DATABASE_URL="postgres://u:[REDACTED]@db:99999/loki" is invalid: ${allowed}`);
    expect(error({ LOKI_DATABASE_URL: 'postgres://db:99999/loki?user=u&password=hunter22' })).toBe(
      `LOKI_DATABASE_URL="postgres://db:99999/loki?user=u&password=[REDACTED]" is invalid: ${allowed}`,
    );
  });

  it('pool size 1–1000 and statement timeout 0–3600000, integers', () => {
    const url = { LOKI_DATABASE_URL: 'postgres://db/loki' };
    expect(error({ ...url, LOKI_DATABASE_POOL_SIZE: '0' })).toBe('LOKI_DATABASE_POOL_SIZE="0" is invalid: expected an integer from 1 to 1000');
    expect(error({ ...url, LOKI_DATABASE_POOL_SIZE: 'ten' })).toBe('LOKI_DATABASE_POOL_SIZE="ten" is invalid: expected an integer from 1 to 1000');
    expect(error({ ...url, LOKI_DATABASE_STATEMENT_TIMEOUT_MS: '-1' })).toBe(
      'LOKI_DATABASE_STATEMENT_TIMEOUT_MS="-1" is invalid: expected an integer from 0 to 3600000',
    );
  });
});

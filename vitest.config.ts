import { existsSync, readdirSync } from 'node:fs';
import { defineConfig } from 'vitest/config';

/**
 * The API suites run twice in one run: on SQLite (project `sqlite`, with every
 * other suite) and on PostgreSQL (project `postgres`: LOKI_TEST_STORE=postgres,
 * one PostgreSQL for the run started by test/helpers/postgres.ts, a fresh
 * database per test server). Without PostgreSQL installed the postgres project
 * is left out (with CI=true it is kept, and fails).
 */
const POSTGRES_SUITES = [
  'test/http/*.test.ts',
  'test/sessions/api.test.ts',
  'test/sessions/protocol.test.ts',
  'test/events/*.test.ts',
];

const hasPostgres = existsSync('/usr/lib/postgresql') && readdirSync('/usr/lib/postgresql').some((v) => existsSync(`/usr/lib/postgresql/${v}/bin/initdb`));
if (!hasPostgres && process.env.CI !== 'true') {
  console.warn('vitest: PostgreSQL is not installed (/usr/lib/postgresql/*/bin/initdb): the API suites run on SQLite only');
}

export default defineConfig({
  test: {
    environment: 'node',
    // Many tests start CLI processes (tsx compiles at start-up: 5-8 s each at a load average of 10).
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
    maxWorkers: 2,
    reporters: ['default', ['json', { outputFile: '.tmp/vitest-results.json' }]],
    projects: [
      { extends: true as const, test: { name: 'sqlite', include: ['test/**/*.test.ts'] } },
      ...(hasPostgres || process.env.CI === 'true'
        ? [
            {
              extends: true as const,
              test: {
                name: 'postgres',
                include: POSTGRES_SUITES,
                // TLS start-up errors and the browser load nothing from the store: once, on SQLite.
                exclude: ['test/http/tls*.test.ts', 'test/**/*.browser.test.ts'],
                env: { LOKI_TEST_STORE: 'postgres' },
                globalSetup: ['test/helpers/postgres.ts'],
              },
            },
          ]
        : []),
    ],
  },
});

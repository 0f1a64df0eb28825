import { defineConfig } from 'drizzle-kit';

/** PostgreSQL migrations (LOKI_DATABASE_URL); the SQLite/D1 ones are drizzle.config.ts. */
export default defineConfig({
  dialect: 'postgresql',
  schema: './src/db/pg-schema.ts',
  out: './migrations-pg',
});

/**
 * At start-up a server revokes the embedded-worker tokens a previous run of its
 * own left behind. Several servers share one PostgreSQL database (docs/cluster.md):
 * a server must never revoke the live token of another host's embedded worker
 * (that worker then fails every request until its server restarts).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createToken } from '../../src/auth/token-service';
import { EMBEDDED_TOKEN_CREATOR, EmbeddedWorker } from '../../src/embedded-worker';
import { startTestServer, type TestServer } from '../helpers/server';

describe('embedded worker start-up: leftover tokens (real store, real child)', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer({ LOKI_ENTERPRISE_AUTH: 'true', LOKI_WORKER_ID: 'host-b' });
  });
  afterAll(async () => {
    await s?.stop();
  });

  it("revokes this host's leftover token, never another host's live one", async () => {
    const tokens = s.runtime.deps.store.tokens;
    const mint = async (workerId: string) =>
      (await createToken(tokens, { name: `embedded-worker ${workerId} test`, role: 'worker', workerId, createdBy: EMBEDDED_TOKEN_CREATOR }, Date.now())).record.id;
    const otherHost = await mint('embedded-host-a');
    const ownLeftover = await mint('embedded-host-b');

    const worker = await EmbeddedWorker.start({
      config: { ...s.runtime.deps.config, embeddedWorkerWarm: 0, embeddedWorkerConcurrency: 1 },
      tokens,
      audit: s.runtime.audit,
      events: s.runtime.events,
      logger: s.logger,
      serverUrl: s.url,
      stopTimeoutMs: 5_000,
    });
    try {
      expect(worker.workerId).toBe('embedded-host-b');
      expect((await tokens.get(ownLeftover))?.revokedAt).not.toBeNull();
      expect((await tokens.get(otherHost))?.revokedAt).toBeNull();
    } finally {
      await worker.stop();
    }
    expect((await tokens.get(worker.tokenId))?.revokedAt).not.toBeNull();
    expect((await tokens.get(otherHost))?.revokedAt).toBeNull();
  }, 60_000);
});

/**
 * The event hub and one LiveStream over a real SQLite store: pruning by age and
 * count (directly and by the server's timer), fan-out, and that a stream that
 * catches up while events keep arriving delivers each exactly once, in order.
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createSqliteStore, migrate, openSqlite } from '../../src/db/sqlite';
import type { EventRecord } from '../../src/db/store';
import { ConfigError, loadConfig } from '../../src/env';
import { EventHub } from '../../src/events/hub';
import { LiveGroup, LiveStream } from '../../src/events/live';
import type { Identity } from '../../src/http/context';
import { startTestServer, tempHome } from '../helpers/server';

function tempStore() {
  const db = openSqlite(path.join(tempHome('loki-hub-'), 'loki.db'));
  migrate(db);
  return { db, store: createSqliteStore(db) };
}

const LOCAL: Identity = { actor: { type: 'local', id: null, name: 'local' }, role: 'admin', scopes: ['*'], expiresAt: null, tokenId: null, via: 'loopback' };

function liveStream(hub: EventHub, after: number, filter: { types?: string[]; sessionId?: string } = {}) {
  const got: EventRecord[] = [];
  let released = 0;
  const closed: string[] = [];
  const live = new LiveStream({
    hub,
    identity: LOCAL,
    stillValid: async () => true,
    after,
    filter,
    sink: { send: (es) => got.push(...es), buffered: () => 0, closed: (r) => closed.push(r) },
    now: Date.now,
    release: () => released++,
    group: new LiveGroup(),
  });
  return { live, got, closed, released: () => released };
}

async function until(pred: () => boolean, timeoutMs = 5000) {
  const end = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('EventHub', () => {
  it('prunes by age and by count', async () => {
    const { db, store } = tempStore();
    const now = Date.now();
    const hub = new EventHub(store.events, () => now);
    for (let i = 0; i < 5; i++) await store.events.insert('old', null, { i }, now - 3 * 3_600_000);
    for (let i = 0; i < 20; i++) await store.events.insert('new', null, { i }, now);
    expect(await hub.prune(2 * 3_600_000, 1000)).toBe(5);
    expect(await hub.prune(2 * 3_600_000, 8)).toBe(12);
    const left = await hub.after(0, { limit: 100 });
    expect(left.map((e) => (e.data as { i: number }).i)).toEqual([12, 13, 14, 15, 16, 17, 18, 19]);
    db.close();
  });

  it('fans one read out to every subscriber and counts admitted streams', async () => {
    const { db, store } = tempStore();
    const hub = new EventHub(store.events);
    hub.startPolling(50);
    const batches: number[][] = [[], []];
    const offs = batches.map((b) => hub.subscribeBatches((batch) => b.push(...batch.events.map((e) => e.id))));
    await new Promise((r) => setTimeout(r, 50));
    const ids = [await hub.publish('a', null, {}), await hub.publish('b', null, {})];
    await until(() => batches.every((b) => b.length === 2));
    expect(batches).toEqual([ids, ids]);
    expect(hub.listenerCount).toBe(2);
    for (const off of offs) off();
    expect(hub.listenerCount).toBe(0);
    const r1 = hub.admit('sse', 1);
    expect(r1).not.toBeNull();
    expect(hub.admit('sse', 1)).toBeNull();
    r1!();
    r1!();
    expect(hub.connections).toEqual({ sse: 0, ws: 0 });
    hub.stop();
    db.close();
  });

  it('a stream catching up while events keep arriving delivers each exactly once, in order', async () => {
    const { db, store } = tempStore();
    const hub = new EventHub(store.events);
    hub.startPolling(20);
    for (let i = 0; i < 1500; i++) await store.events.insert('e', i % 3 === 0 ? 'ses_a' : null, { i }, Date.now());
    const all = liveStream(hub, 0);
    const filtered = liveStream(hub, 0, { sessionId: 'ses_a', types: ['e'] });
    all.live.start();
    filtered.live.start();
    // Written by this process (publish) and "another" one (a bare insert the poll finds).
    for (let i = 1500; i < 2000; i++) {
      if (i % 2) await hub.publish('e', i % 3 === 0 ? 'ses_a' : null, { i });
      else await store.events.insert('e', i % 3 === 0 ? 'ses_a' : null, { i }, Date.now());
      if (i % 100 === 0) await new Promise((r) => setTimeout(r, 5));
    }
    await until(() => all.got.length === 2000);
    await until(() => filtered.got.length === 667);
    await new Promise((r) => setTimeout(r, 100));
    expect(all.got.map((e) => (e.data as { i: number }).i)).toEqual(Array.from({ length: 2000 }, (_, i) => i));
    expect(filtered.got.map((e) => (e.data as { i: number }).i)).toEqual(Array.from({ length: 2000 }, (_, i) => i).filter((i) => i % 3 === 0));
    all.live.close('client');
    all.live.close('client');
    filtered.live.close('client');
    expect(all.released()).toBe(1);
    expect(hub.listenerCount).toBe(0);
    hub.stop();
    db.close();
  });
});

describe('event retention settings', () => {
  it('parses LOKI_EVENTS_* and LOKI_WS_* with the usual errors', () => {
    const d = { home: '/h', cwd: '/c' };
    const c = loadConfig({ LOKI_EVENTS_MAX_AGE_HOURS: '2', LOKI_EVENTS_MAX_ROWS: '500', LOKI_EVENTS_PRUNE_INTERVAL_S: '10', LOKI_WS_PING_INTERVAL_MS: '1000', LOKI_WS_ATTEMPTS_PER_MINUTE: '7' }, d);
    expect(c).toMatchObject({ eventsMaxAgeMs: 7_200_000, eventsMaxRows: 500, eventsPruneIntervalMs: 10_000, wsPingIntervalMs: 1000, wsAttemptsPerMinute: 7 });
    expect(loadConfig({}, d)).toMatchObject({ eventsMaxAgeMs: 168 * 3_600_000, eventsMaxRows: 100_000, eventsPruneIntervalMs: 300_000, wsPingIntervalMs: 30_000, wsAttemptsPerMinute: 60 });
    expect(() => loadConfig({ LOKI_EVENTS_MAX_ROWS: '10' }, d)).toThrow(ConfigError);
    expect(() => loadConfig({ LOKI_EVENTS_MAX_AGE_HOURS: 'week' }, d)).toThrow('LOKI_EVENTS_MAX_AGE_HOURS="week" is invalid');
  });

  it('the server prunes the events table on its timer', async () => {
    const s = await startTestServer({ LOKI_EVENTS_PRUNE_INTERVAL_S: '1', LOKI_EVENTS_MAX_ROWS: '100', LOKI_EVENTS_MAX_AGE_HOURS: '1' });
    try {
      const store = s.runtime.deps.store.events;
      await store.insert('ancient', null, {}, Date.now() - 2 * 3_600_000);
      for (let i = 0; i < 250; i++) await store.insert('bulk', null, { i }, Date.now());
      const count = async () => Number((await s.sql<{ n: number }>('SELECT count(*) AS n FROM events'))[0]?.n);
      const deadline = Date.now() + 4000;
      while ((await count()) > 100 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(await count()).toBeLessThanOrEqual(100);
      const rows = await s.runtime.events.after(0, { limit: 1000 });
      expect(rows.some((e) => e.type === 'ancient')).toBe(false);
      expect(rows.at(-1)?.data).toEqual({ i: 249 });
    } finally {
      await s.stop();
    }
  });
});

/**
 * Issue 13: `budget_usd: 1e2` is a JSON number equal to 100, but the README says
 * the budget is a plain amount: the API reads how it was written (raw body text).
 */
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { topLevelNumberSources } from '../../src/http/json-source';
import { startTestServer, type TestServer } from '../helpers/server';
import { makeWorkspace, tempRoot } from '../sessions/helpers';

describe('budget_usd written in exponent form (real server)', () => {
  let s: TestServer;
  let root: string;
  let ws: string;
  const postRaw = (body: string) => s.req('/api/sessions', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body });

  beforeAll(async () => {
    root = tempRoot();
    ws = makeWorkspace(root, 'ws');
    s = await startTestServer({ LOKI_WORKSPACE_ROOTS: root });
  });
  afterAll(async () => {
    await s?.stop();
    rmSync(root, { recursive: true, force: true });
  });

  it.each([['1e2'], ['1E2'], ['1.5e1'], ['100e0'], ['1e+2'], ['5000E-2']])('budget_usd: %s → 400 validation_error, nothing queued', async (lit) => {
    const before = (await (await s.req('/api/sessions')).json()).sessions.length;
    const r = await postRaw(`{"workspace":${JSON.stringify(ws)},"prd":"prd.md","budget_usd":${lit}}`);
    expect(r.status).toBe(400);
    expect((await r.json()).error).toMatchObject({
      code: 'validation_error',
      message: `budget_usd: write the amount as a plain decimal such as 100 or 5.00, not in exponent form (got ${lit})`,
    });
    expect((await (await s.req('/api/sessions')).json()).sessions.length).toBe(before);
  });

  it.each([
    ['100', 100],
    ['100.00', 100],
    ['5.5', 5.5],
    ['"100"', 100],
  ])('budget_usd: %s (plain) is accepted as %d', async (lit, usd) => {
    const r = await postRaw(`{"workspace":${JSON.stringify(ws)},"prd":"prd.md","budget_usd":${lit}}`);
    expect(r.status).toBe(201);
    expect((await r.json()).budget_usd).toBe(usd);
  });

  it('an exponent elsewhere (a nested or other field, or inside a string) is not the budget', async () => {
    const r = await postRaw(`{"workspace":${JSON.stringify(ws)},"prd":"prd.md","name":"budget_usd: 1e2","budget_usd":7}`);
    expect(r.status).toBe(201);
    expect((await r.json()).budget_usd).toBe(7);
  });

  it('a duplicate key cannot hide it (JSON.parse keeps the last value)', async () => {
    const r = await postRaw(`{"workspace":${JSON.stringify(ws)},"prd":"prd.md","budget_usd":1e2,"budget_usd":100}`);
    expect(r.status).toBe(400);
  });
});

describe('topLevelNumberSources', () => {
  it('returns how the top-level key was written, skipping strings, escapes and nested objects', () => {
    const text = ' { "a\\"budget_usd": 1e9, "x": {"budget_usd": 2e2}, "y": ["budget_usd", 3e3], "budget_usd" : -1.50E+2 } ';
    expect(JSON.parse(text).budget_usd).toBe(-150);
    expect(topLevelNumberSources(text, 'budget_usd')).toEqual(['-1.50E+2']);
    expect(topLevelNumberSources('[1e2]', 'budget_usd')).toEqual([]);
    expect(topLevelNumberSources('{"budget_\\u0075sd": 1e2}', 'budget_usd')).toEqual(['1e2']);
  });
});

/**
 * The dashboard in real headless Chromium (Debian's `chromium`, driven by
 * playwright-core) against the real server. XSS payloads from the OWASP
 * filter-evasion cheat sheet are stored as token names, session names, PRD
 * paths, log lines, event data and audit details; every panel is loaded, and no
 * dialog may open, the canary must stay untouched, no CSP violation may be
 * reported, and every payload must be shown literally. Then what a user reads:
 * the Status panel's cards, the Events backlog, live cost, actors, the 403 text
 * and keyboard-driven tabs. Screenshots of each panel go to .tmp/screenshots/.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT, startTestServer, type TestServer, tempHome } from '../helpers/server';
import { makeToken } from '../helpers/tokens';
import { XSS_PAYLOADS } from './xss-payloads';

const CHROMIUM = '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];
const ARTIFACTS = path.join(ROOT, '.tmp', 'screenshots');
const haveChromium = existsSync(CHROMIUM);
const inCi = process.env.CI === 'true';

if (!haveChromium && inCi) {
  describe('dashboard in Chromium', () => {
    it('needs Chromium in CI', () => {
      throw new Error(`${CHROMIUM} is missing: scripts/ci-deps.sh installs Debian's chromium`);
    });
  });
}

interface Watch {
  dialogs: string[];
  console: string[];
  urls: string[];
  pageErrors: string[];
}

async function openPage(browser: Browser, url: string): Promise<{ page: Page; watch: Watch }> {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const watch: Watch = { dialogs: [], console: [], urls: [], pageErrors: [] };
  await page.addInitScript(() => {
    const w = window as unknown as { __canary: string; __csp: string[] };
    w.__canary = 'intact';
    w.__csp = [];
    document.addEventListener('securitypolicyviolation', (e) => w.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
  });
  page.on('dialog', (d) => {
    watch.dialogs.push(`${d.type()}: ${d.message()}`);
    void d.dismiss();
  });
  page.on('console', (m) => watch.console.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => watch.pageErrors.push(e.message));
  page.on('request', (r) => watch.urls.push(r.url()));
  await page.goto(url);
  return { page, watch };
}

async function panelText(page: Page, selector: string): Promise<string> {
  return page.$eval(selector, (n) => n.textContent ?? '');
}

/** The value cell of the row labelled `label` in a key/value table under `scope`. */
async function rowValue(page: Page, scope: string, label: string): Promise<string> {
  return page.$eval(
    scope,
    (root, l) => {
      const row = [...root.querySelectorAll('tr')].find((tr) => tr.querySelector('th')?.textContent === l);
      return row?.querySelector('td')?.textContent ?? `(no row ${l})`;
    },
    label,
  );
}

async function waitForText(page: Page, selector: string, text: string, timeout = 10_000): Promise<void> {
  await page.waitForFunction(([sel, t]) => (document.querySelector(sel as string)?.textContent ?? '').includes(t as string), [selector, text], { timeout });
}

async function assertClean(page: Page, watch: Watch): Promise<void> {
  expect(watch.dialogs).toEqual([]);
  expect(await page.evaluate(() => (window as unknown as { __canary: string }).__canary)).toBe('intact');
  expect(await page.evaluate(() => (window as unknown as { __csp: string[] }).__csp)).toEqual([]);
  expect(watch.console.filter((m) => /content security policy|refused to/i.test(m))).toEqual([]);
  expect(watch.pageErrors).toEqual([]);
  // Nothing from data became markup: no element a payload could have produced, no handler attribute.
  const injected = await page.evaluate(() => {
    const bad: string[] = [];
    for (const n of document.querySelectorAll('#panels *')) {
      if (['IMG', 'SVG', 'IFRAME', 'SCRIPT', 'OBJECT', 'EMBED', 'STYLE', 'META', 'BODY', 'A', 'MATH', 'DETAILS'].includes(n.tagName.toUpperCase())) bad.push(n.tagName);
      for (const a of n.getAttributeNames()) {
        // Chromium's autofill leaves an empty style="" on inputs; anything else would be ours or injected.
        if (a === 'style' && n.getAttribute(a) === '') continue;
        if (a.startsWith('on') || a === 'href' || a === 'src' || a === 'style') bad.push(`${n.tagName}[${a}=${n.getAttribute(a)}]`);
      }
    }
    return bad;
  });
  expect(injected).toEqual([]);
}

describe.skipIf(!haveChromium)(haveChromium ? 'dashboard in headless Chromium' : `dashboard in headless Chromium (skipped: ${CHROMIUM} is not installed)`, () => {
  let s: TestServer;
  let wsRoot: string;
  let admin: string;
  let browser: Browser;
  let sessionId = '';
  const sessionPayloads = XSS_PAYLOADS.filter((p) => p.length <= 128);
  const prdPayloads = XSS_PAYLOADS.filter((p) => !p.includes('/') && p.length <= 100).slice(0, 5);

  beforeAll(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    // Workspaces live outside LOKI_HOME (a directory inside it is refused as a workspace).
    wsRoot = tempHome('loki-dashboard-ws-');
    s = await startTestServer({ LOKI_ENTERPRISE_AUTH: 'true', LOKI_WORKSPACE_ROOTS: wsRoot });
    admin = (await makeToken(s, 'admin', 'admin')).token;
    const json = (method: string, p: string, body?: unknown) =>
      s.req(p, { method, token: admin, headers: { 'Content-Type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });

    for (const name of XSS_PAYLOADS) {
      const r = await json('POST', '/api/enterprise/tokens', { name, role: 'viewer' });
      expect(r.status, name).toBe(201);
    }
    const workspace = path.join(wsRoot, 'ws');
    mkdirSync(workspace, { recursive: true });
    writeFileSync(path.join(workspace, 'prd.md'), '# PRD\n');
    for (const p of prdPayloads) writeFileSync(path.join(workspace, p), '# PRD\n');
    for (const [i, name] of sessionPayloads.entries()) {
      const prd = prdPayloads[i % (prdPayloads.length + 1)] ?? 'prd.md';
      const r = await json('POST', '/api/sessions', { workspace, prd, name });
      expect(r.status, `${name}: ${await r.clone().text()}`).toBe(201);
      if (i === 0) sessionId = ((await r.json()) as { id: string }).id;
    }
    await s.runtime.deps.store.sessions.appendLogs(
      sessionId,
      XSS_PAYLOADS.map((text, i) => ({ line: i + 1, stream: i % 2 ? 'stderr' : 'stdout', text, ts: Date.now() })),
    );
    for (const payload of XSS_PAYLOADS) {
      await s.runtime.audit.append({
        ts: Date.now(),
        action: 'test.xss',
        actor: { type: 'system', id: null, name: payload },
        outcome: { status: null, success: true, error: null },
        details: { payload },
      });
    }
    await s.runtime.audit.drain();
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
  });

  afterAll(async () => {
    await browser?.close();
    await s?.stop();
  });

  it(`renders ${XSS_PAYLOADS.length} payloads literally in every panel, runs none of them`, async () => {
    const { page, watch } = await openPage(browser, `${s.url}/`);
    // With auth on and no token, the API's error is shown as text.
    await waitForText(page, '#panel-status', 'a bearer token is required');

    await page.fill('#token', admin);
    await page.click('#token-form button[type=submit]');
    await waitForText(page, '#panel-status', 'Version');
    await waitForText(page, '#auth-state', 'auth on: token set');
    // Status reads as text, not JSON: sessions by state, the audit tip and checkpoint, syslog, witnesses, streams.
    await waitForText(page, '#status-audit', 'Last checkpoint');
    const statusText = await panelText(page, '#panel-status');
    expect(statusText).not.toMatch(/[{}]/);
    expect(await rowValue(page, '#status-sessions', 'Total')).toBe(String(sessionPayloads.length));
    expect(await rowValue(page, '#status-sessions', 'queued')).toBe(String(sessionPayloads.length));
    const tip = await s.runtime.audit.storage.tip();
    expect(tip).not.toBeNull();
    expect(await rowValue(page, '#status-audit', 'Tip')).toMatch(/^entry #[\d,]+$/);
    expect(await rowValue(page, '#status-audit', 'Head hash')).toMatch(/^[0-9a-f]{16}…$/);
    expect(await rowValue(page, '#status-audit', 'Last checkpoint')).toMatch(/^genesis at \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ, size 0 \([\d,]+ entries since\)$/);
    expect(await rowValue(page, '#status-audit', 'Signature')).toBe('signed (JWS)');
    expect(await rowValue(page, '#status-audit', 'Since start-up')).toMatch(/^[\d,]+ entries written, \d+ waiting, 0 write failures$/);
    expect(await rowValue(page, '#status-audit', 'Suppressed failures')).toBe('none');
    expect(await rowValue(page, '#status-forwarding', 'Syslog')).toBe('not configured (LOKI_AUDIT_SYSLOG_HOST)');
    expect(await rowValue(page, '#status-forwarding', 'Witnesses')).toBe('none configured (LOKI_AUDIT_WITNESSES)');
    expect(await rowValue(page, '#status-runtime', 'Live streams')).toBe('1 SSE stream, 0 WebSockets (1 listener)');
    // The embedded worker as this server reports it (a test server starts none), with why not.
    const reported = (await (await s.req('/api/status', { token: admin })).json()).embedded_worker as { state: string; reason: string | null };
    expect(reported.state).not.toBe('running');
    expect(await panelText(page, '#status-embedded-worker')).toBe(`${reported.state} · ${reported.reason}`);
    expect(await rowValue(page, '#status-server', 'Auth')).toBe('on (tokens)');
    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-status.png'), fullPage: true });

    // An embedded worker, when /api/status reports one, is shown with its state, pid, reason and restarts.
    const ew = s.runtime.embeddedWorker;
    const realStatus = ew.status;
    ew.status = () => ({ state: 'running', reason: null, pid: 4242, restarts: 1, worker_id: 'embedded-test' });
    try {
      await page.click('#tab-sessions');
      await page.click('#tab-status');
      await waitForText(page, '#status-runtime', 'pid 4242');
      expect(await panelText(page, '#status-embedded-worker')).toBe('running · pid 4242 · worker id embedded-test · 1 restart');
    } finally {
      ew.status = realStatus;
    }

    // Sessions: names and PRD paths in the list, log lines in the output, live output.
    await page.click('#tab-sessions');
    await waitForText(page, '#session-rows', sessionPayloads[0]!);
    const sessionsText = await panelText(page, '#session-rows');
    for (const p of sessionPayloads) expect(sessionsText, p).toContain(p);
    for (const p of prdPayloads) expect(sessionsText, p).toContain(p);
    await page.click(`#session-rows tr[data-session="${sessionId}"] button`);
    await waitForText(page, '#session-output', XSS_PAYLOADS.at(-1)!);
    const live = ['<img src=x onerror=alert("live")>', `<script>window.__canary='live'</script>`];
    await s.runtime.events.publish('output', sessionId, { stream: 'stdout', first_line: XSS_PAYLOADS.length + 1, lines: live });
    await waitForText(page, '#session-output', live[1]!);
    const output = await panelText(page, '#session-output');
    expect(output).toBe(`${[...XSS_PAYLOADS, ...live].join('\n')}\n`);

    // Live cost: the provider's JSON output lines and the budget events move the cost column between list refreshes.
    const costCell = `#session-rows td[data-cost="${sessionId}"]`;
    expect(await panelText(page, costCell)).toBe('$0.00');
    await s.runtime.events.publish('output', sessionId, { stream: 'stdout', first_line: 1000, lines: ['{"type":"assistant","cost_usd":0.25}', '{"type":"assistant","cost_usd":0.17}'] });
    await waitForText(page, costCell, '$0.42');
    await s.runtime.events.publish('output', sessionId, { stream: 'stdout', first_line: 1002, lines: ['{"type":"result","total_cost_usd":1.23}'] });
    await waitForText(page, costCell, '$1.23');
    await s.runtime.events.publish('budget_warning', sessionId, { spent_usd: 1.6, limit_usd: 2 });
    await waitForText(page, costCell, '$1.60');
    // A list refresh (the stored cost is still 0 here) keeps the live figure.
    await page.click('#tab-status');
    await page.click('#tab-sessions');
    await waitForText(page, '#session-rows', sessionPayloads[0]!);
    expect(await panelText(page, costCell)).toBe('$1.60');
    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-sessions.png'), fullPage: true });

    // Start a session through the form, then stop it; a refused start shows the API's message.
    const startedName = '<b>started from the form</b>';
    await page.fill('#panel-sessions input[name=workspace]', path.join(wsRoot, 'ws'));
    await page.fill('#panel-sessions input[name=prd]', 'prd.md');
    await page.fill('#panel-sessions input[name=budget]', '2.50');
    await page.fill('#panel-sessions input[name=name]', startedName);
    await page.click('#panel-sessions button[type=submit]');
    await waitForText(page, '#session-rows', startedName);
    const started = page.locator('#session-rows tr', { hasText: startedName });
    await started.locator('button', { hasText: 'Stop' }).click();
    await page.waitForFunction((name) => [...document.querySelectorAll('#session-rows tr')].some((tr) => (tr.textContent ?? '').includes(name) && (tr.textContent ?? '').includes('stopped')), startedName);
    await page.fill('#panel-sessions input[name=workspace]', '/etc');
    await page.click('#panel-sessions button[type=submit]');
    await page.waitForFunction(() => !(document.querySelector('#panel-sessions .error') as HTMLElement | null)?.hidden);
    expect(await panelText(page, '#panel-sessions .error')).toMatch(/\(HTTP 400\)$/);

    // Events: the backlog is there before anything new arrives; payloads in event data arrive live as JSON text.
    await page.click('#tab-events');
    await waitForText(page, '#panel-events', 'open');
    expect(await page.$$eval('#event-rows tr', (rows) => rows.length)).toBeGreaterThan(0);
    for (const payload of XSS_PAYLOADS) await s.runtime.events.publish('xss.probe', sessionId, { payload });
    await waitForText(page, '#event-rows', JSON.stringify(XSS_PAYLOADS.at(-1)));
    const eventsText = await panelText(page, '#event-rows');
    for (const p of XSS_PAYLOADS) expect(eventsText, p).toContain(JSON.stringify(p));
    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-events.png'), fullPage: true });

    // Audit: details and actor names, verification and the checkpoint.
    await page.click('#tab-audit');
    await page.fill('#panel-audit input[name=limit]', '1000');
    await page.click('#panel-audit button[type=submit]');
    await waitForText(page, '#audit-rows', 'test.xss');
    await waitForText(page, '#audit-rows', JSON.stringify(XSS_PAYLOADS.at(-1)));
    const auditText = await panelText(page, '#audit-rows');
    for (const p of XSS_PAYLOADS) {
      expect(auditText, p).toContain(JSON.stringify({ payload: p }));
      expect(auditText, p).toContain(`system:${p}`);
    }
    // An actor with neither name nor id (the page's first, token-less request) reads `anonymous`, no trailing colon.
    await page.fill('#panel-audit input[name=action]', 'auth.failure');
    await page.click('#panel-audit button[type=submit]');
    await page.waitForFunction(() => [...document.querySelectorAll('#audit-rows td.name')].some((td) => td.textContent === 'anonymous'));
    expect(await page.$$eval('#audit-rows td.name', (tds) => tds.filter((td) => (td.textContent ?? '').endsWith(':')).length)).toBe(0);
    await page.fill('#panel-audit input[name=action]', '');
    await page.click('#panel-audit button[type=submit]');
    await waitForText(page, '#audit-rows', 'test.xss');
    await page.click('#audit-verify-button');
    await waitForText(page, '#audit-verify', 'VALID');
    await page.click('#audit-checkpoint-button');
    await page.waitForFunction(() => (document.querySelector('#audit-checkpoint')?.textContent ?? '') !== '');
    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-audit.png'), fullPage: true });
    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-audit-top.png') });

    // Tokens: names listed literally; create through the form (secret once), revoke in two clicks.
    await page.click('#tab-tokens');
    await waitForText(page, '#token-rows', XSS_PAYLOADS[0]!);
    const tokensText = await panelText(page, '#token-rows');
    for (const p of XSS_PAYLOADS) expect(tokensText, p).toContain(p);
    const uiName = `"><svg onload=alert('ui')> created in the UI`;
    await page.fill('#panel-tokens input[name=name]', uiName);
    await page.selectOption('#panel-tokens select[name=role]', 'auditor');
    await page.fill('#panel-tokens input[name=expires_days]', '7');
    await page.click('#panel-tokens button[type=submit]');
    await waitForText(page, '#token-secret', uiName);
    const secret = await page.$eval('#token-secret input', (n) => (n as HTMLInputElement).value);
    expect(secret).toMatch(/^loki_[A-Za-z0-9]+$/);
    await page.click('#token-secret button:text("Copy")');
    await waitForText(page, '#token-rows', uiName);
    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-tokens.png'), fullPage: true });
    const row = page.locator('#token-rows tr', { hasText: uiName });
    await row.locator('button').click();
    await row.locator('button', { hasText: 'Confirm revoke' }).click();
    await page.waitForFunction((name) => [...document.querySelectorAll('#token-rows tr')].some((tr) => (tr.textContent ?? '').includes(name) && (tr.textContent ?? '').includes('revoked')), uiName);

    await assertClean(page, watch);
    // The token travels only in the Authorization header: never in a URL.
    expect(watch.urls.filter((u) => u.includes(admin) || u.includes(secret))).toEqual([]);
    expect(await page.evaluate(() => sessionStorage.getItem('loki.token'))).toBe(admin);
    await page.close();
  });

  it('works with auth off (loopback), with no token', async () => {
    const off = await startTestServer();
    try {
      await off.runtime.deps.store.tokens.list(false);
      const { page, watch } = await openPage(browser, `${off.url}/#tokens`);
      await waitForText(page, '#auth-state', 'auth off');
      await page.click('#panel-tokens input[name=name]');
      await page.fill('#panel-tokens input[name=name]', '<b>bold?</b>');
      await page.click('#panel-tokens button[type=submit]');
      await waitForText(page, '#token-rows', '<b>bold?</b>');
      await page.click('#tab-status');
      await waitForText(page, '#panel-status', 'Version');
      await waitForText(page, '#panel-status', 'off');
      await page.click('#tab-events');
      await waitForText(page, '#panel-events', 'open');
      await off.runtime.events.publish('plain.event', null, { note: '<i>x</i>' });
      await waitForText(page, '#event-rows', '<i>x</i>');
      await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-auth-off.png'), fullPage: true });
      await assertClean(page, watch);
      await page.close();
    } finally {
      await off.stop();
    }
  });

  it('replays the newest 100 events on load, then follows live ones', async () => {
    const fresh = await startTestServer();
    try {
      for (let n = 0; n < 150; n++) await fresh.runtime.events.publish('backlog.probe', null, { n });
      const { page, watch } = await openPage(browser, `${fresh.url}/#events`);
      await waitForText(page, '#panel-events', 'open');
      await waitForText(page, '#event-rows', '{"n":149}');
      const shown = async () => page.$$eval('#event-rows tr', (rows) => rows.map((r) => r.querySelector('td.data')?.textContent ?? ''));
      const backlog = await shown();
      expect(backlog).toHaveLength(100);
      expect(backlog[0]).toBe('{"n":149}');
      expect(backlog.at(-1)).toBe('{"n":50}');
      await fresh.runtime.events.publish('backlog.probe', null, { n: 150 });
      await waitForText(page, '#event-rows', '{"n":150}');
      const after = await shown();
      expect(after).toHaveLength(101);
      expect(after.slice(0, 2)).toEqual(['{"n":150}', '{"n":149}']);
      await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-events-backlog.png'), fullPage: true });
      await assertClean(page, watch);
      await page.close();
    } finally {
      await fresh.stop();
    }
  });

  it('tabs are an ARIA tablist driven by the arrow keys, Home and End', async () => {
    const { page, watch } = await openPage(browser, `${s.url}/`);
    const tabs = await page.$$eval('[role=tablist] [role=tab]', (list) =>
      list.map((t) => ({ id: t.id, selected: t.getAttribute('aria-selected'), tabindex: t.getAttribute('tabindex'), controls: t.getAttribute('aria-controls') })),
    );
    expect(tabs.map((t) => t.id)).toEqual(['tab-status', 'tab-sessions', 'tab-events', 'tab-audit', 'tab-tokens']);
    expect(tabs.map((t) => t.selected)).toEqual(['true', 'false', 'false', 'false', 'false']);
    expect(tabs.map((t) => t.tabindex)).toEqual(['0', '-1', '-1', '-1', '-1']);
    for (const t of tabs) {
      const panel = await page.$eval(`#${t.controls}`, (n) => ({ role: n.getAttribute('role'), labelledby: n.getAttribute('aria-labelledby') }));
      expect(panel).toEqual({ role: 'tabpanel', labelledby: t.id });
    }
    const state = () =>
      page.evaluate(() => ({
        focused: document.activeElement?.id ?? '',
        selected: [...document.querySelectorAll('[role=tab][aria-selected=true]')].map((t) => t.id),
        visible: [...document.querySelectorAll('[role=tabpanel]')].filter((p) => !(p as HTMLElement).hidden).map((p) => p.id),
        hash: location.hash,
      }));
    await page.focus('#tab-status');
    await page.keyboard.press('ArrowRight');
    expect(await state()).toEqual({ focused: 'tab-sessions', selected: ['tab-sessions'], visible: ['panel-sessions'], hash: '#sessions' });
    await page.keyboard.press('End');
    expect(await state()).toEqual({ focused: 'tab-tokens', selected: ['tab-tokens'], visible: ['panel-tokens'], hash: '#tokens' });
    await page.keyboard.press('ArrowRight');
    expect(await state()).toEqual({ focused: 'tab-status', selected: ['tab-status'], visible: ['panel-status'], hash: '#status' });
    await page.keyboard.press('ArrowLeft');
    expect(await state()).toEqual({ focused: 'tab-tokens', selected: ['tab-tokens'], visible: ['panel-tokens'], hash: '#tokens' });
    await page.keyboard.press('Home');
    expect(await state()).toEqual({ focused: 'tab-status', selected: ['tab-status'], visible: ['panel-status'], hash: '#status' });
    // Tab leaves the tablist for the panel (one tab stop for the whole list).
    await page.keyboard.press('Tab');
    expect((await state()).focused).toBe('panel-status');
    await assertClean(page, watch);
    await page.close();
  });

  it('a viewer reads which role a refused action needs', async () => {
    const viewer = (await makeToken(s, 'dashboard-viewer', 'viewer')).token;
    const { page, watch } = await openPage(browser, `${s.url}/#tokens`);
    await page.fill('#token', viewer);
    await page.click('#token-form button[type=submit]');
    await waitForText(page, '#panel-tokens', 'admin role required');
    expect(await page.$eval('#panel-tokens .error', (n) => n.textContent)).toBe('admin role required (HTTP 403)');
    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-viewer-tokens.png'), fullPage: true });
    await page.click('#tab-status');
    await waitForText(page, '#status-audit', 'Last checkpoint');
    expect(await rowValue(page, '#status-audit', 'Last checkpoint')).toBe('not shown: auditor or admin role required (HTTP 403)');
    // Refused once per token, not at every refresh (each refusal is an audit entry).
    await page.click('#tab-sessions');
    const again = page.waitForResponse((r) => r.url().endsWith('/api/status'));
    await page.click('#tab-status');
    await again;
    await waitForText(page, '#status-audit', 'Last checkpoint');
    expect(await rowValue(page, '#status-audit', 'Last checkpoint')).toBe('not shown: auditor or admin role required (HTTP 403)');
    await s.runtime.audit.drain();
    const denied = (await (await s.req('/api/enterprise/audit?action=scope.denied&limit=1000', { token: admin })).json()) as {
      entries: { actor: { name: string }; request: { path: string } }[];
    };
    expect(denied.entries.filter((e) => e.actor.name === 'dashboard-viewer' && e.request.path === '/api/enterprise/audit/checkpoint')).toHaveLength(1);
    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-viewer-status.png'), fullPage: true });
    await assertClean(page, watch);
    await page.close();
  });

  it('serves the page with the dashboard CSP and no inline script or style', async () => {
    const r = await fetch(`${s.url}/`);
    expect(r.headers.get('content-security-policy')).toContain("script-src 'self'");
    expect(r.headers.get('content-security-policy')).toContain("object-src 'none'");
    expect(r.headers.get('content-security-policy')).toContain("base-uri 'none'");
    expect(r.headers.get('content-security-policy')).toContain("frame-ancestors 'none'");
    const html = await r.text();
    expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/i);
    expect(html).not.toMatch(/<style|\sstyle=|\son[a-z]+=/i);
  });
});

/**
 * The dashboard over HTTPS (LOKI_TLS_CERT / LOKI_TLS_KEY) in real headless
 * Chromium (Debian's `chromium`, driven by playwright-core). Certificate errors
 * are not ignored: the server's key is trusted by its SPKI hash
 * (--ignore-certificate-errors-spki-list), and a browser without it refuses the
 * page. With it the page renders the Status panel, streams events over
 * fetch, and creates a token with a POST from its own https origin.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/server';
import { makeToken } from '../helpers/tokens';
import { makeCerts, type TestCerts } from './tls-certs';

const CHROMIUM = '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];
const haveChromium = existsSync(CHROMIUM);

if (!haveChromium && process.env.CI === 'true') {
  describe('dashboard over HTTPS in Chromium', () => {
    it('needs Chromium in CI', () => {
      throw new Error(`${CHROMIUM} is missing: scripts/ci-deps.sh installs Debian's chromium`);
    });
  });
}

async function waitForText(page: Page, selector: string, text: string, timeout = 15_000): Promise<void> {
  await page.waitForFunction(([sel, t]) => (document.querySelector(sel as string)?.textContent ?? '').includes(t as string), [selector, text], { timeout });
}

describe.skipIf(!haveChromium)(haveChromium ? 'dashboard over HTTPS in headless Chromium' : `dashboard over HTTPS (skipped: ${CHROMIUM} is not installed)`, () => {
  let dir: string;
  let certs: TestCerts;
  let s: TestServer;
  let admin: string;
  const browsers: Browser[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'loki-tls-browser-'));
    certs = await makeCerts(dir);
    s = await startTestServer({ LOKI_ENTERPRISE_AUTH: 'true', LOKI_TLS_CERT: certs.cert, LOKI_TLS_KEY: certs.key });
    admin = (await makeToken(s, 'admin', 'admin')).token;
  });

  afterAll(async () => {
    for (const b of browsers) await b.close().catch(() => {});
    await s?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('the server is on https', () => {
    expect(s.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
  });

  it('without trusting the certificate, Chromium refuses the page', async () => {
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
    browsers.push(browser);
    const context = await browser.newContext({ ignoreHTTPSErrors: false });
    const page = await context.newPage();
    await expect(page.goto(`${s.url}/`)).rejects.toThrow(/ERR_CERT_AUTHORITY_INVALID/);
    await context.close();
  });

  it('trusting the server key by its SPKI hash: the dashboard renders, streams events and creates a token', async () => {
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: [...ARGS, `--ignore-certificate-errors-spki-list=${certs.spki}`] });
    browsers.push(browser);
    const context = await browser.newContext({ ignoreHTTPSErrors: false, viewport: { width: 1400, height: 900 } });
    const page = await context.newPage();
    const pageErrors: string[] = [];
    const failed: string[] = [];
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('requestfailed', (r) => {
      // The event stream is aborted when the tab changes or the page closes.
      if (!r.url().includes('/api/events')) failed.push(`${r.url()} ${r.failure()?.errorText}`);
    });
    const res = await page.goto(`${s.url}/`);
    expect(res?.status()).toBe(200);
    expect(await page.evaluate(() => [location.protocol, window.isSecureContext])).toEqual(['https:', true]);
    // Auth on and no token yet: the API's refusal is shown as text.
    await waitForText(page, '#panel-status', 'a bearer token is required');
    await page.fill('#token', admin);
    await page.click('#token-form button[type=submit]');
    await waitForText(page, '#panel-status', 'Version');
    await waitForText(page, '#auth-state', 'auth on: token set');
    await waitForText(page, '#status-audit', 'Last checkpoint');

    // Events: the live stream (fetch streaming of /api/events) opens over HTTPS.
    await page.click('#tab-events');
    await waitForText(page, '#panel-events', 'open');

    // Tokens: a POST from the page's own https origin passes the CORS check.
    await page.click('#tab-tokens');
    await page.fill('#panel-tokens input[name=name]', 'made over https');
    await page.selectOption('#panel-tokens select[name=role]', 'viewer');
    await page.click('#panel-tokens button[type=submit]');
    await waitForText(page, '#token-secret', 'made over https');
    const secret = await page.$eval('#token-secret input', (n) => (n as HTMLInputElement).value);
    expect(secret).toMatch(/^loki_[A-Za-z0-9]+$/);
    const stored = await s.runtime.deps.store.tokens.list(false);
    expect(stored.map((t) => t.name)).toContain('made over https');

    expect(pageErrors).toEqual([]);
    expect(failed).toEqual([]);
    await context.close();
  });
});

// What the browser scripts share: their environment, a headless chromium
// whose page errors and CSP refusals are collected, and waiting for a text.
//   RALPHD_URL   the page's URL (http://127.0.0.1:PORT/)
//   SHOTS_DIR    where screenshots go (target/)
//   CHROMIUM     the browser binary (default /usr/bin/chromium)
import { chromium } from 'playwright-core';

export const TIMEOUT = 20_000;

export function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} must be set`);
  return value;
}

export function step(words) { console.log(`step: ${words}`); }

/** A browser and a page on `url`; `problems` collects its script errors. */
export async function open(url, viewport = { width: 1280, height: 900 }) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox'],
  });
  const problems = [];
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  // A script error or a Content-Security-Policy refusal is a failure of the page.
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error' && !/Failed to load resource/.test(message.text())) {
      problems.push(`console error: ${message.text()}`);
    }
  });
  page.problems = problems;
  const response = await page.goto(url);
  if (!response.ok()) throw new Error(`GET ${url}: HTTP ${response.status()}`);
  const policy = response.headers()['content-security-policy'] || '';
  if (!policy.includes("script-src 'self'")) throw new Error(`no strict CSP: ${policy}`);
  return { browser, page };
}

/** Waits until the element's text matches `pattern`; fails saying what it shows. */
export async function expectText(page, selector, pattern, what) {
  try {
    await page.waitForFunction(([sel, source]) => {
      const node = document.querySelector(sel);
      return !!node && new RegExp(source).test(node.textContent);
    }, [selector, pattern.source], { timeout: TIMEOUT });
  } catch (error) {
    const seen = await page.locator(selector).first().textContent().catch(() => '(missing)');
    const also = page.problems.length ? `\nthe page also said:\n${page.problems.join('\n')}` : '';
    throw new Error(`${what}: ${selector} never matched ${pattern} (it shows: ${JSON.stringify(seen)})${also}`);
  }
}

/** Fails when the page had a script error or a CSP refusal. */
export function expectNoProblems(page) {
  if (page.problems.length) throw new Error(page.problems.join('\n'));
}

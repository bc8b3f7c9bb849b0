// The web page in a real browser: Debian's chromium, headless, driven by
// playwright-core. Started by tests/it/browser.rs with a running ralphd
// whose fake agent waits in each phase for a gate file this script creates:
//   FAKE_DIR     where the fake agent looks for `gate.<phase>.<call>` and `open`
// and RALPHD_URL, SHOTS_DIR, CHROMIUM as lib.mjs says.
// It prints one line per step and exits non-zero on the first failure.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TIMEOUT, expectNoProblems, expectText, open, required, step } from './lib.mjs';

const url = required('RALPHD_URL');
const fakeDir = required('FAKE_DIR');
const shotsDir = required('SHOTS_DIR');

/** Lets the fake agent's `<phase>` call `n` finish (all of them when phase is 'open'). */
function release(phase, n) {
  writeFileSync(join(fakeDir, phase === 'open' ? 'open' : `gate.${phase}.${n}`), '');
}

step('the page loads during the run, live, in the scan of cycle 1');
const { browser, page } = await open(url);
try {
  await page.evaluate(() => { window.sameDocument = true; });
  await expectText(page, '#link', /^live$/, 'the event stream connects');
  await expectText(page, '#state', /Cycle 1 · scan/, 'the state names the cycle and phase');

  step('the phase changes live when scan ends');
  release('scan', 1);
  await expectText(page, '#state', /Cycle 1 · idea/, 'the page follows the phase change');
  const scanState = await page.locator('#phases li', { hasText: 'scan' }).getAttribute('data-state');
  if (scanState !== 'ok') throw new Error(`scan in the phase strip: ${scanState}`);

  step('agent text shows as text: its HTML is not run');
  release('idea', 1);
  await expectText(page, '#activity', /<img src=x onerror=/, 'the agent text is in the activity');
  const injected = await page.evaluate(() => ({
    images: document.querySelectorAll('#activity img, #activity b').length,
    pwned: window.pwned === true,
  }));
  if (injected.images || injected.pwned) throw new Error(`agent HTML was parsed: ${JSON.stringify(injected)}`);
  await expectText(page, '#activity', /Read.*README\.md/s, 'the tool use is in the activity');

  step('new cycle rows appear live as cycles 1 to 5 end');
  for (const phase of ['code-edit', 'backtest', 'report']) release(phase, 1);
  await page.waitForSelector('#cycles tr[data-cycle="1"]', { timeout: TIMEOUT });
  await expectText(page, '#cycles tr[data-cycle="1"]', /committed.*Add a line to work\.txt/s, 'cycle 1 row');
  for (let n = 2; n <= 5; n += 1) {
    for (const phase of ['scan', 'idea', 'code-edit', 'backtest', 'report']) release(phase, n);
  }
  await page.waitForSelector('#cycles tr[data-cycle="5"]', { timeout: TIMEOUT });
  await expectText(page, '#cycles tr[data-cycle="2"]', /rolled back.*Count the lines/s, 'cycle 2 row');
  await expectText(page, '#state', /Cycle 6 · scan/, 'cycle 6 starts');
  if (!(await page.evaluate(() => window.sameDocument === true))) throw new Error('the page reloaded');

  step("a click on cycle 1 opens its report");
  await page.click('#cycles tr[data-cycle="1"]');
  await expectText(page, '#detail-body .md', /Cycle 1 — Add a line to work\.txt/, 'the report heading');
  await expectText(page, '#detail-body', /Transcripts.*scan/s, 'the transcript links');
  const reportTags = await page.locator('#detail-body .md h2, #detail-body .md li').count();
  if (reportTags < 3) throw new Error(`the report is not rendered as headings and lists (${reportTags})`);
  await expectText(page, '#detail-body .md', /<img src=x onerror=.*<script>/, "the report's HTML as text");
  if (!(await page.locator('#detail-body .md strong', { hasText: 'all good' }).count())) {
    throw new Error("the report's **bold** is not rendered bold");
  }
  const reportInjected = await page.evaluate(() => ({
    nodes: document.querySelectorAll('#detail-body img, #detail-body script').length,
    pwned: window.pwned === true,
  }));
  if (reportInjected.nodes || reportInjected.pwned) throw new Error(`report HTML was parsed: ${JSON.stringify(reportInjected)}`);
  const transcript = await page.locator('#detail-body a', { hasText: 'scan' }).getAttribute('href');
  const lines = await page.evaluate(async (href) => (await (await fetch(href)).text()).trim().split('\n').length, transcript);
  if (lines < 2) throw new Error(`the scan transcript has ${lines} lines`);
  await page.screenshot({ path: join(shotsDir, 'page-cycle.png') });
  await page.click('#detail-close');

  step('Pause: the daemon answers, finishes the scan, and the page shows it paused');
  await page.click('#pause');
  await expectText(page, '#answer', /paus/i, "the daemon's answer");
  release('scan', 6);
  await expectText(page, '#state', /^Paused/, 'the page shows paused');
  await page.waitForFunction(() => document.querySelector('#resume').disabled === false, null, { timeout: TIMEOUT });

  step('screenshots: wide, phone, dark');
  const shot = { fullPage: true, animations: 'disabled' };
  await page.screenshot({ ...shot, path: join(shotsDir, 'page.png') });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.screenshot({ ...shot, path: join(shotsDir, 'page-phone.png') });
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.emulateMedia({ colorScheme: 'dark' });
  await page.screenshot({ ...shot, path: join(shotsDir, 'page-dark.png') });
  await page.emulateMedia({ colorScheme: 'light' });

  step('a reload shows the same: paused, and the activity replayed once');
  await page.reload();
  await expectText(page, '#link', /^live$/, 'the reloaded page is live');
  await expectText(page, '#state', /^Paused/, 'the reloaded page shows paused');
  await expectText(page, '#activity', /Paused on request.*Glob/s, 'the activity is replayed');
  const pausedLines = await page.locator('#activity li', { hasText: 'Paused on request' }).count();
  if (pausedLines !== 1) throw new Error(`the paused event shows ${pausedLines} times after a reload`);
  await expectText(page, '#cycles', /rolled back/, 'the reloaded table');
  await expectText(page, '#link', /^live$/, 'the page is still live');
  await expectText(page, '#budget', /spent|of/, 'the guards show the budget');
  expectNoProblems(page);

  step('Resume and Stop: the run goes on and ends after cycle 6');
  await page.click('#resume');
  await expectText(page, '#answer', /resumed/i, "the daemon's answer to Resume");
  await page.click('#stop');
  await expectText(page, '#stop', /Stop after this cycle\?/, 'Stop asks first');
  await page.click('#stop');
  await expectText(page, '#answer', /stop/i, "the daemon's answer to Stop");
  release('open');
  await expectText(page, '#state', /^Stopped/, 'the page shows the daemon stopped');
  await page.waitForSelector('#cycles tr[data-cycle="6"]', { timeout: TIMEOUT });

  step('done');
} finally {
  await browser.close();
}

// The web page while the loop waits: started by tests/it/browser.rs with a
// ralphd whose rate limiter holds the third phase run back for half an hour.
// The page must say why nothing happens and until when (RALPHD_URL,
// SHOTS_DIR, CHROMIUM as lib.mjs says).
import { join } from 'node:path';
import { expectNoProblems, expectText, open, required, step } from './lib.mjs';

const url = required('RALPHD_URL');
const shotsDir = required('SHOTS_DIR');

step('the page opened during a limiter wait says so, with the time left');
const { browser, page } = await open(url, { width: 390, height: 844 });
try {
  await expectText(page, '#state', /^Waiting · rate limiter · \d+ min \d+ s left$/, 'the state names the wait');
  await expectText(page, '#state-detail', /throttled .* until \d\d:\d\d/, 'the detail says until when');
  await expectText(page, '#limiter', /throttled\s*until \d\d:\d\d/, 'the limiter guard');
  await expectText(page, '#phases', /scan/, 'the phases');
  const done = await page.locator('#phases li[data-state="ok"]').count();
  if (done !== 2) throw new Error(`${done} phases shown done before the wait, not scan and idea`);
  await page.screenshot({ path: join(shotsDir, 'page-waiting.png'), fullPage: true, animations: 'disabled' });
  expectNoProblems(page);
  step('done');
} finally {
  await browser.close();
}

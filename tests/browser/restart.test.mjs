// The web page across a daemon restart on the same address: started by
// tests/it/browser.rs, which restarts the daemon once this script says the
// page is loaded (it writes `loaded` in FAKE_DIR). The page must come back by
// itself, show the new run and every event of the old one, and its Pause must
// work with the new daemon's CSRF token (RALPHD_URL, SHOTS_DIR, CHROMIUM as
// lib.mjs says).
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expectNoProblems, expectText, open, required, step } from './lib.mjs';

const url = required('RALPHD_URL');
const fakeDir = required('FAKE_DIR');

step('the page follows the first daemon in the scan of cycle 1');
const { browser, page } = await open(url);
try {
  await expectText(page, '#link', /^live$/, 'the event stream connects');
  await expectText(page, '#state', /Cycle 1 · scan/, 'the first run');
  writeFileSync(join(fakeDir, 'loaded'), '');

  step('the daemon is restarted: the page comes back by itself on the new run');
  await expectText(page, '#state', /Cycle 2 · scan/, 'the second run, without a reload by hand');
  await expectText(page, '#link', /^live$/, 'the page is live again');
  await expectText(page, '#activity', /stopped \(exit 130\)/, "the first daemon's stop is not missed");
  await expectText(page, '#cycles', /interrupted/, 'the interrupted cycle 1 is in the table');
  const starts = await page.locator('#activity li', { hasText: /ralphd .* started/ }).count();
  if (starts !== 2) throw new Error(`${starts} daemon starts in the activity, not 2`);

  step("Pause works with the new daemon's CSRF token");
  await page.click('#pause');
  await expectText(page, '#answer', /^pausing/, "the new daemon's answer");
  expectNoProblems(page);
  step('done');
} finally {
  await browser.close();
}

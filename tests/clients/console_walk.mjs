// The operator console in a real browser (Debian's Chromium via playwright-core), run by
// tests/web.rs against `segue up`: a listener's key is refused; the POP shows up with its
// numbers; a release scheduled from the form pre-warms every POP to 100 % while the page
// watches; a purge is confirmed by every POP. Prints a JSON summary on the last line.
//
// Environment: SEGUE_CONSOLE (the control plane's URL), SEGUE_CP_TOKEN, SEGUE_LISTENER_KEY,
// SEGUE_CONTENT (content ids, comma-separated), SEGUE_SHOTS, SEGUE_CHROMIUM.
import { readFileSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

const base = process.env.SEGUE_CONSOLE;
const shots = process.env.SEGUE_SHOTS;
const content = process.env.SEGUE_CONTENT.split(',');
const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
const summary = { accessibility: {} };

const browser = await chromium.launch({ executablePath: process.env.SEGUE_CHROMIUM || '/usr/bin/chromium', args: ['--no-sandbox'] });
const page = await (await browser.newContext({ viewport: { width: 1200, height: 800 } })).newPage();
page.on('pageerror', (e) => console.error(`page error: ${e.message}`));

async function audit(name) {
  await page.evaluate(axeSource);
  summary.accessibility[name] = await page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ['violations'] });
    return r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
      .map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
  });
}

async function shot(name) {
  if (!shots) return;
  mkdirSync(shots, { recursive: true });
  await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
}

await page.goto(base);
await audit('sign-in');
// A listener's API key opens nothing here.
await page.getByLabel('Control plane token').fill(process.env.SEGUE_LISTENER_KEY);
await page.getByRole('button', { name: 'Sign in' }).click();
await page.getByText('That token was not accepted.').waitFor();
summary.listener_refused = true;

await page.getByLabel('Control plane token').fill(process.env.SEGUE_CP_TOKEN);
await page.getByRole('button', { name: 'Sign in' }).click();
await page.getByRole('navigation', { name: 'Console' }).waitFor();
await page.locator('#pops tbody tr').first().waitFor();
summary.pops = await page.locator('#pops tbody tr').evaluateAll((rows) => rows.map((r) => ({
  pop: r.dataset.pop, cells: [...r.querySelectorAll('td')].map((td) => td.textContent) })));
await audit('pops');
await shot('console-pops');

// A release from the form: its drop a minute away, pre-warm due at once.
await page.goto(`${base}/#/releases`);
await page.getByLabel('Title').fill('Midnight album');
await page.getByLabel('Content ids (one per line)').fill(content.join('\n'));
const at = new Date(Date.now() + 60 * 60 * 1000);
const local = new Date(at.getTime() - at.getTimezoneOffset() * 60000).toISOString().slice(0, 19);
await page.getByLabel('Release at (your local time)').fill(local);
await page.getByLabel('Pre-warm lead (seconds before the drop)').fill('7200');
await audit('releases');
await page.getByRole('button', { name: 'Schedule release' }).click();
await page.waitForURL(/#\/release\//);
summary.release = page.url().split('/').pop();
// The progress moves live to 100 % on every POP, without reloading the page.
await page.waitForFunction(() => {
  const rows = [...document.querySelectorAll('#prewarm tbody tr')];
  return rows.length > 0 && rows.every((r) => r.dataset.percent === '100');
}, null, { timeout: 60000, polling: 100 });
summary.prewarm = await page.locator('#prewarm tbody tr').evaluateAll((rows) => rows.map((r) => ({
  pop: r.dataset.pop, percent: Number(r.dataset.percent) })));
summary.embargo = await page.locator('[id^="embargo-"]').first().textContent();
await audit('release');
await shot('console-release');

// A purge of one content id, confirmed by every POP.
await page.goto(`${base}/#/purge`);
await page.getByLabel('Purge by').selectOption('content_id');
await page.getByLabel('Value').fill(content[0]);
await page.getByRole('button', { name: 'Purge' }).click();
await page.getByText(/Purge confirmed by all \d+ POPs\./).waitFor({ timeout: 30000 });
summary.purge = await page.locator('#purge-result tbody tr').evaluateAll((rows) => rows.map((r) => ({
  pop: r.dataset.pop, state: r.querySelector('td').textContent })));
await audit('purge');
await shot('console-purge');

await browser.close();
console.log(JSON.stringify(summary));

// The listener web app in a real browser: Debian's Chromium, headless, driven by
// playwright-core. Run by tests/web.rs against `segue up`; throws on a wrong answer and
// prints a JSON summary on the last line (what the Rust test checks against the edge's
// access log and the play counts).
//
// Environment: SEGUE_APP (http://127.0.0.1:PORT), SEGUE_KEY_A and SEGUE_KEY_B (two
// listeners' API keys), SEGUE_USER_B (the second one's user id), SEGUE_SHOTS (where
// screenshots go), SEGUE_CHROMIUM (default /usr/bin/chromium).
import { readFileSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

const app = process.env.SEGUE_APP;
const shots = process.env.SEGUE_SHOTS;
const check = (cond, what) => {
  if (!cond) throw new Error(what);
};
const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
const summary = { accessibility: {} };

const browser = await chromium.launch({
  executablePath: process.env.SEGUE_CHROMIUM || '/usr/bin/chromium',
  args: ['--autoplay-policy=no-user-gesture-required', '--no-sandbox'],
});

async function signIn(key) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 760 } });
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error(`page error: ${e.message}`));
  await page.goto(app);
  await page.getByLabel('API key').fill(key);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('navigation', { name: 'Library' }).waitFor();
  return page;
}

// axe-core's serious and critical findings on the page as it is now.
async function audit(page, name) {
  await page.evaluate(axeSource);
  const found = await page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ['violations'] });
    return r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
      .map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
  });
  summary.accessibility[name] = found;
}

async function shot(page, name) {
  if (!shots) return;
  mkdirSync(shots, { recursive: true });
  await page.screenshot({ path: `${shots}/${name}.png` });
}

const a = await signIn(process.env.SEGUE_KEY_A);
await audit(a, 'signed-in');

// Search as you type: the results come without pressing Enter.
await a.getByLabel('Search artists, albums and tracks').pressSequentially('continuum', { delay: 30 });
await a.waitForURL(/#\/search\/continuum/);
const albumLink = a.getByRole('link', { name: 'Continuum (gapless)' });
await albumLink.waitFor();
await a.locator('ol.tracks li').first().waitFor();
await audit(a, 'search');
await shot(a, 'web-search');

// The album; play it.
await albumLink.click();
await a.getByRole('heading', { level: 1, name: 'Continuum (gapless)' }).waitFor();
await a.locator('ol.tracks li').nth(3).waitFor();
await audit(a, 'album');
const albumTracks = await a.locator('ol.tracks li').evaluateAll((lis) => lis.map((li) => li.dataset.track));
await a.getByRole('button', { name: 'Play album' }).click();
await a.waitForFunction(() => window.segue.player.state().playing && window.segue.player.state().position > 0.3, null, { timeout: 20000 });
const t0 = await a.evaluate(() => window.segue.player.ctx.currentTime);
await a.waitForTimeout(400);
const t1 = await a.evaluate(() => window.segue.player.ctx.currentTime);
check(t1 > t0, `currentTime advances: ${t0} -> ${t1}`);
await shot(a, 'web-album-playing');

// The second track is scheduled at the first one's last sample, and both last exactly
// their sample counts; across the boundary the continuous demo signal has no jump.
await a.waitForFunction(() => window.segue.player.timeline.length >= 2, null, { timeout: 20000 });
summary.gapless = await a.evaluate(async (ids) => {
  const p = window.segue.player;
  const [x, y] = p.timeline;
  const [tx, ty] = await Promise.all([p.loaded.get(ids[0]), p.loaded.get(ids[1])]);
  const expect = (t) => Math.round((t.meta.samples * p.ctx.sampleRate) / t.meta.sample_rate);
  const left = tx.buffer.getChannelData(0);
  const right = ty.buffer.getChannelData(0);
  const steps = (data, from, to) => {
    let m = 0;
    for (let i = from + 1; i < to; i++) m = Math.max(m, Math.abs(data[i] - data[i - 1]));
    return m;
  };
  return {
    tracks: [x.track, y.track],
    first_end: x.startAt + x.frames / x.rate,
    second_start: y.startAt,
    frames: [x.bufferLength, y.bufferLength],
    expected_frames: [expect(tx), expect(ty)],
    rate: p.ctx.sampleRate,
    boundary_step: Math.abs(right[0] - left[left.length - 1]),
    largest_step_before: steps(left, left.length - 2048, left.length),
    largest_step_after: steps(right, 0, 2048),
  };
}, albumTracks);

// The first track plays to its end (its play is reported) and the second carries on.
await a.waitForFunction(() => window.segue.player.state().index === 1, null, { timeout: 20000 });
summary.played_through = await a.evaluate(() => window.segue.player.state().track);

// Seek into a track nothing of which was fetched: the headers and the bytes from the
// seek point, nothing between.
const seekTrack = await a.evaluate(async () => {
  const hits = await window.segue.api.get('/v1/search?q=standalone&types=track');
  return hits.hits[0].id;
});
summary.seek = await a.evaluate(async (id) => {
  const p = window.segue.player;
  const before = p.fetches.length;
  await p.play([id], 0, 1.5);
  const meta = await p.meta(id);
  const table = await p.seekTable(meta);
  return { track: id, fetches: p.fetches.slice(before).filter((f) => f.track === id), header_bytes: table.header_bytes,
    total_bytes: table.total_bytes, entries: table.entries, position: p.state().position };
}, seekTrack);
await a.evaluate(() => window.segue.player.pause());

// A like, from the album page.
await a.goto(`${app}/#/album/${await a.evaluate(async (id) => (await window.segue.api.get(`/v1/tracks/${id}`)).album.id, albumTracks[0])}`);
await a.getByRole('button', { name: 'Like Continuum, part 3' }).click();
await a.waitForFunction(async (id) => (await window.segue.api.get('/v1/me/likes')).likes.includes(id), albumTracks[2]);
summary.liked = albumTracks[2];

// A collaborative playlist: A makes it and invites B; both edit; each sees the other's
// change within a second, and they end on the same list.
await a.goto(`${app}/#/playlists`);
await audit(a, 'playlists');
await a.getByLabel('New playlist').fill('Late night');
await a.getByRole('button', { name: 'Create' }).click();
await a.waitForURL(/#\/playlist\//);
const playlist = a.url().split('/').pop();
await a.evaluate(async ([pl, user]) => window.segue.api.put(`/v1/playlists/${pl}/editors/${user}`), [playlist, process.env.SEGUE_USER_B]);
const b = await signIn(process.env.SEGUE_KEY_B);
await b.goto(`${app}/#/playlist/${playlist}`);
await b.getByRole('heading', { level: 1, name: 'Late night' }).waitFor();
const items = (page) => page.locator('#playlist-items li');
const addBy = async (page, words, title) => {
  await page.getByLabel('Add a track').fill(words);
  await page.getByRole('button', { name: `Add ${title}` }).click();
};
await addBy(a, 'continuum part 1', 'Continuum, part 1');
let since = Date.now();
await b.waitForFunction(() => document.querySelectorAll('#playlist-items li').length === 1, null, { timeout: 15000 });
summary.seen_by_b_ms = Date.now() - since;
await addBy(b, 'standalone', 'Standalone');
since = Date.now();
await a.waitForFunction(() => document.querySelectorAll('#playlist-items li').length === 2, null, { timeout: 15000 });
summary.seen_by_a_ms = Date.now() - since;
// Both edit at once: A moves the second up while B adds a third.
await Promise.all([
  a.getByRole('button', { name: 'Move Standalone up' }).click(),
  addBy(b, 'continuum part 2', 'Continuum, part 2'),
]);
await a.waitForFunction(() => document.querySelectorAll('#playlist-items li').length === 3, null, { timeout: 15000 });
await b.waitForFunction(() => document.querySelectorAll('#playlist-items li').length === 3, null, { timeout: 15000 });
// Both settle on the server's latest version.
const latest = await a.evaluate(async (id) => (await window.segue.api.get(`/v1/playlists/${id}`)).version, playlist);
for (const page of [a, b]) {
  await page.waitForFunction((v) => document.querySelector('#playlist-version')?.textContent === `version ${v}`, latest,
    { timeout: 15000 });
}
const order = (page) => items(page).evaluateAll((lis) => lis.map((li) => li.dataset.track));
summary.playlist = { id: playlist, a: await order(a), b: await order(b) };
await audit(a, 'playlist');
await shot(a, 'web-playlist');
await shot(b, 'web-playlist-second-editor');

await browser.close();
console.log(JSON.stringify(summary));

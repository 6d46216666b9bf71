// The Segue operator console: POPs by region (refreshed every 2 s from their heartbeats),
// releases with a countdown and per-POP pre-warm progress that moves live (server-sent
// events), and purges confirmed POP by POP. Every call carries the control-plane token
// kept in this browser's sessionStorage.

import { followEvents } from './events.js';

const KEY = 'segue.console.token';
const $ = (sel) => document.querySelector(sel);
let token = sessionStorage.getItem(KEY) || '';
let stop = []; // what the current view must stop when another one opens

async function call(method, path, body) {
  const r = await fetch(path, {
    method,
    headers: { Authorization: `Bearer ${token}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) {
    const e = new Error(data.detail || data.error || `${method} ${path}: ${r.status}`);
    e.status = r.status;
    throw e;
  }
  return data;
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (v !== false && v != null) e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) if (c != null) e.append(c instanceof Node ? c : String(c));
  return e;
}

const bytes = (n) => (n >= 1 << 30 ? `${(n / (1 << 30)).toFixed(1)} GiB` : n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB`
  : `${Math.round(n / 1024)} KiB`);
const ago = (ms) => `${Math.max(0, Math.round((Date.now() - ms) / 1000))} s ago`;

function view(title, ...children) {
  stop.forEach((f) => f());
  stop = [];
  $('#view').replaceChildren(...children);
  document.title = `${title} · Segue console`;
}

function every(ms, f) {
  f();
  const t = setInterval(f, ms);
  stop.push(() => clearInterval(t));
}

// A release's or purge's status events, until the view changes or the stream ends.
function follow(path, onStatus) {
  const ctl = new AbortController();
  stop.push(() => ctl.abort());
  followEvents(path, { Authorization: `Bearer ${token}` }, ctl.signal, (name, data) => {
    if (data) onStatus(data);
  }, { again: false });
}

async function showPops() {
  const body = el('div', { id: 'pops', 'aria-live': 'polite' });
  view('POPs', el('h1', {}, 'POPs'), body);
  every(2000, async () => {
    const pops = (await call('GET', '/v1/pops')).pops;
    const regions = [...new Set(pops.map((p) => p.region))].sort();
    body.replaceChildren(...(pops.length ? regions.map((r) => el('section', {},
      el('h2', {}, `Region ${r}`),
      el('table', {},
        el('thead', {}, el('tr', {}, ['POP', 'Health', 'Version', 'Last heartbeat', 'Memory', 'SSD', 'Hit ratio', 'Requests/s', 'Errors/s']
          .map((h) => el('th', { scope: 'col' }, h)))),
        el('tbody', {}, pops.filter((p) => p.region === r).map((p) => el('tr', { 'data-pop': p.id },
          el('th', { scope: 'row' }, p.id),
          el('td', { class: p.healthy ? 'up' : 'down' }, p.healthy ? 'up' : 'down'),
          el('td', {}, p.version), el('td', {}, ago(p.last_seen_ms)),
          el('td', {}, bytes(p.mem_bytes)), el('td', {}, bytes(p.ssd_bytes)),
          el('td', {}, `${(p.hit_ratio * 100).toFixed(1)} %`),
          el('td', {}, p.requests_per_s.toFixed(1)), el('td', {}, p.errors_per_s.toFixed(2)))))))) : [el('p', { class: 'muted' }, 'No POP has registered yet.')]));
  });
}

async function showReleases() {
  const ids = (await call('GET', '/v1/releases')).releases;
  const releases = await Promise.all(ids.map((id) => call('GET', `/v1/releases/${encodeURIComponent(id)}`)));
  const regions = (await call('GET', '/v1/regions')).regions;
  const error = el('p', { role: 'alert', class: 'error' });
  const form = el('form', { class: 'stack', onsubmit: async (e) => {
    e.preventDefault();
    const f = new FormData(form);
    const at = new Date(f.get('release_at'));
    try {
      const r = await call('POST', '/v1/releases', {
        title: f.get('title'),
        content_ids: f.get('content_ids').split(/\s+/).filter(Boolean),
        release_at: at.toISOString().replace(/\.\d+Z$/, 'Z'),
        regions: f.getAll('regions'),
        lead_secs: Number(f.get('lead_secs')),
        schedule: true,
      });
      location.hash = `#/release/${r.id}`;
    } catch (err) {
      error.textContent = err.message;
    }
  } },
  el('label', { for: 'title' }, 'Title'), el('input', { id: 'title', name: 'title', required: true }),
  el('label', { for: 'content_ids' }, 'Content ids (one per line)'),
  el('textarea', { id: 'content_ids', name: 'content_ids', rows: 4, required: true }),
  el('label', { for: 'release_at' }, 'Release at (your local time)'),
  el('input', { id: 'release_at', name: 'release_at', type: 'datetime-local', step: 1, required: true }),
  el('fieldset', {}, el('legend', {}, 'Regions'), regions.map((r) => el('label', {},
    el('input', { type: 'checkbox', name: 'regions', value: r.name, checked: true }), ` ${r.name} `))),
  el('label', { for: 'lead_secs' }, 'Pre-warm lead (seconds before the drop)'),
  el('input', { id: 'lead_secs', name: 'lead_secs', type: 'number', min: 1, value: 3600, required: true }),
  el('button', { type: 'submit' }, 'Schedule release'), error);
  view('Releases', el('h1', {}, 'Releases'),
    el('table', {}, el('thead', {}, el('tr', {}, ['Release', 'State', 'Drops at'].map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, releases.map((r) => el('tr', {},
        el('th', { scope: 'row' }, el('a', { href: `#/release/${r.id}` }, r.title || r.id)),
        el('td', {}, r.state), el('td', {}, r.release_at))))),
    el('h2', {}, 'Schedule a release'), form);
}

async function showRelease(id) {
  const head = el('div');
  const regions = el('div', { 'aria-live': 'polite' });
  const pops = el('div', { id: 'prewarm' });
  view('Release', head, el('h2', {}, 'Regions'), regions, el('h2', {}, 'Pre-warm by POP'), pops);
  let latest = null;
  const countdowns = () => {
    if (!latest) return;
    for (const r of latest.region_status) {
      const cell = document.getElementById(`countdown-${r.region}`);
      if (!cell) continue;
      const left = r.drop_at_ms - Date.now();
      cell.textContent = left > 0 ? `${Math.floor(left / 3600000)}h ${Math.floor((left / 60000) % 60)}m ${Math.floor((left / 1000) % 60)}s`
        : 'released';
      document.getElementById(`embargo-${r.region}`).textContent = left > 0 ? 'embargoed' : 'released';
    }
  };
  every(1000, countdowns);
  follow(`/v1/releases/${encodeURIComponent(id)}/events`, (s) => {
    latest = s;
    head.replaceChildren(el('h1', {}, s.title || s.id), el('p', {}, `${s.state} · drops ${s.release_at} · ${s.objects} objects`));
    regions.replaceChildren(el('table', {},
      el('thead', {}, el('tr', {}, ['Region', 'Drop', 'Countdown', 'Embargo', 'Pre-warm from', 'POPs ready'].map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, s.region_status.map((r) => el('tr', {},
        el('th', { scope: 'row' }, r.region), el('td', {}, r.drop_at),
        el('td', { id: `countdown-${r.region}`, class: 'countdown' }), el('td', { id: `embargo-${r.region}` }),
        el('td', {}, r.prewarm_at), el('td', {}, `${r.pops_done} / ${r.pops}`))))));
    countdowns();
    pops.replaceChildren(s.jobs.length ? el('table', {},
      el('thead', {}, el('tr', {}, ['POP', 'Region', 'State', 'Progress'].map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, s.jobs.map((j) => {
        const pct = j.total > 0 ? Math.round((j.done / j.total) * 100) : (j.state === 'done' ? 100 : 0);
        return el('tr', { 'data-pop': j.pop, 'data-percent': pct },
          el('th', { scope: 'row' }, j.pop), el('td', {}, j.region), el('td', {}, j.state),
          el('td', {}, el('progress', { max: 100, value: pct, 'aria-label': `${j.pop} pre-warm` }), ` ${pct} %`));
      }))) : el('p', { class: 'muted' }, 'Pre-warm starts at the lead time before each drop.'));
  });
}

async function showPurge() {
  const regions = (await call('GET', '/v1/regions')).regions;
  const result = el('div', { id: 'purge-result', 'aria-live': 'polite' });
  const error = el('p', { role: 'alert', class: 'error' });
  const form = el('form', { class: 'stack', onsubmit: async (e) => {
    e.preventDefault();
    const f = new FormData(form);
    const body = { [f.get('kind')]: f.get('value').trim(), soft: f.get('soft') === 'on' };
    if (f.get('region')) body.region = f.get('region');
    try {
      error.textContent = '';
      const p = await call('POST', '/v1/purges', body);
      follow(`/v1/purges/${encodeURIComponent(p.purge.id)}/events`, (s) => result.replaceChildren(
        el('p', {}, s.complete ? `Purge confirmed by all ${s.pops} POPs.` : `${s.pops_done} of ${s.pops} POPs confirmed${s.pops_failed ? `, ${s.pops_failed} failed` : ''}.`),
        el('table', {}, el('thead', {}, el('tr', {}, ['POP', 'State'].map((h) => el('th', { scope: 'col' }, h)))),
          el('tbody', {}, s.jobs.map((j) => el('tr', { 'data-pop': j.pop_id },
            el('th', { scope: 'row' }, j.pop_id), el('td', { class: j.state === 'done' ? 'up' : j.state === 'failed' ? 'down' : '' }, j.state))))),
      ));
    } catch (err) {
      error.textContent = err.message;
    }
  } },
  el('label', { for: 'kind' }, 'Purge by'),
  el('select', { id: 'kind', name: 'kind' }, el('option', { value: 'content_id' }, 'Content id'),
    el('option', { value: 'prefix' }, 'Path prefix'), el('option', { value: 'tag' }, 'Tag')),
  el('label', { for: 'value' }, 'Value'), el('input', { id: 'value', name: 'value', required: true }),
  el('label', { for: 'region' }, 'Region'),
  el('select', { id: 'region', name: 'region' }, el('option', { value: '' }, 'Every region'),
    regions.map((r) => el('option', { value: r.name }, r.name))),
  el('label', {}, el('input', { type: 'checkbox', name: 'soft' }), ' Soft (mark stale, revalidate on next use)'),
  el('button', { type: 'submit' }, 'Purge'), error);
  view('Purge', el('h1', {}, 'Purge'), form, result);
}

async function route() {
  const [, page, arg] = location.hash.split('/');
  try {
    if (page === 'releases') await showReleases();
    else if (page === 'release') await showRelease(decodeURIComponent(arg));
    else if (page === 'purge') await showPurge();
    else await showPops();
  } catch (e) {
    if (e.status === 401) return signOut();
    view('Error', el('h1', {}, 'Something went wrong'), el('p', { role: 'alert' }, e.message));
  }
}

function signOut() {
  sessionStorage.removeItem(KEY);
  location.hash = '';
  location.reload();
}

async function begin() {
  $('#sign-in')?.remove();
  $('#nav').hidden = false;
  window.addEventListener('hashchange', route);
  route();
}

$('#sign-in-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  token = $('#token').value.trim();
  try {
    await call('GET', '/v1/regions');
    sessionStorage.setItem(KEY, token);
    begin();
  } catch {
    $('#sign-in-error').textContent = 'That token was not accepted.';
  }
});
$('#sign-out').addEventListener('click', signOut);
if (token) {
  call('GET', '/v1/regions').then(begin, () => sessionStorage.removeItem(KEY));
}

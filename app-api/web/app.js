// The Segue listener app: search, artists, albums, likes, playlists edited live with
// others, Discover Weekly and radio, and a gapless player (player.js). Plain ES modules
// served by the app API; the API key stays in this browser (localStorage) and goes out
// only as a bearer token to this origin.

import { followEvents } from './events.js';
import { Player } from './player.js';

const KEY = 'segue.key';
const $ = (sel) => document.querySelector(sel);

class Api {
  constructor() {
    this.key = localStorage.getItem(KEY) || '';
  }

  async call(method, path, body) {
    const r = await fetch(path, {
      method,
      headers: { Authorization: `Bearer ${this.key}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await r.text();
    const data = text ? JSON.parse(text) : {};
    if (!r.ok) {
      const e = new Error(data.detail || data.error || `${method} ${path}: ${r.status}`);
      e.status = r.status;
      throw e;
    }
    return data;
  }

  get(path) { return this.call('GET', path); }
  post(path, body) { return this.call('POST', path, body ?? {}); }
  put(path, body) { return this.call('PUT', path, body); }
  del(path) { return this.call('DELETE', path); }
}

const api = new Api();
const tracks = new Map(); // id -> track, as fetched
let likes = new Set();
let live = null; // the open playlist's event stream

const player = new Player(api, showPlayer);
window.segue = { api, player }; // for the console and the browser tests

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (v !== false && v != null) e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) if (c != null) e.append(c instanceof Node ? c : String(c));
  return e;
}

const time = (s) => `${Math.floor(s / 60)}:${String(Math.floor(s % 60)).padStart(2, '0')}`;
const artists = (t) => t.artists.map((a) => a.name).join(', ');

async function track(id) {
  if (!tracks.has(id)) tracks.set(id, await api.get(`/v1/tracks/${encodeURIComponent(id)}`));
  return tracks.get(id);
}

function view(title, ...children) {
  if (live) {
    live.abort();
    live = null;
  }
  const main = $('#view');
  main.replaceChildren(...children);
  document.title = `${title} · Segue`;
  return main;
}

function likeButton(t) {
  const b = el('button', {
    type: 'button', 'aria-pressed': String(likes.has(t.id)), 'aria-label': `Like ${t.title}`,
    onclick: async () => {
      const on = !likes.has(t.id);
      await (on ? api.put(`/v1/me/likes/${t.id}`) : api.del(`/v1/me/likes/${t.id}`));
      on ? likes.add(t.id) : likes.delete(t.id);
      b.setAttribute('aria-pressed', String(on));
      b.textContent = on ? '♥' : '♡';
    },
  }, likes.has(t.id) ? '♥' : '♡');
  return b;
}

// A list of tracks, each playable from there on (the rest is the queue).
function trackList(list, extra = () => []) {
  const ids = list.map((t) => t.id);
  return el('ol', { class: 'tracks' }, list.map((t, i) => el('li', { 'data-track': t.id },
    el('button', { type: 'button', class: 'play', 'aria-label': `Play ${t.title}`, onclick: () => player.play(ids, i) }, '▶'),
    el('span', { class: 'title' }, t.title, el('span', { class: 'muted' }, ` · ${artists(t)}`)),
    el('span', { class: 'muted' }, time(t.duration_ms / 1000)),
    likeButton(t),
    extra(t, i),
  )));
}

async function showSearch(q) {
  const main = view(q ? `“${q}”` : 'Search', el('h1', {}, q ? `Results for “${q}”` : 'Search'));
  if (!q) return;
  const found = await api.get(`/v1/search?q=${encodeURIComponent(q)}`);
  const hits = found.hits ?? [];
  const songs = await Promise.all(hits.filter((h) => h.type === 'track').map((h) => track(h.id)));
  const others = hits.filter((h) => h.type !== 'track');
  main.append(
    el('h2', {}, 'Artists and albums'),
    el('ul', { class: 'hits' }, others.map((h) => el('li', {},
      el('a', { href: `#/${h.type}/${h.id}` }, h.name), el('span', { class: 'muted' }, h.artist ? ` · ${h.artist}` : ` · ${h.type}`)))),
    el('h2', {}, 'Tracks'),
    songs.length ? trackList(songs) : el('p', { class: 'muted' }, 'No tracks match.'),
  );
}

async function showAlbum(id) {
  const a = await api.get(`/v1/albums/${encodeURIComponent(id)}`);
  a.tracks.forEach((t) => tracks.set(t.id, t));
  view(a.title,
    el('div', { class: 'head' },
      cover(a),
      el('div', {}, el('h1', {}, a.title), el('p', {}, el('a', { href: `#/artist/${a.artist.id}` }, a.artist.name)),
        el('button', { type: 'button', onclick: () => player.play(a.tracks.map((t) => t.id), 0) }, 'Play album'))),
    trackList(a.tracks));
}

// The cover as a blob: an <img src> cannot carry the key in a header, and a key in a
// URL would land in logs.
function cover(album) {
  const img = el('img', { class: 'cover', alt: `Cover of ${album.title}` });
  fetch(`/v1/albums/${encodeURIComponent(album.id)}/cover?size=320`, { headers: { Authorization: `Bearer ${api.key}` } })
    .then((r) => (r.ok ? r.blob() : null))
    .then((b) => b && (img.src = URL.createObjectURL(b)));
  return img;
}

async function showArtist(id) {
  const a = await api.get(`/v1/artists/${encodeURIComponent(id)}`);
  view(a.name, el('h1', {}, a.name), el('h2', {}, 'Albums'),
    el('ul', { class: 'hits' }, a.albums.map((al) => el('li', {}, el('a', { href: `#/album/${al.id}` }, al.title)))));
}

async function showLikes() {
  const mine = (await api.get('/v1/me/likes')).likes;
  likes = new Set(mine);
  const list = await Promise.all(mine.map(track));
  view('Likes', el('h1', {}, 'Likes'), list.length ? trackList(list) : el('p', { class: 'muted' }, 'Nothing liked yet.'));
}

async function showPlaylists() {
  const mine = (await api.get('/v1/me/playlists')).playlists;
  const name = el('input', { id: 'new-playlist', required: true, maxlength: 256 });
  view('Playlists', el('h1', {}, 'Playlists'),
    el('ul', { class: 'hits' }, mine.map((p) => el('li', {}, el('a', { href: `#/playlist/${p.id}` }, p.name),
      el('span', { class: 'muted' }, p.collaborative ? ' · collaborative' : '')))),
    el('form', {
      onsubmit: async (e) => {
        e.preventDefault();
        const p = await api.post('/v1/playlists', { name: name.value, collaborative: true });
        location.hash = `#/playlist/${p.id}`;
      },
    }, el('label', { for: 'new-playlist' }, 'New playlist'), ' ', name, ' ', el('button', { type: 'submit' }, 'Create')));
}

async function showPlaylist(id) {
  let p = await api.get(`/v1/playlists/${encodeURIComponent(id)}`);
  const list = el('div', { id: 'playlist-items', 'aria-live': 'polite' });
  const add = el('input', { id: 'add-track', type: 'search', placeholder: 'Find a track to add', autocomplete: 'off' });
  const suggestions = el('ul', { class: 'hits', id: 'add-results' });
  const render = async () => {
    const items = await Promise.all(p.items.map((it) => track(it.track_id)));
    list.replaceChildren(items.length ? trackList(items, (t, i) => [
      el('button', { type: 'button', 'aria-label': `Move ${t.title} up`, disabled: i === 0,
        onclick: () => edit([{ op: 'move', item_id: p.items[i].item_id, index: i - 1 }]) }, '↑'),
      el('button', { type: 'button', 'aria-label': `Remove ${t.title}`,
        onclick: () => edit([{ op: 'remove', item_id: p.items[i].item_id }]) }, '✕'),
    ]) : el('p', { class: 'muted' }, 'Empty: add tracks below.'));
    $('#playlist-version').textContent = `version ${p.version}`;
  };
  const edit = async (ops) => {
    const r = await api.post(`/v1/playlists/${id}/ops`, { version: p.version, ops });
    p = { ...p, version: r.version, items: r.items };
    await render();
  };
  let pending;
  add.addEventListener('input', () => {
    clearTimeout(pending);
    pending = setTimeout(async () => {
      const q = add.value.trim();
      if (!q) return suggestions.replaceChildren();
      const hits = (await api.get(`/v1/search?q=${encodeURIComponent(q)}&types=track`)).hits ?? [];
      suggestions.replaceChildren(...hits.slice(0, 8).map((h) => el('li', {}, el('button', {
        type: 'button', onclick: () => edit([{ op: 'add', track_id: h.id, index: p.items.length }]),
      }, `Add ${h.name}`), el('span', { class: 'muted' }, ` · ${h.artist}`))));
    }, 200);
  });
  view(p.name, el('h1', {}, p.name), el('p', { class: 'muted', id: 'playlist-version' }),
    el('p', {}, el('button', { type: 'button', onclick: () => player.play(p.items.map((i) => i.track_id), 0) }, 'Play'), ' ',
      el('button', { type: 'button', onclick: async () => {
        const s = await api.post(`/v1/playlists/${id}/shuffle?smart=true`);
        player.play((s.tracks ?? s.items).map((x) => x.track_id), 0);
      } }, 'Smart shuffle')),
    list, el('label', { for: 'add-track' }, 'Add a track'), ' ', add, suggestions);
  await render();
  follow(id, async (version) => {
    if (version === p.version) return;
    p = await api.get(`/v1/playlists/${encodeURIComponent(id)}`);
    await render();
  });
}

// The playlist's server-sent events, followed until the view changes or the playlist
// is gone.
function follow(id, onVersion) {
  const ctl = new AbortController();
  live = ctl;
  const url = `/v1/playlists/${encodeURIComponent(id)}/events`;
  followEvents(url, { Authorization: `Bearer ${api.key}` }, ctl.signal, async (name, data) => {
    if (name === 'gone') return false;
    if (name === 'version' && data) await onVersion(data.version);
    return true;
  }, { again: true });
}

async function showDiscover() {
  const main = view('Discover', el('h1', {}, 'Discover Weekly'));
  try {
    const dw = await api.get('/v1/me/discover-weekly');
    const list = await Promise.all(dw.tracks.map((t) => track(t.track_id)));
    main.append(list.length ? trackList(list, (t) => el('a', { href: `#/radio/${t.id}` }, 'Radio'))
      : el('p', { class: 'muted' }, 'Listen a little more: your mix comes with your plays.'));
  } catch (e) {
    main.append(el('p', { class: 'muted' }, `No recommendations yet (${e.message}).`));
  }
}

async function showRadio(id) {
  const seed = await track(id);
  const main = view(`${seed.title} radio`, el('h1', {}, `Radio: ${seed.title}`));
  try {
    const r = await api.get(`/v1/tracks/${encodeURIComponent(id)}/radio`);
    main.append(trackList(await Promise.all(r.tracks.map((t) => track(t.track_id)))));
  } catch (e) {
    main.append(el('p', { class: 'muted' }, `No radio for this track yet (${e.message}).`));
  }
}

function showPlayer(st) {
  $('#player').hidden = false;
  const t = tracks.get(st.track);
  $('#now-title').textContent = t ? `${t.title} · ${artists(t)}` : st.track ?? 'Nothing playing';
  if (st.status !== undefined) $('#now-status').textContent = st.status;
  $('#toggle').textContent = st.playing ? 'Pause' : 'Play';
  $('#time').textContent = `${time(st.position)} / ${time(st.duration)}`;
  const pos = $('#position');
  if (document.activeElement !== pos && st.duration > 0) pos.value = String(Math.round((st.position / st.duration) * 1000));
}

async function route() {
  const [, page, arg] = location.hash.split('/');
  try {
    if (page === 'album') await showAlbum(arg);
    else if (page === 'artist') await showArtist(arg);
    else if (page === 'likes') await showLikes();
    else if (page === 'playlists') await showPlaylists();
    else if (page === 'playlist') await showPlaylist(arg);
    else if (page === 'radio') await showRadio(arg);
    else if (page === 'search') await showSearch(decodeURIComponent(arg ?? ''));
    else await showDiscover();
  } catch (e) {
    if (e.status === 401) return signOut();
    view('Error', el('h1', {}, 'Something went wrong'), el('p', { role: 'alert' }, e.message));
  }
}

function signedIn(on) {
  $('#search-form').hidden = !on;
  $('#nav').hidden = !on;
}

function signOut() {
  localStorage.removeItem(KEY);
  api.key = '';
  player.pause();
  location.hash = '';
  location.reload();
}

async function start() {
  const signIn = $('#sign-in');
  $('#sign-in-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    api.key = $('#api-key').value.trim();
    try {
      await api.get('/v1/me');
      localStorage.setItem(KEY, api.key);
      begin();
    } catch {
      $('#sign-in-error').textContent = 'That key was not accepted.';
    }
  });
  const begin = async () => {
    signIn.remove();
    signedIn(true);
    likes = new Set((await api.get('/v1/me/likes')).likes);
    window.addEventListener('hashchange', route);
    route();
  };
  let pending;
  $('#q').addEventListener('input', (e) => {
    clearTimeout(pending);
    pending = setTimeout(() => (location.hash = `#/search/${encodeURIComponent(e.target.value.trim())}`), 200);
  });
  $('#search-form').addEventListener('submit', (e) => e.preventDefault());
  $('#sign-out').addEventListener('click', signOut);
  $('#toggle').addEventListener('click', () => (player.playing ? player.pause() : player.resume()));
  $('#next').addEventListener('click', () => player.next());
  $('#prev').addEventListener('click', () => player.previous());
  $('#position').addEventListener('change', (e) => {
    const st = player.state();
    player.seek((Number(e.target.value) / 1000) * st.duration);
  });
  document.addEventListener('keydown', (e) => {
    if (e.key === ' ' && !['INPUT', 'BUTTON', 'TEXTAREA'].includes(document.activeElement?.tagName)) {
      e.preventDefault();
      player.playing ? player.pause() : player.resume();
    }
  });
  if (api.key) {
    try {
      await api.get('/v1/me');
      return begin();
    } catch {
      localStorage.removeItem(KEY);
    }
  }
  signedIn(false);
}

start();

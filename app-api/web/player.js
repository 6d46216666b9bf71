// Gapless playback straight from the edge.
//
// Each track's Ogg Vorbis object is fetched from its signed edge URL in 256 KiB ranges,
// decoded by the browser (decodeAudioData), cut to the track's exact sample count (the
// stream answer's `samples`: the granule positions already exclude encoder delay and
// padding), and scheduled on one AudioContext so the next track's first sample starts
// exactly where the previous one's last sample ends. The next track's first range is
// fetched 30 s before the end of the current one, the rest right after, so the handover
// needs no network. A seek into audio not yet fetched uses the seek table: the Vorbis
// headers plus the bytes from the last seek point before the target, nothing between.

const CHUNK = 256 * 1024;
const PREFETCH_AT = 30; // seconds before the end
const START_DELAY = 0.15; // seconds: time to start the first source cleanly
const OUTBOX = 'segue.outbox';

export class Player {
  constructor(api, onChange = () => {}) {
    this.api = api;
    this.onChange = onChange;
    this.ctx = null;
    this.gain = null;
    this.queue = [];
    this.index = -1;
    this.loaded = new Map(); // track id -> Promise<{meta, buffer, firstSample}>
    this.sources = []; // scheduled: {index, node, startAt, from, frames, rate}
    this.timeline = []; // every scheduled source, for the curious (and the tests)
    this.playing = false;
    this.pausedAt = null; // {index, seconds}
    this.current = null; // the play being listened to: {index, started_ms, heard_from}
    this.fetches = []; // {track, start, end} of every range asked of the edge
    this.timer = null;
    this.flushOutbox();
  }

  context(rate) {
    if (!this.ctx) {
      this.ctx = new AudioContext({ sampleRate: rate, latencyHint: 'playback' });
      this.gain = this.ctx.createGain();
      this.gain.connect(this.ctx.destination);
    }
    return this.ctx;
  }

  async meta(trackId) {
    return this.api.get(`/v1/tracks/${encodeURIComponent(trackId)}/stream?tier=high`);
  }

  // Bytes [start, end] of the object, from the URL or, failing that, the fallback POP.
  async range(meta, trackId, start, end) {
    const urls = [meta.url, meta.fallback_url].filter(Boolean);
    let last;
    for (const url of urls) {
      try {
        this.fetches.push({ track: trackId, start, end });
        const r = await fetch(url, { headers: { Range: `bytes=${start}-${end}` } });
        if (r.status === 206 || r.status === 200) {
          const size = (r.headers.get('Content-Range') || '').split('/')[1];
          if (size && size !== '*') meta._total = Number(size);
          const body = new Uint8Array(await r.arrayBuffer());
          if (r.status === 200) meta._total = body.length;
          // A 200 is the whole object: keep the part asked for.
          return r.status === 200 ? body.subarray(start, end + 1) : body;
        }
        if (r.status === 416) return new Uint8Array(0);
        last = new Error(`${url}: ${r.status}`);
      } catch (e) {
        last = e;
      }
    }
    throw last;
  }

  // The whole object in CHUNK ranges: the first one (fetched first, alone: the prefetch)
  // tells the size in its Content-Range.
  async whole(meta, trackId) {
    const head = await this.range(meta, trackId, 0, CHUNK - 1);
    const total = meta._total ?? head.length;
    const parts = [head];
    const asks = [];
    for (let at = head.length; at < total; at += CHUNK) {
      asks.push(this.range(meta, trackId, at, Math.min(at + CHUNK, total) - 1));
    }
    parts.push(...(await Promise.all(asks)));
    return concat(parts);
  }

  async seekTable(meta) {
    if (!meta._table) {
      const r = await fetch(meta.seek_table_url);
      if (!r.ok) throw new Error(`seek table: ${r.status}`);
      meta._table = await r.json();
    }
    return meta._table;
  }

  // Decode and cut to the exact length (in the context's rate).
  async decode(meta, bytes, fromSample = 0) {
    const ctx = this.context(meta.sample_rate);
    const decoded = await ctx.decodeAudioData(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
    const exact = Math.round(((meta.samples - fromSample) * ctx.sampleRate) / meta.sample_rate);
    if (decoded.length <= exact) return decoded;
    const out = ctx.createBuffer(decoded.numberOfChannels, exact, ctx.sampleRate);
    for (let c = 0; c < decoded.numberOfChannels; c++) {
      out.copyToChannel(decoded.getChannelData(c).subarray(0, exact), c);
    }
    return out;
  }

  load(trackId) {
    if (!this.loaded.has(trackId)) {
      const p = (async () => {
        const meta = await this.meta(trackId);
        const buffer = await this.decode(meta, await this.whole(meta, trackId));
        return { meta, buffer, firstSample: 0 };
      })();
      p.catch(() => this.loaded.delete(trackId));
      this.loaded.set(trackId, p);
    }
    return this.loaded.get(trackId);
  }

  // The next track: its first range 30 s before the end of this one, then the rest.
  prefetch(index) {
    const id = this.queue[index];
    if (id) this.load(id);
  }

  // Start `queue` at `index`, `seconds` in.
  async play(queue, index = 0, seconds = 0) {
    const sameTrack = this.current && this.current.track === queue[index];
    // Another track: what was playing was skipped. A seek in this one is the same play.
    if (this.current && !sameTrack) this.endPlay(true);
    this.stopSources();
    this.queue = queue.slice();
    this.index = index;
    this.pausedAt = null;
    const id = this.queue[index];
    this.status('Loading…');
    const track = seconds > 0 && !(await this.isLoaded(id)) ? await this.loadFrom(id, seconds) : await this.load(id);
    const ctx = this.context(track.meta.sample_rate);
    await ctx.resume();
    const rate = ctx.sampleRate;
    const startAt = Math.ceil((ctx.currentTime + START_DELAY) * rate) / rate;
    const offset = Math.max(0, seconds - track.firstSample / track.meta.sample_rate);
    this.schedule(index, track.buffer, startAt, offset, track.meta, track.firstSample);
    this.playing = true;
    if (!this.current) this.beginPlay(index, seconds, track.meta);
    this.tick();
    this.status('');
  }

  async isLoaded(id) {
    if (!this.loaded.has(id)) return false;
    try {
      await Promise.race([this.loaded.get(id), new Promise((_, no) => setTimeout(no, 0))]);
      return true;
    } catch {
      return false;
    }
  }

  // A seek target not fetched yet: headers + the bytes from the seek point before it.
  async loadFrom(id, seconds) {
    const meta = await this.meta(id);
    const table = await this.seekTable(meta);
    const target = Math.floor(seconds * meta.sample_rate);
    // One Vorbis block of overlap before the target (see the seek table's docs).
    let entry = table.entries[0];
    for (const e of table.entries) if (e.granule + 2048 <= target) entry = e;
    const head = await this.range(meta, id, 0, table.header_bytes - 1);
    const tail = await this.range(meta, id, entry.offset, table.total_bytes - 1);
    const buffer = await this.decode(meta, concat([head, tail]), entry.granule);
    return { meta, buffer, firstSample: entry.granule };
  }

  // `firstSample`: where in the track the buffer begins (a buffer decoded from a seek point).
  schedule(index, buffer, startAt, offset, meta, firstSample = 0) {
    const node = this.ctx.createBufferSource();
    node.buffer = buffer;
    node.connect(this.gain);
    node.start(startAt, offset);
    const rate = this.ctx.sampleRate;
    const frames = buffer.length - Math.round(offset * rate);
    const base = meta ? firstSample / meta.sample_rate : 0;
    const s = { index, node, startAt, from: offset, base, frames, rate, meta, track: this.queue[index] };
    this.sources.push(s);
    this.timeline.push({ track: s.track, startAt, offset, frames, rate, bufferLength: buffer.length });
    node.onended = () => {
      this.sources = this.sources.filter((x) => x !== s);
      if (this.playing && this.sources.length === 0) this.finished();
    };
    return s;
  }

  // Every 250 ms: prefetch, schedule the next track when it is decoded, report plays.
  tick() {
    clearInterval(this.timer);
    this.timer = setInterval(() => this.step(), 250);
    this.step();
  }

  step() {
    if (!this.playing || !this.ctx) return;
    const now = this.ctx.currentTime;
    const cur = this.sources.find((s) => s.startAt <= now && now < s.startAt + s.frames / s.rate) ?? this.sources[0];
    if (!cur) return;
    if (cur.index !== this.index) {
      this.endPlay(false);
      this.index = cur.index;
      this.beginPlay(cur.index, 0, cur.meta);
    }
    const last = this.sources[this.sources.length - 1];
    const left = last.startAt + last.frames / last.rate - now;
    const next = last.index + 1;
    if (next < this.queue.length && left <= PREFETCH_AT) {
      const id = this.queue[next];
      if (!this.loaded.has(id)) this.prefetch(next);
      if (!last.nextScheduled) {
        last.nextScheduled = true;
        this.loaded.get(id).then((t) => {
          if (!this.playing || !this.sources.includes(last)) return;
          // The first sample of the next track right after the last of this one.
          this.schedule(next, t.buffer, last.startAt + last.frames / last.rate, 0, t.meta);
        }, () => (last.nextScheduled = false));
      }
    }
    this.onChange(this.state());
  }

  state() {
    const now = this.ctx ? this.ctx.currentTime : 0;
    const cur = this.sources.find((s) => s.startAt <= now && now < s.startAt + s.frames / s.rate) ?? this.sources[0];
    const id = this.queue[this.index];
    let position = this.pausedAt ? this.pausedAt.seconds : 0;
    let duration = 0;
    if (cur) {
      const end = cur.base + cur.from + cur.frames / cur.rate;
      position = Math.min(end, cur.base + cur.from + Math.max(0, now - cur.startAt));
      duration = cur.meta ? cur.meta.samples / cur.meta.sample_rate : end;
    }
    return { track: id, index: this.index, playing: this.playing, position, duration };
  }

  stopSources() {
    for (const s of this.sources) {
      s.node.onended = null;
      try { s.node.stop(); } catch { /* never started */ }
    }
    this.sources = [];
  }

  pause() {
    if (!this.playing) return;
    const st = this.state();
    this.endPlay(false);
    this.playing = false;
    this.stopSources();
    this.pausedAt = { index: this.index, seconds: st.position };
    this.onChange(this.state());
  }

  resume() {
    if (this.playing || !this.pausedAt) return;
    return this.play(this.queue, this.pausedAt.index, this.pausedAt.seconds);
  }

  seek(seconds) {
    if (this.index < 0) return;
    return this.play(this.queue, this.index, Math.max(0, seconds));
  }

  next() {
    if (this.index + 1 < this.queue.length) {
      return this.play(this.queue, this.index + 1);
    }
  }

  previous() {
    if (this.index > 0) {
      return this.play(this.queue, this.index - 1);
    }
  }

  finished() {
    this.endPlay(false);
    const next = this.index + 1;
    if (next < this.queue.length) {
      // The next track was not ready in time (a slow network): a gap, then it plays.
      this.play(this.queue, next);
      return;
    }
    this.playing = false;
    clearInterval(this.timer);
    this.onChange(this.state());
  }

  status(text) {
    this.onChange({ ...this.state(), status: text });
  }

  // Plays: one event per listen, its id made here so a retry is the same event.
  beginPlay(index, seconds, meta) {
    this.current = {
      index, meta, track: this.queue[index], started_ms: Date.now() - Math.round(seconds * 1000), heard_from: Date.now(),
    };
  }

  endPlay(skipped) {
    const c = this.current;
    this.current = null;
    if (!c) return;
    const meta = c.meta;
    const heard = Date.now() - c.heard_from;
    if (!meta || heard < 1000) return;
    this.report({
      event_id: crypto.randomUUID(), track: c.track, started_ms: c.started_ms,
      ms_played: Math.min(heard, meta.duration_ms), tier: meta.tier, device: 'web', skipped, session: meta.session,
    });
  }

  report(event) {
    const box = JSON.parse(localStorage.getItem(OUTBOX) || '[]');
    box.push(event);
    localStorage.setItem(OUTBOX, JSON.stringify(box.slice(-500)));
    return this.flushOutbox();
  }

  async flushOutbox() {
    const box = JSON.parse(localStorage.getItem(OUTBOX) || '[]');
    if (!box.length || !this.api.key) return;
    try {
      const r = await this.api.post('/v1/play-events', { sent_ms: Date.now(), events: box });
      // Every event has its answer (accepted, duplicate, conflict or rejected): settled.
      const done = new Set(r.results.map((x) => x.event_id));
      const left = JSON.parse(localStorage.getItem(OUTBOX) || '[]').filter((e) => !done.has(e.event_id));
      localStorage.setItem(OUTBOX, JSON.stringify(left));
    } catch {
      // Offline or the server is down: the events wait for the next report.
    }
  }
}

function concat(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

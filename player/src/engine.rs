//! The playback engine: two decks. Deck A plays; deck B loads the next track ahead of
//! the boundary, starting from the bytes prefetched for it. Each deck decodes as its
//! bytes arrive, so a track starts playing after its first pages, not after its last.
//! At the boundary the engine joins them gaplessly (A's last sample, then B's first),
//! or crossfades over `crossfade_ms` with an equal-power ramp. When paced like a sound
//! device and B is not ready in time (a stalled fetch), A fades to silence over
//! `underrun_fade_ms` instead of cutting, and B starts as soon as it is ready.
//!
//! Output goes to a sink as interleaved 16-bit PCM, in chunks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::task::JoinHandle;

use segue_core::Tier;

use crate::adapt::{Chooser, TierChange};
use crate::api::{AppApi, Catalog};
use crate::cache::Cache;
use crate::deck::{Deck, Head, Source};
use crate::fetch::Fetcher;
use crate::output::{Output, Pacer};
use crate::Error;

#[derive(Debug, Clone)]
pub struct Options {
    pub tier: String,
    pub country: Option<String>,
    /// Crossfade length at each boundary; 0: gapless.
    pub crossfade_ms: u32,
    /// When this much of the current track is left, the first `prefetch_bytes` of the
    /// next `prefetch_tracks` tracks are fetched.
    pub prefetch_lead_ms: u32,
    /// The lead on a poor network: fetches slower than `poor_below_kbps`, or the session
    /// has rebuffered or underrun.
    pub poor_prefetch_lead_ms: u32,
    /// A network is poor below this throughput, kbit/s; 0: twice the tier's bitrate.
    pub poor_below_kbps: u32,
    pub prefetch_tracks: usize,
    pub prefetch_bytes: u64,
    /// When this much is left, deck B starts loading the next track.
    pub decode_ahead_ms: u32,
    /// Fade to silence over this long when the next track is not ready at the boundary.
    pub underrun_fade_ms: u32,
    /// Decoded audio a paced deck must hold before it starts (or restarts after running
    /// dry mid-track).
    pub start_buffer_ms: u32,
    /// Pace output like a sound device at this speed (1.0 = real time); `None`: as fast
    /// as the audio arrives (a render; the boundary then waits for B, never underruns).
    pub speed: Option<f64>,
    /// Start the first track this far in (a seek through its seek table).
    pub start_ms: u64,
    /// Skip to the next track after this long in each (a listener pressing next).
    pub skip_after_ms: Option<u32>,
    /// In each track, after the first value's milliseconds of it, seek to the second's
    /// (a listener scrubbing; skipped for tracks shorter than the target).
    pub seek: Option<(u32, u32)>,
    /// Stop after this much audio in all (a preview).
    pub duration_ms: Option<u64>,
    /// Keep connections to each POP alive between requests.
    pub keep_alive: bool,
    /// Choose each next track's tier from the measured bandwidth (never above `tier`);
    /// false: every track at `tier`.
    pub adaptive_tier: bool,
    /// A tier is sustained when the estimate is at least this many times its bitrate.
    pub tier_margin: f64,
    /// How to reach https:// POPs.
    pub tls: Option<crate::fetch::Tls>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tier: "high".into(),
            country: None,
            crossfade_ms: 0,
            prefetch_lead_ms: 30_000,
            poor_prefetch_lead_ms: 45_000,
            poor_below_kbps: 0,
            prefetch_tracks: 3,
            prefetch_bytes: 256 << 10,
            decode_ahead_ms: 10_000,
            underrun_fade_ms: 500,
            start_buffer_ms: 250,
            speed: None,
            start_ms: 0,
            skip_after_ms: None,
            seek: None,
            duration_ms: None,
            keep_alive: true,
            adaptive_tier: true,
            tier_margin: 1.5,
            tls: None,
        }
    }
}

/// What a session did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub tracks: usize,
    pub frames: u64,
    pub sample_rate: u32,
    pub channels: u16,
    pub time_to_first_audio_ms: f64,
    /// Bytes fetched (stream table and audio) when the first audio played.
    pub bytes_before_first_audio: u64,
    pub bytes_fetched: u64,
    /// Bytes of encrypted audio decrypted (offline only).
    pub bytes_decrypted: u64,
    pub failovers: u64,
    /// Connections opened to POPs (with keep-alive, fewer than requests).
    pub connections: u64,
    /// Boundaries where the next track was not ready, and the silence that filled them
    /// (with any mid-track rebuffering).
    pub underruns: u64,
    pub silence_frames: u64,
    /// Times the playing track ran dry mid-track (paced only) and waited in silence.
    pub rebuffers: u64,
    /// Samples per channel of a track left unplayed or repeated at the boundaries (0:
    /// gapless).
    pub gap_samples: u64,
    /// Fetch throughput seen, kbit/s, and whether it sustains the tier.
    pub bandwidth_kbps: f64,
    pub warnings: Vec<String>,
    /// Per skip: from the skip to the next track's first audio, milliseconds.
    pub skip_latency_ms: Vec<f64>,
    /// Per seek: from the seek to the first audio at the target, milliseconds.
    pub seek_latency_ms: Vec<f64>,
    /// Per track followed by another: how much of it was left when the next one's head
    /// was prefetched, milliseconds (the lead: longer on a poor network).
    pub prefetch_leads_ms: Vec<f64>,
    /// Tracks whose prefetch started early because the network looked poor.
    pub poor_network_prefetches: u64,
    /// Requests served from the on-device cache instead of the edge, their bytes, and
    /// objects this session added to it.
    pub from_cache: u64,
    pub bytes_from_cache: u64,
    pub cached: u64,
    /// The tier each track played at, in order, and each change with its reason.
    pub tiers: Vec<Tier>,
    pub tier_changes: Vec<TierChange>,
    pub seconds: f64,
}

/// One track as the listener heard it: what a play event reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Played {
    pub track: String,
    /// When its first audio was played, by this device's clock (Unix ms).
    pub started_ms: i64,
    /// Audio of it played, milliseconds (a seek start or a skip makes it shorter).
    pub ms_played: i64,
    /// The listener moved on before its end.
    pub skipped: bool,
    /// The stream session it was fetched in.
    pub session: Option<String>,
    /// The tier it played at.
    pub tier: String,
}

/// Told of each play as it ends (to put it in the outbox before anything else happens).
pub type OnPlay = Arc<dyn Fn(Played) + Send + Sync>;

pub struct Engine {
    src: Source,
    opts: Options,
    on_play: Option<OnPlay>,
    tiers: Chooser,
}

/// Prefetched heads by queue position, with the tier each was asked at.
type Prefetched = HashMap<usize, (Tier, JoinHandle<Option<Head>>)>;

/// The track playing now, for its play event.
struct Listening {
    track: usize,
    started_ms: Option<i64>,
    frames: u64,
}

impl Listening {
    fn new(track: usize) -> Listening {
        Listening { track, started_ms: None, frames: 0 }
    }

    /// `frames` more of it were played.
    fn heard(&mut self, frames: u64) {
        if frames > 0 && self.started_ms.is_none() {
            let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
            self.started_ms = Some(now.as_millis() as i64);
        }
        self.frames += frames;
    }

    fn end(self, tracks: &[String], deck: &Deck, rate: u32, skipped: bool, ears: &Ears) {
        let Some(started_ms) = self.started_ms else { return };
        let ms_played = (self.frames * 1000 / u64::from(rate.max(1))) as i64;
        // A favourite is a track heard, not one skipped in its first half minute.
        if let (Some(cache), Some(url)) = (ears.cache, &deck.url) {
            if !skipped || ms_played >= 30_000 {
                cache.played(url);
            }
        }
        if let Some(f) = ears.on_play {
            f(Played {
                track: tracks[self.track].clone(),
                started_ms,
                ms_played,
                skipped,
                session: deck.session.clone(),
                tier: deck.tier.clone(),
            });
        }
    }
}

/// Who hears of each play as it ends: the app (its play event) and the cache (its count).
struct Ears<'a> {
    on_play: Option<&'a OnPlay>,
    cache: Option<&'a Cache>,
}

impl Engine {
    pub fn new(api: AppApi, opts: Options) -> Engine {
        Engine::with(Catalog::Online(api), Fetcher::with_timeout(Duration::from_secs(30)), opts)
    }

    /// An engine that plays from an offline library: no network at all.
    pub fn offline(library: Arc<crate::library::Library>, opts: Options) -> Engine {
        let mut fetcher = Fetcher::default();
        fetcher.library = Some(library.clone());
        Engine::with(Catalog::Offline(library), fetcher, opts)
    }

    fn with(catalog: Catalog, mut fetcher: Fetcher, opts: Options) -> Engine {
        fetcher.keep_alive = opts.keep_alive;
        fetcher.tls = opts.tls.clone();
        let wanted = opts.tier.parse::<Tier>().unwrap_or(Tier::High);
        let tiers = Chooser { wanted, adaptive: opts.adaptive_tier, margin: opts.tier_margin };
        let src = Source { catalog, fetcher, tier: wanted.to_string(), country: opts.country.clone() };
        Engine { src, opts, on_play: None, tiers }
    }

    /// Keep the most-played tracks in `cache`, and play what it holds from there.
    pub fn cache(mut self, cache: Arc<Cache>) -> Engine {
        self.src.fetcher.cache = Some(cache);
        self
    }

    /// Play tracks licensed offline in `library` from the device, online too.
    pub fn library(mut self, library: Arc<crate::library::Library>) -> Engine {
        if let Catalog::Online(api) = &self.src.catalog {
            self.src.catalog = Catalog::Device(api.clone(), library.clone());
        }
        self.src.fetcher.library = Some(library);
        self
    }

    /// Call `f` with each play as it ends.
    pub fn on_play(mut self, f: OnPlay) -> Engine {
        self.on_play = Some(f);
        self
    }

    /// Whether the network looks poor: fetches so far ran below `poor_below_kbps` (default
    /// twice the tier's bitrate), or this session has rebuffered or run out at a boundary.
    fn poor_network(&self, stats: &Stats, fetcher: &Fetcher) -> bool {
        let below = match self.opts.poor_below_kbps {
            0 => f64::from(self.tiers.wanted.kbps()) * 2.0,
            k => f64::from(k),
        };
        let kbps = fetcher.estimate_kbps().unwrap_or(0.0);
        stats.rebuffers + stats.underruns > 0 || (kbps > 0.0 && kbps < below)
    }

    /// The source for a track at `tier`.
    fn at(&self, tier: Tier) -> Source {
        Source { tier: tier.to_string(), ..self.src.clone() }
    }

    /// Fetch the first `prefetch_bytes` of `track` in the background, at the tier the
    /// network sustains now.
    fn prefetch(&self, track: &str) -> (Tier, JoinHandle<Option<Head>>) {
        let tier = self.tiers.choose(self.src.fetcher.estimate_kbps());
        let (src, track, bytes) = (self.at(tier), track.to_owned(), self.opts.prefetch_bytes);
        (
            tier,
            tokio::spawn(async move {
                let info = src.catalog.stream(&track, &src.tier, src.country.as_deref()).await.ok()?;
                let head = src.fetcher.get(&info.url, info.fallback_url.as_deref(), Some((0, bytes - 1))).await.ok()?;
                Some((info, head))
            }),
        )
    }

    /// Start loading queue position `k` on a deck at the tier the network sustains now
    /// (from its prefetched head when that was asked at the same tier), converted to
    /// `format`; a tier other than the last track's is noted with its reason.
    fn open(
        &self,
        tracks: &[String],
        k: usize,
        prefetched: &mut Prefetched,
        start_ms: u64,
        format: Option<(u32, u16)>,
        stats: &mut Stats,
    ) -> Deck {
        let kbps = self.src.fetcher.estimate_kbps();
        let tier = self.tiers.choose(kbps);
        let head = match prefetched.remove(&k) {
            Some((t, head)) if t == tier => Some(head),
            Some((_, head)) => {
                head.abort();
                None
            }
            None => None,
        };
        if let Some(&last) = stats.tiers.last().filter(|l| **l != tier) {
            let change = self.tiers.change(k, &tracks[k], last, tier, kbps.unwrap_or(0.0));
            tracing::info!(track = %tracks[k], from = %last, to = %tier, reason = %change.reason, "tier changed");
            stats.tier_changes.push(change);
        }
        stats.tiers.push(tier);
        Deck::open(&self.at(tier), &tracks[k], head, start_ms, format)
    }

    /// Play `tracks` in order into `sink`.
    pub async fn play(&self, tracks: &[String], sink: impl FnMut(&[i16])) -> Result<Stats, Error> {
        let started = Instant::now();
        let fetcher = &self.src.fetcher;
        if tracks.is_empty() {
            return Ok(Stats::default());
        }
        let mut prefetched = Prefetched::new();
        let mut stats = Stats { tracks: tracks.len(), ..Stats::default() };
        let mut current = self.open(tracks, 0, &mut prefetched, self.opts.start_ms, None, &mut stats);
        current.want(1).await?;
        let (rate, channels) = current.format.unwrap_or((44_100, 2));
        let format = Some((rate, channels));
        let ms = |m: u32| u64::from(m) * u64::from(rate) / 1000;
        let ch = usize::from(channels.max(1));
        let mut out = Output {
            clock: Pacer::new(self.opts.speed, rate),
            sink,
            stats: Stats { sample_rate: rate, channels, ..stats },
            channels: ch,
            chunk: (rate as usize / 50).max(1),
            start_buffer: ms(self.opts.start_buffer_ms),
            limit: self.opts.duration_ms.map_or(u64::MAX, |d| d.saturating_mul(u64::from(rate)) / 1000),
        };
        let chunk = out.chunk as u64;
        let crossfade = ms(self.opts.crossfade_ms);
        let fade = ms(self.opts.underrun_fade_ms);
        // What deck B must hold before the boundary joins it.
        let b_needs = crossfade.max(out.start_buffer);
        let mut pos = 0u64; // frames of `current` already played
        let mut next: Option<Deck> = None;
        let mut index = 0usize;
        let mut first_audio = true;
        // The track a seek was made in (one per track).
        let mut seeked: Option<usize> = None;
        let mut heard = Listening::new(0);
        let ears = Ears { on_play: self.on_play.as_ref(), cache: fetcher.cache.as_deref() };
        while !out.done() {
            let total = current.total;
            let left = total - pos;
            let has_next = index + 1 < tracks.len();
            // Prefetch the heads of the next tracks (earlier on a poor network), then start
            // deck B on the next one.
            // The estimate is only asked for once a prefetch could be due (it sorts its
            // samples; this loop runs every 20 ms of audio).
            let poor = left <= ms(self.opts.poor_prefetch_lead_ms) && self.poor_network(&out.stats, fetcher);
            let lead = if poor {
                self.opts.poor_prefetch_lead_ms.max(self.opts.prefetch_lead_ms)
            } else {
                self.opts.prefetch_lead_ms
            };
            if has_next && left <= ms(lead) && !prefetched.contains_key(&(index + 1)) && next.is_none() {
                out.stats.prefetch_leads_ms.push(left as f64 * 1000.0 / f64::from(rate));
                if poor && left > ms(self.opts.prefetch_lead_ms) {
                    out.stats.poor_network_prefetches += 1;
                }
            }
            if left <= ms(lead) {
                for (k, track) in tracks.iter().enumerate().skip(index + 1).take(self.opts.prefetch_tracks) {
                    if !prefetched.contains_key(&k) && (k != index + 1 || next.is_none()) {
                        prefetched.insert(k, self.prefetch(track));
                    }
                }
            }
            if next.is_none() && has_next && left <= ms(self.opts.decode_ahead_ms).max(crossfade + fade) {
                next = Some(self.open(tracks, index + 1, &mut prefetched, 0, format, &mut out.stats));
            }
            if let Some((at, to)) = self.opts.seek.filter(|_| seeked != Some(index)) {
                if pos >= ms(at) && ms(to) < total {
                    // Seek within the track: a deck from the seek table's entry before the
                    // target, at the tier the track is playing at, reusing the stream
                    // answer, seek table and header pages the playing deck has.
                    seeked = Some(index);
                    let asked = Instant::now();
                    let tier = current.tier.parse::<Tier>().unwrap_or(self.tiers.wanted);
                    let mut deck = current.seek(&self.at(tier), u64::from(to), format);
                    deck.want_as(chunk, (rate, channels)).await?;
                    out.stats.seek_latency_ms.push(asked.elapsed().as_secs_f64() * 1000.0);
                    current = deck;
                    pos = 0;
                    continue;
                }
            }
            let skip_at = self.opts.skip_after_ms.map(ms).filter(|_| has_next);
            if skip_at.is_some_and(|s| pos >= s.min(total)) {
                // Skip: deck B if it is loading already, else a load from the prefetched head.
                let asked = Instant::now();
                let mut deck = match next.take() {
                    Some(deck) => deck,
                    None => self.open(tracks, index + 1, &mut prefetched, 0, format, &mut out.stats),
                };
                deck.want_as(chunk, (rate, channels)).await?;
                out.stats.skip_latency_ms.push(asked.elapsed().as_secs_f64() * 1000.0);
                std::mem::replace(&mut heard, Listening::new(index + 1)).end(tracks, &current, rate, true, &ears);
                current = deck;
                pos = 0;
                index += 1;
                continue;
            }
            // The boundary region: the last `crossfade` frames (crossfade), or the last
            // `fade` frames when paced (where an underrun must start fading).
            let boundary = if crossfade > 0 {
                crossfade
            } else if out.clock.paced() {
                fade
            } else {
                0
            };
            if has_next && left <= boundary.min(total) {
                out.fill(&mut current, total).await?;
                let mut deck = next.take().ok_or_else(|| Error::Decode("the next track was never started".into()))?;
                let tail = &current.samples[pos as usize * ch..total as usize * ch];
                if out.clock.paced() && !deck.ready(b_needs) {
                    // Underrun: fade A out over what is left of it, then silence until B.
                    out.stats.underruns += 1;
                    let mut faded = tail.to_vec();
                    let n = left as usize;
                    for f in 0..n {
                        let g = ((n - f) as f64 / n.max(1) as f64).powi(2) as f32;
                        for s in &mut faded[f * ch..(f + 1) * ch] {
                            *s = (f32::from(*s) * g) as i16;
                        }
                    }
                    let before = out.stats.frames;
                    out.emit(&faded).await;
                    heard.heard(out.stats.frames - before);
                    out.silence_until(&mut deck, b_needs).await;
                    deck.want_as(b_needs, (rate, channels)).await?;
                    pos = 0;
                } else if crossfade > 0 {
                    // Equal power: gains cos and sin of a quarter turn across the fade.
                    deck.want_as(left, (rate, channels)).await?;
                    let n = left.min(deck.total) as usize;
                    let mut mixed = vec![0i16; n * ch];
                    for f in 0..n {
                        let theta = std::f64::consts::FRAC_PI_2 * (f as f64 + 0.5) / n as f64;
                        let (ga, gb) = (theta.cos(), theta.sin());
                        for c in 0..ch {
                            let a = f64::from(tail[f * ch + c]);
                            let b = f64::from(deck.samples[f * ch + c]);
                            mixed[f * ch + c] = (a * ga + b * gb).round().clamp(-32768.0, 32767.0) as i16;
                        }
                    }
                    let before = out.stats.frames;
                    out.emit(&mixed).await;
                    // The fade is the end of this track and the start of the next: both heard.
                    let faded = out.stats.frames - before;
                    heard.heard(faded);
                    std::mem::replace(&mut heard, Listening::new(index + 1)).end(tracks, &current, rate, false, &ears);
                    heard.heard(faded);
                    out.stats.gap_samples += left - n as u64;
                    pos = n as u64;
                } else {
                    deck.want_as(b_needs, (rate, channels)).await?;
                    let before = out.stats.frames;
                    out.emit(tail).await;
                    heard.heard(out.stats.frames - before);
                    pos = 0;
                }
                if heard.track == index {
                    std::mem::replace(&mut heard, Listening::new(index + 1)).end(tracks, &current, rate, false, &ears);
                }
                current = deck;
                index += 1;
                continue;
            }
            if left == 0 {
                break;
            }
            // Play up to a chunk, stopping at the boundary region.
            let mut until = if has_next { total - boundary.min(total) } else { total };
            if let Some(s) = skip_at {
                until = until.min(s);
            }
            let end = (pos + chunk).min(until.max(pos + 1)).min(total);
            out.fill(&mut current, end).await?;
            if first_audio {
                first_audio = false;
                out.stats.time_to_first_audio_ms = started.elapsed().as_secs_f64() * 1000.0;
                out.stats.bytes_before_first_audio = fetcher.bytes();
            }
            let before = out.stats.frames;
            out.emit(&current.samples[pos as usize * ch..end as usize * ch]).await;
            heard.heard(out.stats.frames - before);
            pos = end;
        }
        heard.end(tracks, &current, rate, false, &ears);
        for (_, (_, p)) in prefetched {
            p.abort();
        }
        let mut stats = out.stats;
        stats.bytes_fetched = fetcher.bytes();
        if let Some(library) = &fetcher.library {
            stats.bytes_decrypted = library.decrypted();
            stats.warnings.extend(library.warnings());
        }
        if let Some(cache) = &fetcher.cache {
            cache.settle().await;
            (stats.from_cache, stats.bytes_from_cache, stats.cached) = cache.counts();
        }
        stats.failovers = fetcher.failovers();
        stats.connections = fetcher.connections();
        stats.bandwidth_kbps = fetcher.kbps();
        let need = f64::from(self.tiers.wanted.kbps());
        if !self.tiers.adaptive && stats.bandwidth_kbps > 0.0 && stats.bandwidth_kbps < need * 1.2 {
            stats.warnings.push(format!(
                "fetches ran at {:.0} kbit/s, too slow to sustain the {} tier ({need:.0} kbit/s): choose a lower tier",
                stats.bandwidth_kbps, self.opts.tier
            ));
        }
        stats.seconds = started.elapsed().as_secs_f64();
        Ok(stats)
    }
}

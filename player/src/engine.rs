//! The playback engine: two decks. Deck A plays; deck B fetches and decodes the next
//! track ahead of the boundary, starting from the bytes prefetched for it. At the
//! boundary the engine joins them gaplessly (A's last sample, then B's first), or
//! crossfades over `crossfade_ms` with an equal-power ramp. When paced like a sound
//! device and B is not ready in time (a stalled fetch), A fades to silence over
//! `underrun_fade_ms` instead of cutting, and B starts as soon as it is ready.
//!
//! Output goes to a sink as interleaved 16-bit PCM, in chunks.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::api::{AppApi, StreamInfo};
use crate::decode::{decode, Pcm};
use crate::fetch::Fetcher;
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
    pub prefetch_tracks: usize,
    pub prefetch_bytes: u64,
    /// When this much is left, deck B loads (fetches the rest, decodes) the next track.
    pub decode_ahead_ms: u32,
    /// Fade to silence over this long when the next track is not ready at the boundary.
    pub underrun_fade_ms: u32,
    /// Pace output like a sound device at this speed (1.0 = real time); `None`: as fast
    /// as the audio arrives (a render; the boundary then waits for B, never underruns).
    pub speed: Option<f64>,
    /// Start the first track this far in (a seek through its seek table).
    pub start_ms: u64,
    /// Skip to the next track after this long in each (a listener pressing next).
    pub skip_after_ms: Option<u32>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tier: "high".into(),
            country: None,
            crossfade_ms: 0,
            prefetch_lead_ms: 30_000,
            prefetch_tracks: 3,
            prefetch_bytes: 256 << 10,
            decode_ahead_ms: 10_000,
            underrun_fade_ms: 500,
            speed: None,
            start_ms: 0,
            skip_after_ms: None,
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
    pub bytes_fetched: u64,
    pub failovers: u64,
    /// Boundaries where the next track was not ready, and the silence that filled them.
    pub underruns: u64,
    pub silence_frames: u64,
    /// Samples per channel missing or extra at the boundaries (0: gapless).
    pub gap_samples: u64,
    /// Fetch throughput seen, kbit/s, and whether it sustains the tier.
    pub bandwidth_kbps: f64,
    pub warnings: Vec<String>,
    /// Per skip: from the skip to the next track's first audio, milliseconds.
    pub skip_latency_ms: Vec<f64>,
    pub seconds: f64,
}

/// Nominal kbit/s of a tier name.
fn tier_kbps(tier: &str) -> f64 {
    tier.parse::<segue_core::Tier>().map_or(0.0, |t| f64::from(t.kbps()))
}

struct Loaded {
    pcm: Pcm,
    /// Exact samples per channel (the seek table's).
    total: u64,
}

/// Fetch the seek table and the audio (from a prefetched head when there is one), and
/// decode it trimmed to the exact samples; from `start_ms` in through the seek table.
async fn load(fetcher: Fetcher, info: StreamInfo, head: Option<Bytes>, start_ms: u64) -> Result<Loaded, Error> {
    let table_bytes = fetcher.get(&info.seek_table_url, info.seek_table_fallback().as_deref(), None).await?;
    let table = segue_core::seek_table::SeekTable::from_json(&table_bytes)
        .map_err(|e| Error::Decode(format!("{}: {e}", info.track_id)))?;
    let start = start_ms * u64::from(table.sample_rate) / 1000;
    if start > 0 {
        let pcm = crate::render::seek(&fetcher, &info, &table, start).await?;
        return Ok(Loaded { total: table.total_samples - start, pcm });
    }
    let fallback = info.fallback_url.as_deref();
    let audio = match head {
        Some(head) if (head.len() as u64) < table.total_bytes => {
            let rest = fetcher.get(&info.url, fallback, Some((head.len() as u64, table.total_bytes - 1))).await?;
            let mut all = head.to_vec();
            all.extend_from_slice(&rest);
            Bytes::from(all)
        }
        Some(head) => head,
        None => fetcher.get(&info.url, fallback, None).await?,
    };
    let pcm = decode(&audio, table.total_samples).map_err(|e| Error::Decode(format!("{}: {e}", info.track_id)))?;
    Ok(Loaded { pcm, total: table.total_samples })
}

pub struct Engine {
    api: AppApi,
    fetcher: Fetcher,
    opts: Options,
}

impl Engine {
    pub fn new(api: AppApi, opts: Options) -> Engine {
        Engine { api, fetcher: Fetcher::with_timeout(Duration::from_secs(30)), opts }
    }

    async fn info(&self, track: &str) -> Result<StreamInfo, Error> {
        self.api.stream(track, &self.opts.tier, self.opts.country.as_deref()).await
    }

    /// Deck B: load `track`, starting from its prefetched head when there is one.
    async fn start_load(
        &self,
        track: &str,
        head: Option<JoinHandle<Option<Bytes>>>,
    ) -> Result<JoinHandle<Result<Loaded, Error>>, Error> {
        let info = self.info(track).await?;
        let fetcher = self.fetcher.clone();
        Ok(tokio::spawn(async move {
            let head = match head {
                Some(h) => h.await.ok().flatten(),
                None => None,
            };
            load(fetcher, info, head, 0).await
        }))
    }

    /// Play `tracks` in order into `sink`.
    pub async fn play(&self, tracks: &[String], mut sink: impl FnMut(&[i16])) -> Result<Stats, Error> {
        let started = Instant::now();
        let mut stats = Stats { tracks: tracks.len(), ..Stats::default() };
        if tracks.is_empty() {
            return Ok(stats);
        }
        let mut prefetched: HashMap<usize, JoinHandle<Option<Bytes>>> = HashMap::new();
        let first = self.info(&tracks[0]).await?;
        let mut current = load(self.fetcher.clone(), first, None, self.opts.start_ms).await?;
        stats.time_to_first_audio_ms = started.elapsed().as_secs_f64() * 1000.0;
        let (rate, channels) = (current.pcm.sample_rate, current.pcm.channels);
        (stats.sample_rate, stats.channels) = (rate, channels);
        let ch = usize::from(channels.max(1));
        let ms = |m: u32| u64::from(m) * u64::from(rate) / 1000;
        let crossfade = ms(self.opts.crossfade_ms);
        let fade = ms(self.opts.underrun_fade_ms);
        let chunk = (rate as usize / 50).max(1); // 20 ms
        let mut clock = Pacer::new(self.opts.speed, rate);
        let mut pos = 0u64; // frames of `current` already played
        let mut next: Option<JoinHandle<Result<Loaded, Error>>> = None;
        let mut index = 0usize;
        loop {
            let total = current.pcm.frames();
            let left = total - pos;
            // Prefetch the heads of the next tracks, then start deck B on the next one.
            if left <= ms(self.opts.prefetch_lead_ms) {
                for (k, track) in tracks.iter().enumerate().skip(index + 1).take(self.opts.prefetch_tracks) {
                    if !prefetched.contains_key(&k) && (k != index + 1 || next.is_none()) {
                        let (api, fetcher, opts, track) =
                            (self.api.clone(), self.fetcher.clone(), self.opts.clone(), track.clone());
                        let bytes = opts.prefetch_bytes;
                        prefetched.insert(
                            k,
                            tokio::spawn(async move {
                                let info = api.stream(&track, &opts.tier, opts.country.as_deref()).await.ok()?;
                                fetcher.get(&info.url, info.fallback_url.as_deref(), Some((0, bytes - 1))).await.ok()
                            }),
                        );
                    }
                }
            }
            if next.is_none() && index + 1 < tracks.len() && left <= ms(self.opts.decode_ahead_ms).max(crossfade + fade)
            {
                let head = prefetched.remove(&(index + 1));
                next = Some(self.start_load(&tracks[index + 1], head).await?);
            }
            let has_next = index + 1 < tracks.len();
            let skip_at = self.opts.skip_after_ms.map(ms).filter(|_| has_next);
            if skip_at.is_some_and(|s| pos >= s.min(total)) {
                // Skip: deck B if it is loading already, else a load from the prefetched head.
                let asked = Instant::now();
                let deck = match next.take() {
                    Some(d) => d,
                    None => {
                        let head = prefetched.remove(&(index + 1));
                        self.start_load(&tracks[index + 1], head).await?
                    }
                };
                let b = join(deck).await?;
                if (b.pcm.sample_rate, b.pcm.channels) != (rate, channels) {
                    return Err(Error::Decode(format!("{}: a queue plays at one format", tracks[index + 1])));
                }
                stats.skip_latency_ms.push(asked.elapsed().as_secs_f64() * 1000.0);
                current = b;
                pos = 0;
                index += 1;
                continue;
            }
            // The boundary region: the last `crossfade` frames (crossfade), or the last
            // `fade` frames when paced (where an underrun must start fading).
            let boundary = if crossfade > 0 {
                crossfade
            } else if clock.paced() {
                fade
            } else {
                0
            };
            if has_next && left <= boundary.min(total) {
                let ready = next.as_ref().is_some_and(|n| n.is_finished()) || !clock.paced();
                let deck = next.take();
                if !ready {
                    // Underrun: fade A out over what is left of it, then silence until B.
                    stats.underruns += 1;
                    let tail = &current.pcm.samples[pos as usize * ch..];
                    let mut out = tail.to_vec();
                    let n = left as usize;
                    for f in 0..n {
                        let g = ((n - f) as f64 / n.max(1) as f64).powi(2) as f32;
                        for c in 0..ch {
                            out[f * ch + c] = (f32::from(out[f * ch + c]) * g) as i16;
                        }
                    }
                    clock.emit(&out, ch, &mut sink).await;
                    stats.frames += left;
                    let deck = deck.ok_or_else(|| Error::Decode("the next track was never started".into()))?;
                    let silence = vec![0i16; chunk * ch];
                    while !deck.is_finished() {
                        clock.emit(&silence, ch, &mut sink).await;
                        stats.silence_frames += chunk as u64;
                        stats.frames += chunk as u64;
                    }
                    current = join(deck).await?;
                    pos = 0;
                } else {
                    let deck = deck.ok_or_else(|| Error::Decode("the next track was never started".into()))?;
                    let b = join(deck).await?;
                    if (b.pcm.sample_rate, b.pcm.channels) != (rate, channels) {
                        return Err(Error::Decode(format!(
                            "{}: {} Hz x{} after {rate} Hz x{channels}: a queue plays at one format",
                            tracks[index + 1],
                            b.pcm.sample_rate,
                            b.pcm.channels
                        )));
                    }
                    stats.gap_samples += b.pcm.frames().abs_diff(b.total);
                    if crossfade > 0 {
                        // Equal power: gains cos and sin of a quarter turn across the fade.
                        let n = left.min(b.pcm.frames()) as usize;
                        let mut out = vec![0i16; n * ch];
                        for f in 0..n {
                            let theta = std::f64::consts::FRAC_PI_2 * (f as f64 + 0.5) / n as f64;
                            let (ga, gb) = (theta.cos(), theta.sin());
                            for c in 0..ch {
                                let a = f64::from(current.pcm.samples[(pos as usize + f) * ch + c]);
                                let bv = f64::from(b.pcm.samples[f * ch + c]);
                                out[f * ch + c] = (a * ga + bv * gb).round().clamp(-32768.0, 32767.0) as i16;
                            }
                        }
                        clock.emit(&out, ch, &mut sink).await;
                        stats.frames += n as u64;
                        current = b;
                        pos = n as u64;
                    } else {
                        let rest = &current.pcm.samples[pos as usize * ch..];
                        clock.emit(rest, ch, &mut sink).await;
                        stats.frames += left;
                        current = b;
                        pos = 0;
                    }
                }
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
            let end = (pos + chunk as u64).min(until.max(pos + 1)).min(total);
            clock.emit(&current.pcm.samples[pos as usize * ch..end as usize * ch], ch, &mut sink).await;
            stats.frames += end - pos;
            pos = end;
        }
        for (_, p) in prefetched {
            p.abort();
        }
        let secs = started.elapsed().as_secs_f64();
        stats.bytes_fetched = self.fetcher.bytes();
        stats.failovers = self.fetcher.failovers();
        stats.bandwidth_kbps = self.fetcher.kbps();
        let need = tier_kbps(&self.opts.tier);
        if stats.bandwidth_kbps > 0.0 && stats.bandwidth_kbps < need * 1.2 {
            stats.warnings.push(format!(
                "fetches ran at {:.0} kbit/s, too slow to sustain the {} tier ({need:.0} kbit/s): choose a lower tier",
                stats.bandwidth_kbps, self.opts.tier
            ));
        }
        stats.seconds = secs;
        Ok(stats)
    }
}

async fn join(deck: JoinHandle<Result<Loaded, Error>>) -> Result<Loaded, Error> {
    deck.await.map_err(|e| Error::Decode(format!("the next track's loader failed: {e}")))?
}

/// Paces output like a sound device consuming `rate` frames a second (times `speed`).
struct Pacer {
    speed: Option<f64>,
    rate: u32,
    start: Instant,
    frames: u64,
}

impl Pacer {
    fn new(speed: Option<f64>, rate: u32) -> Pacer {
        Pacer { speed: speed.filter(|s| *s > 0.0), rate, start: Instant::now(), frames: 0 }
    }

    fn paced(&self) -> bool {
        self.speed.is_some()
    }

    async fn emit(&mut self, samples: &[i16], ch: usize, sink: &mut impl FnMut(&[i16])) {
        sink(samples);
        self.frames += (samples.len() / ch.max(1)) as u64;
        if let Some(speed) = self.speed {
            let due = Duration::from_secs_f64(self.frames as f64 / f64::from(self.rate) / speed);
            if let Some(wait) = due.checked_sub(self.start.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
}

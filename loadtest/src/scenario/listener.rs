//! A simulated listener: what the real player does on the network, without decoding.
//!
//! Per track: ask the app API for a stream URL (a POP of the listener's region and a
//! fallback), fetch the first 256 KiB, then sequential ranges as a playhead moving at
//! `speed` times real time drains a buffer (a stall is a rebuffer); 30 s before the end,
//! the next track's stream URL and first 256 KiB (the player's prefetch); a skip at a
//! random point for a quarter of tracks, a seek for one in twenty; at the end, a play
//! event to the app API (which counts it as a play when 30 s or more were heard). A
//! range that fails goes to the fallback POP from the byte it needs; when both fail the
//! listener asks the app API again (it hands out POPs the control plane knows healthy).
//!
//! The playhead runs on audio time; play events carry a device clock that advances by
//! the audio heard, so plays at speed 4 do not overlap (the app API refuses those).

use crate::now_ms;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use segue_core::client::{Connection, Connector, Protocol};
use segue_player::api::{AppApi, StreamInfo};
use serde::Serialize;

use super::watch::{Sample, Watch};

/// The player's first request of a track, and each range after it.
pub const CHUNK: u64 = 256 << 10;
/// Prefetch the next track this long before the end (audio time).
const PREFETCH_LEAD_MS: f64 = 30_000.0;
/// Fetch more when less than this much audio is buffered ahead of the playhead.
const LOW_WATER_MS: f64 = 10_000.0;
/// Skips and seeks per track (rates measured on streaming services: about a quarter of
/// plays are skipped; seeks are rare).
const SKIP_RATE: f64 = 0.25;
const SEEK_RATE: f64 = 0.05;
/// Kept-alive connections unused this long are closed.
const IDLE: Duration = Duration::from_secs(10);
/// How a request that got no response head at all fails.
const NO_HEAD: &str = "no response";
/// A response head or body chunk may take this long.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The tracks listeners choose from, by Zipf popularity (first most popular).
#[derive(Debug, Clone)]
pub struct Catalog {
    ids: Vec<String>,
    cdf: Vec<f64>,
}

impl Catalog {
    pub fn new(ids: Vec<String>, zipf: f64) -> Catalog {
        let cdf = crate::zipf_cdf(ids.len(), zipf);
        Catalog { ids, cdf }
    }

    /// Track ids, most popular first.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    fn pick(&self, rng: &mut SmallRng) -> String {
        let u: f64 = rng.random();
        let i = self.cdf.partition_point(|&c| c < u).min(self.ids.len().saturating_sub(1));
        self.ids[i].clone()
    }
}

/// What a listener did, summed over listeners.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ListenerStats {
    pub tracks: u64,
    pub skips: u64,
    pub seeks: u64,
    pub prefetches: u64,
    pub plays_reported: u64,
    pub plays_accepted: u64,
    /// Plays with 30 s or more heard (the app API counts those).
    pub plays_30s: u64,
    pub stream_requests: u64,
    pub stream_errors: u64,
    pub ranges: u64,
    /// Ranges no POP could serve (after the fallback and asking the app API again): a
    /// track the listener could not finish.
    pub errors: u64,
    /// Range requests that failed on one POP and went to the other.
    pub failovers: u64,
    /// Times both POPs failed and the listener asked the app API for new URLs.
    pub reasked: u64,
    pub rebuffers: u64,
    pub rebuffer_ms: f64,
    pub bytes: u64,
    pub hit_ratio: f64,
    /// Every range's time to first byte.
    pub ttfb_ms: crate::Percentiles,
    /// The first range of each track: what a listener waits for after pressing play.
    pub first_range_ms: crate::Percentiles,
    pub stream_api_ms: crate::Percentiles,
    /// Ranges answered by each POP.
    pub per_pop: std::collections::BTreeMap<String, u64>,
    /// Why ranges failed, and how often.
    pub range_failures: std::collections::BTreeMap<String, u64>,
    /// Why the app API did not accept play events, and how often.
    pub play_refusals: std::collections::BTreeMap<String, u64>,
}

impl ListenerStats {
    fn add(&mut self, o: &ListenerStats) {
        self.tracks += o.tracks;
        self.skips += o.skips;
        self.seeks += o.seeks;
        self.prefetches += o.prefetches;
        self.plays_reported += o.plays_reported;
        self.plays_accepted += o.plays_accepted;
        self.plays_30s += o.plays_30s;
        self.stream_requests += o.stream_requests;
        self.stream_errors += o.stream_errors;
        self.errors += o.errors;
        self.failovers += o.failovers;
        self.reasked += o.reasked;
        self.rebuffers += o.rebuffers;
        self.rebuffer_ms += o.rebuffer_ms;
        for (k, v) in &o.play_refusals {
            *self.play_refusals.entry(k.clone()).or_insert(0) += v;
        }
    }

    /// Sum the listeners' counters; range figures come from the watch's samples since
    /// `from` (seconds).
    pub fn sum(each: &[ListenerStats], api_ms: Vec<f64>, watch: &Watch, from: f64) -> ListenerStats {
        let mut s = ListenerStats::default();
        for e in each {
            s.add(e);
        }
        let samples = watch.samples();
        let here: Vec<&Sample> = samples.iter().filter(|x| x.t >= from).collect();
        s.ranges = here.len() as u64;
        let ok: Vec<&&Sample> = here.iter().filter(|x| x.ok).collect();
        s.bytes = ok.iter().map(|x| x.bytes).sum();
        s.hit_ratio = ok.iter().filter(|x| x.hit).count() as f64 / ok.len().max(1) as f64;
        s.ttfb_ms = super::watch::ttfb(&here);
        let firsts: Vec<&Sample> = here.iter().filter(|x| x.first).copied().collect();
        s.first_range_ms = super::watch::ttfb(&firsts);
        s.stream_api_ms = crate::Percentiles::of(api_ms.into_iter().map(|m| (m * 1000.0) as u64).collect());
        for x in &ok {
            *s.per_pop.entry(x.pop.clone()).or_insert(0) += 1;
        }
        for x in here.iter().filter(|x| !x.ok) {
            *s.range_failures.entry(x.error.clone()).or_insert(0) += 1;
        }
        s
    }
}

/// A track ready to play: its stream answer and the bytes of its first range.
struct Ready {
    info: StreamInfo,
    size: u64,
    have: u64,
}

pub struct Listener {
    pub name: String,
    api: AppApi,
    tier: String,
    speed: f64,
    rng: SmallRng,
    watch: Arc<Watch>,
    /// Kept-alive connections by POP, with when each was last used.
    conns: HashMap<String, (Connection, Instant)>,
    /// The device's clock for play events, Unix ms (advances by the audio heard).
    clock_ms: i64,
    pub stats: ListenerStats,
    /// Stream API latencies, ms.
    pub api_ms: Vec<f64>,
}

/// `http://host:port` and the path with its query.
fn split(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("http://")?;
    let at = rest.find('/')?;
    Some((&url[..7 + at], &rest[at..]))
}

impl Listener {
    pub fn new(
        name: String,
        app_api: &str,
        key: &str,
        tier: &str,
        speed: f64,
        seed: u64,
        watch: Arc<Watch>,
    ) -> Listener {
        let mut rng = SmallRng::seed_from_u64(seed);
        // Plays start on a clock some hours back, so a run's plays all lie in the past.
        let clock_ms = now_ms() - 6 * 3_600_000 - rng.random_range(0..3_600_000);
        Listener {
            name,
            api: AppApi::new(app_api, key),
            tier: tier.to_owned(),
            speed,
            rng,
            watch,
            conns: HashMap::new(),
            clock_ms,
            stats: ListenerStats::default(),
            api_ms: Vec::new(),
        }
    }

    /// Play tracks from `catalog` until `until`.
    pub async fn session(&mut self, catalog: &Catalog, until: Instant) {
        let mut next: Option<(String, Option<Ready>)> = None;
        while Instant::now() < until {
            let (track, ready) = next.take().unwrap_or_else(|| (catalog.pick(&mut self.rng), None));
            next = self.play(&track, ready, catalog, until).await;
            if next.is_none() && Instant::now() < until {
                // Nothing could be played: wait a little before pressing play again.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    /// Stream answer and first range of `track`.
    async fn start(&mut self, track: &str, first: bool) -> Option<Ready> {
        let info = self.stream(track).await?;
        let got = self.range(&info, 0, CHUNK - 1, first).await?;
        Some(Ready { info, size: got.1, have: got.0 })
    }

    async fn stream(&mut self, track: &str) -> Option<StreamInfo> {
        self.stats.stream_requests += 1;
        let t = Instant::now();
        match self.api.stream(track, &self.tier, None).await {
            Ok(info) => {
                self.api_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                Some(info)
            }
            Err(e) => {
                tracing::debug!(listener = self.name, error = %e, "stream request failed");
                self.stats.stream_errors += 1;
                None
            }
        }
    }

    /// Bytes `first..=last`: the primary POP, then the fallback, then new URLs from the app
    /// API. Returns the bytes got and the object's size.
    async fn range(&mut self, info: &StreamInfo, first: u64, last: u64, is_first: bool) -> Option<(u64, u64)> {
        let mut urls = vec![info.url.clone()];
        urls.extend(info.fallback_url.clone());
        for (i, url) in urls.iter().enumerate() {
            if let Some(got) = self.get(url, first, last, is_first).await {
                return Some(got);
            }
            if i + 1 < urls.len() {
                self.stats.failovers += 1;
            }
        }
        // Both POPs failed: the app API knows which are healthy now.
        self.stats.reasked += 1;
        let fresh = self.stream(&info.track_id).await?;
        if let Some(got) = self.get(&fresh.url, first, last, is_first).await {
            return Some(got);
        }
        if let Some(fb) = &fresh.fallback_url {
            self.stats.failovers += 1;
            if let Some(got) = self.get(fb, first, last, is_first).await {
                return Some(got);
            }
        }
        self.stats.errors += 1;
        None
    }

    /// One range request, recorded in the watch.
    async fn get(&mut self, url: &str, first: u64, last: u64, is_first: bool) -> Option<(u64, u64)> {
        let (base, path) = split(url)?;
        let sent = Instant::now();
        // Connections idle this long are closed, as a player's HTTP stack does.
        self.conns.retain(|_, (_, used)| used.elapsed() < IDLE);
        let reused = self.conns.contains_key(base);
        let mut result = self.exchange(base, path, first, last, sent).await;
        if reused && result.as_ref().is_err_and(|e| e.starts_with(NO_HEAD)) {
            // A kept-alive connection the server had closed: retry once on a new one, as
            // every HTTP client's pool does for a request that got no answer.
            self.conns.remove(base);
            result = self.exchange(base, path, first, last, sent).await;
        }
        let (ok, cache, bytes, size, ttfb, error) = match result {
            Ok((cache, bytes, size, ttfb)) => (true, cache, bytes, size, ttfb, String::new()),
            Err(e) => {
                tracing::debug!(listener = self.name, url = base, error = %e, "range failed");
                self.conns.remove(base);
                (false, String::new(), 0, 0, sent.elapsed(), e)
            }
        };
        self.watch.record(Sample {
            t: self.watch.at(sent),
            ttfb_ms: ttfb.as_secs_f64() * 1000.0,
            ok,
            hit: cache.starts_with("HIT"),
            cache,
            bytes,
            pop: base.to_owned(),
            cid: path.split('/').nth(2).unwrap_or_default().to_owned(),
            error,
            first: is_first,
        });
        ok.then_some((bytes, size))
    }

    async fn exchange(
        &mut self,
        base: &str,
        path: &str,
        first: u64,
        last: u64,
        sent: Instant,
    ) -> Result<(String, u64, u64, Duration), String> {
        if !self.conns.contains_key(base) {
            let hostport = &base[7..];
            let addr = hostport.parse().map_err(|e| format!("{hostport}: {e}"))?;
            let c = Connector::new(Protocol::Http1, addr, "localhost", None).map_err(|e| e.to_string())?;
            let conn = tokio::time::timeout(IO_TIMEOUT, c.connect())
                .await
                .map_err(|_| "connect timed out".to_owned())?
                .map_err(|e| e.to_string())?;
            self.conns.insert(base.to_owned(), (conn, Instant::now()));
        }
        let (conn, used) = self.conns.get_mut(base).ok_or("no connection")?;
        *used = Instant::now();
        let req = Request::get(path)
            .header(header::RANGE, format!("bytes={first}-{last}"))
            .body(())
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(IO_TIMEOUT, conn.send(req))
            .await
            .map_err(|_| "no response head in time".to_owned())?
            .map_err(|e| format!("{NO_HEAD}: {e}"))?;
        let ttfb = sent.elapsed();
        let status = resp.status();
        let cache =
            resp.headers().get("x-cache").and_then(|v| v.to_str().ok()).unwrap_or_default().to_ascii_uppercase();
        let size = resp
            .headers()
            .get(header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit('/').next()?.parse::<u64>().ok());
        let length: Option<u64> =
            resp.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        let mut body = resp.into_body();
        let mut bytes = 0u64;
        loop {
            match tokio::time::timeout(IO_TIMEOUT, body.frame()).await {
                Err(_) => return Err("body stalled".into()),
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(e.to_string()),
                Ok(Some(Ok(f))) => bytes += f.data_ref().map_or(0, |d| d.len() as u64),
            }
        }
        if status != StatusCode::PARTIAL_CONTENT && status != StatusCode::OK {
            return Err(format!("status {status}"));
        }
        if length.is_some_and(|n| n != bytes) {
            return Err(format!("body cut short: {bytes} of {length:?} bytes"));
        }
        let size = size.unwrap_or(bytes);
        Ok((cache, bytes, size, ttfb))
    }

    /// Play `track` (its first range already fetched when `ready`), prefetching the next
    /// one; returns the next track and what was prefetched of it.
    async fn play(
        &mut self,
        track: &str,
        ready: Option<Ready>,
        catalog: &Catalog,
        until: Instant,
    ) -> Option<(String, Option<Ready>)> {
        let ready = match ready {
            Some(r) => r,
            None => self.start(track, true).await?,
        };
        self.stats.tracks += 1;
        let Ready { info, size, mut have } = ready;
        let duration = info.duration_ms.max(1) as f64;
        let ms_per_byte = duration / size.max(1) as f64;
        let stop_ms = if self.rng.random_bool(SKIP_RATE) {
            self.stats.skips += 1;
            self.rng.random_range(0.0..duration)
        } else {
            duration
        };
        // A seek: at some point before the stop, to anywhere in the track.
        let mut seek = self.rng.random_bool(SEEK_RATE).then(|| {
            let at = self.rng.random_range(0.0..stop_ms.max(1.0));
            (at, self.rng.random_range(0.0..duration))
        });
        // The buffer holds bytes [from, have) of the object; the playhead is audio time.
        let (mut head, mut heard) = (0.0f64, 0.0f64);
        let mut stalled: Option<Instant> = None;
        let mut next: Option<(String, Option<Ready>)> = None;
        let mut last = Instant::now();
        loop {
            let now = Instant::now();
            let buffered_ms = have as f64 * ms_per_byte;
            let dt = now.duration_since(last).as_secs_f64() * 1000.0 * self.speed;
            last = now;
            let advance = if have >= size { dt } else { dt.min((buffered_ms - head).max(0.0)) };
            head += advance;
            heard += advance;
            if have < size && head >= buffered_ms && stalled.is_none() {
                self.stats.rebuffers += 1;
                stalled = Some(now);
            }
            if head >= stop_ms || now >= until {
                break;
            }
            if let Some((at, to)) = seek {
                if head >= at {
                    self.stats.seeks += 1;
                    seek = None;
                    head = to;
                    have = ((to / ms_per_byte) as u64).min(size.saturating_sub(1));
                    let Some((got, _)) = self.range(&info, have, (have + CHUNK).min(size) - 1, false).await else {
                        break;
                    };
                    have += got;
                    last = Instant::now();
                    continue;
                }
            }
            if next.is_none() && duration - head <= PREFETCH_LEAD_MS {
                // The player's prefetch: the next track's URL and first 256 KiB.
                let t = catalog.pick(&mut self.rng);
                self.stats.prefetches += 1;
                let r = self.start(&t, false).await;
                next = Some((t, r));
                continue;
            }
            if have < size && buffered_ms - head < LOW_WATER_MS {
                let last_byte = (have + CHUNK).min(size) - 1;
                let Some((got, _)) = self.range(&info, have, last_byte, false).await else { break };
                have += got;
                if let Some(s) = stalled.take() {
                    self.stats.rebuffer_ms += s.elapsed().as_secs_f64() * 1000.0;
                }
                continue;
            }
            // Sleep to the next thing to do: the buffer's low water, the prefetch, the end.
            let mut wake = stop_ms - head;
            if have < size {
                wake = wake.min(buffered_ms - head - LOW_WATER_MS);
            }
            if next.is_none() {
                wake = wake.min(duration - head - PREFETCH_LEAD_MS);
            }
            if let Some((at, _)) = seek {
                wake = wake.min(at - head);
            }
            let wall = Duration::from_secs_f64((wake / self.speed / 1000.0).clamp(0.001, 1.0));
            tokio::time::sleep(wall.min(until.saturating_duration_since(Instant::now()))).await;
        }
        // What the player reports: the audio heard, never more than the track (a seek back
        // hears some twice).
        self.report(&info, heard.min(duration), head < duration).await;
        next.or_else(|| Some((catalog.pick(&mut self.rng), None)))
    }

    /// The play event, as the player's reporter sends it.
    async fn report(&mut self, info: &StreamInfo, heard_ms: f64, skipped: bool) {
        let ms_played = heard_ms.round() as i64;
        if ms_played <= 0 {
            return;
        }
        let event = segue_player::outbox::PlayRecord {
            event_id: segue_player::outbox::new_event_id(),
            track: info.track_id.clone(),
            started_ms: self.clock_ms,
            ms_played,
            tier: info.tier.clone(),
            device: format!("loadtest-{}", self.name),
            skipped,
            country: None,
            session: info.session.clone(),
        };
        self.clock_ms += ms_played + 1000;
        self.stats.plays_reported += 1;
        if ms_played >= 30_000 {
            self.stats.plays_30s += 1;
        }
        let body = serde_json::json!({ "sent_ms": now_ms(), "events": [event] });
        match self.api.call(http::Method::POST, "/v1/play-events", Some(body)).await {
            Ok(answer) if answer["results"][0]["status"] == "accepted" => self.stats.plays_accepted += 1,
            Ok(answer) => {
                let r = &answer["results"][0];
                let why = format!(
                    "{}: {}",
                    r["status"].as_str().unwrap_or("?"),
                    r["reason"].as_str().or(r["message"].as_str()).unwrap_or("")
                );
                *self.stats.play_refusals.entry(why).or_insert(0) += 1;
            }
            Err(e) => *self.stats.play_refusals.entry(e.to_string()).or_insert(0) += 1,
        }
    }
}

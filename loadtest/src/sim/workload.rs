//! The simulated day: listeners in regions playing a Zipf-popular catalog with a diurnal
//! rhythm, and an album drop with or without pre-warm, staggered or not.
//!
//! The catalog is sampled the way SHARDS samples a trace: each track is in the sample
//! with probability `sample`, and plays, POP caches and the origin cap are all scaled by
//! the same factor, so per-object behaviour (and so hit ratios) is kept while the run
//! holds `sample` of the objects and requests. The dropped album is never sampled (its
//! few objects are the point); its listeners are, by `drop_sample`.

use std::collections::HashMap;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use segue_core::Tier;

use super::fleet::{Class, Fleet, Pace};
use super::node::Object;

/// Player behaviour (the real player's: `segue_player::engine` defaults).
pub const PREFETCH_BYTES: u64 = 256 << 10;
pub const PREFETCH_LEAD_US: u64 = 30_000_000;

#[derive(Debug, Clone)]
pub struct Scale {
    pub regions: usize,
    pub catalog_tracks: u64,
    pub sample: f64,
    pub zipf: f64,
    /// Fleet-wide plays started per second at the daily peak (before sampling).
    pub peak_plays_per_s: f64,
    /// Share of plays per tier, low to very high.
    pub tier_mix: [f64; 5],
    pub skip_share: f64,
    pub seek_share: f64,
    /// Bytes the player keeps buffered ahead of playback.
    pub lead_bytes: u64,
    pub hours: f64,
    pub seed: u64,
    pub drop: Option<DropPlan>,
}

#[derive(Debug, Clone)]
pub struct DropPlan {
    /// When the first region's release goes live, hours from the start.
    pub at_h: f64,
    pub listeners: u64,
    /// Share of the drop's listeners simulated.
    pub listener_sample: f64,
    pub tracks: u32,
    /// Pre-warm this long before each region's release (0: none).
    pub prewarm_mins: f64,
    /// Each further region releases this much later (0: all at once).
    pub stagger_mins: f64,
    /// Listeners press play within this long after the release (exponential mean).
    pub press_mean_s: f64,
    /// Tracks of the album each listener plays, on average.
    pub tracks_per_listener: f64,
}

/// The diurnal load: 1 at 19:00 local, 0.25 at 07:00.
pub fn diurnal(local_h: f64) -> f64 {
    0.625 + 0.375 * (std::f64::consts::TAU * (local_h - 19.0) / 24.0).cos()
}

/// UTC offsets of the regions, hours (the lab's regions first).
pub const OFFSETS: [f64; 6] = [1.0, -5.0, 9.0, -3.0, 5.5, 10.0];

/// Track durations 150-330 s, fixed per track.
fn duration_s(track: u64) -> f64 {
    150.0 + (track.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f64 / (1u64 << 24) as f64 * 180.0
}

/// Bytes of a track at a tier: its bitrate for its duration, plus the Ogg headers.
pub fn object_len(track: u64, tier: Tier) -> u64 {
    (duration_s(track) * f64::from(tier.kbps()) * 125.0) as u64 + 4096
}

/// The sampled catalog: ranks (1-based popularity order) in the sample, with cumulative
/// Zipf weights to draw plays from.
pub struct Catalog {
    pub ranks: Vec<u64>,
    cumulative: Vec<f64>,
    /// (track, tier) -> object id in the fleet.
    ids: HashMap<(u64, u8), u32>,
}

impl Catalog {
    pub fn sample(scale: &Scale, rng: &mut SmallRng) -> Catalog {
        // Skip ahead by geometric gaps: each rank is in with probability `sample`.
        let mut ranks = Vec::new();
        let p = scale.sample.clamp(1e-9, 1.0);
        let mut r = 0u64;
        loop {
            let u: f64 = rng.random::<f64>().max(1e-300);
            let gap = if p >= 1.0 { 1 } else { (u.ln() / (1.0 - p).ln()).floor() as u64 + 1 };
            r = r.saturating_add(gap);
            if r > scale.catalog_tracks {
                break;
            }
            ranks.push(r);
        }
        let mut total = 0.0;
        let cumulative = ranks
            .iter()
            .map(|&r| {
                total += (r as f64).powf(-scale.zipf);
                total
            })
            .collect();
        Catalog { ranks, cumulative, ids: HashMap::new() }
    }

    pub fn draw(&self, rng: &mut SmallRng) -> u64 {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let x = rng.random::<f64>() * total;
        let i = self.cumulative.partition_point(|&c| c < x).min(self.ranks.len().saturating_sub(1));
        self.ranks[i]
    }

    /// The fleet's object for a track at a tier, made on first use.
    pub fn object(&mut self, fleet: &mut Fleet, track: u64, tier: Tier) -> u32 {
        let key = (track, tier as u8);
        if let Some(&id) = self.ids.get(&key) {
            return id;
        }
        let id = fleet.objects.len() as u32;
        let path = format!("/a/t{track:010}/{}.ogg", tier.as_str());
        let etag = format!("t{track}-{}", tier.as_str());
        let probe = &fleet.nodes[0].cache;
        fleet.objects.push(Object::new(&path, object_len(track, tier), &etag, probe));
        self.ids.insert(key, id);
        id
    }
}

pub fn pick_tier(scale: &Scale, rng: &mut SmallRng) -> Tier {
    let total: f64 = scale.tier_mix.iter().sum();
    let mut x = rng.random::<f64>() * total;
    for (i, w) in scale.tier_mix.iter().enumerate() {
        if x < *w {
            return Tier::ALL[i];
        }
        x -= w;
    }
    Tier::High
}

/// One play to start: a listener at a POP plays an object from `start` (µs).
#[derive(Debug, Clone, Copy)]
pub struct Play {
    pub start: u64,
    pub node: usize,
    pub listener: u64,
    pub object: u32,
    pub class: Class,
    /// Prefetched (its first bytes fetched 30 s before it starts).
    pub prefetched: bool,
}

/// Requests of one play, pushed as timed actions: the prefetch, the stream from where
/// the prefetch ended (paced), a seek now and then; skipped plays stop early.
pub fn actions(scale: &Scale, fleet: &Fleet, play: Play, rng: &mut SmallRng, out: &mut Vec<Action>) {
    let len = fleet.objects[play.object as usize].len;
    let bytes_per_s = byte_rate(fleet, play.object);
    let dur_us = (len as f64 / bytes_per_s * 1e6) as u64;
    let stop_at = if rng.random::<f64>() < scale.skip_share {
        play.start + rng.random_range(5_000_000..30_000_000u64)
    } else {
        play.start + dur_us
    };
    let head = PREFETCH_BYTES.min(len);
    let prefetch_at = if play.prefetched { play.start.saturating_sub(PREFETCH_LEAD_US) } else { play.start };
    out.push(Action { at: prefetch_at, play, first: 0, last: head - 1, pace: None });
    if head < len {
        let seek = rng.random::<f64>() < scale.seek_share && stop_at > play.start + 10_000_000;
        let (stream_end, seek_at) = if seek {
            let at = rng.random_range(play.start + 5_000_000..stop_at);
            (((at - play.start) as f64 * bytes_per_s / 1e6) as u64, Some(at))
        } else {
            (len, None)
        };
        let pace = Pace { at: play.start, from: 0, bytes_per_s, lead: scale.lead_bytes, stop_at };
        out.push(Action {
            at: play.start,
            play,
            first: head,
            last: stream_end.clamp(head + 1, len) - 1,
            pace: Some(pace),
        });
        if let Some(at) = seek_at {
            let to = rng.random_range(0..len);
            let pace = Pace { at, from: to, bytes_per_s, lead: scale.lead_bytes, stop_at };
            out.push(Action { at, play, first: to, last: len - 1, pace: Some(pace) });
        }
    }
}

pub fn byte_rate(fleet: &Fleet, object: u32) -> f64 {
    let path = &fleet.objects[object as usize].path;
    let tier =
        Tier::ALL.iter().find(|t| path.ends_with(&format!("/{}.ogg", t.as_str()))).copied().unwrap_or(Tier::High);
    f64::from(tier.kbps()) * 125.0
}

/// A request to make at `at`.
#[derive(Debug, Clone, Copy)]
pub struct Action {
    pub at: u64,
    pub play: Play,
    pub first: u64,
    pub last: u64,
    pub pace: Option<Pace>,
}

/// The POP a listener of a region is sent to: one of the region's, by listener.
pub fn pop_for(pops_by_region: &[Vec<usize>], region: usize, listener: u64) -> usize {
    let pops = &pops_by_region[region % pops_by_region.len()];
    pops[(listener.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % pops.len()]
}

pub fn rng(seed: u64) -> SmallRng {
    SmallRng::seed_from_u64(seed)
}

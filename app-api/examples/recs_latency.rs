//! Serving latency of recommendations at scale, in process: a snapshot of 100,000
//! tracks (64 factors, 49-value audio embeddings), and listeners drawn from a million,
//! each with 20-80 plays of Zipf-popular tracks. Per request, what the app API computes
//! after its database reads: Discover Weekly's ranking (fold the listener in from their
//! plays, score every track exactly, keep the best 500 unheard) and radio's (the 500
//! tracks nearest one track by CF and audio cosine). Prints JSON percentiles in ms.
//!
//!   cargo run --release -p segue-app-api --example recs_latency -- [TRACKS USERS REQUESTS]

use std::collections::HashMap;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use segue_app_api::recs::als::Params;
use segue_app_api::recs::serve::Snapshot;
use segue_app_api::recs::train::Latest;

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (tracks, users, requests) = (
        args.first().copied().unwrap_or(100_000),
        args.get(1).copied().unwrap_or(1_000_000),
        args.get(2).copied().unwrap_or(2000),
    );
    let (factors, dims) = (64, 49);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    let id = |t: usize| format!("trk_{t:08}");
    let cf: HashMap<String, Vec<f32>> =
        (0..tracks).map(|t| (id(t), (0..factors).map(|_| rng.random_range(-0.3f32..0.3)).collect())).collect();
    let audio: Vec<(String, Vec<f32>)> =
        (0..tracks).map(|t| (id(t), (0..dims).map(|_| rng.random_range(-2f32..2.0)).collect())).collect();
    let artists: HashMap<String, String> = (0..tracks).map(|t| (id(t), format!("art_{}", t / 10))).collect();
    let params = Params { factors, ..Params::default() };
    let latest = Latest { id: 1, params, audio_map: None, tracks: cf, explore: HashMap::new() };
    let built = Instant::now();
    let snap = Snapshot::build(latest, audio, &artists);
    let build_s = built.elapsed().as_secs_f64();
    // Zipf popularity over the tracks, for listeners' plays.
    let mut cum = Vec::with_capacity(tracks);
    let mut acc = 0f64;
    for t in 0..tracks {
        acc += 1.0 / (t as f64 + 1.0).powf(0.8);
        cum.push(acc);
    }
    let (mut weekly, mut radio) = (Vec::with_capacity(requests), Vec::with_capacity(requests));
    for _ in 0..requests {
        let user = rng.random_range(0..users) as u64;
        let mut urng = rand::rngs::SmallRng::seed_from_u64(user);
        let n = urng.random_range(20..=80);
        let plays: Vec<(u32, f32)> = (0..n)
            .map(|_| {
                let x = urng.random_range(0.0..acc);
                let t = cum.partition_point(|&c| c <= x).min(tracks - 1);
                (snap.index_of(&id(t)).unwrap_or(0), if urng.random_bool(0.2) { 0.25 } else { 1.0 })
            })
            .collect();
        let mut heard: Vec<u32> = plays.iter().map(|p| p.0).collect();
        heard.sort_unstable();
        let started = Instant::now();
        let x = snap.fold_in(&plays).expect("plays of known tracks");
        let top = snap.rank(&x, 500, |i| heard.binary_search(&i).is_err());
        weekly.push(started.elapsed().as_secs_f64() * 1e3);
        assert_eq!(top.len(), 500);
        let seed = id(rng.random_range(0..tracks));
        let started = Instant::now();
        let near = snap.similar_uncached(&seed, 500).expect("a known track");
        radio.push(started.elapsed().as_secs_f64() * 1e3);
        assert_eq!(near.len(), 500);
    }
    if std::env::var_os("PROBE").is_some() {
        let rows: Vec<f32> = (0..tracks * factors).map(|i| (i % 97) as f32 * 0.01).collect();
        let x: Vec<f32> = (0..factors).map(|i| i as f32 * 0.1).collect();
        let mut out = vec![0f32; tracks];
        let t = Instant::now();
        for _ in 0..100 {
            segue_app_api::recs::als::scan(&rows, factors, &x, &mut out);
        }
        eprintln!("scan f32 {:.3} ms", t.elapsed().as_secs_f64() * 10.0);
    }
    println!(
        "{}",
        serde_json::json!({
            "tracks": tracks, "users": users, "requests": requests, "snapshot_build_s": build_s,
            "discover_weekly_ms": {"p50": percentile(&mut weekly, 0.5), "p99": percentile(&mut weekly, 0.99)},
            "radio_ms": {"p50": percentile(&mut radio, 0.5), "p99": percentile(&mut radio, 0.99)},
        })
    );
}

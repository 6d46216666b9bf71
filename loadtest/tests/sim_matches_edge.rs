//! The simulator's cache is the edge's: a real edge (over loopback, in front of a real
//! origin) and `segue sim`'s replay, fed the same request sequence, label every request
//! the same (`X-Cache`: HIT-MEM, MISS) under cache pressure, and a simulator on another
//! eviction policy does not.
//!
//! Concurrent fills finish in whatever order the scheduler picks, and the order slices
//! enter the cache is part of what eviction decides on, so the trace keeps to one fill
//! at a time: read-ahead is off, each request stays within one slice (the fill of a
//! range's next slice can land before the last one's under load), and each object is
//! first learned by a HEAD (a GET's discovery fill of slice 0 races the fill its reader
//! starts for another slice).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use http::Request;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use segue_core::client::{fetch, Connector};
use segue_core::store::{self, FsStore, ObjectStore};
use segue_core::{ContentId, ObjectKey, Tier};
use segue_edge::config::Eviction;
use segue_loadtest::sim::{self, node::Rules, TraceLine};

const SLICE: u64 = 16 << 10;

async fn start_origin(objects: &[(ObjectKey, bytes::Bytes)]) -> (SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let fs: Arc<dyn ObjectStore> = Arc::new(FsStore::new(dir.path()).unwrap());
    for (k, d) in objects {
        store::put_bytes(fs.as_ref(), k, d.clone()).await.unwrap();
    }
    let state = Arc::new(segue_origin::State::with_store(&segue_origin::Config::default(), fs).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(segue_origin::serve(listener, state, Default::default(), std::future::pending()));
    (addr, dir)
}

async fn start_edge(origin: SocketAddr, eviction: Eviction) -> (SocketAddr, Arc<segue_edge::State>) {
    let mut config = segue_edge::Config {
        upstreams: vec![format!("http://{origin}")],
        slice_kib: SLICE >> 10,
        mem_cache_mb: 1,
        mem_eviction: eviction,
        read_ahead_slices: 0,
        upstream_probe_secs: 0,
        ..Default::default()
    };
    config.paths = vec![segue_edge::policy::PathPolicy {
        key_params: Some(Vec::new()),
        ..segue_edge::policy::PathPolicy::new("/a/", true, false)
    }];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    config.listen = listener.local_addr().unwrap();
    let state = Arc::new(segue_edge::State::new(&config).await.unwrap());
    tokio::spawn(segue_edge::serve(
        listener,
        state.clone(),
        segue_edge::server_options(&config),
        std::future::pending(),
    ));
    (config.listen, state)
}

/// Requests within one slice over the objects, Zipf-ish popular, mostly sequential
/// runs, some jumps.
fn trace(objects: &[(String, u64, String)], seed: u64) -> Vec<TraceLine> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let weights: Vec<f64> = (1..=objects.len()).map(|r| (r as f64).powf(-0.8)).collect();
    let total: f64 = weights.iter().sum();
    let mut next: HashMap<usize, u64> = HashMap::new();
    let mut lines: Vec<TraceLine> = objects
        .iter()
        .enumerate()
        .map(|(i, (path, len, etag))| TraceLine {
            head: true,
            at_ms: i as u64 * 1000,
            client: 1,
            path: path.clone(),
            len: *len,
            etag: etag.clone(),
            first: 0,
            last: len - 1,
        })
        .collect();
    let start = lines.len() as u64;
    for i in start..start + 700 {
        let mut x = rng.random::<f64>() * total;
        let o = weights
            .iter()
            .position(|w| {
                x -= w;
                x < 0.0
            })
            .unwrap_or(0);
        let (path, len, etag) = &objects[o];
        let slices = len.div_ceil(SLICE);
        let index = match next.get(&o) {
            Some(&n) if n < slices && rng.random::<f64>() < 0.7 => n,
            _ => rng.random_range(0..slices),
        };
        let first = index * SLICE + if rng.random::<f64>() < 0.5 { 0 } else { rng.random_range(0..SLICE / 2) };
        let last = ((index + 1) * SLICE).min(*len) - 1 - if rng.random::<f64>() < 0.3 { 100 } else { 0 };
        let first = first.min(last);
        next.insert(o, last / SLICE + 1);
        lines.push(TraceLine {
            head: false,
            at_ms: i * 1000,
            client: 1,
            path: path.clone(),
            len: *len,
            etag: etag.clone(),
            first,
            last,
        });
    }
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_and_a_real_edge_label_every_request_the_same() {
    let mut rng = SmallRng::seed_from_u64(7);
    let mut stored = Vec::new();
    for i in 0..14u8 {
        let len = rng.random_range(3 * SLICE..12 * SLICE) + rng.random_range(0..SLICE);
        let data: bytes::Bytes = (0..len).map(|b| (b as u8) ^ i).collect();
        stored.push((ObjectKey::audio(&ContentId::digest(&[i]), Tier::High), data));
    }
    let (origin, _dir) = start_origin(&stored).await;
    let base = Connector::http(&format!("http://{origin}")).unwrap();
    let mut objects = Vec::new();
    for (key, data) in &stored {
        let path = format!("/a/{}", key.as_str().trim_start_matches("audio/"));
        let req = Request::head(path.as_str()).header("host", "origin").body(()).unwrap();
        let (resp, _) = fetch(&base, req).await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let etag = resp.headers()["etag"].to_str().unwrap().trim_matches('"').to_owned();
        objects.push((path, data.len() as u64, etag));
    }
    let lines = trace(&objects, 11);

    let (edge, state) = start_edge(origin, Eviction::TinyLfu).await;
    let connector = Connector::http(&format!("http://{edge}")).unwrap();
    let mut real = Vec::new();
    let slices: Vec<(String, u64, u64)> =
        objects.iter().flat_map(|(p, len, _)| (0..len.div_ceil(SLICE)).map(move |i| (p.clone(), *len, i))).collect();
    // Which slices are in memory, by the cache's own view of them.
    let resident = |cache: &segue_edge::cache::Cache| -> Vec<bool> {
        slices
            .iter()
            .map(|(path, _, index)| {
                let generation = cache.object(path).map_or(0, |i| i.generation);
                cache.in_memory(&segue_edge::cache::SliceKey {
                    object: path.as_str().into(),
                    generation,
                    index: *index,
                })
            })
            .collect()
    };
    let mut real_resident = Vec::new();
    for l in &lines {
        let req = if l.head {
            Request::head(l.path.as_str()).header("host", "edge").body(()).unwrap()
        } else {
            Request::get(l.path.as_str())
                .header("host", "edge")
                .header("range", format!("bytes={}-{}", l.first, l.last))
                .body(())
                .unwrap()
        };
        let (resp, body) = fetch(&connector, req).await.unwrap();
        assert_eq!(resp.status(), if l.head { 200 } else { 206 }, "{l:?}");
        assert_eq!(body.len() as u64, if l.head { 0 } else { l.last - l.first + 1 });
        real.push(resp.headers()["x-cache"].to_str().unwrap().to_owned());
        // Every fill this request started lands in the cache before the next request.
        while !state.coalescer.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        real_resident.push(resident(&state.cache));
    }
    // The records the edge stored weigh in its cache beside the slices: the simulator
    // stores the same ones.
    let learned: HashMap<String, segue_edge::cache::ObjectInfo> =
        objects.iter().map(|(path, _, _)| (path.clone(), state.cache.object(path).unwrap().as_ref().clone())).collect();
    let rules = Rules { slice: SLICE, eviction: Eviction::TinyLfu, read_ahead: 0, ssd_admit_after: 2 };
    let label = |o: Vec<sim::node::Outcome>| o.iter().map(|o| o.x_cache().to_owned()).collect::<Vec<_>>();
    let mut sim_resident = Vec::new();
    let simulated = label(
        sim::replay_inspect(&lines, rules, 1 << 20, &learned, |_, cache| sim_resident.push(resident(cache)))
            .await
            .unwrap(),
    );
    let first_apart = real_resident.iter().zip(&sim_resident).position(|(a, b)| a != b);
    if let Some(i) = first_apart {
        let apart: Vec<_> = (0..slices.len())
            .filter(|&k| real_resident[i][k] != sim_resident[i][k])
            .map(|k| (&slices[k], real_resident[i][k]))
            .collect();
        panic!("after request {i} ({:?}) the caches hold different slices: {apart:?} (edge holds when true)", lines[i]);
    }
    let hits = real.iter().filter(|x| *x == "HIT-MEM").count();
    assert!(hits > 100 && real.len() - hits > 100, "the trace must both hit and evict: {hits} hits of {}", real.len());
    let first_difference = real.iter().zip(&simulated).position(|(a, b)| a != b);
    assert_eq!(first_difference, None, "edge {real:?}\nsimulator {simulated:?}");

    // Another policy labels the same trace differently: the comparison can fail.
    let lru = Rules { eviction: Eviction::Lru, ..rules };
    let other = label(sim::replay(&lines, lru, 1 << 20, &learned).await.unwrap());
    assert_ne!(other, real, "LRU should decide some evictions differently from W-TinyLFU");
}

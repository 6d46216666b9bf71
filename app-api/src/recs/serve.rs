//! Serving recommendations from vectors in memory: the latest trained model's track
//! factors (collaborative), factors from sound for tracks the model has not seen (its
//! audio map), and every track's audio embedding (from ingest). Reloaded when the
//! snapshot is a minute old.
//!
//! Everything is scored exactly, by a scan over contiguous rows: at 100,000 tracks and
//! 64 factors a scan is 6.4 M multiply-adds, a few milliseconds on one core, with no
//! index to build or to drift from the model (docs/BENCHMARKS.md has the figures).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sqlx::{AnyPool, Row};

use super::als::dot;
use super::cold;
use super::train::Latest;
use crate::error::Error;

const MAX_AGE: Duration = Duration::from_secs(60);
/// Radio rankings kept per snapshot (500 candidates each: about 4 KB).
const SIMILAR_CACHE: u64 = 20_000;

/// Tracks (snapshot indices) with their scores, best first.
pub type Ranked = Arc<Vec<(u32, f32)>>;

/// Where a track's collaborative factors come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// None: neither plays in the model nor an embedding the map could use.
    None,
    /// Trained on plays.
    Warm,
    /// Predicted from its sound by the model's audio map: a cold-start track.
    Cold,
}

/// One model's vectors, laid out for scans. Tracks are numbered `0..ids.len()`.
pub struct Snapshot {
    pub model: i64,
    pub factors: usize,
    pub dims: usize,
    pub ids: Vec<String>,
    index: HashMap<String, u32>,
    /// Each track's first artist, as an index into `artists`.
    pub artist: Vec<u32>,
    pub artists: Vec<String>,
    pub origin: Vec<Origin>,
    /// `factors` per track, raw (dot products are affinities); zeros where `None`.
    cf: Vec<f32>,
    cf_norm: Vec<f32>,
    /// `dims` per track, unit length; zeros where a track has no embedding.
    audio: Vec<f32>,
    has_audio: Vec<bool>,
    /// `Y^T Y` over the warm tracks: what folding a listener in starts from.
    gram: Vec<f64>,
    pub regularization: f32,
    pub alpha: f32,
    /// Exploration's record per track: (impressions, streams) from the last training.
    pub explore: Vec<(u32, u32)>,
    /// Radio's rankings by seed track, for this snapshot's life: seeds follow track
    /// popularity, so most radio requests are of a seed asked for moments ago.
    similar_cache: moka::sync::Cache<(u32, usize), Ranked>,
}

#[derive(Default)]
pub struct Vectors {
    current: RwLock<Option<(Instant, Arc<Snapshot>)>>,
    /// One request reloads a stale snapshot; the others serve the old one meanwhile.
    reloading: std::sync::atomic::AtomicBool,
}

fn unit(v: &mut [f32]) {
    let n = dot(v, v).sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// The `k` best of `scored`, best first (ties by index, so the order is stable): a
/// min-heap of the best so far, so most candidates cost one comparison.
pub fn top_k(scored: impl IntoIterator<Item = (u32, f32)>, k: usize) -> Vec<(u32, f32)> {
    use std::cmp::{Ordering, Reverse};
    use std::collections::BinaryHeap;
    #[derive(PartialEq)]
    struct Scored(f32, Reverse<u32>);
    impl Eq for Scored {}
    impl PartialOrd for Scored {
        fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
            Some(self.cmp(other))
        }
    }
    impl Ord for Scored {
        fn cmp(&self, other: &Self) -> Ordering {
            self.0.total_cmp(&other.0).then(self.1.cmp(&other.1))
        }
    }
    if k == 0 {
        return Vec::new();
    }
    let mut heap: BinaryHeap<Reverse<Scored>> = BinaryHeap::with_capacity(k + 1);
    for (i, s) in scored {
        let item = Scored(s, Reverse(i));
        if heap.len() < k {
            heap.push(Reverse(item));
        } else if heap.peek().is_some_and(|worst| item > worst.0) {
            heap.pop();
            heap.push(Reverse(item));
        }
    }
    let mut out: Vec<(u32, f32)> = heap.into_iter().map(|Reverse(Scored(s, Reverse(i)))| (i, s)).collect();
    out.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

impl Vectors {
    pub async fn snapshot(&self, pool: &AnyPool) -> Result<Arc<Snapshot>, Error> {
        use std::sync::atomic::Ordering;
        let held = self.current.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some((at, s)) = held {
            let reload = at.elapsed() >= MAX_AGE
                && self.reloading.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_ok();
            if !reload {
                return Ok(s);
            }
        }
        // Cleared however the load ends, a dropped request included.
        struct Reloading<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Reloading<'_> {
            fn drop(&mut self) {
                self.0.store(false, std::sync::atomic::Ordering::Release);
            }
        }
        let _reloading = Reloading(&self.reloading);
        let snap = Arc::new(Snapshot::load(pool).await?);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), snap.clone()));
        Ok(snap)
    }
}

impl Snapshot {
    pub async fn load(pool: &AnyPool) -> Result<Snapshot, Error> {
        let trained = super::train::latest(pool).await?;
        let embeddings = super::embeddings(pool).await?;
        let mut first_artist = HashMap::new();
        for r in sqlx::query("SELECT track_id, artist_id FROM track_artists WHERE position = 0").fetch_all(pool).await?
        {
            first_artist.insert(r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?);
        }
        let trained = trained.unwrap_or_else(|| Latest {
            id: 0,
            params: super::als::Params::default(),
            audio_map: None,
            tracks: HashMap::new(),
            explore: HashMap::new(),
        });
        // A large catalog takes a few hundred ms to lay out: off the request threads.
        tokio::task::spawn_blocking(move || Snapshot::build(trained, embeddings, &first_artist))
            .await
            .map_err(|e| Error::Database(format!("loading recommendation vectors: {e}")))
    }

    /// Lay a model out for serving: its track factors, the factors its audio map gives
    /// tracks it has not seen, unit audio embeddings, first artists, `Y^T Y`.
    pub fn build(
        trained: Latest,
        embeddings: Vec<(String, Vec<f32>)>,
        first_artist: &HashMap<String, String>,
    ) -> Snapshot {
        let Latest { id: model, params, audio_map: map, tracks: cf, explore } = trained;
        let factors = cf.values().next().map_or(map.as_ref().map_or(0, |m| m.factors), Vec::len);
        let dims = embeddings.first().map_or(0, |e| e.1.len());
        let mut ids: Vec<String> = cf.keys().cloned().chain(embeddings.iter().map(|e| e.0.clone())).collect();
        ids.sort_unstable();
        ids.dedup();
        let n = ids.len();
        let index: HashMap<String, u32> = ids.iter().enumerate().map(|(i, id)| (id.clone(), i as u32)).collect();
        let mut s = Snapshot {
            model,
            factors,
            dims,
            artist: vec![0; n],
            origin: vec![Origin::None; n],
            cf: vec![0.0; n * factors],
            cf_norm: vec![0.0; n],
            similar_cache: moka::sync::Cache::new(SIMILAR_CACHE),
            audio: vec![0.0; n * dims],
            has_audio: vec![false; n],
            gram: vec![0.0; factors * factors],
            regularization: params.regularization,
            alpha: params.alpha,
            explore: vec![(0, 0); n],
            ids,
            index,
            artists: Vec::new(),
        };
        let mut artist_index: HashMap<String, u32> = HashMap::new();
        for i in 0..n {
            let a = first_artist.get(&s.ids[i]).cloned().unwrap_or_else(|| s.ids[i].clone());
            let next = artist_index.len() as u32;
            s.artist[i] = *artist_index.entry(a.clone()).or_insert_with(|| {
                s.artists.push(a);
                next
            });
        }
        for (id, v) in &cf {
            if v.len() == factors {
                let i = s.index[id] as usize;
                s.cf[i * factors..(i + 1) * factors].copy_from_slice(v);
                s.origin[i] = Origin::Warm;
            }
        }
        for (id, mut e) in embeddings {
            if e.len() != dims {
                continue;
            }
            let i = s.index[&id] as usize;
            if s.origin[i] == Origin::None {
                if let Some(m) = map.as_ref().filter(|m| m.dims == dims && m.factors == factors) {
                    s.cf[i * factors..(i + 1) * factors].copy_from_slice(&m.predict(&e));
                    s.origin[i] = Origin::Cold;
                }
            }
            unit(&mut e);
            s.audio[i * dims..(i + 1) * dims].copy_from_slice(&e);
            s.has_audio[i] = e.iter().any(|x| *x != 0.0);
        }
        // A linear map extrapolates: a sound unlike any warm track's can come out with a
        // long vector that outscores everything. Cold vectors keep their direction but
        // are no longer than the median warm track's.
        let mut warm_norms: Vec<f32> = (0..n)
            .filter(|&i| s.origin[i] == Origin::Warm)
            .map(|i| dot(&s.cf[i * factors..(i + 1) * factors], &s.cf[i * factors..(i + 1) * factors]).sqrt())
            .collect();
        warm_norms.sort_by(f32::total_cmp);
        let cap = warm_norms.get(warm_norms.len() / 2).copied().unwrap_or(f32::MAX);
        for i in 0..n {
            let row = &mut s.cf[i * factors..(i + 1) * factors];
            let norm = dot(row, row).sqrt();
            if s.origin[i] == Origin::Cold && norm > cap {
                row.iter_mut().for_each(|x| *x *= cap / norm);
            }
            let row = &s.cf[i * factors..(i + 1) * factors];
            s.cf_norm[i] = dot(row, row).sqrt();
        }
        let warm: Vec<f32> = (0..n)
            .filter(|&i| s.origin[i] == Origin::Warm)
            .flat_map(|i| s.cf[i * factors..(i + 1) * factors].iter().copied())
            .collect();
        if factors > 0 {
            s.gram = super::als::gram(&warm, factors, 1).into_iter().map(f64::from).collect();
        }
        for (id, e) in explore {
            if let Some(&i) = s.index.get(&id) {
                s.explore[i as usize] = e;
            }
        }
        s
    }

    pub fn index_of(&self, track: &str) -> Option<u32> {
        self.index.get(track).copied()
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn cf(&self, i: u32) -> Option<&[f32]> {
        let i = i as usize;
        (self.origin[i] != Origin::None).then(|| &self.cf[i * self.factors..(i + 1) * self.factors])
    }

    pub fn audio(&self, i: u32) -> Option<&[f32]> {
        let i = i as usize;
        self.has_audio(i as u32).then(|| &self.audio[i * self.dims..(i + 1) * self.dims])
    }

    fn has_audio(&self, i: u32) -> bool {
        self.has_audio[i as usize]
    }

    /// A listener's factors from their plays against the model's track factors: the ALS
    /// user step (Hu et al.), solved exactly. Fresh, so plays since training count and a
    /// listener who joined after it gets a vector too. `None` with no usable plays.
    pub fn fold_in(&self, plays: &[(u32, f32)]) -> Option<Vec<f32>> {
        let f = self.factors;
        let mut a = self.gram.clone();
        for d in 0..f {
            a[d * f + d] += f64::from(self.regularization);
        }
        let mut b = vec![0f64; f];
        let mut used = 0;
        for &(i, r) in plays {
            let Some(y) = self.cf(i) else { continue };
            used += 1;
            let c = 1.0 + f64::from(self.alpha) * f64::from(r);
            for p in 0..f {
                let yp = f64::from(y[p]);
                b[p] += c * yp;
                for q in 0..f {
                    a[p * f + q] += (c - 1.0) * yp * f64::from(y[q]);
                }
            }
        }
        if used == 0 || f == 0 {
            return None;
        }
        let x = cold::cholesky_solve(&a, f, &b, 1)?;
        Some(x.into_iter().map(|v| v as f32).collect())
    }

    /// Tracks by affinity to a listener vector, best `k` first, among those `keep` lets by.
    pub fn rank(&self, x: &[f32], k: usize, keep: impl Fn(u32) -> bool) -> Vec<(u32, f32)> {
        let mut scores = vec![0f32; self.len()];
        super::als::scan(&self.cf, self.factors, x, &mut scores);
        let scored = scores
            .into_iter()
            .enumerate()
            .map(|(i, s)| (i as u32, s))
            .filter(|&(i, _)| self.origin[i as usize] != Origin::None && keep(i));
        top_k(scored, k)
    }

    /// Tracks most like `track`, the best `k` first, with their scores: the mean of the
    /// collaborative and audio cosines where both exist, else the one that does.
    pub fn similar(&self, track: &str, k: usize) -> Result<Ranked, Error> {
        if let Some(hit) = self.index_of(track).and_then(|i| self.similar_cache.get(&(i, k))) {
            return Ok(hit);
        }
        let ranked = Arc::new(self.similar_uncached(track, k)?);
        if let Some(i) = self.index_of(track) {
            self.similar_cache.insert((i, k), ranked.clone());
        }
        Ok(ranked)
    }

    /// `similar`, computed: a scan of every track.
    pub fn similar_uncached(&self, track: &str, k: usize) -> Result<Vec<(u32, f32)>, Error> {
        let me = self.index_of(track);
        let (cf, audio) = match me {
            Some(i) => (self.cf(i), self.audio(i)),
            None => (None, None),
        };
        let (Some(me), true) = (me, cf.is_some() || audio.is_some()) else {
            return Err(Error::NotFound(format!(
                "track {track:?} has neither plays in the trained model nor audio features"
            )));
        };
        let n = self.len();
        let (mut cf_scores, mut audio_scores) = (vec![0f32; n], vec![0f32; n]);
        if let Some(v) = cf {
            super::als::scan(&self.cf, self.factors, v, &mut cf_scores);
        }
        if let Some(v) = audio {
            super::als::scan(&self.audio, self.dims, v, &mut audio_scores);
        }
        let my_norm = self.cf_norm[me as usize];
        let scored = (0..n as u32).filter(|&i| i != me).filter_map(|i| {
            let norm = my_norm * self.cf_norm[i as usize];
            let c = (cf.is_some() && norm > 0.0).then(|| cf_scores[i as usize] / norm);
            // A track without an embedding has a zero row, and no audio score.
            let a = (audio.is_some() && self.has_audio(i)).then(|| audio_scores[i as usize]);
            match (c, a) {
                (Some(c), Some(a)) => Some((i, (c + a) / 2.0)),
                (Some(s), None) | (None, Some(s)) => Some((i, s)),
                (None, None) => None,
            }
        });
        Ok(top_k(scored, k))
    }

    /// The mean of some tracks' unit audio embeddings: a playlist's or a mix's sound.
    pub fn audio_profile(&self, tracks: &[u32]) -> Option<Vec<f32>> {
        let mut sum = vec![0f32; self.dims];
        let mut n = 0;
        for &t in tracks {
            if let Some(a) = self.audio(t) {
                sum.iter_mut().zip(a).for_each(|(s, x)| *s += x);
                n += 1;
            }
        }
        (n > 0).then(|| {
            unit(&mut sum);
            sum
        })
    }

    /// Tracks by audio cosine to `profile`, best `k` first, among those `keep` lets by.
    pub fn by_sound(&self, profile: &[f32], k: usize, keep: impl Fn(u32) -> bool) -> Vec<(u32, f32)> {
        let scored =
            (0..self.len() as u32).filter(|&i| keep(i)).filter_map(|i| Some((i, dot(profile, self.audio(i)?))));
        top_k(scored, k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recs::als::{self, Csr, Params};
    use crate::recs::synth::{generate, weight, Spec};

    /// A snapshot of a model trained on synthetic plays: tracks `t0..`, users `0..`.
    fn trained(spec: &Spec, params: &Params) -> (crate::recs::synth::Data, Csr, als::Model, Snapshot) {
        let data = generate(spec);
        let triples: Vec<(u32, u32, f32)> = data.plays.iter().map(|p| (p.user, p.track, weight(p))).collect();
        let by_user = Csr::from_triples(spec.users, &triples);
        let model = als::train(&by_user, spec.tracks, params, |_| {});
        let tracks = (0..spec.tracks).map(|t| (format!("t{t:05}"), model.item_vec(t).to_vec())).collect();
        let artists = (0..spec.tracks).map(|t| (format!("t{t:05}"), format!("a{}", data.track_artist[t]))).collect();
        let latest = Latest { id: 1, params: *params, audio_map: None, tracks, explore: HashMap::new() };
        let snap = Snapshot::build(latest, Vec::new(), &artists);
        (data, by_user, model, snap)
    }

    /// Folding a listener in from their plays gives the vector training gave them, so
    /// serving can use plays made since training.
    #[test]
    fn folding_in_a_listener_recovers_their_trained_vector() {
        let spec = Spec { users: 400, tracks: 300, artists: 60, clusters: 6, plays: (10, 30), in_taste: 0.8, seed: 3 };
        let params =
            Params { factors: 16, iterations: 12, regularization: 0.1, alpha: 10.0, cg_steps: 8, ..Params::default() };
        let (_, by_user, model, snap) = trained(&spec, &params);
        let mut agree = 0;
        for u in 0..spec.users {
            let (idx, val) = by_user.row(u);
            let plays: Vec<(u32, f32)> =
                idx.iter().zip(val).map(|(&t, &v)| (snap.index_of(&format!("t{t:05}")).unwrap(), v)).collect();
            let x = snap.fold_in(&plays).unwrap();
            let y = model.user_vec(u);
            let cos = dot(&x, y) / (dot(&x, &x).sqrt() * dot(y, y).sqrt());
            agree += usize::from(cos > 0.99);
            // The same top 10 as the model's own ranking.
            let ours: Vec<u32> =
                snap.rank(&x, 10, |i| idx.binary_search(&i).is_err()).into_iter().map(|r| r.0).collect();
            let theirs = model.top_k(y, 10, idx);
            assert!(ours.iter().filter(|t| theirs.contains(t)).count() >= 8, "user {u}: {ours:?} against {theirs:?}");
        }
        assert!(agree >= spec.users * 95 / 100, "{agree} of {} folded-in vectors agree", spec.users);
    }
}

//! Seeded synthetic listening data with planted taste: artists belong to taste clusters,
//! tracks to artists, popularity is Zipf-skewed, and each listener mostly plays tracks
//! of their one or two clusters (streams) with some popular tracks from anywhere, which
//! they tend to skip. What recommendations should recover is known: the clusters.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub users: usize,
    pub tracks: usize,
    pub artists: usize,
    pub clusters: usize,
    /// Plays per user, drawn uniformly from this range.
    pub plays: (usize, usize),
    /// Share of a user's plays from their own clusters.
    pub in_taste: f64,
    pub seed: u64,
}

/// One play: user, track, whether it was skipped (under 30 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Play {
    pub user: u32,
    pub track: u32,
    pub skipped: bool,
}

#[derive(Debug, Clone)]
pub struct Data {
    pub plays: Vec<Play>,
    pub track_artist: Vec<u32>,
    pub track_cluster: Vec<u32>,
    pub user_clusters: Vec<Vec<u32>>,
    /// A 16-value "audio embedding" per track: its cluster's centre plus noise, so sound
    /// carries taste the way it does in music (genres sound alike), imperfectly.
    pub track_embedding: Vec<Vec<f32>>,
}

/// Dimensions of the synthetic embeddings.
pub const EMBEDDING_DIMS: usize = 16;

/// Draw from cumulative weights.
fn pick(cumulative: &[f64], rng: &mut SmallRng) -> usize {
    let total = cumulative.last().copied().unwrap_or(0.0);
    let x = rng.random_range(0.0..total.max(f64::MIN_POSITIVE));
    cumulative.partition_point(|&c| c <= x).min(cumulative.len().saturating_sub(1))
}

fn cumulative(weights: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut acc = 0.0;
    weights
        .map(|w| {
            acc += w;
            acc
        })
        .collect()
}

pub fn generate(s: &Spec) -> Data {
    let mut rng = SmallRng::seed_from_u64(s.seed);
    let artist_cluster: Vec<u32> = (0..s.artists).map(|a| (a % s.clusters) as u32).collect();
    let track_artist: Vec<u32> = (0..s.tracks).map(|_| rng.random_range(0..s.artists) as u32).collect();
    let track_cluster: Vec<u32> = track_artist.iter().map(|&a| artist_cluster[a as usize]).collect();
    // Zipf popularity over a random ranking of the tracks.
    let mut rank: Vec<usize> = (0..s.tracks).collect();
    for i in (1..rank.len()).rev() {
        rank.swap(i, rng.random_range(0..=i));
    }
    let popularity: Vec<f64> = (0..s.tracks).map(|t| 1.0 / (rank[t] as f64 + 1.0).powf(0.8)).collect();
    let everywhere = cumulative(popularity.iter().copied());
    let per_cluster: Vec<(Vec<usize>, Vec<f64>)> = (0..s.clusters as u32)
        .map(|c| {
            let tracks: Vec<usize> = (0..s.tracks).filter(|&t| track_cluster[t] == c).collect();
            let cum = cumulative(tracks.iter().map(|&t| popularity[t]));
            (tracks, cum)
        })
        .collect();
    let mut plays = Vec::new();
    let mut user_clusters = Vec::with_capacity(s.users);
    for u in 0..s.users as u32 {
        let mut mine = vec![rng.random_range(0..s.clusters) as u32];
        if rng.random_bool(0.3) {
            mine.push(rng.random_range(0..s.clusters) as u32);
        }
        let n = rng.random_range(s.plays.0..=s.plays.1);
        for _ in 0..n {
            let track = if rng.random_bool(s.in_taste) {
                let (tracks, cum) = &per_cluster[mine[rng.random_range(0..mine.len())] as usize];
                if tracks.is_empty() {
                    continue;
                }
                tracks[pick(cum, &mut rng)]
            } else {
                pick(&everywhere, &mut rng)
            };
            let liked = mine.contains(&track_cluster[track]);
            let skipped = rng.random_bool(if liked { 0.1 } else { 0.6 });
            plays.push(Play { user: u, track: track as u32, skipped });
        }
        user_clusters.push(mine);
    }
    let centres: Vec<Vec<f32>> =
        (0..s.clusters).map(|_| (0..EMBEDDING_DIMS).map(|_| rng.random_range(-1.0f32..1.0)).collect()).collect();
    let track_embedding = track_cluster
        .iter()
        .map(|&c| centres[c as usize].iter().map(|x| x + rng.random_range(-0.6f32..0.6)).collect())
        .collect();
    Data { plays, track_artist, track_cluster, user_clusters, track_embedding }
}

/// Interaction strength of a play: a stream counts 1, a skip a quarter.
pub fn weight(p: &Play) -> f32 {
    if p.skipped {
        0.25
    } else {
        1.0
    }
}

/// Leave-last-out split: each user's last streamed track (not seen earlier) held out.
/// Returns the training plays and (user, held-out track) pairs.
pub fn leave_last_out(plays: &[Play]) -> (Vec<Play>, Vec<(u32, u32)>) {
    let mut last: std::collections::HashMap<u32, usize> = std::collections::HashMap::new();
    for (i, p) in plays.iter().enumerate() {
        if !p.skipped {
            last.insert(p.user, i);
        }
    }
    let held: std::collections::HashSet<(u32, u32)> = last.values().map(|&i| (plays[i].user, plays[i].track)).collect();
    let train: Vec<Play> = plays.iter().copied().filter(|p| !held.contains(&(p.user, p.track))).collect();
    let mut test: Vec<(u32, u32)> = held.into_iter().collect();
    test.sort_unstable();
    (train, test)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recs::als::{self, Csr, Params};

    #[test]
    fn als_recovers_planted_taste_better_than_popularity() {
        let spec =
            Spec { users: 1500, tracks: 600, artists: 120, clusters: 12, plays: (15, 40), in_taste: 0.8, seed: 42 };
        let data = generate(&spec);
        assert_eq!(generate(&spec).plays, data.plays, "seeded: the same data every time");
        let (train, test) = leave_last_out(&data.plays);
        let triples: Vec<(u32, u32, f32)> = train.iter().map(|p| (p.user, p.track, weight(p))).collect();
        let by_user = Csr::from_triples(spec.users, &triples);
        let params = Params { factors: 16, iterations: 8, regularization: 0.05, alpha: 10.0, ..Params::default() };
        let mut seen_iterations = 0;
        let model = als::train(&by_user, spec.tracks, &params, |it| seen_iterations = it);
        assert_eq!(seen_iterations, 8);
        // Popularity: training plays per track.
        let mut counts = vec![0usize; spec.tracks];
        for p in &train {
            counts[p.track as usize] += 1;
        }
        let (mut als_hits, mut pop_hits) = (0, 0);
        for &(u, held) in &test {
            let (seen, _) = by_user.row(u as usize);
            let top = model.top_k(model.user_vec(u as usize), 10, seen);
            als_hits += usize::from(top.contains(&held));
            let mut pop: Vec<u32> = (0..spec.tracks as u32).filter(|t| seen.binary_search(t).is_err()).collect();
            pop.sort_by_key(|&t| std::cmp::Reverse(counts[t as usize]));
            pop_hits += usize::from(pop[..10].contains(&held));
        }
        let (als_recall, pop_recall) = (als_hits as f64 / test.len() as f64, pop_hits as f64 / test.len() as f64);
        assert!(als_recall > 1.5 * pop_recall, "recall@10: ALS {als_recall:.3}, popularity {pop_recall:.3}");
        assert!(als_recall > 0.4, "recall@10: ALS {als_recall:.3}");
    }
}

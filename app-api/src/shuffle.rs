//! Shuffle that listeners call random: no artist twice in a row whenever that is
//! possible, each artist's tracks in a uniformly random order, a new order on each call.
//!
//! With `n` tracks of which the largest artist has `m`, zero adjacencies are possible
//! exactly when `m <= ceil(n / 2)`. Then the order is built a track at a time: the next
//! artist is drawn in proportion to its remaining tracks among those that keep the rest
//! arrangeable (with `r` tracks left after the draw and its artist `a` just played, the
//! rest is arrangeable iff `a` has at most `floor(r / 2)` left and every other artist at
//! most `ceil(r / 2)`), and it plays its next track from its own shuffled list. Otherwise
//! the optimum is `2m - n - 1` adjacencies: the large artist's tracks open and close the
//! order and the others, shuffled, fill distinct gaps between them, the gaps drawn
//! uniformly.

use rand::seq::SliceRandom;
use rand::Rng;

/// Same-artist neighbours in `order` (indices into `artists`).
pub fn adjacencies(artists: &[&str], order: &[usize]) -> usize {
    order.windows(2).filter(|w| artists[w[0]] == artists[w[1]]).count()
}

/// The fewest same-artist neighbours any order of `artists` can have.
pub fn optimum(artists: &[&str]) -> usize {
    let n = artists.len();
    let mut counts = std::collections::HashMap::new();
    for a in artists {
        *counts.entry(*a).or_insert(0usize) += 1;
    }
    let m = counts.values().copied().max().unwrap_or(0);
    if m <= n.div_ceil(2) {
        0
    } else {
        2 * m - n - 1
    }
}

/// A shuffled order of the items whose artists are `artists`: their indices.
pub fn shuffle<R: Rng>(artists: &[&str], rng: &mut R) -> Vec<usize> {
    let n = artists.len();
    // Each artist's items, in a uniformly random order.
    let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, a) in artists.iter().enumerate() {
        let g = *index.entry(a).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(i);
    }
    for g in &mut groups {
        g.shuffle(rng);
    }
    let m = groups.iter().map(Vec::len).max().unwrap_or(0);
    if m > n.div_ceil(2) {
        return around_the_largest(groups, rng);
    }
    let mut out = Vec::with_capacity(n);
    let mut prev: Option<usize> = None;
    let mut feasible = Vec::with_capacity(groups.len());
    for step in 0..n {
        let left_after = n - step - 1;
        // The two largest remaining counts, to know every other artist's maximum.
        let (mut top, mut second) = ((usize::MAX, 0usize), 0usize);
        for (g, list) in groups.iter().enumerate() {
            let c = list.len();
            if top.0 == usize::MAX || c > top.1 {
                second = if top.0 == usize::MAX { 0 } else { top.1 };
                top = (g, c);
            } else if c > second {
                second = c;
            }
        }
        feasible.clear();
        for (g, list) in groups.iter().enumerate() {
            let c = list.len();
            if c == 0 || Some(g) == prev {
                continue;
            }
            let others = if g == top.0 { second } else { top.1 };
            if c - 1 <= left_after / 2 && others <= left_after.div_ceil(2) {
                feasible.push((g, c));
            }
        }
        // Proven non-empty by the invariant; fall back to any other artist regardless.
        let pick = if feasible.is_empty() {
            groups.iter().position(|l| !l.is_empty()).unwrap_or(0)
        } else {
            let total: usize = feasible.iter().map(|f| f.1).sum();
            let mut at = rng.random_range(0..total);
            let mut chosen = feasible[0].0;
            for &(g, weight) in &feasible {
                if at < weight {
                    chosen = g;
                    break;
                }
                at -= weight;
            }
            chosen
        };
        if let Some(item) = groups[pick].pop() {
            out.push(item);
        }
        prev = Some(pick);
    }
    out
}

/// The order when one artist has more than half: theirs at both ends and every other
/// track alone in a gap between two of theirs.
fn around_the_largest<R: Rng>(mut groups: Vec<Vec<usize>>, rng: &mut R) -> Vec<usize> {
    let largest = groups.iter().enumerate().max_by_key(|(_, g)| g.len()).map_or(0, |(i, _)| i);
    let big = std::mem::take(&mut groups[largest]);
    let mut others: Vec<usize> = groups.into_iter().flatten().collect();
    others.shuffle(rng);
    let gaps = big.len().saturating_sub(1);
    let mut filled = vec![false; gaps];
    for g in rand::seq::index::sample(rng, gaps, others.len().min(gaps)) {
        filled[g] = true;
    }
    let mut out = Vec::with_capacity(big.len() + others.len());
    let mut rest = others.into_iter();
    for (i, item) in big.into_iter().enumerate() {
        out.push(item);
        if filled.get(i).copied().unwrap_or(false) {
            out.extend(rest.next());
        }
    }
    out.extend(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn playlist(rng: &mut SmallRng) -> Vec<String> {
        let n = rng.random_range(1..60);
        let artists = rng.random_range(1..8);
        // A skewed draw: some playlists have one artist over half.
        (0..n)
            .map(|_| {
                let a = if rng.random_bool(0.3) { 0 } else { rng.random_range(0..artists) };
                format!("artist {a}")
            })
            .collect()
    }

    #[test]
    fn ten_thousand_shuffles_reach_the_adjacency_optimum_and_are_permutations() {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut dominant = 0;
        for _ in 0..10_000 {
            let names = playlist(&mut rng);
            let artists: Vec<&str> = names.iter().map(String::as_str).collect();
            let order = shuffle(&artists, &mut rng);
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..artists.len()).collect::<Vec<_>>());
            assert_eq!(adjacencies(&artists, &order), optimum(&artists), "{artists:?} -> {order:?}");
            dominant += usize::from(optimum(&artists) > 0);
        }
        assert!(dominant > 500, "the draw should cover playlists where adjacencies cannot be avoided: {dominant}");
    }

    #[test]
    fn each_artists_tracks_come_in_a_uniformly_random_order() {
        // A has 4 tracks: over 10,000 shuffles each of their 24 orders should come up
        // equally often (chi-square, 23 degrees of freedom; 49.73 is p = 0.001).
        let artists = ["A", "B", "A", "C", "A", "B", "C", "A", "B", "C"];
        let a_items: Vec<usize> = (0..artists.len()).filter(|&i| artists[i] == "A").collect();
        let mut rng = SmallRng::seed_from_u64(11);
        let mut seen = std::collections::HashMap::new();
        let runs = 10_000;
        for _ in 0..runs {
            let order = shuffle(&artists, &mut rng);
            let key: Vec<usize> = order.iter().copied().filter(|i| a_items.contains(i)).collect();
            *seen.entry(key).or_insert(0usize) += 1;
        }
        assert_eq!(seen.len(), 24);
        let expected = runs as f64 / 24.0;
        let chi2: f64 = seen.values().map(|&c| (c as f64 - expected).powi(2) / expected).sum();
        assert!(chi2 < 49.73, "chi-square {chi2:.1} over 23 degrees of freedom");
    }

    /// Kendall's tau between two orders of the same items.
    fn kendall(a: &[usize], b: &[usize]) -> f64 {
        let mut pos = vec![0; b.len()];
        for (i, &x) in b.iter().enumerate() {
            pos[x] = i;
        }
        let (mut concordant, mut discordant) = (0i64, 0i64);
        for i in 0..a.len() {
            for j in i + 1..a.len() {
                if pos[a[i]] < pos[a[j]] {
                    concordant += 1;
                } else {
                    discordant += 1;
                }
            }
        }
        (concordant - discordant) as f64 / (concordant + discordant) as f64
    }

    #[test]
    fn successive_shuffles_are_uncorrelated() {
        let names: Vec<String> = (0..30).map(|i| format!("artist {}", i % 10)).collect();
        let artists: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut rng = SmallRng::seed_from_u64(3);
        let mut last = shuffle(&artists, &mut rng);
        let (mut sum, runs) = (0.0, 10_000);
        for _ in 0..runs {
            let next = shuffle(&artists, &mut rng);
            sum += kendall(&last, &next);
            last = next;
        }
        let mean = sum / runs as f64;
        // One pair of random orders of 30 has tau's standard deviation about 0.13; the
        // mean of 10,000 is about 0.0013.
        assert!(mean.abs() < 0.01, "mean Kendall tau between successive shuffles {mean:.4}");
    }

    #[test]
    fn one_artist_over_half_opens_and_closes_the_order() {
        let artists = ["A", "A", "A", "A", "A", "B", "C"];
        let mut rng = SmallRng::seed_from_u64(5);
        for _ in 0..100 {
            let order = shuffle(&artists, &mut rng);
            assert_eq!(adjacencies(&artists, &order), 2);
            assert_eq!((artists[order[0]], artists[order[6]]), ("A", "A"));
        }
        assert!(shuffle(&[], &mut rng).is_empty());
        assert_eq!(shuffle(&["x"], &mut rng), vec![0]);
    }
}

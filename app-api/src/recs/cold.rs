//! Cold start: a track with no plays gets collaborative factors from its sound. A ridge
//! regression from audio embeddings (with a bias term) to item factors is fit on the
//! tracks that have both, then applied to those that have only an embedding, so a track
//! ingested today can be recommended today.

/// The fitted map: `(dims + 1) x factors`, row-major (the last row is the bias).
#[derive(Debug, Clone)]
pub struct AudioMap {
    pub dims: usize,
    pub factors: usize,
    pub weights: Vec<f32>,
}

/// Solve `a x = b` for symmetric positive definite `a` (n x n) by Cholesky; `b` has `m`
/// right-hand sides as columns (n x m, row-major). `None` if `a` is not positive definite.
pub(crate) fn cholesky_solve(a: &[f64], n: usize, b: &[f64], m: usize) -> Option<Vec<f64>> {
    let mut l = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut sum = a[i * n + j];
            for k in 0..j {
                sum -= l[i * n + k] * l[j * n + k];
            }
            if i == j {
                if sum <= 0.0 {
                    return None;
                }
                l[i * n + i] = sum.sqrt();
            } else {
                l[i * n + j] = sum / l[j * n + j];
            }
        }
    }
    let mut x = b.to_vec();
    for c in 0..m {
        // Forward: L z = b, then back: L^T x = z.
        for i in 0..n {
            let mut s = x[i * m + c];
            for k in 0..i {
                s -= l[i * n + k] * x[k * m + c];
            }
            x[i * m + c] = s / l[i * n + i];
        }
        for i in (0..n).rev() {
            let mut s = x[i * m + c];
            for k in i + 1..n {
                s -= l[k * n + i] * x[k * m + c];
            }
            x[i * m + c] = s / l[i * n + i];
        }
    }
    Some(x)
}

impl AudioMap {
    /// Fit on pairs of (embedding, factors) with ridge penalty `lambda`. `None` with
    /// fewer pairs than dimensions worth fitting, or inconsistent sizes.
    pub fn fit(pairs: &[(&[f32], &[f32])], lambda: f64) -> Option<AudioMap> {
        let (e0, y0) = pairs.first()?;
        let (dims, factors) = (e0.len(), y0.len());
        let n = dims + 1;
        if pairs.len() < 2 || pairs.iter().any(|(e, y)| e.len() != dims || y.len() != factors) {
            return None;
        }
        let (mut ata, mut aty) = (vec![0f64; n * n], vec![0f64; n * factors]);
        let mut row = vec![0f64; n];
        for (e, y) in pairs {
            for (r, v) in row.iter_mut().zip(e.iter()) {
                *r = f64::from(*v);
            }
            row[dims] = 1.0;
            for i in 0..n {
                for j in 0..n {
                    ata[i * n + j] += row[i] * row[j];
                }
                for (k, yk) in y.iter().enumerate() {
                    aty[i * factors + k] += row[i] * f64::from(*yk);
                }
            }
        }
        // The bias is not penalised.
        for i in 0..dims {
            ata[i * n + i] += lambda;
        }
        ata[dims * n + dims] += 1e-9;
        let w = cholesky_solve(&ata, n, &aty, factors)?;
        Some(AudioMap { dims, factors, weights: w.into_iter().map(|x| x as f32).collect() })
    }

    /// Item factors for an embedding.
    pub fn predict(&self, embedding: &[f32]) -> Vec<f32> {
        let mut out = self.weights[self.dims * self.factors..].to_vec();
        for (d, e) in embedding.iter().take(self.dims).enumerate() {
            for (o, w) in out.iter_mut().zip(&self.weights[d * self.factors..(d + 1) * self.factors]) {
                *o += e * w;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recs::als::{self, Csr, Params};
    use crate::recs::synth::{generate, weight, Spec};

    #[test]
    fn an_exact_linear_map_is_recovered() {
        let emb: Vec<Vec<f32>> = (0..50).map(|i| vec![(i as f32 * 0.37).sin(), (i as f32 * 0.11).cos()]).collect();
        let fac: Vec<Vec<f32>> = emb.iter().map(|e| vec![2.0 * e[0] - e[1] + 0.5, e[1]]).collect();
        let pairs: Vec<(&[f32], &[f32])> = emb.iter().zip(&fac).map(|(e, y)| (e.as_slice(), y.as_slice())).collect();
        let map = AudioMap::fit(&pairs, 1e-6).unwrap();
        let p = map.predict(&[0.3, -0.2]);
        assert!((p[0] - 1.3).abs() < 1e-3 && (p[1] + 0.2).abs() < 1e-3, "{p:?}");
    }

    /// Hold 10 % of the tracks out of training entirely; through the audio map, the
    /// listeners who played them should find them in their top 50 of the held-out set
    /// far more often than by chance, and more often than by popularity.
    #[test]
    fn held_out_tracks_are_found_through_their_sound() {
        let spec =
            Spec { users: 2000, tracks: 5000, artists: 500, clusters: 12, plays: (20, 60), in_taste: 0.8, seed: 9 };
        let data = generate(&spec);
        let cold: Vec<bool> = (0..spec.tracks).map(|t| t % 10 == 3).collect();
        let cold_ids: Vec<u32> = (0..spec.tracks as u32).filter(|&t| cold[t as usize]).collect();
        let triples: Vec<(u32, u32, f32)> =
            data.plays.iter().filter(|p| !cold[p.track as usize]).map(|p| (p.user, p.track, weight(p))).collect();
        let by_user = Csr::from_triples(spec.users, &triples);
        let params = Params { factors: 16, iterations: 8, regularization: 0.05, alpha: 10.0, ..Params::default() };
        let model = als::train(&by_user, spec.tracks, &params, |_| {});
        let by_track = by_user.transpose(spec.tracks);
        let pairs: Vec<(&[f32], &[f32])> = (0..spec.tracks)
            .filter(|&t| !cold[t] && !by_track.row(t).0.is_empty())
            .map(|t| (data.track_embedding[t].as_slice(), model.item_vec(t)))
            .collect();
        let map = AudioMap::fit(&pairs, 1.0).unwrap();
        let predicted: Vec<Vec<f32>> =
            cold_ids.iter().map(|&t| map.predict(&data.track_embedding[t as usize])).collect();
        // Popularity among the cold tracks cannot be known from training; the baseline
        // uses it anyway (it is the strongest non-personal ranking).
        let mut plays_of = vec![0usize; spec.tracks];
        for p in &data.plays {
            plays_of[p.track as usize] += 1;
        }
        let mut by_pop = cold_ids.clone();
        by_pop.sort_by_key(|&t| std::cmp::Reverse(plays_of[t as usize]));
        let (mut hits, mut pop_hits, mut trials) = (0usize, 0usize, 0usize);
        let mut held: std::collections::BTreeSet<(u32, u32)> = std::collections::BTreeSet::new();
        for p in data.plays.iter().filter(|p| cold[p.track as usize] && !p.skipped) {
            held.insert((p.user, p.track));
        }
        for &(u, t) in &held {
            let x = model.user_vec(u as usize);
            let mut scored: Vec<(f32, u32)> =
                cold_ids.iter().zip(&predicted).map(|(&c, y)| (x.iter().zip(y).map(|(a, b)| a * b).sum(), c)).collect();
            scored.sort_by(|a, b| b.0.total_cmp(&a.0));
            hits += usize::from(scored[..50].iter().any(|s| s.1 == t));
            pop_hits += usize::from(by_pop[..50].contains(&t));
            trials += 1;
        }
        let recall = hits as f64 / trials as f64;
        let random = 50.0 / cold_ids.len() as f64;
        let popularity = pop_hits as f64 / trials as f64;
        eprintln!("cold start recall@50 {recall:.3}, random {random:.3}, popularity {popularity:.3}");
        assert!(recall >= 5.0 * random, "recall@50 {recall:.3} against random {random:.3}");
        assert!(recall > popularity, "recall@50 {recall:.3} against popularity {popularity:.3}");
    }
}

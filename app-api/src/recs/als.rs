//! Implicit ALS (Hu, Koren and Volinsky 2008): users and items get `factors`-long
//! vectors such that `x_u . y_i` approaches 1 where the user played the item and 0
//! elsewhere, each term weighted by the confidence `1 + alpha * r_ui` (plays count more
//! than skips; unplayed pairs weigh 1). Each half-iteration fixes one side and solves the
//! other side's least squares, one row at a time, with a few conjugate-gradient steps
//! warm-started from the row's previous value (Takacs, Pilaszy and Tikk 2011), so a row
//! costs O(f^2 + n_u f) rather than a factorisation. Rows are split across threads.

use rand::{Rng, SeedableRng};

/// A sparse matrix in compressed rows: row `r`'s columns are `idx[indptr[r]..indptr[r+1]]`.
#[derive(Debug, Clone, Default)]
pub struct Csr {
    pub indptr: Vec<usize>,
    pub idx: Vec<u32>,
    pub val: Vec<f32>,
}

impl Csr {
    /// From (row, column, value) triples; repeated pairs add up.
    pub fn from_triples(rows: usize, triples: &[(u32, u32, f32)]) -> Csr {
        let mut sorted = triples.to_vec();
        sorted.sort_by_key(|t| (t.0, t.1));
        let mut out = Csr { indptr: vec![0; rows + 1], idx: Vec::with_capacity(sorted.len()), val: Vec::new() };
        let mut last: Option<(u32, u32)> = None;
        for (r, c, v) in sorted {
            if last == Some((r, c)) {
                if let Some(x) = out.val.last_mut() {
                    *x += v;
                }
                continue;
            }
            last = Some((r, c));
            out.idx.push(c);
            out.val.push(v);
            out.indptr[r as usize + 1] += 1;
        }
        for r in 0..rows {
            out.indptr[r + 1] += out.indptr[r];
        }
        out
    }

    pub fn rows(&self) -> usize {
        self.indptr.len().saturating_sub(1)
    }

    pub fn row(&self, r: usize) -> (&[u32], &[f32]) {
        let (a, b) = (self.indptr[r], self.indptr[r + 1]);
        (&self.idx[a..b], &self.val[a..b])
    }

    /// The transpose: columns become rows.
    pub fn transpose(&self, columns: usize) -> Csr {
        let mut triples = Vec::with_capacity(self.idx.len());
        for r in 0..self.rows() {
            let (idx, val) = self.row(r);
            triples.extend(idx.iter().zip(val).map(|(&c, &v)| (c, r as u32, v)));
        }
        Csr::from_triples(columns, &triples)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub factors: usize,
    pub iterations: usize,
    pub regularization: f32,
    /// Confidence per unit of interaction: c = 1 + alpha * r.
    pub alpha: f32,
    pub cg_steps: usize,
    pub threads: usize,
    pub seed: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params { factors: 64, iterations: 15, regularization: 0.01, alpha: 40.0, cg_steps: 3, threads: 0, seed: 1 }
    }
}

/// Trained factors, row-major: `user[u * f .. (u + 1) * f]`.
#[derive(Debug, Clone)]
pub struct Model {
    pub factors: usize,
    pub user: Vec<f32>,
    pub item: Vec<f32>,
}

impl Model {
    pub fn user_vec(&self, u: usize) -> &[f32] {
        &self.user[u * self.factors..(u + 1) * self.factors]
    }

    pub fn item_vec(&self, i: usize) -> &[f32] {
        &self.item[i * self.factors..(i + 1) * self.factors]
    }

    /// The `k` best items for a user vector, leaving out `seen` (sorted).
    pub fn top_k(&self, user: &[f32], k: usize, seen: &[u32]) -> Vec<u32> {
        let items = self.item.len() / self.factors.max(1);
        let mut scored: Vec<(f32, u32)> = (0..items as u32)
            .filter(|i| seen.binary_search(i).is_err())
            .map(|i| (dot(user, self.item_vec(i as usize)), i))
            .collect();
        let k = k.min(scored.len());
        if k == 0 {
            return Vec::new();
        }
        scored.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
        scored.truncate(k);
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored.into_iter().map(|s| s.1).collect()
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `other^T other`, f x f.
fn gram(other: &[f32], f: usize) -> Vec<f32> {
    let mut g = vec![0f32; f * f];
    for row in other.chunks_exact(f) {
        for a in 0..f {
            let ra = row[a];
            for b in a..f {
                g[a * f + b] += ra * row[b];
            }
        }
    }
    for a in 0..f {
        for b in 0..a {
            g[a * f + b] = g[b * f + a];
        }
    }
    g
}

/// Solve every row of `target` against the fixed `other` side.
fn solve_side(target: &mut [f32], other: &[f32], data: &Csr, p: &Params, threads: usize) {
    let f = p.factors;
    let g = gram(other, f);
    let rows_per = data.rows().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        for (chunk, rows) in target.chunks_mut(rows_per * f).enumerate() {
            let g = &g;
            s.spawn(move || {
                let (mut r, mut dir, mut ad) = (vec![0f32; f], vec![0f32; f], vec![0f32; f]);
                for (k, x) in rows.chunks_exact_mut(f).enumerate() {
                    let (idx, val) = data.row(chunk * rows_per + k);
                    // r = b - A x, with A = G + reg I + sum (c - 1) y y^T and b = sum c y.
                    matvec(g, x, &mut r, f);
                    for (ri, xi) in r.iter_mut().zip(x.iter()) {
                        *ri = -*ri - p.regularization * xi;
                    }
                    for (&i, &v) in idx.iter().zip(val) {
                        let y = &other[i as usize * f..(i as usize + 1) * f];
                        let c = 1.0 + p.alpha * v;
                        let w = c - (c - 1.0) * dot(y, x);
                        for (ri, yi) in r.iter_mut().zip(y) {
                            *ri += w * yi;
                        }
                    }
                    dir.copy_from_slice(&r);
                    let mut rs_old = dot(&r, &r);
                    for _ in 0..p.cg_steps {
                        if rs_old < 1e-20 {
                            break;
                        }
                        matvec(g, &dir, &mut ad, f);
                        for (a, d) in ad.iter_mut().zip(&dir) {
                            *a += p.regularization * d;
                        }
                        for (&i, &v) in idx.iter().zip(val) {
                            let y = &other[i as usize * f..(i as usize + 1) * f];
                            let w = p.alpha * v * dot(y, &dir);
                            for (a, yi) in ad.iter_mut().zip(y) {
                                *a += w * yi;
                            }
                        }
                        let step = rs_old / dot(&dir, &ad).max(1e-30);
                        for j in 0..f {
                            x[j] += step * dir[j];
                            r[j] -= step * ad[j];
                        }
                        let rs_new = dot(&r, &r);
                        for j in 0..f {
                            dir[j] = r[j] + rs_new / rs_old * dir[j];
                        }
                        rs_old = rs_new;
                    }
                }
            });
        }
    });
}

fn matvec(g: &[f32], x: &[f32], out: &mut [f32], f: usize) {
    for (a, o) in out.iter_mut().enumerate() {
        *o = dot(&g[a * f..(a + 1) * f], x);
    }
}

/// Train on `by_user` (users x items, interaction strengths). `progress` hears each
/// finished iteration.
pub fn train(by_user: &Csr, items: usize, p: &Params, mut progress: impl FnMut(usize)) -> Model {
    let f = p.factors;
    let threads = if p.threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { p.threads };
    let by_item = by_user.transpose(items);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(p.seed);
    let mut init = |n: usize| (0..n * f).map(|_| rng.random_range(-0.01f32..0.01)).collect::<Vec<f32>>();
    let (mut user, mut item) = (init(by_user.rows()), init(items));
    for it in 0..p.iterations {
        solve_side(&mut user, &item, by_user, p, threads);
        solve_side(&mut item, &user, &by_item, p, threads);
        progress(it + 1);
    }
    Model { factors: f, user, item }
}

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
        // A counting sort: rows come out in order, so each new row's columns do too.
        let mut indptr = vec![0usize; columns + 1];
        for &c in &self.idx {
            indptr[c as usize + 1] += 1;
        }
        for c in 0..columns {
            indptr[c + 1] += indptr[c];
        }
        let mut next = indptr.clone();
        let (mut idx, mut val) = (vec![0u32; self.idx.len()], vec![0f32; self.val.len()]);
        for r in 0..self.rows() {
            let (cols, vals) = self.row(r);
            for (&c, &v) in cols.iter().zip(vals) {
                let at = &mut next[c as usize];
                idx[*at] = r as u32;
                val[*at] = v;
                *at += 1;
            }
        }
        Csr { indptr, idx, val }
    }
}

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
#[serde(default)]
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

/// `a . b` over the shorter length. Eight running sums rather than one, so the
/// compiler can keep them in vector registers (a single f32 sum must be added in order
/// and does not vectorise); this is most of the training time.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let mut tail = 0f32;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += x * y;
    }
    let mut acc = [0f32; 8];
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// `other^T other`, f x f: each thread sums the outer products of a share of the rows.
pub(crate) fn gram(other: &[f32], f: usize, threads: usize) -> Vec<f32> {
    let rows_per = (other.len() / f.max(1)).div_ceil(threads.max(1)).max(1);
    let parts: Vec<Vec<f32>> = std::thread::scope(|s| {
        let handles: Vec<_> = other.chunks(rows_per * f).map(|part| s.spawn(move || gram_part(part, f))).collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let mut g = vec![0f32; f * f];
    for part in parts {
        g.iter_mut().zip(part).for_each(|(a, b)| *a += b);
    }
    for a in 0..f {
        for b in 0..a {
            g[a * f + b] = g[b * f + a];
        }
    }
    g
}

/// The upper triangle of `rows^T rows`, with AVX2 where the CPU has it.
fn gram_part(rows: &[f32], f: usize) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        #[allow(unsafe_code)]
        return unsafe { gram_part_avx2(rows, f) };
    }
    gram_part_portable(rows, f)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(unsafe_code)]
unsafe fn gram_part_avx2(rows: &[f32], f: usize) -> Vec<f32> {
    gram_part_portable(rows, f)
}

#[inline(always)]
fn gram_part_portable(rows: &[f32], f: usize) -> Vec<f32> {
    let mut g = vec![0f32; f * f];
    for row in rows.chunks_exact(f) {
        for a in 0..f {
            let ra = row[a];
            for (gb, rb) in g[a * f + a..(a + 1) * f].iter_mut().zip(&row[a..]) {
                *gb += ra * rb;
            }
        }
    }
    g
}

/// `out[r] = rows[r] . x` for each `f`-long row: an exact scan, with AVX2 where the
/// CPU has it (serving ranks every track this way).
pub fn scan(rows: &[f32], f: usize, x: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        #[allow(unsafe_code)]
        unsafe {
            scan_avx2(rows, f, x, out)
        };
        return;
    }
    scan_portable(rows, f, x, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(unsafe_code)]
unsafe fn scan_avx2(rows: &[f32], f: usize, x: &[f32], out: &mut [f32]) {
    scan_portable(rows, f, x, out);
}

#[inline(always)]
fn scan_portable(rows: &[f32], f: usize, x: &[f32], out: &mut [f32]) {
    if f == 0 {
        return;
    }
    for (o, row) in out.iter_mut().zip(rows.chunks_exact(f)) {
        *o = dot(row, x);
    }
}

/// What every row's solve reads.
struct Side<'a> {
    other: &'a [f32],
    data: &'a Csr,
    g: &'a [f32],
    p: &'a Params,
}

/// Solve every row of `target` against the fixed `other` side.
fn solve_side(target: &mut [f32], other: &[f32], data: &Csr, p: &Params, threads: usize) {
    let f = p.factors;
    let g = gram(other, f, threads);
    let side = Side { other, data, g: &g, p };
    // Threads take blocks of rows as they finish the last: rows differ in length (a
    // popular track has many listeners), so equal shares would leave a thread idle.
    const BLOCK: usize = 256;
    let blocks = std::sync::Mutex::new(target.chunks_mut(BLOCK * f).enumerate());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            let (side, blocks) = (&side, &blocks);
            s.spawn(move || {
                let mut scratch = vec![0f32; 3 * f];
                loop {
                    let Some((block, rows)) = blocks.lock().unwrap_or_else(|e| e.into_inner()).next() else { break };
                    solve_rows(side, rows, block * BLOCK, &mut scratch);
                }
            });
        }
    });
}

/// The rows' solves, compiled for AVX2 where the CPU has it (checked once per call;
/// the portable build targets SSE2 only, and this loop is the training time).
fn solve_rows(side: &Side, rows: &mut [f32], first: usize, scratch: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        #[allow(unsafe_code)]
        unsafe {
            solve_rows_avx2(side, rows, first, scratch)
        };
        return;
    }
    solve_rows_portable(side, rows, first, scratch);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(unsafe_code)]
unsafe fn solve_rows_avx2(side: &Side, rows: &mut [f32], first: usize, scratch: &mut [f32]) {
    solve_rows_portable(side, rows, first, scratch);
}

#[inline(always)]
fn solve_rows_portable(side: &Side, rows: &mut [f32], first: usize, scratch: &mut [f32]) {
    let (p, f, other, g) = (side.p, side.p.factors, side.other, side.g);
    let (r, rest) = scratch.split_at_mut(f);
    let (dir, ad) = rest.split_at_mut(f);
    for (k, x) in rows.chunks_exact_mut(f).enumerate() {
        let (idx, val) = side.data.row(first + k);
        // r = b - A x, with A = G + reg I + sum (c - 1) y y^T and b = sum c y.
        matvec(g, x, r, f);
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
        dir.copy_from_slice(r);
        let mut rs_old = dot(r, r);
        for _ in 0..p.cg_steps {
            if rs_old < 1e-20 {
                break;
            }
            matvec(g, dir, ad, f);
            for (a, d) in ad.iter_mut().zip(dir.iter()) {
                *a += p.regularization * d;
            }
            for (&i, &v) in idx.iter().zip(val) {
                let y = &other[i as usize * f..(i as usize + 1) * f];
                let w = p.alpha * v * dot(y, dir);
                for (a, yi) in ad.iter_mut().zip(y) {
                    *a += w * yi;
                }
            }
            let step = rs_old / dot(dir, ad).max(1e-30);
            for j in 0..f {
                x[j] += step * dir[j];
                r[j] -= step * ad[j];
            }
            let rs_new = dot(r, r);
            for j in 0..f {
                dir[j] = r[j] + rs_new / rs_old * dir[j];
            }
            rs_old = rs_new;
        }
    }
}

/// `out = G x` for symmetric `G`, as a sum of G's rows scaled by x: independent lanes
/// that vectorise, where a dot product per row would end in a reduction each.
#[inline(always)]
fn matvec(g: &[f32], x: &[f32], out: &mut [f32], f: usize) {
    out.fill(0.0);
    for (j, &xj) in x.iter().enumerate().take(f) {
        for (o, gj) in out.iter_mut().zip(&g[j * f..(j + 1) * f]) {
            *o += xj * gj;
        }
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

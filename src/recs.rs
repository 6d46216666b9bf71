//! `segue recs ...`: the recommendation batch jobs, run against the app API's config.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use segue_app_api::recs::als::{self, Csr, Params};
use segue_app_api::recs::synth::{self, Spec};
use segue_app_api::Config;

use crate::Failure;

#[derive(Subcommand)]
pub enum RecsAction {
    /// Train implicit ALS on every play in the log and store the factors as the new
    /// model (the app API picks it up within a minute). Weekly in production.
    Train {
        #[command(flatten)]
        als: AlsArgs,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write seeded synthetic listening data with planted taste clusters and a Zipf
    /// popularity skew, split leave-last-out: `train.tsv` (user, track, weight: a stream
    /// 1, a skip 0.25) and `test.tsv` (user, held-out track). For benchmarks.
    Synth {
        /// Directory to write into (created).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[arg(long, default_value_t = 50_000)]
        users: usize,
        #[arg(long, default_value_t = 20_000)]
        tracks: usize,
        #[arg(long, default_value_t = 2_000)]
        artists: usize,
        /// Taste clusters.
        #[arg(long, default_value_t = 40)]
        clusters: usize,
        /// Fewest and most plays per user.
        #[arg(long, default_value_t = 20)]
        min_plays: usize,
        #[arg(long, default_value_t = 80)]
        max_plays: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Train implicit ALS on a `train.tsv` (as `synth` writes) and write the factors as
    /// `user_factors.npy` and `item_factors.npy` (rows in id order) for scoring outside.
    Fit {
        /// The interactions: user, track, weight per line, ids from 0.
        #[arg(long, value_name = "FILE")]
        train: PathBuf,
        /// Directory to write the factors into (created).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[command(flatten)]
        als: AlsArgs,
        /// Worker threads (0: one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
}

/// The model's settings, shared by `train` and `fit`.
#[derive(clap::Args)]
pub struct AlsArgs {
    /// Latent factors per user and track.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(2..=512))]
    factors: u16,
    /// Alternating iterations.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u16).range(1..=200))]
    iterations: u16,
    /// L2 regularization.
    #[arg(long, default_value_t = 0.01)]
    regularization: f32,
    /// Confidence per unit of listening (c = 1 + alpha r; a stream is 1, a skip 0.25).
    #[arg(long, default_value_t = 40.0)]
    alpha: f32,
}

impl AlsArgs {
    /// Checked training parameters, on `threads` (0: one per core).
    fn params(&self, threads: usize) -> Result<Params, Failure> {
        let (regularization, alpha) = (self.regularization, self.alpha);
        if !(regularization.is_finite() && regularization >= 0.0 && alpha.is_finite() && alpha > 0.0) {
            return Err(Failure::Usage("--regularization must be >= 0 and --alpha > 0".into()));
        }
        Ok(Params {
            factors: usize::from(self.factors),
            iterations: usize::from(self.iterations),
            regularization,
            alpha,
            threads,
            ..Params::default()
        })
    }
}

/// A progress bar over training iterations.
fn iteration_bar(iterations: usize) -> indicatif::ProgressBar {
    crate::progress_bar(iterations as u64, "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} iterations")
}

fn io_failure(path: &Path, e: impl std::fmt::Display) -> Failure {
    Failure::Runtime(format!("{}: {e}", path.display()))
}

/// Write `rows x cols` f32 values as a NumPy `.npy` (version 1.0, little-endian, C order).
fn write_npy(path: &Path, rows: usize, cols: usize, values: &[f32]) -> Result<(), Failure> {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Magic (6) + version (2) + length (2) + header + newline, padded to 64 bytes.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + values.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    segue_core::fsutil::write_atomic(path, &out, 0o644).map_err(|e| io_failure(path, e))
}

/// (user, track, weight) interactions.
type Triples = Vec<(u32, u32, f32)>;

/// Read `user\ttrack\tweight` lines: (users, tracks, interactions).
fn read_triples(path: &Path) -> Result<(usize, usize, Triples), Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| io_failure(path, e))?;
    let (mut users, mut tracks, mut triples) = (0usize, 0usize, Vec::new());
    for (n, line) in text.lines().enumerate() {
        let bad = || Failure::Usage(format!("{} line {}: expected user, track, weight", path.display(), n + 1));
        let mut f = line.split('\t');
        let (Some(u), Some(t), Some(w), None) = (f.next(), f.next(), f.next(), f.next()) else { return Err(bad()) };
        let (u, t, w): (u32, u32, f32) =
            (u.parse().map_err(|_| bad())?, t.parse().map_err(|_| bad())?, w.parse().map_err(|_| bad())?);
        if !(w.is_finite() && w > 0.0) {
            return Err(bad());
        }
        users = users.max(u as usize + 1);
        tracks = tracks.max(t as usize + 1);
        triples.push((u, t, w));
    }
    Ok((users, tracks, triples))
}

pub async fn recs(action: RecsAction, config: Config) -> Result<(), Failure> {
    match action {
        RecsAction::Train { als, json } => {
            let params = als.params(0)?;
            let pool =
                segue_app_api::catalog::open(&config.database).await.map_err(|e| Failure::Runtime(e.to_string()))?;
            let bar = iteration_bar(params.iterations);
            let tick = bar.clone();
            let done = segue_app_api::recs::train::train(&pool, params, segue_app_api::now_ms(), move |it| {
                tick.set_position(it as u64)
            })
            .await
            .map_err(|e| Failure::Runtime(e.to_string()))?;
            bar.finish_and_clear();
            if json {
                println!("{}", serde_json::to_string(&done).unwrap_or_default());
            }
            eprintln!(
                "segue recs train: model {} from {} plays of {} users on {} tracks, {} factors, in {:.1} s",
                done.model, done.plays, done.users, done.tracks, done.factors, done.seconds
            );
            Ok(())
        }
        RecsAction::Synth { out, users, tracks, artists, clusters, min_plays, max_plays, seed } => {
            if users == 0 || tracks == 0 || artists == 0 || clusters == 0 || min_plays == 0 || max_plays < min_plays {
                return Err(Failure::Usage(
                    "--users, --tracks, --artists, --clusters and --min-plays must be > 0, --max-plays >= --min-plays"
                        .into(),
                ));
            }
            let spec = Spec { users, tracks, artists, clusters, plays: (min_plays, max_plays), in_taste: 0.8, seed };
            let data = synth::generate(&spec);
            let (train, test) = synth::leave_last_out(&data.plays);
            std::fs::create_dir_all(&out).map_err(|e| io_failure(&out, e))?;
            let mut text = Vec::with_capacity(train.len() * 16);
            for p in &train {
                let _ = writeln!(text, "{}\t{}\t{}", p.user, p.track, synth::weight(p));
            }
            let path = out.join("train.tsv");
            segue_core::fsutil::write_atomic(&path, &text, 0o644).map_err(|e| io_failure(&path, e))?;
            text.clear();
            for (u, t) in &test {
                let _ = writeln!(text, "{u}\t{t}");
            }
            let path = out.join("test.tsv");
            segue_core::fsutil::write_atomic(&path, &text, 0o644).map_err(|e| io_failure(&path, e))?;
            eprintln!(
                "segue recs synth: {} training plays and {} held-out tracks of {users} users on {tracks} tracks in {}",
                train.len(),
                test.len(),
                out.display()
            );
            Ok(())
        }
        RecsAction::Fit { train, out, als: settings, threads } => {
            let params = settings.params(threads)?;
            let (users, tracks, triples) = read_triples(&train)?;
            let by_user = Csr::from_triples(users, &triples);
            let bar = iteration_bar(params.iterations);
            let tick = bar.clone();
            let started = std::time::Instant::now();
            let model = als::train(&by_user, tracks, &params, move |it| tick.set_position(it as u64));
            let seconds = started.elapsed().as_secs_f64();
            bar.finish_and_clear();
            std::fs::create_dir_all(&out).map_err(|e| io_failure(&out, e))?;
            write_npy(&out.join("user_factors.npy"), users, params.factors, &model.user)?;
            write_npy(&out.join("item_factors.npy"), tracks, params.factors, &model.item)?;
            println!(
                "{}",
                serde_json::json!({"users": users, "tracks": tracks, "plays": by_user.idx.len(), "seconds": seconds})
            );
            Ok(())
        }
    }
}

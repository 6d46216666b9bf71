//! `segue recs ...`: the recommendation batch jobs, run against the app API's config.

use clap::Subcommand;
use segue_app_api::recs::als::Params;
use segue_app_api::Config;

use crate::Failure;

#[derive(Subcommand)]
pub enum RecsAction {
    /// Train implicit ALS on every play in the log and store the factors as the new
    /// model (the app API picks it up within a minute). Weekly in production.
    Train {
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
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn recs(action: RecsAction, config: Config) -> Result<(), Failure> {
    match action {
        RecsAction::Train { factors, iterations, regularization, alpha, json } => {
            if !(regularization.is_finite() && regularization >= 0.0 && alpha.is_finite() && alpha > 0.0) {
                return Err(Failure::Usage("--regularization must be >= 0 and --alpha > 0".into()));
            }
            let pool =
                segue_app_api::catalog::open(&config.database).await.map_err(|e| Failure::Runtime(e.to_string()))?;
            let params = Params {
                factors: usize::from(factors),
                iterations: usize::from(iterations),
                regularization,
                alpha,
                ..Params::default()
            };
            let bar = crate::progress_bar(
                u64::from(iterations),
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} iterations",
            );
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
    }
}

//! `segue keys ...`: content-key custody at the origin.

use std::path::PathBuf;

use clap::Subcommand;

use crate::Failure;

#[derive(Subcommand)]
pub enum KeysAction {
    /// Rewrap every content key under the current key-encryption key (the first in
    /// [drm] kek_file or SEGUE_KEK), and give packaged content without a key one.
    ///
    /// Audio is never re-encrypted: only the small `keys/{cid}.json` objects change.
    /// Rotation: put the new KEK first in the file (keep the old one after it), restart
    /// the origins and app APIs (they then unwrap with either), run this, then remove
    /// the old KEK and restart again. Safe to rerun; safe while the origin serves.
    Rotate {
        /// Print the counts as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn keys(action: KeysAction, config: Option<PathBuf>, data_dir: Option<String>) -> Result<(), Failure> {
    let mut cfg = segue_origin::Config::load(config.as_deref()).map_err(|e| Failure::Usage(e.to_string()))?;
    if let Some(d) = data_dir {
        cfg.data_dir = d;
    }
    let keks =
        cfg.drm.keks().map_err(|e| Failure::Usage(format!("{}: {}", e.field, e.message)))?.ok_or_else(|| {
            Failure::Usage("no key-encryption key: set [drm] kek_file in --config, or SEGUE_KEK".into())
        })?;
    let store = segue_core::store::open_store(&cfg.data_dir, &cfg.s3)
        .await
        .map_err(|e| Failure::Usage(format!("--data-dir: {e}")))?;
    match action {
        KeysAction::Rotate { json } => {
            let bar = crate::progress_bar(0, "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} contents");
            let done = segue_origin::keys::rotate(store.clone(), &keks, |n, total| {
                bar.set_length(total);
                bar.set_position(n);
            })
            .await
            .map_err(|e| Failure::Runtime(e.to_string()))?;
            bar.finish_and_clear();
            if json {
                println!("{}", serde_json::to_string(&done).unwrap_or_default());
            }
            eprintln!(
                "segue keys rotate: {} rewrapped under {:?}, {} already current, {} created ({})",
                done.rewrapped,
                keks.current(),
                done.current,
                done.created,
                store.describe()
            );
            Ok(())
        }
    }
}

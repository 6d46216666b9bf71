//! `segue offline ...`: a device directory for listening with no network.

use std::path::PathBuf;

use clap::Subcommand;
use segue_core::drm::license::Standing;
use segue_player::api::AppApi;
use segue_player::library::Library;
use segue_player::sync::Selection;

use crate::{read_token, Failure};

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[derive(Subcommand)]
pub enum OfflineAction {
    /// License tracks, an album or a playlist for this device and download their
    /// encrypted audio and seek tables into DIR (resumable; a progress bar on a
    /// terminal). The first sync registers the device (its key never leaves DIR).
    Sync {
        /// An album id.
        #[arg(long, conflicts_with_all = ["playlist", "tracks"])]
        album: Option<String>,
        /// A playlist id.
        #[arg(long, conflicts_with = "tracks")]
        playlist: Option<String>,
        /// Quality tier of the copies: low, normal, standard, high or very_high.
        #[arg(long, default_value = "high")]
        tier: String,
        /// The device's name at registration [default: this machine's host name].
        #[arg(long)]
        device_name: Option<String>,
        /// Track ids.
        #[arg(value_name = "TRACK", required_unless_present_any = ["album", "playlist"])]
        tracks: Vec<String>,
    },
    /// Renew every license in DIR at once (license ids only: a few hundred bytes),
    /// keeping the signed answers; licenses the server revoked are removed with the
    /// audio no license covers any more.
    Renew,
    /// The licenses in DIR and how long each still plays, checked offline.
    Status,
}

pub async fn offline(
    action: OfflineAction,
    device_dir: PathBuf,
    app_api: String,
    token_file: Option<PathBuf>,
    json: bool,
) -> Result<(), Failure> {
    let api = || -> Result<AppApi, Failure> {
        let token = read_token(token_file.clone())?
            .ok_or_else(|| Failure::Usage("--token-file is required to reach the app API".into()))?;
        Ok(AppApi::new(&app_api, &token))
    };
    match action {
        OfflineAction::Sync { album, playlist, tier, device_name, tracks } => {
            let tier: segue_core::Tier = tier.parse().map_err(|_| {
                Failure::Usage(format!("--tier {tier:?} is not low, normal, standard, high or very_high"))
            })?;
            let what = match (album, playlist) {
                (Some(a), _) => Selection::Album(a),
                (_, Some(p)) => Selection::Playlist(p),
                _ => Selection::Tracks(tracks),
            };
            let name = device_name.unwrap_or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .map(|h| h.trim().to_owned())
                    .unwrap_or_else(|_| "device".into())
            });
            let bar =
                crate::progress_bar(0, "{spinner} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} {bytes_per_sec}");
            let synced = segue_player::sync::sync(&api()?, &device_dir, &name, &what, tier, |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })
            .await
            .map_err(|e| Failure::Runtime(e.to_string()))?;
            bar.finish_and_clear();
            if json {
                println!("{}", serde_json::to_string(&synced).unwrap_or_default());
            }
            eprintln!(
                "segue offline sync: license {} for {} tracks on device {} until {}; {} objects, {} bytes downloaded now",
                synced.license,
                synced.tracks,
                synced.device,
                segue_app_api::format_time(synced.expires_ms),
                synced.objects,
                synced.downloaded_bytes
            );
            Ok(())
        }
        OfflineAction::Renew => {
            let done =
                segue_player::sync::renew(&api()?, &device_dir).await.map_err(|e| Failure::Runtime(e.to_string()))?;
            if json {
                println!("{}", serde_json::to_string(&done).unwrap_or_default());
            }
            for (id, code, message) in &done.refused {
                eprintln!("segue offline renew: {id}: {code}: {message}");
            }
            eprintln!(
                "segue offline renew: {} renewed, {} refused, {} tracks revoked",
                done.renewed.len(),
                done.refused.len(),
                done.revoked_tracks.len()
            );
            Ok(())
        }
        OfflineAction::Status => {
            let now = now_ms();
            let library = Library::open(&device_dir, now).map_err(|e| Failure::Usage(e.to_string()))?;
            let rows: Vec<serde_json::Value> = library
                .held
                .iter()
                .map(|h| {
                    let (state, left_ms) = match library.standing(h.expires_ms, h.grace_ms) {
                        Standing::Valid { left_ms } => ("valid", left_ms),
                        Standing::Grace { left_ms } => ("grace", left_ms),
                        Standing::Expired { .. } => ("expired", 0),
                        Standing::ClockRolledBack { .. } => ("clock_rolled_back", 0),
                    };
                    serde_json::json!({
                        "license": h.id, "tier": h.tier, "tracks": h.tracks.len(), "revoked": h.revoked,
                        "expires_ms": h.expires_ms, "state": state, "left_ms": left_ms,
                    })
                })
                .collect();
            if json {
                println!("{}", serde_json::json!({ "licenses": rows, "warnings": library.warnings() }));
            } else {
                for r in &rows {
                    println!(
                        "{}  {:>4} tracks  {:<8} {:<18} {} h left",
                        r["license"].as_str().unwrap_or_default(),
                        r["tracks"],
                        r["tier"].as_str().unwrap_or_default(),
                        r["state"].as_str().unwrap_or_default(),
                        r["left_ms"].as_i64().unwrap_or(0) / 3_600_000
                    );
                }
                for w in library.warnings() {
                    eprintln!("segue offline status: {w}");
                }
            }
            Ok(())
        }
    }
}

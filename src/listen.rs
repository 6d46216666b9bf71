//! `segue play`: a queue of tracks played the way an app's player does, into a WAV file,
//! with every play reported through the on-device outbox.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use segue_player::engine::{OnPlay, Played};
use segue_player::outbox::{new_event_id, Outbox, PlayRecord};
use segue_player::report::{Reporter, Sync};

use crate::{read_token, Failure};

#[derive(Args)]
pub struct PlayArgs {
    /// App API base URL.
    #[arg(long, default_value = "http://127.0.0.1:7090", value_name = "URL")]
    app_api: String,
    /// File holding the listener's API key (or an admin token).
    #[arg(long, value_name = "FILE", required_unless_present = "offline")]
    token_file: Option<PathBuf>,
    /// Play from the device directory of `segue offline sync`, with no network at all:
    /// licenses checked offline, audio decrypted in memory. Plays wait in the outbox.
    /// With no TRACK, every licensed track plays, in license order.
    #[arg(long, requires = "device_dir", conflicts_with = "sync")]
    offline: bool,
    /// The device directory: the offline library (`segue offline sync`) and, online, the
    /// on-device cache of the most-played tracks. Online, tracks it holds (cached, or
    /// licensed offline) play from it with no request to the edge.
    #[arg(long, value_name = "DIR", env = "SEGUE_DEVICE_DIR")]
    device_dir: Option<PathBuf>,
    /// Bytes the device directory may hold: cached tracks, with the offline library's
    /// (which are never evicted). Suffixes K, M, G.
    #[arg(long, default_value = "2G", value_name = "BYTES", value_parser = parse_bytes)]
    cache_bytes: u64,
    /// Online with --device-dir: neither read nor fill the cache.
    #[arg(long)]
    no_cache: bool,
    /// The time to check licenses against, Unix ms (tests of expiry; default: now).
    #[arg(long, hide = true, value_name = "MS")]
    clock_ms: Option<i64>,
    /// Quality tier: low, normal, standard, high or very_high.
    #[arg(long, default_value = "high")]
    tier: String,
    /// Country the listener is in (default: the user's).
    #[arg(long)]
    country: Option<String>,
    /// WAV file to write (atomically).
    #[arg(long, value_name = "FILE", required_unless_present = "sync")]
    out: Option<PathBuf>,
    /// Start the first track this many milliseconds in (a seek through its seek
    /// table: the bytes before the nearest entry are never fetched).
    #[arg(long, default_value_t = 0, value_name = "MS")]
    start_ms: u64,
    /// Crossfade between tracks (equal-power), milliseconds; 0: gapless.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    crossfade_ms: u32,
    /// Skip to the next track after this long in each (reports the skip latency).
    #[arg(long, value_name = "MS")]
    skip_after_ms: Option<u32>,
    /// In each track, after AT_MS of it, seek to TO_MS (reports the seek latency).
    #[arg(long, value_name = "AT_MS:TO_MS", value_parser = parse_seek)]
    seek: Option<(u32, u32)>,
    /// Stop after this much audio (a preview), milliseconds.
    #[arg(long, value_name = "MS")]
    duration_ms: Option<u64>,
    /// Trust the CA certificates in this PEM file for https:// POPs [default: the
    /// system's trust store].
    #[arg(long, value_name = "PEM")]
    ca_file: Option<PathBuf>,
    /// To https:// POPs: h2 (HTTP/2, every request to a POP on one connection) or h1-tls
    /// (HTTP/1.1 over TLS).
    #[arg(long, default_value = "h2", value_name = "PROTOCOL")]
    tls_protocol: String,
    /// Open a new connection for every request instead of keeping one per POP alive.
    #[arg(long)]
    no_keep_alive: bool,
    /// Prefetch the next track's head this long before the end on a poor network (fetches
    /// below --poor-below-kbps, or a rebuffer or underrun this session), instead of 30 s.
    #[arg(long, default_value_t = 45_000, value_name = "MS")]
    poor_prefetch_lead_ms: u32,
    /// A network is poor below this throughput, kbit/s; 0: twice the tier's bitrate.
    #[arg(long, default_value_t = 0, value_name = "KBPS")]
    poor_below_kbps: u32,
    /// Prefetch the heads of this many next tracks.
    #[arg(long, default_value_t = 3, value_name = "N")]
    prefetch_tracks: usize,
    /// Play every track at --tier. By default each next track (never the one playing)
    /// comes at the best tier up to --tier that the measured bandwidth sustains, down to
    /// low (24 kbit/s); the report lists each change and why.
    #[arg(long)]
    fixed_tier: bool,
    /// A tier is sustained when the measured bandwidth is at least this many times its
    /// bitrate.
    #[arg(long, default_value_t = 1.5, value_name = "X")]
    tier_margin: f64,
    /// Pace playback like a sound device at this speed (1 = real time), so a late
    /// next track fades out instead of cutting; 0: render as fast as audio arrives.
    #[arg(long, default_value_t = 0.0)]
    speed: f64,
    /// Where plays wait until the app API acknowledges them [default:
    /// $XDG_STATE_HOME/segue/outbox, else ~/.local/state/segue/outbox].
    #[arg(long, value_name = "DIR", env = "SEGUE_OUTBOX")]
    outbox: Option<PathBuf>,
    /// Do not report the plays of this run (nothing is written to the outbox).
    #[arg(long, conflicts_with = "sync")]
    no_report: bool,
    /// Play nothing: send the plays waiting in the outbox and show its state. Exits 1
    /// when some could not be sent (they keep waiting).
    #[arg(long)]
    sync: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Play a playlist, shuffled by the app API (no artist twice in a row where
    /// possible), after the TRACKs given.
    #[arg(long, value_name = "ID", conflicts_with = "offline")]
    playlist: Option<String>,
    /// With --playlist: smart shuffle, one recommendation of the playlist's sound after
    /// every three tracks.
    #[arg(long, requires = "playlist")]
    smart: bool,
    /// Track ids, in play order.
    #[arg(required_unless_present_any = ["sync", "offline", "playlist"], value_name = "TRACK")]
    tracks: Vec<String>,
}

/// `AT:TO`, milliseconds.
fn parse_seek(s: &str) -> Result<(u32, u32), String> {
    let (at, to) = s.split_once(':').ok_or_else(|| format!("{s:?} is not AT_MS:TO_MS"))?;
    let ms = |v: &str| v.trim().parse::<u32>().map_err(|_| format!("{v:?} in {s:?} is not a number of milliseconds"));
    Ok((ms(at)?, ms(to)?))
}

/// `N`, `NK`, `NM` or `NG` bytes.
fn parse_bytes(s: &str) -> Result<u64, String> {
    let (digits, unit) = match s.trim().char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s.trim()[..i], c.to_ascii_uppercase()),
        _ => (s.trim(), 'B'),
    };
    let n: u64 = digits.parse().map_err(|_| format!("{s:?} is not a byte count like 500M or 2G"))?;
    let shift = match unit {
        'B' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        _ => return Err(format!("{s:?}: the suffix must be K, M or G")),
    };
    n.checked_mul(1 << shift).ok_or_else(|| format!("{s:?} is too large"))
}

/// The outbox folder when none is given.
fn default_outbox() -> Result<PathBuf, Failure> {
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".local/state")))
        .ok_or_else(|| Failure::Usage("--outbox is needed: neither XDG_STATE_HOME nor HOME is set".into()))?;
    Ok(state.join("segue/outbox"))
}

fn print_sync(sync: &Sync, outbox: &Outbox) {
    println!(
        "plays: {} sent ({} accepted, {} duplicates, {} set aside in rejected/), {} waiting in {}",
        sync.sent,
        sync.accepted,
        sync.duplicates,
        sync.set_aside,
        sync.waiting,
        outbox.dir().display()
    );
    if let Some(e) = &sync.error {
        eprintln!("segue play: plays not sent now: {e}");
    }
}

pub async fn play(a: PlayArgs) -> Result<(), Failure> {
    if a.tier.parse::<segue_core::Tier>().is_err() {
        return Err(Failure::Usage(format!("--tier {:?} is not low, normal, standard, high or very_high", a.tier)));
    }
    if !(1.0..=100.0).contains(&a.tier_margin) {
        return Err(Failure::Usage("--tier-margin must be 1-100".into()));
    }
    if !(0.0..=1000.0).contains(&a.speed) {
        return Err(Failure::Usage("--speed must be 0-1000".into()));
    }
    let token = read_token(a.token_file)?.unwrap_or_default();
    let api = segue_player::api::AppApi::new(&a.app_api, &token);
    let reporter = if a.no_report {
        None
    } else {
        let dir = match a.outbox {
            Some(d) => d,
            None => default_outbox()?,
        };
        let outbox = Outbox::open(&dir).map_err(|e| Failure::Usage(e.to_string()))?;
        Some(Arc::new(Reporter::new(api.clone(), Arc::new(outbox))))
    };
    if a.sync {
        let Some(r) = reporter else { return Ok(()) };
        let sync = r.sync().await;
        if a.json {
            println!("{}", serde_json::json!({ "plays": sync, "outbox": r.outbox().dir() }));
        } else {
            print_sync(&sync, r.outbox());
        }
        return match sync.error {
            Some(e) => Err(Failure::Runtime(format!("plays not sent: {e}"))),
            None => Ok(()),
        };
    }
    let out = a.out.ok_or_else(|| Failure::Usage("--out is required".into()))?;
    let protocol = match a.tls_protocol.as_str() {
        "h2" => segue_core::client::Protocol::Http2,
        "h1-tls" => segue_core::client::Protocol::Http1Tls,
        p => return Err(Failure::Usage(format!("--tls-protocol {p:?} is not h2 or h1-tls"))),
    };
    // A CA file is read (and refused) now; the system's store only when an https:// POP
    // comes up.
    let roots = match &a.ca_file {
        Some(path) => Some(
            segue_core::tls::trusted_roots(&path.display().to_string(), "--ca-file")
                .map_err(|e| Failure::Usage(e.to_string()))?,
        ),
        None => None,
    };
    let tls = Some(segue_player::fetch::Tls { roots, protocol });
    let opts = segue_player::engine::Options {
        tier: a.tier.clone(),
        country: a.country.clone(),
        crossfade_ms: a.crossfade_ms,
        speed: (a.speed > 0.0).then_some(a.speed),
        start_ms: a.start_ms,
        skip_after_ms: a.skip_after_ms,
        seek: a.seek,
        duration_ms: a.duration_ms,
        keep_alive: !a.no_keep_alive,
        poor_prefetch_lead_ms: a.poor_prefetch_lead_ms,
        poor_below_kbps: a.poor_below_kbps,
        adaptive_tier: !a.fixed_tier,
        prefetch_tracks: a.prefetch_tracks,
        tier_margin: a.tier_margin,
        tls,
        ..Default::default()
    };
    // Each play goes to the outbox as it ends, then a background sync sends it; what that
    // sync has not delivered by the end of the run, the final sync does (or the next run).
    let wake = Arc::new(tokio::sync::Notify::new());
    let (on_play, sender) = match &reporter {
        None => (None, None),
        Some(r) => {
            let (keeper, wake_sender) = (r.clone(), wake.clone());
            let country = a.country.clone();
            let on_play: OnPlay = Arc::new(move |p: Played| {
                let record = PlayRecord {
                    event_id: new_event_id(),
                    track: p.track,
                    started_ms: p.started_ms,
                    ms_played: p.ms_played,
                    tier: p.tier,
                    device: keeper.outbox().device().to_owned(),
                    skipped: p.skipped,
                    country: country.clone(),
                    session: p.session,
                };
                match keeper.outbox().add(&record) {
                    Ok(()) => wake_sender.notify_one(),
                    Err(e) => eprintln!("segue play: warning: the play of {} was not kept: {e}", record.track),
                }
            });
            let (r, wake, offline) = (r.clone(), wake.clone(), a.offline);
            let (stop, mut stopped) = tokio::sync::watch::channel(false);
            let sender = tokio::spawn(async move {
                let mut done = Sync::default();
                loop {
                    tokio::select! {
                        _ = wake.notified() => {}
                        _ = stopped.changed() => break,
                    }
                    // Offline plays wait in the outbox: nothing here reaches for the network.
                    if !offline {
                        // Not cancelled midway: what it sent, it also settles in the outbox.
                        done = done.then(r.sync().await);
                    }
                }
                done
            });
            (Some(on_play), Some((stop, sender)))
        }
    };
    let (engine, tracks) = match &a.device_dir {
        Some(dir) if a.offline => {
            let now = a.clock_ms.unwrap_or_else(crate::offline::now_ms);
            let library = segue_player::library::Library::open(dir, now).map_err(|e| Failure::Usage(e.to_string()))?;
            let tracks = if a.tracks.is_empty() { library.tracks() } else { a.tracks.clone() };
            (segue_player::engine::Engine::offline(Arc::new(library), opts), tracks)
        }
        _ => {
            let mut tracks = a.tracks.clone();
            if let Some(p) = &a.playlist {
                let queue = api.shuffled_queue(p, a.smart).await.map_err(|e| Failure::Runtime(e.to_string()))?;
                tracks.extend(queue);
            }
            let mut engine = segue_player::engine::Engine::new(api.clone(), opts);
            if let Some(dir) = a.device_dir.as_ref().filter(|_| !a.no_cache) {
                match segue_player::cache::Cache::open(dir, a.cache_bytes)
                    .map_err(|e| Failure::Usage(format!("--device-dir {}: {e}", dir.display())))?
                {
                    Some(cache) => engine = engine.cache(Arc::new(cache)),
                    None => tracing::warn!(
                        device_dir = %dir.display(),
                        "another player has the on-device cache open; playing without it"
                    ),
                }
                if dir.join("device.json").exists() {
                    let now = a.clock_ms.unwrap_or_else(crate::offline::now_ms);
                    let library = segue_player::library::Library::open(dir, now)
                        .map_err(|e| Failure::Usage(format!("--device-dir {}: {e}", dir.display())))?;
                    engine = engine.library(Arc::new(library));
                }
            }
            (engine, tracks)
        }
    };
    let played = segue_player::render::render(engine, &tracks, &out, on_play).await;
    let earlier = match sender {
        Some((stop, task)) => {
            let _ = stop.send(true);
            task.await.unwrap_or_default()
        }
        None => Sync::default(),
    };
    let sync = match &reporter {
        Some(r) if !a.offline => Some(earlier.then(r.sync().await)),
        Some(r) => Some(earlier.then(Sync { waiting: r.outbox().pending().map_or(0, |p| p.len()), ..Sync::default() })),
        None => None,
    };
    let report = played.map_err(|e| Failure::Runtime(e.to_string()))?;
    for w in &report.warnings {
        eprintln!("segue play: warning: {w}");
    }
    if a.json {
        let mut v = serde_json::to_value(&report).unwrap_or_default();
        if let (Some(s), Some(r)) = (&sync, &reporter) {
            v["plays"] = serde_json::to_value(s).unwrap_or_default();
            v["outbox"] = serde_json::to_value(r.outbox().dir()).unwrap_or_default();
        }
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        println!(
            "{}: {} tracks, {:.1} s of audio at {} Hz x{}\ntime to first audio {:.0} ms (after {} bytes), \
             {} bytes fetched over {} connections, {} failovers, gaps {} samples, {} underruns, {} rebuffers, in {:.2} s",
            out.display(),
            report.tracks,
            report.frames as f64 / f64::from(report.sample_rate.max(1)),
            report.sample_rate,
            report.channels,
            report.time_to_first_audio_ms,
            report.bytes_before_first_audio,
            report.bytes_fetched,
            report.connections,
            report.failovers,
            report.gap_samples,
            report.underruns,
            report.rebuffers,
            report.seconds
        );
        for c in &report.tier_changes {
            println!("track {} ({}) at {} after {}: {}", c.index + 1, c.track, c.to, c.from, c.reason);
        }
        if let (Some(s), Some(r)) = (&sync, &reporter) {
            print_sync(s, r.outbox());
        }
    }
    Ok(())
}

//! The listener's recommendation surfaces: Discover Weekly (30 tracks they have never
//! played, the same all week, 10% of the slots exploring cold-start tracks) and the
//! Daily Mixes (their listening grouped by taste, each group topped up with tracks like
//! it). Both are rights-filtered for the listener's country at the moment they are read.
//!
//! Exploration is Thompson sampling: each cold-start track the listener is predicted to
//! like (a positive affinity through the audio map) is an arm whose chance of being
//! streamed when shown has a Beta(1 + streams, 1 + impressions - streams) posterior,
//! counted by each training from the lists served since (`discover_weekly` is the
//! impression log). Each arm draws from its posterior, the draw is weighed by the
//! listener's affinity, and the highest get the explore slots. A track nobody was shown
//! yet draws from Beta(1, 1), so new tracks get their turn; one shown often and never
//! streamed stops being drawn high; its plays make it warm at the next training.

use std::collections::{HashMap, HashSet};

use rand::{Rng, SeedableRng};
use rand_distr::{Beta, Distribution};
use serde_json::json;
use sqlx::Row;

use super::serve::{Origin, Snapshot};
use crate::catalog::User;
use crate::error::Error;
use crate::App;

/// Candidates scored before rights and variety filters pick what is served.
pub const CANDIDATES: usize = 500;
/// Discover Weekly's length and the slots of it that explore.
pub const WEEKLY: usize = 30;
pub const EXPLORE_SLOTS: usize = 3;
/// Cold-start tracks, nearest the listener's taste first, that compete for those slots.
const EXPLORE_ARMS: usize = 50;
/// At most this many tracks of one artist in a list.
const PER_ARTIST: usize = 2;
/// Tracks per Daily Mix, and mixes at most.
const MIX_LENGTH: usize = 50;
const MIXES: usize = 6;
/// Plays a listener's taste is computed from (the latest).
const HISTORY: i64 = 5000;

const DAY_MS: i64 = 86_400_000;

/// Weeks start on Monday 00:00 UTC (1970-01-01 was a Thursday).
pub fn week_of(ms: i64) -> i64 {
    (ms.div_euclid(DAY_MS) + 3).div_euclid(7)
}

pub fn week_start_ms(week: i64) -> i64 {
    (week * 7 - 3) * DAY_MS
}

/// A seed for one listener and period: the same list is drawn all period long.
fn seed(user: &str, period: i64, what: &str) -> u64 {
    use sha2::Digest;
    let h = sha2::Sha256::digest(format!("{what}\0{user}\0{period}").as_bytes());
    u64::from_le_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]])
}

/// Walk `candidates` (best first) and keep the first `limit` the listener may play in
/// `country` now.
pub async fn playable(
    app: &App,
    snap: &Snapshot,
    candidates: impl Iterator<Item = (u32, f32)>,
    country: &str,
    now: i64,
    limit: usize,
) -> Result<Vec<(u32, f32)>, Error> {
    let mut out = Vec::with_capacity(limit);
    for (t, score) in candidates {
        if out.len() == limit {
            break;
        }
        match app.rights.check(&app.pool, &snap.ids[t as usize], country, now).await {
            Ok(_) => out.push((t, score)),
            Err(Error::Database(e)) => return Err(Error::Database(e)),
            Err(_) => {}
        }
    }
    Ok(out)
}

/// The first `limit` of `candidates` with at most `PER_ARTIST` tracks of one artist
/// (counting `counts` already taken).
fn varied(
    snap: &Snapshot,
    candidates: Vec<(u32, f32)>,
    counts: &mut HashMap<u32, usize>,
    limit: usize,
) -> Vec<(u32, f32)> {
    let mut out = Vec::with_capacity(limit);
    for (t, s) in candidates {
        if out.len() == limit {
            break;
        }
        let n = counts.entry(snap.artist[t as usize]).or_default();
        if *n < PER_ARTIST {
            *n += 1;
            out.push((t, s));
        }
    }
    out
}

/// A listener's plays before `before_ms`, newest first: (track, strength) per track
/// (a stream 1, a skip a quarter, summed), and every track they ever played.
async fn history(
    app: &App,
    snap: &Snapshot,
    user: &str,
    before_ms: i64,
) -> Result<(Vec<(u32, f32)>, HashSet<u32>), Error> {
    let rows = sqlx::query(
        "SELECT track_id, skipped FROM play_events WHERE user_id = $1 AND started_ms < $2 \
         ORDER BY started_ms DESC LIMIT $3",
    )
    .bind(user)
    .bind(before_ms)
    .bind(HISTORY)
    .fetch_all(&app.pool)
    .await?;
    let (mut strength, mut order) = (HashMap::<u32, f32>::new(), Vec::new());
    for r in rows {
        let Some(t) = snap.index_of(&r.try_get::<String, _>(0)?) else { continue };
        let w = if r.try_get::<i64, _>(1)? != 0 { 0.25 } else { 1.0 };
        *strength.entry(t).or_insert_with(|| {
            order.push(t);
            0.0
        }) += w;
    }
    let heard = order.iter().copied().collect();
    Ok((order.into_iter().map(|t| (t, strength[&t])).collect(), heard))
}

/// `GET /v1/me/discover-weekly`.
pub async fn discover_weekly(app: &App, user: &User, country: &str, now: i64) -> Result<serde_json::Value, Error> {
    let week = week_of(now);
    let mut stored = stored_weekly(app, &user.id, week).await?;
    if stored.is_empty() {
        let snap = app.recs.snapshot(&app.pool).await?;
        let list = generate_weekly(app, &snap, user, country, week, now).await?;
        if list.is_empty() {
            return Ok(json!({
                "week_start": crate::format_time(week_start_ms(week)),
                "model": snap.model,
                "tracks": [],
                "reason": "not enough listening yet: Discover Weekly is made from what you play",
            }));
        }
        let mut tx = segue_core::sql::begin_write(&app.pool).await?;
        for (position, (t, explore)) in list.iter().enumerate() {
            sqlx::query(
                "INSERT INTO discover_weekly (user_id, week, position, track_id, explore, model_id, generated_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            )
            .bind(&user.id)
            .bind(week)
            .bind(position as i64)
            .bind(&snap.ids[*t as usize])
            .bind(i64::from(*explore))
            .bind(snap.model)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        metrics::counter!("app_discover_weekly_generated_total").increment(1);
        // What was stored first wins a race between two requests.
        stored = stored_weekly(app, &user.id, week).await?;
    }
    let mut tracks = Vec::with_capacity(stored.len());
    for s in &stored {
        // Rights can end mid-week: such a track is left out, not replaced.
        if app.rights.check(&app.pool, &s.track, country, now).await.is_ok() {
            tracks.push(json!({ "track_id": s.track, "explore": s.explore }));
        }
    }
    Ok(json!({
        "week_start": crate::format_time(week_start_ms(week)),
        "model": stored.first().map_or(0, |s| s.model),
        "generated": stored.first().map(|s| crate::format_time(s.generated_ms)),
        "country": country,
        "tracks": tracks,
    }))
}

struct Stored {
    track: String,
    explore: bool,
    model: i64,
    generated_ms: i64,
}

async fn stored_weekly(app: &App, user: &str, week: i64) -> Result<Vec<Stored>, Error> {
    let rows = sqlx::query(
        "SELECT track_id, explore, model_id, generated_ms FROM discover_weekly \
         WHERE user_id = $1 AND week = $2 ORDER BY position",
    )
    .bind(user)
    .bind(week)
    .fetch_all(&app.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Stored {
                track: r.try_get(0)?,
                explore: r.try_get::<i64, _>(1)? != 0,
                model: r.try_get(2)?,
                generated_ms: r.try_get(3)?,
            })
        })
        .collect()
}

/// This week's list: (track, explores) in order; empty when the listener has no plays
/// the model can use.
async fn generate_weekly(
    app: &App,
    snap: &Snapshot,
    user: &User,
    country: &str,
    week: i64,
    now: i64,
) -> Result<Vec<(u32, bool)>, Error> {
    let (plays, heard) = history(app, snap, &user.id, now).await?;
    let Some(x) = snap.fold_in(&plays) else { return Ok(Vec::new()) };
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed(&user.id, week, "discover-weekly"));
    let mut per_artist = HashMap::new();
    // Explore: cold-start tracks near the listener's taste compete by Thompson draws.
    let arms = snap.rank(&x, EXPLORE_ARMS, |i| snap.origin[i as usize] == Origin::Cold && !heard.contains(&i));
    let arms = arms.into_iter().filter(|(_, affinity)| *affinity > 0.0);
    let arms = playable(app, snap, arms, country, now, EXPLORE_ARMS).await?;
    let mut drawn: Vec<(u32, f32)> = arms
        .into_iter()
        .map(|(t, affinity)| {
            let (shown, streamed) = snap.explore[t as usize];
            let (a, b) = (1.0 + f64::from(streamed), 1.0 + f64::from(shown.saturating_sub(streamed)));
            let theta = Beta::new(a, b).map_or(0.5, |d| d.sample(&mut rng));
            (t, theta as f32 * affinity)
        })
        .collect();
    drawn.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let explore = varied(snap, drawn, &mut per_artist, EXPLORE_SLOTS);
    // Exploit: the best-scored warm tracks the listener never played.
    let warm = snap.rank(&x, CANDIDATES, |i| snap.origin[i as usize] == Origin::Warm && !heard.contains(&i));
    let warm = playable(app, snap, warm.into_iter(), country, now, CANDIDATES).await?;
    let exploit = varied(snap, warm, &mut per_artist, WEEKLY - explore.len());
    // Explore slots spread evenly through the list (with 3 of 30: 6th, 16th, 26th).
    let n = exploit.len() + explore.len();
    let slots: Vec<usize> = (0..explore.len()).map(|j| (2 * j + 1) * n / (2 * explore.len()).max(1)).collect();
    let (mut ex, mut wa) = (explore.into_iter(), exploit.into_iter());
    Ok((0..n)
        .filter_map(|p| {
            if slots.contains(&p) {
                ex.next().map(|(t, _)| (t, true))
            } else {
                wa.next().or_else(|| ex.next()).map(|(t, _)| (t, false))
            }
        })
        .collect())
}

/// Group unit vectors into at most `k` clusters (k-means, k-means++ seeding), each
/// point weighted. Returns each point's cluster.
fn kmeans(points: &[&[f32]], weights: &[f32], k: usize, rng: &mut impl Rng) -> Vec<usize> {
    let dims = points.first().map_or(0, |p| p.len());
    let dist = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>();
    let mut centres: Vec<Vec<f32>> = vec![points[rng.random_range(0..points.len())].to_vec()];
    while centres.len() < k {
        let d: Vec<f32> = points
            .iter()
            .zip(weights)
            .map(|(p, w)| w * centres.iter().map(|c| dist(p, c)).fold(f32::MAX, f32::min))
            .collect();
        let total: f32 = d.iter().sum();
        if total <= 0.0 {
            break;
        }
        let mut pick = rng.random_range(0.0..total);
        let i = d.iter().position(|x| {
            pick -= x;
            pick <= 0.0
        });
        centres.push(points[i.unwrap_or(points.len() - 1)].to_vec());
    }
    let mut of = vec![0usize; points.len()];
    for _ in 0..10 {
        for (p, o) in points.iter().zip(of.iter_mut()) {
            *o = (0..centres.len()).min_by(|&a, &b| dist(p, &centres[a]).total_cmp(&dist(p, &centres[b]))).unwrap_or(0);
        }
        for (c, centre) in centres.iter_mut().enumerate() {
            let mut sum = vec![0f32; dims];
            let mut w = 0.0;
            for ((p, o), pw) in points.iter().zip(&of).zip(weights) {
                if *o == c {
                    sum.iter_mut().zip(p.iter()).for_each(|(s, x)| *s += pw * x);
                    w += pw;
                }
            }
            if w > 0.0 {
                *centre = sum.into_iter().map(|s| s / w).collect();
            }
        }
    }
    of
}

/// `GET /v1/me/daily-mixes`: the listener's streams before today grouped by taste
/// (k-means over their tracks' factors), each group's own tracks alternating with the
/// unheard tracks nearest its centre. The same all day.
pub async fn daily_mixes(app: &App, user: &User, country: &str, now: i64) -> Result<serde_json::Value, Error> {
    let day = now.div_euclid(DAY_MS);
    let snap = app.recs.snapshot(&app.pool).await?;
    let (plays, heard) = history(app, &snap, &user.id, day * DAY_MS).await?;
    let liked: Vec<(u32, f32)> = plays.into_iter().filter(|(t, w)| *w >= 1.0 && snap.cf(*t).is_some()).collect();
    let mut mixes = Vec::new();
    if liked.len() >= 3 {
        let units: Vec<Vec<f32>> = liked
            .iter()
            .map(|(t, _)| {
                let v = snap.cf(*t).unwrap_or_default();
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
                v.iter().map(|x| x / n).collect()
            })
            .collect();
        let points: Vec<&[f32]> = units.iter().map(Vec::as_slice).collect();
        let weights: Vec<f32> = liked.iter().map(|(_, w)| *w).collect();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed(&user.id, day, "daily-mixes"));
        let of = kmeans(&points, &weights, (liked.len() / 10).clamp(1, MIXES), &mut rng);
        let mut groups: Vec<(f32, Vec<(u32, f32)>)> = Vec::new();
        for c in 0..MIXES {
            let members: Vec<(u32, f32)> = liked.iter().zip(&of).filter(|(_, o)| **o == c).map(|(m, _)| *m).collect();
            if members.len() >= 3 {
                groups.push((members.iter().map(|m| m.1).sum(), members));
            }
        }
        groups.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (n, (_, mut members)) in groups.into_iter().enumerate() {
            members.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let mut centre = vec![0f32; snap.factors];
            for (t, w) in &members {
                for (c, y) in centre.iter_mut().zip(snap.cf(*t).unwrap_or_default()) {
                    *c += w * y;
                }
            }
            let familiar = playable(app, &snap, members.iter().copied(), country, now, MIX_LENGTH / 2).await?;
            let near =
                snap.rank(&centre, CANDIDATES, |i| snap.origin[i as usize] == Origin::Warm && !heard.contains(&i));
            let near = playable(app, &snap, near.into_iter(), country, now, CANDIDATES).await?;
            let fresh = varied(&snap, near, &mut HashMap::new(), MIX_LENGTH - familiar.len());
            let mut tracks = Vec::with_capacity(familiar.len() + fresh.len());
            let (mut a, mut b) = (familiar.iter(), fresh.iter());
            loop {
                match (a.next(), b.next()) {
                    (None, None) => break,
                    (x, y) => {
                        for (t, _) in x.into_iter().chain(y) {
                            tracks.push(json!({ "track_id": snap.ids[*t as usize], "familiar": heard.contains(t) }));
                        }
                    }
                }
            }
            let mut by_artist: HashMap<u32, f32> = HashMap::new();
            for (t, w) in &members {
                *by_artist.entry(snap.artist[*t as usize]).or_default() += w;
            }
            let mut top: Vec<(u32, f32)> = by_artist.into_iter().collect();
            top.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let artist_ids: Vec<&str> = top.iter().take(3).map(|(a, _)| snap.artists[*a as usize].as_str()).collect();
            mixes.push(json!({
                "name": format!("Daily Mix {}", n + 1),
                "artists": artist_names(app, &artist_ids).await?,
                "tracks": tracks,
            }));
        }
    }
    Ok(json!({
        "day": crate::format_time(day * DAY_MS),
        "model": snap.model,
        "country": country,
        "mixes": mixes,
    }))
}

async fn artist_names(app: &App, ids: &[&str]) -> Result<Vec<serde_json::Value>, Error> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let name: Option<String> = sqlx::query("SELECT name FROM artists WHERE id = $1")
            .bind(*id)
            .fetch_optional(&app.pool)
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
        out.push(json!({ "id": id, "name": name }));
    }
    Ok(out)
}

//! The license server: devices register X25519 keys (a few per user), licenses seal the
//! content keys of tracks, an album or a playlist to one device under a signed, expiring
//! policy, and renewals extend them by id alone. Rights and the subscription are
//! checked at issue and at every renewal; a removed device or an ended subscription
//! cannot renew, and tracks whose rights ended ride back as `revoked`.
//!
//! Content keys come from the origin still wrapped (`GET /v1/keys/{cid}`) and are
//! unwrapped here with the KEK, only for as long as it takes to seal them.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use segue_core::drm::cipher::ContentKey;
use segue_core::drm::kek::{Keks, WrappedKey};
use segue_core::drm::license::{self, License, LicensedTrack, Renewal, ServerKey, Signed};
use segue_core::Tier;
use serde::{Deserialize, Serialize};
use sqlx::{AnyPool, Row};

use crate::catalog::{self, User};
use crate::config::{Config, DrmSettings};
use crate::error::Error;
use crate::App;

pub struct LicenseServer {
    keks: Option<Keks>,
    key: ServerKey,
}

impl LicenseServer {
    /// Load the KEKs and the signing key, making the key file on first start.
    pub fn open(s: &DrmSettings) -> Result<LicenseServer, Error> {
        let keks = Keks::load(&s.kek_file).map_err(Error::BadRequest)?;
        let path = Path::new(&s.signing_key_file);
        let key = match std::fs::read(path) {
            Ok(bytes) => {
                ServerKey::from_bytes(&bytes).map_err(|e| Error::BadRequest(format!("{}: {e}", path.display())))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = ServerKey::generate();
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| Error::BadRequest(format!("{}: {e}", dir.display())))?;
                }
                segue_core::fsutil::write_atomic(path, key.to_bytes().as_slice(), 0o600)
                    .map_err(|e| Error::BadRequest(format!("{}: {e}", path.display())))?;
                tracing::info!(kid = key.key_id(), file = %path.display(), "made a new license signing key");
                key
            }
            Err(e) => return Err(Error::BadRequest(format!("{}: {e}", path.display()))),
        };
        Ok(LicenseServer { keks, key })
    }

    pub fn public(&self) -> serde_json::Value {
        serde_json::json!({ "kid": self.key.key_id(), "public_key": self.key.public(), "algorithm": "Ed25519" })
    }
}

#[derive(Debug, Serialize)]
pub struct Device {
    pub id: String,
    pub name: String,
    pub public_key: String,
    pub created_ms: i64,
}

/// Licenses belong to listeners: config admin tokens have no account to hold devices.
fn listener(user: &User) -> Result<(), Error> {
    if user.id == "admin" {
        return Err(Error::Forbidden("devices and licenses belong to users: use a user's API key".into()));
    }
    Ok(())
}

async fn subscription_ends(pool: &AnyPool, user: &str) -> Result<i64, Error> {
    Ok(sqlx::query("SELECT subscription_ends_ms FROM users WHERE id = $1")
        .bind(user)
        .fetch_optional(pool)
        .await?
        .map(|r| r.try_get::<i64, _>(0))
        .transpose()?
        .unwrap_or(0))
}

/// The subscription's end, or 403 when it has ended.
async fn subscribed(pool: &AnyPool, user: &str, now: i64) -> Result<Option<i64>, Error> {
    match subscription_ends(pool, user).await? {
        0 => Ok(None),
        ends if ends <= now => Err(Error::SubscriptionEnded(format!(
            "the subscription ended {}: offline licenses cannot be issued or renewed",
            crate::format_time(ends)
        ))),
        ends => Ok(Some(ends)),
    }
}

/// `PUT /v1/admin/users/{id}/subscription`: `{"ends_ms": N}` (0: no end).
pub async fn set_subscription(pool: &AnyPool, user: &str, ends_ms: i64) -> Result<(), Error> {
    if ends_ms < 0 {
        return Err(Error::BadRequest("ends_ms must be 0 (no end) or a Unix time in ms".into()));
    }
    let done = sqlx::query("UPDATE users SET subscription_ends_ms = $1 WHERE id = $2")
        .bind(ends_ms)
        .bind(user)
        .execute(pool)
        .await?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound(format!("no user {user:?}")));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDevice {
    pub name: String,
    pub public_key: String,
}

/// Register a device; at most `max_devices` active per user.
pub async fn register(pool: &AnyPool, s: &DrmSettings, user: &User, d: &NewDevice, now: i64) -> Result<Device, Error> {
    listener(user)?;
    let name = d.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(Error::BadRequest("name must be 1-100 characters".into()));
    }
    license::check_device_public(&d.public_key).map_err(|e| Error::BadRequest(e.to_string()))?;
    let mut tx = segue_core::sql::begin_write(pool).await?;
    // Lock the user's row: two registrations at once cannot both pass the limit.
    sqlx::query("UPDATE users SET id = id WHERE id = $1").bind(&user.id).execute(&mut *tx).await?;
    let active: Vec<String> = sqlx::query("SELECT public_key FROM drm_devices WHERE user_id = $1 AND removed_ms = 0")
        .bind(&user.id)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    if active.contains(&d.public_key) {
        return Err(Error::Conflict("this device key is already registered".into()));
    }
    if active.len() >= s.max_devices as usize {
        return Err(Error::DeviceLimit(format!(
            "{} devices are registered, the most allowed: remove one first (DELETE /v1/drm/devices/ID)",
            active.len()
        )));
    }
    let id = catalog::new_id("dev")?;
    sqlx::query("INSERT INTO drm_devices (id, user_id, name, public_key, created_ms) VALUES ($1, $2, $3, $4, $5)")
        .bind(&id)
        .bind(&user.id)
        .bind(name)
        .bind(&d.public_key)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(user = user.id, device = id, "device registered");
    Ok(Device { id, name: name.to_owned(), public_key: d.public_key.clone(), created_ms: now })
}

pub async fn devices(pool: &AnyPool, user: &User) -> Result<Vec<Device>, Error> {
    sqlx::query(
        "SELECT id, name, public_key, created_ms FROM drm_devices WHERE user_id = $1 AND removed_ms = 0 ORDER BY created_ms",
    )
    .bind(&user.id)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| Ok(Device { id: r.try_get(0)?, name: r.try_get(1)?, public_key: r.try_get(2)?, created_ms: r.try_get(3)? }))
    .collect()
}

/// Remove a device: its licenses are revoked and can no longer renew.
pub async fn remove(pool: &AnyPool, user: &User, device: &str, now: i64) -> Result<(), Error> {
    let mut tx = segue_core::sql::begin_write(pool).await?;
    let done = sqlx::query("UPDATE drm_devices SET removed_ms = $1 WHERE id = $2 AND user_id = $3 AND removed_ms = 0")
        .bind(now)
        .bind(device)
        .bind(&user.id)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound(format!("no device {device:?}")));
    }
    sqlx::query("UPDATE drm_licenses SET revoked_ms = $1 WHERE device_id = $2 AND revoked_ms = 0")
        .bind(now)
        .bind(device)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(user = user.id, device, "device removed; its licenses are revoked");
    Ok(())
}

async fn device_key(pool: &AnyPool, user: &User, device: &str) -> Result<String, Error> {
    sqlx::query("SELECT public_key FROM drm_devices WHERE id = $1 AND user_id = $2 AND removed_ms = 0")
        .bind(device)
        .bind(&user.id)
        .fetch_optional(pool)
        .await?
        .map(|r| r.try_get(0))
        .transpose()?
        .ok_or_else(|| Error::NotFound(format!("no active device {device:?} of this user")))
}

/// What a license is asked for: exactly one of `tracks`, `album`, `playlist`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseRequest {
    pub device: String,
    #[serde(default)]
    pub tracks: Vec<String>,
    pub album: Option<String>,
    pub playlist: Option<String>,
    /// Default `high`.
    pub tier: Option<String>,
}

async fn requested_tracks(pool: &AnyPool, user: &User, r: &LicenseRequest) -> Result<Vec<String>, Error> {
    let ids: Vec<String> = match (&r.tracks[..], &r.album, &r.playlist) {
        ([_, ..], None, None) => r.tracks.clone(),
        ([], Some(album), None) => {
            let rows = sqlx::query("SELECT id FROM tracks WHERE album_id = $1 ORDER BY disc_number, track_number")
                .bind(album)
                .fetch_all(pool)
                .await?;
            if rows.is_empty() {
                return Err(Error::NotFound(format!("no album {album:?}")));
            }
            rows.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?
        }
        ([], None, Some(playlist)) => {
            crate::playlists::get(pool, playlist, user).await?.items.into_iter().map(|i| i.track_id).collect()
        }
        _ => return Err(Error::BadRequest("name exactly one of tracks, album or playlist".into())),
    };
    let mut seen = BTreeSet::new();
    Ok(ids.into_iter().filter(|id| seen.insert(id.clone())).collect())
}

/// A license as issued.
#[derive(Serialize)]
pub struct Issued {
    pub id: String,
    pub expires_ms: i64,
    pub grace_ms: i64,
    pub tracks: usize,
    pub license: Signed,
    pub server_key: serde_json::Value,
}

/// Issue a license for `req` to one of the user's devices.
pub async fn issue(
    app: &App,
    user: &User,
    req: &LicenseRequest,
    located: Option<String>,
    now: i64,
) -> Result<Issued, Error> {
    listener(user)?;
    let server = &app.drm;
    let keks = server.keks.as_ref().ok_or_else(|| {
        Error::Unavailable("the license server has no key-encryption key ([drm] kek_file or SEGUE_KEK)".into())
    })?;
    let s = &app.config.drm;
    let pool = &app.pool;
    let sub_ends = subscribed(pool, &user.id, now).await?;
    let device_public = device_key(pool, user, &req.device).await?;
    let tier: Tier =
        req.tier.as_deref().unwrap_or("high").parse().map_err(|_| {
            Error::BadRequest(format!("tier must be one of {}", Tier::ALL.map(|t| t.as_str()).join(", ")))
        })?;
    let ids = requested_tracks(pool, user, req).await?;
    if ids.is_empty() {
        return Err(Error::BadRequest("the license would cover no tracks".into()));
    }
    let country = crate::rights::listener_country(user, None, located)?;
    let mut tracks = Vec::with_capacity(ids.len());
    let mut until = now + i64::from(s.license_days) * 86_400_000;
    if let Some(ends) = sub_ends {
        until = until.min(ends);
    }
    for id in &ids {
        let t = catalog::track(pool, id).await?.ok_or_else(|| Error::NotFound(format!("no track {id:?}")))?;
        let right = app.rights.check(pool, id, &country, now).await.map_err(|e| match e {
            Error::Forbidden(m) => Error::Forbidden(format!("track {id}: {m}")),
            Error::Embargoed(m) => Error::Embargoed(format!("track {id}: {m}")),
            e => e,
        })?;
        until = until.min(right.valid_until_ms);
        let cid = t.content_id.parse().map_err(|_| Error::Database(format!("track {id} has a bad content id")))?;
        tracks.push(LicensedTrack { track: t.id, content_id: cid });
    }
    let mut tx = segue_core::sql::begin_write(pool).await?;
    // One device's licenses change one at a time: the track limit holds under races.
    sqlx::query("UPDATE drm_devices SET id = id WHERE id = $1").bind(&req.device).execute(&mut *tx).await?;
    let held: BTreeSet<String> = sqlx::query(
        "SELECT DISTINCT lt.track_id FROM drm_license_tracks lt JOIN drm_licenses l ON l.id = lt.license_id \
         WHERE l.device_id = $1 AND l.revoked_ms = 0 AND l.expires_ms + l.grace_ms > $2",
    )
    .bind(&req.device)
    .bind(now)
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .map(|r| r.try_get(0))
    .collect::<Result<_, _>>()?;
    let total = held.len() + ids.iter().filter(|id| !held.contains(*id)).count();
    if total > s.max_tracks_per_device as usize {
        return Err(Error::DeviceLimit(format!(
            "this device would hold licenses for {total} tracks; at most {} are allowed",
            s.max_tracks_per_device
        )));
    }
    let keys = content_keys(&app.config, keks, &tracks).await?;
    let grace_ms = i64::from(s.grace_hours) * 3_600_000;
    let mut lic = License {
        version: 1,
        id: catalog::new_id("lic")?,
        user: user.id.clone(),
        device: req.device.clone(),
        issued_ms: now,
        expires_ms: until,
        grace_ms,
        tier,
        tracks,
        enc: String::new(),
        sealed_keys: String::new(),
    };
    lic.seal_keys(&device_public, &keys).map_err(|e| Error::BadRequest(format!("device key: {e}")))?;
    drop(keys);
    sqlx::query(
        "INSERT INTO drm_licenses (id, user_id, device_id, country, tier, issued_ms, expires_ms, grace_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&lic.id)
    .bind(&user.id)
    .bind(&req.device)
    .bind(&country)
    .bind(tier.as_str())
    .bind(now)
    .bind(until)
    .bind(grace_ms)
    .execute(&mut *tx)
    .await?;
    for chunk in ids.chunks(200) {
        let values: Vec<String> = (0..chunk.len()).map(|i| format!("($1, ${})", i + 2)).collect();
        let sql = format!("INSERT INTO drm_license_tracks (license_id, track_id) VALUES {}", values.join(","));
        let mut q = sqlx::query(&sql).bind(&lic.id);
        for id in chunk {
            q = q.bind(id);
        }
        q.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    metrics::counter!("drm_licenses_issued_total").increment(1);
    tracing::info!(user = user.id, device = req.device, license = lic.id, tracks = ids.len(), "license issued");
    Ok(Issued {
        id: lic.id.clone(),
        expires_ms: until,
        grace_ms,
        tracks: ids.len(),
        license: server.key.sign_license(&lic),
        server_key: server.public(),
    })
}

/// The content keys of `tracks`, in order, fetched wrapped from the origin (a few at a
/// time, each content once) and unwrapped.
async fn content_keys(config: &Config, keks: &Keks, tracks: &[LicensedTrack]) -> Result<Vec<ContentKey>, Error> {
    let cids: BTreeSet<_> = tracks.iter().map(|t| t.content_id).collect();
    let timeout = Duration::from_secs(config.request_timeout_secs);
    let token = &config.drm.origin_key_token;
    let fetched: HashMap<_, _> = futures_util::stream::iter(cids)
        .map(|cid| async move {
            let path = format!("/v1/keys/{cid}");
            let (status, body) =
                segue_core::client::call(&config.origin, http::Method::GET, &path, Some(token), None, timeout)
                    .await
                    .map_err(|e| Error::Upstream(format!("origin {}: {e}", config.origin)))?;
            match status {
                http::StatusCode::OK => {}
                http::StatusCode::NOT_FOUND => {
                    return Err(Error::Unavailable(format!("content {cid} has no key at the origin yet")));
                }
                s => return Err(Error::Upstream(format!("origin answered {s} for {path}"))),
            }
            let w: WrappedKey = serde_json::from_slice(&body)
                .map_err(|e| Error::Upstream(format!("origin {path}: not a wrapped key: {e}")))?;
            let key = keks.unwrap(&cid, &w).map_err(|e| Error::Unavailable(format!("content {cid}: {e}")))?;
            Ok::<_, Error>((cid, key))
        })
        .buffer_unordered(16)
        .try_collect()
        .await?;
    tracks
        .iter()
        .map(|t| {
            fetched.get(&t.content_id).cloned().ok_or_else(|| Error::Upstream("a content key went missing".into()))
        })
        .collect()
}

/// What a renewal was refused for, per license.
#[derive(Serialize)]
pub struct Refused {
    pub license: String,
    pub error: &'static str,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    pub licenses: Vec<String>,
}

/// Renew licenses by id: new dates, signed, and the tracks no longer licensed.
pub async fn renew(app: &App, user: &User, ids: &[String], now: i64) -> Result<serde_json::Value, Error> {
    listener(user)?;
    if ids.is_empty() || ids.len() > 1000 {
        return Err(Error::BadRequest("licenses must name 1-1000 license ids".into()));
    }
    let s = &app.config.drm;
    let pool = &app.pool;
    let sub_ends = subscribed(pool, &user.id, now).await?;
    let (mut renewals, mut refused) = (Vec::new(), Vec::new());
    for id in ids {
        let row = sqlx::query(
            "SELECT l.device_id, l.country, l.revoked_ms, d.removed_ms FROM drm_licenses l \
             JOIN drm_devices d ON d.id = l.device_id WHERE l.id = $1 AND l.user_id = $2",
        )
        .bind(id)
        .bind(&user.id)
        .fetch_optional(pool)
        .await?;
        let Some(row) = row else {
            refused.push(Refused { license: id.clone(), error: "not_found", message: "no such license".into() });
            continue;
        };
        let (device, country): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        if row.try_get::<i64, _>(3)? != 0 {
            refused.push(Refused {
                license: id.clone(),
                error: "device_removed",
                message: "the device was removed".into(),
            });
            continue;
        }
        if row.try_get::<i64, _>(2)? != 0 {
            refused.push(Refused { license: id.clone(), error: "revoked", message: "the license was revoked".into() });
            continue;
        }
        let tracks: Vec<String> = sqlx::query("SELECT track_id FROM drm_license_tracks WHERE license_id = $1")
            .bind(id)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        let mut until = now + i64::from(s.license_days) * 86_400_000;
        if let Some(ends) = sub_ends {
            until = until.min(ends);
        }
        let mut revoked = Vec::new();
        for t in tracks {
            match app.rights.check(pool, &t, &country, now).await {
                Ok(right) => until = until.min(right.valid_until_ms),
                Err(Error::Forbidden(_) | Error::Embargoed(_)) => revoked.push(t),
                Err(e) => return Err(e),
            }
        }
        let grace_ms = i64::from(s.grace_hours) * 3_600_000;
        sqlx::query("UPDATE drm_licenses SET expires_ms = $1, grace_ms = $2 WHERE id = $3")
            .bind(until)
            .bind(grace_ms)
            .bind(id)
            .execute(pool)
            .await?;
        let r =
            Renewal { version: 1, license: id.clone(), device, renewed_ms: now, expires_ms: until, grace_ms, revoked };
        renewals.push(app.drm.key.sign_renewal(&r));
    }
    metrics::counter!("drm_renewals_total").increment(renewals.len() as u64);
    Ok(serde_json::json!({ "renewals": renewals, "refused": refused }))
}

/// Signed edge URLs for a license's encrypted objects and seek tables (for sync, and
/// again to resume it: they expire like stream URLs).
pub async fn downloads(app: &App, user: &User, license: &str, now: i64) -> Result<serde_json::Value, Error> {
    listener(user)?;
    let row = sqlx::query("SELECT country, tier, revoked_ms FROM drm_licenses WHERE id = $1 AND user_id = $2")
        .bind(license)
        .bind(&user.id)
        .fetch_optional(&app.pool)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no license {license:?}")))?;
    if row.try_get::<i64, _>(2)? != 0 {
        return Err(Error::Revoked(format!("license {license} was revoked")));
    }
    let (country, tier): (String, String) = (row.try_get(0)?, row.try_get(1)?);
    let key =
        app.signing.as_ref().ok_or_else(|| Error::Unavailable("download URLs need [signing] in the config".into()))?;
    let tracks = sqlx::query(
        "SELECT t.id, t.content_id FROM drm_license_tracks lt JOIN tracks t ON t.id = lt.track_id \
         WHERE lt.license_id = $1 ORDER BY t.album_id, t.disc_number, t.track_number",
    )
    .bind(license)
    .fetch_all(&app.pool)
    .await?;
    let exp = (now / 1000) as u64 + app.config.signing.ttl_secs;
    let region = app.config.region_of(&country);
    let session = crate::stream::session_id(key, &user.id, &country)?;
    let mut out = Vec::with_capacity(tracks.len());
    for r in &tracks {
        let (id, cid): (String, String) = (r.try_get(0)?, r.try_get(1)?);
        let (primary, fallback, _) = crate::stream::choose(&app.pops, &app.config, region, &user.id, &id).await?;
        let path = format!("/enc/{cid}/{tier}.ogg");
        out.push(serde_json::json!({
            "track_id": id,
            "content_id": cid,
            "url": crate::stream::signed(key, &primary, &path, exp, None, &country, &session),
            "fallback_url": fallback.map(|f| crate::stream::signed(key, &f, &path, exp, None, &country, &session)),
            "seek_table_url": format!("{primary}/seek/{cid}/{tier}.json"),
        }));
    }
    Ok(serde_json::json!({ "license": license, "tier": tier, "expires_at": exp, "downloads": out }))
}

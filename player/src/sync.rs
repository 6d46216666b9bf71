//! Filling a device directory for offline listening (`segue offline sync`) and keeping
//! its licenses alive (`segue offline renew`).
//!
//! Sync: the device is registered once (its X25519 key made here and never sent), a
//! license is issued for the tracks, album or playlist, then each encrypted object is
//! downloaded by range into a `.part` file that a later run resumes, checked against
//! its seek table, fsynced and renamed into place. The license is written last, so a
//! device directory only ever names objects that are complete.

use std::io::Write;
use std::path::{Path, PathBuf};

use http::Method;
use segue_core::drm::license::{DeviceSecret, Signed, Trust};
use segue_core::seek_table::SeekTable;
use segue_core::{ContentId, Tier};
use serde::Serialize;

use crate::api::AppApi;
use crate::fetch::Fetcher;
use crate::library::{read_license, DeviceDir, DeviceInfo};
use crate::Error;

/// What to license.
#[derive(Debug, Clone)]
pub enum Selection {
    Tracks(Vec<String>),
    Album(String),
    Playlist(String),
}

/// What a sync did.
#[derive(Debug, Clone, Serialize)]
pub struct Synced {
    pub device: String,
    pub license: String,
    pub tracks: usize,
    pub expires_ms: i64,
    pub objects: usize,
    /// Bytes downloaded now (objects already complete, or resumed parts, cost nothing).
    pub downloaded_bytes: u64,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Io(format!("{}: {e}", path.display()))
}

/// The device's registration, made on first use: a new key pair, registered with the
/// app API, and the license server's public key kept for offline checks.
pub async fn ensure_device(api: &AppApi, dir: &DeviceDir, name: &str) -> Result<DeviceInfo, Error> {
    if let Ok(info) = dir.read_info() {
        if info.app_api == api.base && dir.read_secret().is_ok() {
            return Ok(info);
        }
    }
    let secret = match dir.read_secret() {
        Ok(s) => s,
        Err(_) => {
            let s = DeviceSecret::generate();
            dir.write(&dir.key(), s.to_bytes().as_slice(), 0o600)?;
            s
        }
    };
    let server = api.call(Method::GET, "/v1/drm/server-key", None).await?;
    let (kid, public) = (server["kid"].as_str().unwrap_or_default(), server["public_key"].as_str().unwrap_or_default());
    Trust::from_public(public).map_err(|e| Error::Api(format!("server key: {e}")))?;
    let body = serde_json::json!({ "name": name, "public_key": secret.public() });
    let device = api.call(Method::POST, "/v1/drm/devices", Some(body)).await?;
    let info = DeviceInfo {
        device_id: device["id"].as_str().unwrap_or_default().to_owned(),
        name: name.to_owned(),
        app_api: api.base.clone(),
        server_kid: kid.to_owned(),
        server_public_key: public.to_owned(),
    };
    let json = serde_json::to_vec_pretty(&info).map_err(|e| Error::Io(e.to_string()))?;
    dir.write(&dir.info(), &json, 0o600)?;
    tracing::info!(device = info.device_id, "device registered");
    Ok(info)
}

/// License `what` for this device and download everything it needs. `progress` is told
/// (bytes done, bytes in all) as the downloads go.
pub async fn sync(
    api: &AppApi,
    dir: &Path,
    device_name: &str,
    what: &Selection,
    tier: Tier,
    progress: impl Fn(u64, u64),
) -> Result<Synced, Error> {
    let dir = DeviceDir(dir.to_owned());
    let info = ensure_device(api, &dir, device_name).await?;
    let trust = Trust::from_public(&info.server_public_key).map_err(|e| Error::Api(format!("server key: {e}")))?;
    let mut req = serde_json::json!({ "device": info.device_id, "tier": tier.as_str() });
    match what {
        Selection::Tracks(t) => req["tracks"] = serde_json::json!(t),
        Selection::Album(a) => req["album"] = serde_json::json!(a),
        Selection::Playlist(p) => req["playlist"] = serde_json::json!(p),
    }
    let issued = api.call(Method::POST, "/v1/drm/licenses", Some(req)).await?;
    let signed: Signed = serde_json::from_value(issued["license"].clone())
        .map_err(|e| Error::Api(format!("not a license answer: {e}")))?;
    let lic = trust.license(&signed).map_err(|e| Error::Api(format!("the license does not verify: {e}")))?;
    if lic.device != info.device_id {
        return Err(Error::Api("the license is for another device".into()));
    }
    lic.open_keys(&dir.read_secret()?).map_err(|e| Error::Api(format!("license {}: {e}", lic.id)))?;

    let list = api.call(Method::GET, &format!("/v1/drm/licenses/{}/downloads", lic.id), None).await?;
    let fetcher = Fetcher::with_timeout(std::time::Duration::from_secs(30));
    let mut wanted = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for d in list["downloads"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let cid: ContentId = d["content_id"]
            .as_str()
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| Error::Api(format!("a download without a content id: {d}")))?;
        if !seen.insert(cid) {
            continue;
        }
        let (url, fallback) = (d["url"].as_str().unwrap_or_default(), d["fallback_url"].as_str());
        let seek_url = d["seek_table_url"].as_str().unwrap_or_default();
        let table_bytes = fetcher.get(seek_url, None, None).await?;
        let table = SeekTable::from_json(&table_bytes).map_err(|e| Error::Decode(format!("{seek_url}: {e}")))?;
        dir.write(&dir.0.join(DeviceDir::seek_rel(&cid, tier)), &table_bytes, 0o644)?;
        wanted.push((cid, url.to_owned(), fallback.map(str::to_owned), table));
    }
    let total: u64 = wanted.iter().map(|w| w.3.total_bytes).sum();
    let mut done = 0u64;
    let mut downloaded = 0u64;
    for (cid, url, fallback, table) in &wanted {
        let path = dir.0.join(DeviceDir::object_rel(cid, tier));
        downloaded +=
            download(&fetcher, url, fallback.as_deref(), &path, table.total_bytes, |n| progress(done + n, total))
                .await?;
        done += table.total_bytes;
        progress(done, total);
    }
    let json = serde_json::to_vec(&signed).map_err(|e| Error::Io(e.to_string()))?;
    dir.write(&dir.license(&lic.id), &json, 0o600)?;
    tracing::info!(license = lic.id, tracks = lic.tracks.len(), "license and objects synced");
    Ok(Synced {
        device: info.device_id,
        license: lic.id,
        tracks: lic.tracks.len(),
        expires_ms: lic.expires_ms,
        objects: wanted.len(),
        downloaded_bytes: downloaded,
    })
}

/// Fetch `url` into `path` (`len` bytes), resuming a `.part` left by an earlier run.
/// Returns the bytes downloaded now.
async fn download(
    fetcher: &Fetcher,
    url: &str,
    fallback: Option<&str>,
    path: &Path,
    len: u64,
    progress: impl Fn(u64),
) -> Result<u64, Error> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() == len) {
        return Ok(0);
    }
    let part: PathBuf = path.with_extension("ogg.part");
    if let Some(d) = part.parent() {
        std::fs::create_dir_all(d).map_err(io(d))?;
    }
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&part).map_err(io(&part))?;
    let mut have = file.metadata().map_err(io(&part))?.len();
    if have > len {
        file.set_len(0).map_err(io(&part))?;
        have = 0;
    }
    let start = have;
    if have < len {
        let mut d = fetcher.download(url, fallback, have, Some(len - 1));
        while let Some(chunk) = d.next().await? {
            file.write_all(&chunk).map_err(io(&part))?;
            have += chunk.len() as u64;
            progress(have);
        }
    }
    file.sync_all().map_err(io(&part))?;
    if have != len {
        return Err(Error::Fetch { url: url.to_owned(), detail: format!("got {have} bytes of {len}") });
    }
    std::fs::rename(&part, path).map_err(io(path))?;
    if let Some(d) = path.parent() {
        std::fs::File::open(d).and_then(|f| f.sync_all()).map_err(io(d))?;
    }
    Ok(have - start)
}

/// What a renewal run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Renewed {
    pub renewed: Vec<String>,
    /// (license, error code, message) of those the server refused; their files are gone.
    pub refused: Vec<(String, String, String)>,
    pub revoked_tracks: Vec<String>,
}

/// Renew every license in `dir` in one request (ids only), keep the signed answers, and
/// drop the licenses the server refused for good.
pub async fn renew(api: &AppApi, dir: &Path) -> Result<Renewed, Error> {
    let dir = DeviceDir(dir.to_owned());
    let info = dir.read_info()?;
    let trust = Trust::from_public(&info.server_public_key).map_err(|e| Error::Api(format!("server key: {e}")))?;
    let ids = dir.license_ids()?;
    if ids.is_empty() {
        return Ok(Renewed::default());
    }
    let answer = api.call(Method::POST, "/v1/drm/renewals", Some(serde_json::json!({ "licenses": ids }))).await?;
    let mut out = Renewed::default();
    for r in answer["renewals"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let signed: Signed = serde_json::from_value(r.clone()).map_err(|e| Error::Api(format!("renewal: {e}")))?;
        let renewal = trust.renewal(&signed).map_err(|e| Error::Api(format!("a renewal does not verify: {e}")))?;
        if renewal.device != info.device_id || !ids.contains(&renewal.license) {
            return Err(Error::Api(format!("a renewal for license {} is not for this device", renewal.license)));
        }
        let json = serde_json::to_vec(&signed).map_err(|e| Error::Io(e.to_string()))?;
        dir.write(&dir.renewal(&renewal.license), &json, 0o600)?;
        out.revoked_tracks.extend(renewal.revoked.iter().cloned());
        out.renewed.push(renewal.license);
    }
    for r in answer["refused"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let (id, code) = (r["license"].as_str().unwrap_or_default(), r["error"].as_str().unwrap_or_default());
        if ids.iter().any(|i| i == id) && matches!(code, "revoked" | "device_removed" | "not_found") {
            for p in [dir.license(id), dir.renewal(id)] {
                let _ = std::fs::remove_file(p);
            }
        }
        out.refused.push((id.to_owned(), code.to_owned(), r["message"].as_str().unwrap_or_default().to_owned()));
    }
    remove_unlicensed(&dir, &trust, &info.device_id)?;
    Ok(out)
}

/// Delete encrypted objects no license on the device covers any more.
fn remove_unlicensed(dir: &DeviceDir, trust: &Trust, device: &str) -> Result<(), Error> {
    let mut keep = std::collections::BTreeSet::new();
    for id in dir.license_ids()? {
        if let Ok(lic) = read_license(dir, trust, device, &id) {
            keep.extend(lic.tracks.iter().map(|t| t.content_id.to_string()));
        }
    }
    for sub in ["objects", "seek"] {
        let Ok(entries) = std::fs::read_dir(dir.0.join(sub)) else { continue };
        for e in entries.flatten() {
            if !keep.contains(&e.file_name().to_string_lossy().to_string()) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(())
}

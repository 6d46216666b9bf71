//! The lab a scenario runs against, as `segue lab` describes it in `DATA_DIR/lab.json`,
//! and the operator calls scenarios make: listeners' accounts, the catalog, releases,
//! purges, the POP list, and killing a process.

use std::path::Path;
use std::time::Duration;

use http::Method;
use serde::Deserialize;

use super::Error;

#[derive(Debug, Clone, Deserialize)]
pub struct Process {
    pub url: String,
    /// Where the lab keeps the pid of the process now (it changes when the lab restarts
    /// one); none for a role in the lab's own process.
    #[serde(default)]
    pub pid_file: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Pop {
    pub name: String,
    pub region: String,
    pub url: String,
    pub pid_file: String,
    #[serde(default)]
    pub shield: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Region {
    pub name: String,
    pub countries: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Lab {
    pub origin: Process,
    pub control_plane: String,
    pub app_api: String,
    pub pops: Vec<Pop>,
    pub regions: Vec<Region>,
    pub control_plane_token_file: String,
    pub app_api_token_file: String,
    pub heartbeat_secs: u64,
    /// The lab's stand-in for a secondary CDN (`segue lab --overflow`).
    #[serde(default)]
    pub overflow: Option<Process>,
    /// The lab restarts a killed process after this long.
    #[serde(default)]
    pub restart_after_secs: Option<u64>,
    #[serde(skip)]
    pub cp_token: String,
    #[serde(skip)]
    pub app_token: String,
}

const TIMEOUT: Duration = Duration::from_secs(30);

fn read_token(path: &str) -> Result<String, Error> {
    std::fs::read_to_string(path)
        .map(|t| t.trim().to_owned())
        .map_err(|e| Error::Usage(format!("{path}: {e} (is the lab's data directory readable?)")))
}

impl Lab {
    /// Read `DIR/lab.json` and the tokens it points at.
    pub fn load(dir: &Path) -> Result<Lab, Error> {
        let file = dir.join("lab.json");
        let text = std::fs::read_to_string(&file).map_err(|e| {
            Error::Usage(format!("{}: {e} (start one with `segue lab --data-dir DIR`)", file.display()))
        })?;
        let mut lab: Lab = serde_json::from_str(&text)
            .map_err(|e| Error::Usage(format!("{}: not a lab description: {e}", file.display())))?;
        if lab.regions.is_empty() || lab.pops.iter().all(|p| p.shield) {
            return Err(Error::Usage(format!("{}: a lab needs a region and a POP", file.display())));
        }
        lab.cp_token = read_token(&lab.control_plane_token_file)?;
        lab.app_token = read_token(&lab.app_api_token_file)?;
        Ok(lab)
    }

    /// The POPs listeners are sent to (not the shield).
    pub fn edge_pops(&self) -> impl Iterator<Item = &Pop> {
        self.pops.iter().filter(|p| !p.shield)
    }

    /// A JSON call to the app API with its admin token; non-2xx is an error.
    pub async fn app(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, Error> {
        call(&self.app_api, &self.app_token, method, path, body).await
    }

    /// A JSON call to the control plane with the release manager's token.
    pub async fn cp(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, Error> {
        call(&self.control_plane, &self.cp_token, method, path, body).await
    }

    /// A listener account in `country`; returns its API key.
    pub async fn user(&self, name: &str, country: &str) -> Result<String, Error> {
        let v = self
            .app(Method::POST, "/v1/admin/users", Some(serde_json::json!({ "name": name, "country": country })))
            .await?;
        v["api_key"].as_str().map(str::to_owned).ok_or_else(|| Error::Setup(format!("no api_key in {v}")))
    }

    /// The catalog's tracks: id, content id, album, track number (the lab's demo catalog,
    /// found by its artist), waiting up to 60 s for the lab to have added it.
    pub async fn tracks(&self) -> Result<Vec<Track>, Error> {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let hits = self.app(Method::GET, "/v1/search?q=segue%20demo&types=track&limit=100", None).await?;
            let mut out = Vec::new();
            for h in hits["hits"].as_array().into_iter().flatten() {
                let Some(id) = h["id"].as_str() else { continue };
                let t = self.app(Method::GET, &format!("/v1/tracks/{id}"), None).await?;
                out.push(Track {
                    id: id.to_owned(),
                    content_id: t["content_id"].as_str().unwrap_or_default().to_owned(),
                    album: t["album"]["title"].as_str().unwrap_or_default().to_owned(),
                    track_number: t["track_number"].as_u64().unwrap_or(0),
                });
            }
            if out.len() >= 5 || std::time::Instant::now() > deadline {
                if out.is_empty() {
                    return Err(Error::Setup("the app API's catalog has no demo tracks".into()));
                }
                out.sort_by(|a, b| (&a.album, a.track_number).cmp(&(&b.album, b.track_number)));
                return Ok(out);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The control plane's POP list, as it stands.
    pub async fn pop_states(&self) -> Result<Vec<PopState>, Error> {
        let v = self.cp(Method::GET, "/v1/pops", None).await?;
        Ok(v["pops"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| PopState {
                id: p["id"].as_str().unwrap_or_default().to_owned(),
                region: p["region"].as_str().unwrap_or_default().to_owned(),
                healthy: p["healthy"] == true,
                saturated: p["saturated"] == true,
                connections: p["connections"].as_u64().unwrap_or(0),
            })
            .collect())
    }

    /// Purge `content` from every POP (the shield too) and wait until each has done it;
    /// `soft`: mark it stale (revalidated on its next request) rather than remove it.
    pub async fn purge(&self, content: &[String], soft: bool) -> Result<(), Error> {
        let mut ids = Vec::new();
        for cid in content {
            let body = serde_json::json!({ "content_id": cid, "soft": soft });
            let v = self.cp(Method::POST, "/v1/purges", Some(body)).await?;
            ids.push(v["purge"]["id"].as_str().ok_or_else(|| Error::Setup(format!("no purge id in {v}")))?.to_owned());
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        for id in ids {
            loop {
                let s = self.cp(Method::GET, &format!("/v1/purges/{id}"), None).await?;
                if s["complete"] == true {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    return Err(Error::Setup(format!("purge {id} not done after 60 s: {s}")));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }
}

/// SIGKILL a process of the lab (its pid now, from its pid file): an outage with no
/// warning.
pub fn kill(pid_file: &str) -> Result<(), Error> {
    let pid = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        .ok_or_else(|| Error::Setup(format!("{pid_file}: no pid in it")))?;
    let p = rustix::process::Pid::from_raw(pid as i32).ok_or_else(|| Error::Setup(format!("bad pid {pid}")))?;
    rustix::process::kill_process(p, rustix::process::Signal::KILL)
        .map_err(|e| Error::Setup(format!("cannot kill process {pid}: {e}")))
}

/// A JSON call with a bearer token, as the player's app client makes it (a non-2xx answer
/// is an error carrying the server's message).
async fn call(
    base: &str,
    token: &str,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, Error> {
    let api = segue_player::api::AppApi { base: base.to_owned(), token: token.to_owned(), timeout: TIMEOUT };
    api.call(method, path, body).await.map_err(|e| Error::Setup(format!("{base}: {e}")))
}

/// One POP as the control plane sees it.
#[derive(Debug, Clone)]
pub struct PopState {
    pub id: String,
    pub region: String,
    pub healthy: bool,
    pub saturated: bool,
    pub connections: u64,
}

#[derive(Debug, Clone)]
pub struct Track {
    pub id: String,
    pub content_id: String,
    pub album: String,
    pub track_number: u64,
}

//! `segue release ...` and `segue purge`: the release manager's client of the control
//! plane's HTTP API.

use std::time::Duration;

use clap::Subcommand;
use http::Method;

#[derive(Subcommand)]
pub enum ReleaseAction {
    /// Create a release: its content, tiers, drop time and regions (a draft unless
    /// --schedule). Every object must exist at the origin.
    Create {
        /// Release id (letters, digits, - _ .); default: generated.
        #[arg(long)]
        id: Option<String>,
        #[arg(long, default_value = "")]
        title: String,
        /// A content id in the release (repeat, or comma-separated).
        #[arg(long = "content", value_name = "CID", value_delimiter = ',', required = true)]
        content: Vec<String>,
        /// Tiers to pre-warm (comma-separated); default all five.
        #[arg(long, value_delimiter = ',')]
        tiers: Vec<String>,
        /// Drop time: RFC 3339 UTC (2026-12-01T00:00:00Z), or with --local-time a
        /// wall-clock time (2026-12-01T00:00:00) that is the drop time in each region.
        #[arg(long = "at", value_name = "TIME")]
        release_at: String,
        /// --at is local time in each region (staggered drops: midnight everywhere).
        #[arg(long)]
        local_time: bool,
        /// Target regions (comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        regions: Vec<String>,
        /// Seconds before each region's drop when its POPs are pre-warmed (default: the
        /// control plane's lead_secs, one hour).
        #[arg(long)]
        lead_secs: Option<u64>,
        /// Schedule at once instead of leaving a draft.
        #[arg(long)]
        schedule: bool,
    },
    /// Schedule a draft release: its POPs will be pre-warmed before the drop.
    Schedule { id: String },
    /// Show a release: drop time per region and each POP's pre-warm state and bytes.
    Status {
        id: String,
        /// Follow the pre-warm live with a progress bar per POP until every job ends.
        #[arg(long)]
        follow: bool,
    },
    /// Cancel a release: pending pre-warm jobs stop; its content stays embargoed.
    Cancel { id: String },
    /// List releases.
    List,
}

pub struct Client {
    base: String,
    token: String,
    json: bool,
}

impl Client {
    pub fn new(base: String, token: Option<String>, json: bool) -> Result<Self, String> {
        let token = token
            .or_else(|| std::env::var("SEGUE_CP_TOKEN").ok())
            .filter(|t| !t.is_empty())
            .ok_or("no API token: set SEGUE_CP_TOKEN (or --token-file)")?;
        Ok(Client { base: base.trim_end_matches('/').to_owned(), token, json })
    }

    /// One call; a non-2xx answer becomes the error body's detail.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, String> {
        let body = body.map(|b| b.to_string().into());
        let (status, bytes) =
            segue_core::client::call(&self.base, method, path, Some(&self.token), body, Duration::from_secs(60))
                .await
                .map_err(|e| format!("control plane {}: {e}", self.base))?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        if !status.is_success() {
            let detail =
                v["detail"].as_str().map(str::to_owned).unwrap_or_else(|| String::from_utf8_lossy(&bytes).into());
            return Err(format!("{status} ({}): {detail}", v["error"].as_str().unwrap_or("error")));
        }
        Ok(v)
    }

    pub async fn release(&self, action: ReleaseAction) -> Result<(), String> {
        match action {
            ReleaseAction::Create {
                id,
                title,
                content,
                tiers,
                release_at,
                local_time,
                regions,
                lead_secs,
                schedule,
            } => {
                let body = serde_json::json!({
                    "id": id, "title": title, "content_ids": content, "tiers": tiers, "release_at": release_at,
                    "local_time": local_time, "regions": regions, "lead_secs": lead_secs, "schedule": schedule,
                });
                let v = self.call(Method::POST, "/v1/releases", Some(body)).await?;
                self.show(&v);
            }
            ReleaseAction::Schedule { id } => {
                let v = self.call(Method::POST, &format!("/v1/releases/{id}/schedule"), None).await?;
                self.show(&v);
            }
            ReleaseAction::Cancel { id } => {
                let v = self.call(Method::POST, &format!("/v1/releases/{id}/cancel"), None).await?;
                self.show(&v);
            }
            ReleaseAction::List => {
                let v = self.call(Method::GET, "/v1/releases", None).await?;
                if self.json {
                    println!("{v}");
                } else {
                    for id in v["releases"].as_array().into_iter().flatten() {
                        println!("{}", id.as_str().unwrap_or_default());
                    }
                }
            }
            ReleaseAction::Status { id, follow: false } => {
                let v = self.call(Method::GET, &format!("/v1/releases/{id}"), None).await?;
                self.show(&v);
            }
            ReleaseAction::Status { id, follow: true } => self.follow(&id).await?,
        }
        Ok(())
    }

    fn show(&self, v: &serde_json::Value) {
        if self.json {
            println!("{v}");
            return;
        }
        println!(
            "release {}  {}  state {}  at {}  lead {} s  {} objects ({} content x tiers {})",
            v["id"].as_str().unwrap_or_default(),
            v["title"].as_str().filter(|t| !t.is_empty()).map(|t| format!("{t:?}")).unwrap_or_default(),
            v["state"].as_str().unwrap_or_default(),
            v["release_at"].as_str().unwrap_or_default(),
            v["lead_secs"],
            v["objects"],
            v["content_ids"].as_array().map_or(0, |a| a.len()),
            v["tiers"]
                .as_array()
                .map(|t| t.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(","))
                .unwrap_or_default(),
        );
        for r in v["region_status"].as_array().into_iter().flatten() {
            println!(
                "  region {:<12} drop {}  pre-warm from {}  POPs done {}/{}",
                r["region"].as_str().unwrap_or_default(),
                r["drop_at"].as_str().unwrap_or_default(),
                r["prewarm_at"].as_str().unwrap_or_default(),
                r["pops_done"],
                r["pops"],
            );
        }
        for j in v["jobs"].as_array().into_iter().flatten() {
            let err = j["error"].as_str().filter(|e| !e.is_empty()).map(|e| format!("  ({e})")).unwrap_or_default();
            println!(
                "  pop {:<20} {:<10} {:<9} {}/{} objects  {:.1} MB  attempts {}{err}",
                j["pop"].as_str().unwrap_or_default(),
                j["region"].as_str().unwrap_or_default(),
                j["state"].as_str().unwrap_or_default(),
                j["done"],
                j["total"],
                j["bytes"].as_f64().unwrap_or(0.0) / 1e6,
                j["attempts"],
            );
        }
    }

    /// A bar per POP, refreshed each half second, until every job of the release has
    /// ended (done, failed or cancelled) and every region's pre-warm time has passed.
    async fn follow(&self, id: &str) -> Result<(), String> {
        let multi = indicatif::MultiProgress::new();
        let style = indicatif::ProgressStyle::with_template("{prefix:<28} {bar:30} {pos}/{len} objects  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        let mut bars: std::collections::HashMap<String, indicatif::ProgressBar> = Default::default();
        loop {
            let v = self.call(Method::GET, &format!("/v1/releases/{id}"), None).await?;
            let jobs = v["jobs"].as_array().cloned().unwrap_or_default();
            for j in &jobs {
                let pop = j["pop"].as_str().unwrap_or_default().to_owned();
                let bar = bars.entry(pop.clone()).or_insert_with(|| {
                    let b = multi.add(indicatif::ProgressBar::new(0));
                    b.set_style(style.clone());
                    b.set_prefix(format!("{pop} ({})", j["region"].as_str().unwrap_or_default()));
                    b
                });
                bar.set_length(j["total"].as_u64().unwrap_or(0));
                bar.set_position(j["done"].as_u64().unwrap_or(0));
                bar.set_message(format!(
                    "{:.1} MB  {}",
                    j["bytes"].as_f64().unwrap_or(0.0) / 1e6,
                    j["state"].as_str().unwrap_or_default()
                ));
            }
            let now_ms =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis()) as i64;
            let lead = v["lead_secs"].as_i64().unwrap_or(0) * 1000;
            let windows_open = v["region_status"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|r| r["drop_at_ms"].as_i64().unwrap_or(0) - lead <= now_ms);
            let ended = jobs.iter().all(|j| matches!(j["state"].as_str(), Some("done" | "failed" | "cancelled")));
            if v["state"] == "cancelled" || (v["state"] == "scheduled" && windows_open && ended && !jobs.is_empty()) {
                for b in bars.values() {
                    b.finish();
                }
                drop(multi);
                self.show(&v);
                return Ok(());
            }
            if v["state"] == "draft" {
                return Err(format!("release {id} is a draft: schedule it first"));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Purge on every POP (or a region's) and wait until each has done it.
    pub async fn purge(&self, selector: serde_json::Value, wait: bool) -> Result<(), String> {
        let v = self.call(Method::POST, "/v1/purges", Some(selector)).await?;
        let id = v["purge"]["id"].as_str().unwrap_or_default().to_owned();
        let mut v = v;
        let started = std::time::Instant::now();
        while wait && v["ended"] != true && started.elapsed() < Duration::from_secs(300) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            v = self.call(Method::GET, &format!("/v1/purges/{id}"), None).await?;
        }
        if self.json {
            println!("{v}");
        } else {
            println!(
                "purge {id}: {}/{} POPs done in {:.1} s",
                v["pops_done"],
                v["pops"],
                started.elapsed().as_secs_f64()
            );
            for j in v["jobs"].as_array().into_iter().flatten() {
                let err = j["error"].as_str().filter(|e| !e.is_empty()).map(|e| format!("  ({e})")).unwrap_or_default();
                println!(
                    "  pop {:<20} {}{err}",
                    j["pop_id"].as_str().unwrap_or_default(),
                    j["state"].as_str().unwrap_or_default()
                );
            }
        }
        if wait && v["complete"] != true {
            return Err(match v["ended"] == true {
                true => format!("purge {id} failed on {} POP(s); see above", v["pops_failed"]),
                false => format!("purge {id} not complete on every POP after 300 s"),
            });
        }
        Ok(())
    }
}

//! Territorial rights: may track T be streamed in country C now? One row per (track,
//! country) with a validity window and a release time; every stream request checks it.
//! Lookups are cached in-process (moka) for at most 30 s, so a change made on another
//! replica is visible within 30 s, and at once on the replica that made it.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::{AnyPool, Row};

use crate::error::Error;

/// How long a cached lookup may be served.
pub const CACHE_TTL: Duration = Duration::from_secs(30);
const OPEN_ENDED: i64 = i64::MAX;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Right {
    pub country: String,
    pub valid_from_ms: i64,
    pub valid_until_ms: i64,
    pub release_at_ms: i64,
}

/// `PUT /v1/admin/tracks/ID/rights`: grant (or replace) rights in these countries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub countries: Vec<String>,
    /// Unix ms; default now.
    #[serde(default)]
    pub valid_from_ms: Option<i64>,
    /// Unix ms; default open-ended.
    #[serde(default)]
    pub valid_until_ms: Option<i64>,
    /// Unix ms; default: available at once.
    #[serde(default)]
    pub release_at_ms: Option<i64>,
}

pub fn check_country(c: &str) -> Result<(), Error> {
    if segue_core::geo::is_country_code(c) {
        Ok(())
    } else {
        Err(Error::BadRequest(format!("country {c:?} must be an ISO 3166-1 alpha-2 code (SE, US, ...)")))
    }
}

/// The country a stream request is for. Rights follow where the listener is: a trusted
/// answer (`located`: a load balancer's header from a trusted proxy, or the GeoIP
/// database) when there is one, else the account's home country. A `?country=` the
/// listener asks for is taken only when one of those agrees; anything else is a 403, so a
/// US account cannot pick SE's catalog. Admins (operators) may name any.
pub fn listener_country(
    user: &crate::catalog::User,
    asked: Option<&str>,
    located: Option<String>,
) -> Result<String, Error> {
    if let Some(a) = asked {
        check_country(a)?;
        let agrees = match &located {
            Some(l) => l == a,
            None => user.country == a,
        };
        if user.admin || agrees {
            return Ok(a.to_owned());
        }
        let home = if user.country.is_empty() { "no country".to_owned() } else { user.country.clone() };
        return Err(Error::CountryMismatch(format!(
            "country {a} cannot be chosen: this account's country is {home}{}",
            located.map(|l| format!(" and the request comes from {l}")).unwrap_or_default()
        )));
    }
    match located {
        Some(l) => Ok(l),
        None if !user.country.is_empty() => Ok(user.country.clone()),
        None => Err(Error::BadRequest("country is required (the account has none)".into())),
    }
}

/// Tell every POP (through the control plane's heartbeat answers) that URLs for
/// `content_id` bound to `country` no longer work, until the longest-lived one signed so
/// far has expired. Without a control plane there are no POPs to tell. A failure is a
/// 503: the right is not withdrawn here either, so the admin retries.
pub async fn push_withdrawal(
    config: &crate::Config,
    content_id: &str,
    country: &str,
    now_ms: i64,
) -> Result<(), Error> {
    let Some(cp) = &config.control_plane else { return Ok(()) };
    let until = now_ms / 1000 + config.signing.ttl_secs as i64 + 1;
    let body = serde_json::json!({ "content_id": content_id, "country": country, "until": until });
    let (status, answer) = segue_core::client::call(
        &cp.url,
        http::Method::POST,
        "/v1/withdrawals",
        Some(&cp.token),
        Some(body.to_string().into()),
        Duration::from_secs(config.request_timeout_secs),
    )
    .await
    .map_err(|e| Error::Unavailable(format!("control plane {}: {e}; the right was not withdrawn", cp.url)))?;
    if status != http::StatusCode::CREATED {
        return Err(Error::Unavailable(format!(
            "control plane {} answered {status} {}; the right was not withdrawn",
            cp.url,
            String::from_utf8_lossy(&answer).trim()
        )));
    }
    Ok(())
}

/// The right was granted again: lift a withdrawal the POPs may still hold. Best effort:
/// if it fails, new URLs are refused at POPs until the withdrawal expires (at most the
/// URL lifetime), which errs on the side of the rights holder.
pub async fn lift_withdrawal(config: &crate::Config, content_id: &str, country: &str) {
    let Some(cp) = &config.control_plane else { return };
    let path = format!("/v1/withdrawals/{content_id}/{country}");
    let timeout = Duration::from_secs(config.request_timeout_secs);
    match segue_core::client::call(&cp.url, http::Method::DELETE, &path, Some(&cp.token), None, timeout).await {
        Ok((s, _)) if s.is_success() => {}
        Ok((s, body)) => tracing::warn!(status = %s, body = %String::from_utf8_lossy(&body), "withdrawal not lifted"),
        Err(e) => tracing::warn!(error = %e, "withdrawal not lifted"),
    }
}

pub struct Rights {
    cache: moka::sync::Cache<(String, String), Option<Right>>,
}

impl Default for Rights {
    fn default() -> Self {
        Rights { cache: moka::sync::Cache::builder().max_capacity(1_000_000).time_to_live(CACHE_TTL).build() }
    }
}

impl Rights {
    /// The right for (track, country), from the cache or the database.
    pub async fn get(&self, pool: &AnyPool, track: &str, country: &str) -> Result<Option<Right>, Error> {
        let key = (track.to_owned(), country.to_owned());
        if let Some(hit) = self.cache.get(&key) {
            return Ok(hit);
        }
        let row = sqlx::query(
            "SELECT country, valid_from_ms, valid_until_ms, release_at_ms FROM rights WHERE track_id = $1 AND country = $2",
        )
        .bind(track)
        .bind(country)
        .fetch_optional(pool)
        .await?;
        let right = match row {
            Some(r) => Some(Right {
                country: r.try_get(0)?,
                valid_from_ms: r.try_get(1)?,
                valid_until_ms: r.try_get(2)?,
                release_at_ms: r.try_get(3)?,
            }),
            None => None,
        };
        self.cache.insert(key, right.clone());
        Ok(right)
    }

    /// Allowed now? The right, or 403 with the reason.
    pub async fn check(&self, pool: &AnyPool, track: &str, country: &str, now: i64) -> Result<Right, Error> {
        let right = self.get(pool, track, country).await?;
        let Some(r) = right else {
            return Err(Error::Forbidden(format!("no rights to stream this track in {country}")));
        };
        if now < r.release_at_ms {
            return Err(Error::Embargoed(format!(
                "not released yet in {country}: releases at {}",
                crate::format_time(r.release_at_ms)
            )));
        }
        if now < r.valid_from_ms {
            return Err(Error::Forbidden(format!(
                "not available in {country} before {}",
                crate::format_time(r.valid_from_ms)
            )));
        }
        if now >= r.valid_until_ms {
            return Err(Error::Forbidden(format!(
                "no longer available in {country} (rights ended {})",
                crate::format_time(r.valid_until_ms)
            )));
        }
        Ok(r)
    }

    /// Grant rights, in one transaction; the cache entries change at once here.
    pub async fn grant(&self, pool: &AnyPool, track: &str, g: &Grant, now: i64) -> Result<Vec<Right>, Error> {
        if g.countries.is_empty() || g.countries.len() > 300 {
            return Err(Error::BadRequest("countries must list 1-300 codes".into()));
        }
        for c in &g.countries {
            check_country(c)?;
        }
        let from = g.valid_from_ms.unwrap_or(now);
        let until = g.valid_until_ms.unwrap_or(OPEN_ENDED);
        let release = g.release_at_ms.unwrap_or(0);
        if from < 0 || release < 0 || until <= from {
            return Err(Error::BadRequest("valid_until_ms must be after valid_from_ms (both Unix ms)".into()));
        }
        let mut tx = segue_core::sql::begin_write(pool).await?;
        if sqlx::query("SELECT id FROM tracks WHERE id = $1").bind(track).fetch_optional(&mut *tx).await?.is_none() {
            return Err(Error::NotFound(format!("no track {track:?}")));
        }
        let mut out = Vec::new();
        for c in &g.countries {
            sqlx::query(
                "INSERT INTO rights (track_id, country, valid_from_ms, valid_until_ms, release_at_ms, updated_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (track_id, country) DO UPDATE SET \
                 valid_from_ms = excluded.valid_from_ms, valid_until_ms = excluded.valid_until_ms, \
                 release_at_ms = excluded.release_at_ms, updated_ms = excluded.updated_ms",
            )
            .bind(track)
            .bind(c)
            .bind(from)
            .bind(until)
            .bind(release)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            out.push(Right { country: c.clone(), valid_from_ms: from, valid_until_ms: until, release_at_ms: release });
        }
        tx.commit().await?;
        for c in &g.countries {
            self.cache.invalidate(&(track.to_owned(), c.clone()));
        }
        Ok(out)
    }

    /// Withdraw the right in one country.
    pub async fn revoke(&self, pool: &AnyPool, track: &str, country: &str) -> Result<bool, Error> {
        check_country(country)?;
        let n = sqlx::query("DELETE FROM rights WHERE track_id = $1 AND country = $2")
            .bind(track)
            .bind(country)
            .execute(pool)
            .await?
            .rows_affected();
        self.cache.invalidate(&(track.to_owned(), country.to_owned()));
        Ok(n > 0)
    }

    pub async fn list(&self, pool: &AnyPool, track: &str) -> Result<Vec<Right>, Error> {
        Ok(sqlx::query(
            "SELECT country, valid_from_ms, valid_until_ms, release_at_ms FROM rights WHERE track_id = $1 ORDER BY country",
        )
        .bind(track)
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| {
            Ok(Right {
                country: r.try_get(0)?,
                valid_from_ms: r.try_get(1)?,
                valid_until_ms: r.try_get(2)?,
                release_at_ms: r.try_get(3)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?)
    }
}

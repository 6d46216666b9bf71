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
    if c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(Error::BadRequest(format!("country {c:?} must be an ISO 3166-1 alpha-2 code (SE, US, ...)")))
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

    /// Allowed now? `Ok(release_at_ms)` or 403 with the reason.
    pub async fn check(&self, pool: &AnyPool, track: &str, country: &str, now: i64) -> Result<i64, Error> {
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
        Ok(r.release_at_ms)
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
        let mut tx = pool.begin().await?;
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

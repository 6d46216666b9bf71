//! Opening a role's database: SQLite (embedded default) or PostgreSQL (at scale) through
//! sqlx's `Any` driver, with the role's migrations embedded in its binary. Roles write
//! SQL both engines accept (`$N` placeholders, BIGINT flags and millisecond times), so
//! one set of queries and one schema serve both.

use std::borrow::Cow;

use sqlx::any::AnyPoolOptions;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::AnyPool;

/// One schema step: version, description, SQL.
pub type Step = (i64, &'static str, &'static str);

/// Open `url` (`sqlite://PATH`, created with its folder if missing, or `postgres://...`)
/// and apply `steps` not applied yet. Errors are plain text naming what failed.
pub async fn open(url: &str, steps: &[Step]) -> Result<AnyPool, String> {
    sqlx::any::install_default_drivers();
    let postgres = url.starts_with("postgres");
    let url = match url.strip_prefix("sqlite://") {
        Some(path) => {
            let path = path.split('?').next().unwrap_or(path);
            if let Some(parent) = std::path::Path::new(path).parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
            }
            format!("sqlite://{path}?mode=rwc")
        }
        None => url.to_owned(),
    };
    let pool = AnyPoolOptions::new()
        .max_connections(if postgres { 8 } else { 4 })
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if !postgres {
                    // WAL: readers never block writers; FULL sync: an acknowledged write
                    // survives power loss.
                    sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA synchronous = FULL").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA busy_timeout = 10000").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *conn).await?;
                    // Measured on play-event ingest (random-key indexes of a growing
                    // table): statement journals in memory, not in a temp file (13 % of
                    // the CPU); pages read through a mapping instead of a read() each;
                    // 64 MiB of page cache (default 2); a checkpoint every 40 MiB of WAL
                    // (default 4) so a page dirtied by many commits is copied back once.
                    for pragma in [
                        "PRAGMA temp_store = MEMORY",
                        "PRAGMA mmap_size = 1073741824",
                        "PRAGMA cache_size = -65536",
                        "PRAGMA wal_autocheckpoint = 10000",
                    ] {
                        sqlx::query(pragma).execute(&mut *conn).await?;
                    }
                }
                Ok(())
            })
        })
        .connect(&url)
        .await
        .map_err(|e| format!("cannot open the database: {e}"))?;
    let migrator = Migrator {
        migrations: Cow::Owned(
            steps
                .iter()
                .map(|(v, d, sql)| {
                    Migration::new(*v, Cow::Borrowed(*d), MigrationType::Simple, Cow::Borrowed(*sql), false)
                })
                .collect(),
        ),
        ..Migrator::DEFAULT
    };
    migrator.run(&pool).await.map_err(|e| format!("migration failed: {e}"))?;
    Ok(pool)
}

/// A transaction that will write. On SQLite it takes the write lock at BEGIN
/// (`IMMEDIATE`): a deferred transaction that reads first and then writes cannot wait
/// for the lock (SQLite answers SQLITE_BUSY at once rather than deadlock), so a
/// concurrent writer would fail it. PostgreSQL locks rows as it goes.
pub async fn begin_write(pool: &AnyPool) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
    if pool.connect_options().database_url.scheme() == "sqlite" {
        pool.begin_with("BEGIN IMMEDIATE").await
    } else {
        pool.begin().await
    }
}

/// Config check of a database URL: the engines `open` supports.
pub fn check_url(field: &str, url: &str) -> Result<(), crate::config::FieldError> {
    crate::config::ensure(
        url.starts_with("sqlite://") || url.starts_with("postgres://") || url.starts_with("postgresql://"),
        field,
        "must be sqlite://PATH or postgres://...",
    )
}

/// A database URL without its password, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(super::redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(super::redact("sqlite://./x.db"), "sqlite://./x.db");
    }
}

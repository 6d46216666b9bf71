//! Who is calling a `/rest/` endpoint.
//!
//! - `apiKey=`: the app API's user key (the `apiKeyAuthentication` extension). Preferred.
//! - `u` + `t` + `s`: the legacy token scheme older players speak, `t = md5(password + s)`.
//!   Checking `t` needs the password itself, so a user's Subsonic password (set with
//!   `PUT /v1/me/subsonic-login`, separate from their API key) rests sealed with AES-256-GCM
//!   under `[subsonic] password_keys`, bound to the user id; never plain, never logged.
//!   Without those keys the scheme is off and answers 42.
//! - `u` + `p`: the password in the URL (plain or `enc:` hex), only when
//!   `[subsonic] allow_plain_password` is set: it ends up in logs and browser histories.

use md5::{Digest, Md5};
use segue_core::drm::kek::{Keks, WrappedKey};
use serde::Deserialize;
use sqlx::Row;
use zeroize::Zeroizing;

use super::{Failure, Params, HELP_URL};
use crate::catalog::User;
use crate::error::Error;
use crate::App;

/// The sealing keys and the plain-password switch, from `[subsonic]`.
pub struct Logins {
    keys: Option<Keks>,
    allow_plain: bool,
}

impl Logins {
    pub fn open(s: &crate::config::SubsonicSettings) -> Result<Logins, Error> {
        let keys =
            Keks::load_or_var(&s.password_keys_file, crate::config::SUBSONIC_KEYS_VAR).map_err(Error::BadRequest)?;
        Ok(Logins { keys, allow_plain: s.allow_plain_password })
    }
}

fn aad(user_id: &str) -> Vec<u8> {
    format!("segue subsonic password v1\n{user_id}").into_bytes()
}

/// `PUT /v1/me/subsonic-login`'s body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewLogin {
    pub username: String,
    pub password: Zeroizing<String>,
}

/// Set (or replace) the caller's Subsonic username and password.
pub async fn set(app: &App, user: &User, new: NewLogin, now_ms: i64) -> Result<serde_json::Value, Error> {
    if user.id == "admin" {
        return Err(Error::Forbidden("a Subsonic login belongs to a user: use a user's API key".into()));
    }
    let keys = app.logins.keys.as_ref().ok_or_else(|| {
        Error::Unavailable("Subsonic passwords are off: [subsonic] password_keys_file is not set".into())
    })?;
    let name = new.username.trim();
    if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b)) {
        return Err(Error::BadRequest("username: 1-64 of A-Z a-z 0-9 . _ - @".into()));
    }
    let chars = new.password.chars().count();
    if !(8..=128).contains(&chars) || new.password.chars().any(char::is_control) {
        return Err(Error::BadRequest("password: 8-128 characters, no control characters".into()));
    }
    let sealed = keys.seal(&aad(&user.id), new.password.as_bytes());
    let sealed = serde_json::to_string(&sealed).map_err(|e| Error::Database(e.to_string()))?;
    let taken = sqlx::query("SELECT user_id FROM subsonic_logins WHERE username = $1")
        .bind(name)
        .fetch_optional(&app.pool)
        .await?
        .map(|r| r.try_get::<String, _>(0))
        .transpose()?;
    if taken.as_deref().is_some_and(|owner| owner != user.id) {
        return Err(Error::Conflict(format!("the username {name:?} is taken")));
    }
    let mut tx = app.pool.begin().await?;
    sqlx::query("DELETE FROM subsonic_logins WHERE user_id = $1").bind(&user.id).execute(&mut *tx).await?;
    sqlx::query("INSERT INTO subsonic_logins (username, user_id, sealed, updated_ms) VALUES ($1, $2, $3, $4)")
        .bind(name)
        .bind(&user.id)
        .bind(&sealed)
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .map_err(|e| match e.as_database_error().is_some_and(|d| d.is_unique_violation()) {
            // Another user took the name between the check and here.
            true => Error::Conflict(format!("the username {name:?} is taken")),
            false => Error::from(e),
        })?;
    tx.commit().await?;
    tracing::info!(user = user.id, username = name, "subsonic login set");
    Ok(serde_json::json!({ "username": name }))
}

/// Remove the caller's Subsonic login (their API key keeps working).
pub async fn remove(app: &App, user: &User) -> Result<(), Error> {
    sqlx::query("DELETE FROM subsonic_logins WHERE user_id = $1").bind(&user.id).execute(&app.pool).await?;
    Ok(())
}

/// The caller of a `/rest/` request, by whichever scheme it used.
pub(super) async fn authenticate(app: &App, p: &Params) -> Result<User, Failure> {
    let key = p.get("apiKey").filter(|k| !k.is_empty());
    let legacy = p.get("p").is_some() || p.get("t").is_some() || p.get("s").is_some();
    match key {
        Some(_) if p.get("u").is_some() || legacy => {
            Err(Failure::new(43, "Multiple conflicting authentication mechanisms provided"))
        }
        Some(k) => crate::catalog::user_by_token(&app.pool, k)
            .await
            .map_err(Failure::from)?
            .ok_or_else(|| Failure::new(44, "Invalid API key")),
        None if legacy || p.get("u").is_some() => by_password(app, p).await,
        None => Err(Failure::new(10, "Required parameter is missing: apiKey")),
    }
}

fn unsupported(why: &str) -> Failure {
    Failure {
        code: 42,
        message: format!("Provided authentication mechanism not supported: {why}"),
        help_url: Some(HELP_URL),
    }
}

async fn by_password(app: &App, p: &Params) -> Result<User, Failure> {
    let wrong = || Failure::new(40, "Wrong username or password");
    let username = p.required("u")?;
    let Some(keys) = app.logins.keys.as_ref() else {
        // The apiKeyAuthentication extension: a server without token authentication
        // answers 41 to it, 42 to any other scheme it lacks.
        return Err(match p.get("t") {
            Some(_) => Failure {
                code: 41,
                message: "Token authentication not supported for LDAP users: this server takes API keys (apiKey)"
                    .into(),
                help_url: Some(HELP_URL),
            },
            None => unsupported("this server takes API keys (apiKey) only"),
        });
    };
    // What the client proves: md5(password + salt), or the password itself.
    enum Proof<'a> {
        Token { t: &'a str, s: &'a str },
        Plain(Zeroizing<Vec<u8>>),
    }
    let proof = match (p.get("t"), p.get("s"), p.get("p")) {
        (Some(t), Some(s), None) if !s.is_empty() => Proof::Token { t, s },
        (None, None, Some(pw)) => {
            if !app.logins.allow_plain {
                return Err(unsupported("plain passwords (p=) are off on this server; use t and s, or apiKey"));
            }
            match pw.strip_prefix("enc:") {
                Some(h) => Proof::Plain(Zeroizing::new(hex::decode(h).map_err(|_| wrong())?)),
                None => Proof::Plain(Zeroizing::new(pw.as_bytes().to_vec())),
            }
        }
        (Some(_), None, _) | (Some(_), Some(""), _) => return Err(Failure::missing("s")),
        (None, Some(_), None) => return Err(Failure::missing("t")),
        _ => return Err(Failure::new(43, "Multiple conflicting authentication mechanisms provided")),
    };
    let row = sqlx::query(
        "SELECT l.sealed, u.id, u.name, u.country, u.admin, u.gateway \
         FROM subsonic_logins l JOIN users u ON u.id = l.user_id WHERE l.username = $1",
    )
    .bind(username)
    .fetch_optional(&app.pool)
    .await
    .map_err(|e| Failure::from(Error::from(e)))?;
    let Some(row) = row else {
        metrics::counter!("app_subsonic_auth_failures_total").increment(1);
        return Err(wrong());
    };
    let get = |e: sqlx::Error| Failure::from(Error::from(e));
    let sealed: WrappedKey =
        serde_json::from_str(&row.try_get::<String, _>(0).map_err(get)?).map_err(|e| Failure::new(0, e.to_string()))?;
    let user = crate::catalog::user_at(&row, 1).map_err(get)?;
    let password = keys.open(&aad(&user.id), &sealed).map_err(|e| {
        tracing::warn!(user = user.id, error = %e, "a sealed Subsonic password does not open");
        Failure::new(0, "the stored password cannot be opened; set it again")
    })?;
    let ok = match proof {
        Proof::Token { t, s } => {
            let mut h = Md5::new();
            h.update(password.as_slice());
            h.update(s.as_bytes());
            let want = hex::encode(h.finalize());
            segue_core::token::constant_time_eq(want.as_bytes(), t.to_ascii_lowercase().as_bytes())
        }
        Proof::Plain(given) => segue_core::token::constant_time_eq(password.as_slice(), given.as_slice()),
    };
    if !ok {
        metrics::counter!("app_subsonic_auth_failures_total").increment(1);
        return Err(wrong());
    }
    Ok(user)
}

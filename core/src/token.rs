//! Signed URL tokens: HMAC-SHA256 over method, path, expiry and optional constraints.
//!
//! Query form: `?exp=UNIX&kid=ID&sig=HEX` plus, when constrained, `nbf=UNIX` (not before,
//! used for release embargoes) and `country=CC`. The signature covers a canonical string,
//! so parameter order in the URL does not matter and unsigned parameters are ignored.
//! `HEAD` is signed and verified as `GET`: a client allowed to fetch may ask for the size.
//! Keys are looked up by `kid`, so a new key can be rolled out to verifiers before
//! signers use it, and an old one removed after its last token expires.

use std::collections::HashMap;
use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Shortest secret accepted: 128 bits.
pub const MIN_SECRET_LEN: usize = 16;

/// Why a token was refused. Shown to clients in 403 bodies; none of them leaks key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the URL carries no token (exp, kid, sig)")]
    Missing,
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("unknown key id {0:?}")]
    UnknownKey(String),
    #[error("token expired")]
    Expired,
    #[error("token not valid yet (embargoed until {0})")]
    NotYetValid(u64),
    #[error("token is for country {expected}, request is from {actual}")]
    CountryMismatch { expected: String, actual: String },
    #[error("signature does not verify")]
    BadSignature,
}

/// What a token allows, beyond the method and path it is bound to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Not valid before, Unix seconds.
    pub nbf: Option<u64>,
    /// ISO 3166-1 alpha-2 country the request must come from.
    pub country: Option<String>,
}

/// A named HMAC key.
#[derive(Clone)]
pub struct Key {
    pub id: String,
    secret: Vec<u8>,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key").field("id", &self.id).finish_non_exhaustive()
    }
}

impl Key {
    /// `id` is 1-32 characters of `[A-Za-z0-9_-]`; the secret at least 16 bytes.
    pub fn new(id: impl Into<String>, secret: Vec<u8>) -> Result<Self, String> {
        let id = id.into();
        if id.is_empty() || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return Err(format!("key id {id:?} must be 1-32 characters of A-Z a-z 0-9 _ -"));
        }
        if secret.len() < MIN_SECRET_LEN {
            return Err(format!("secret for key {id:?} is {} bytes; at least {MIN_SECRET_LEN} required", secret.len()));
        }
        Ok(Key { id, secret })
    }

    /// A key whose secret is given as hex, as in config files.
    pub fn from_hex(id: impl Into<String>, secret_hex: &str) -> Result<Self, String> {
        let secret = hex::decode(secret_hex.trim()).map_err(|e| format!("secret is not hex: {e}"))?;
        Key::new(id, secret)
    }

    /// The MAC over the request and claims. `others` are the query's other parameters, in
    /// order (`a=1&b=2`): a signature covers the whole query, so nothing can be added to a
    /// signed URL (a cache-busting `&x=N`) without breaking it. Without others the MAC is
    /// what it always was, so URLs signed before this still verify.
    fn mac(&self, method: &str, path: &str, others: &str, claims: &Claims) -> HmacSha256 {
        // new_from_slice accepts any key length for HMAC; the error arm cannot occur.
        let mut mac = match HmacSha256::new_from_slice(&self.secret) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        let method = if method.eq_ignore_ascii_case("HEAD") { "GET" } else { method };
        let nbf = claims.nbf.map(|n| n.to_string()).unwrap_or_default();
        let country = claims.country.as_deref().unwrap_or("");
        // Length-free fields separated by '\n', which none of them may contain.
        mac.update(b"segue-token-v1\n");
        for field in [method.to_ascii_uppercase().as_str(), path, &claims.exp.to_string(), &nbf, country] {
            mac.update(field.as_bytes());
            mac.update(b"\n");
        }
        mac.update(self.id.as_bytes());
        if !others.is_empty() {
            mac.update(b"\n?");
            mac.update(others.as_bytes());
        }
        mac
    }

    /// A short tag (16 hex digits) over `parts`, to make an id the server can later
    /// recognise as its own (a stream session bound to a user and a country).
    pub fn tag(&self, parts: &[&str]) -> String {
        let mut mac = match HmacSha256::new_from_slice(&self.secret) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        mac.update(b"segue-tag-v1\n");
        for p in parts {
            mac.update(p.as_bytes());
            mac.update(b"\n");
        }
        hex::encode(&mac.finalize().into_bytes()[..8])
    }

    /// The query string (without `?`) that authorizes `method path` under `claims`.
    pub fn sign(&self, method: &str, path: &str, claims: &Claims) -> String {
        self.sign_query(method, path, "", claims)
    }

    /// The query string authorizing `method path?others` (`others` without `?`, kept
    /// first and signed too).
    pub fn sign_query(&self, method: &str, path: &str, others: &str, claims: &Claims) -> String {
        let sig = hex::encode(self.mac(method, path, others, claims).finalize().into_bytes());
        let mut q = if others.is_empty() { String::new() } else { format!("{others}&") };
        q.push_str(&format!("exp={}", claims.exp));
        if let Some(nbf) = claims.nbf {
            q.push_str(&format!("&nbf={nbf}"));
        }
        if let Some(c) = &claims.country {
            q.push_str(&format!("&country={c}"));
        }
        q.push_str(&format!("&kid={}&sig={sig}", self.id));
        q
    }
}

/// Verifies tokens against a set of keys, allowing bounded clock skew.
#[derive(Debug, Clone, Default)]
pub struct Verifier {
    keys: HashMap<String, Key>,
    skew_secs: u64,
}

impl Verifier {
    pub fn new(keys: impl IntoIterator<Item = Key>, skew_secs: u64) -> Self {
        Verifier { keys: keys.into_iter().map(|k| (k.id.clone(), k)).collect(), skew_secs }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verify the token in `query` for `method path` at time `now` (Unix seconds).
    /// `client_country` is the country the request comes from, if known; a token bound to
    /// a country is refused when it is unknown.
    pub fn verify(
        &self,
        method: &str,
        path: &str,
        query: Option<&str>,
        now: u64,
        client_country: Option<&str>,
    ) -> Result<Claims, TokenError> {
        let t = parse_query(query.unwrap_or(""))?;
        let key = self.keys.get(t.kid).ok_or_else(|| TokenError::UnknownKey(t.kid.to_owned()))?;
        let sig = hex::decode(t.sig).map_err(|_| TokenError::Malformed("sig is not hex"))?;
        // Signature first: expiry and constraints of an unsigned token are meaningless.
        key.mac(method, path, &t.others, &t.claims).verify_slice(&sig).map_err(|_| TokenError::BadSignature)?;
        if now > t.claims.exp.saturating_add(self.skew_secs) {
            return Err(TokenError::Expired);
        }
        if let Some(nbf) = t.claims.nbf {
            if now.saturating_add(self.skew_secs) < nbf {
                return Err(TokenError::NotYetValid(nbf));
            }
        }
        if let Some(expected) = &t.claims.country {
            let actual = client_country.unwrap_or("unknown");
            if !expected.eq_ignore_ascii_case(actual) {
                return Err(TokenError::CountryMismatch { expected: expected.clone(), actual: actual.to_owned() });
            }
        }
        Ok(t.claims)
    }
}

struct Parsed<'a> {
    kid: &'a str,
    sig: &'a str,
    claims: Claims,
    /// The query's other parameters, in order, joined by `&`.
    others: String,
}

fn parse_query(query: &str) -> Result<Parsed<'_>, TokenError> {
    let (mut exp, mut nbf, mut country, mut kid, mut sig) = (None, None, None, None, None);
    let mut others: Vec<&str> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match name {
            "exp" => &mut exp,
            "nbf" => &mut nbf,
            "country" => &mut country,
            "kid" => &mut kid,
            "sig" => &mut sig,
            _ => {
                others.push(pair);
                continue;
            }
        };
        if slot.replace(value).is_some() {
            return Err(TokenError::Malformed("a token parameter appears twice"));
        }
    }
    if exp.is_none() && kid.is_none() && sig.is_none() {
        return Err(TokenError::Missing);
    }
    let number = |v: &str, what: &'static str| -> Result<u64, TokenError> {
        if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TokenError::Malformed(what));
        }
        v.parse().map_err(|_| TokenError::Malformed(what))
    };
    let exp = number(exp.ok_or(TokenError::Malformed("exp is missing"))?, "exp is not a Unix time")?;
    let nbf = nbf.map(|v| number(v, "nbf is not a Unix time")).transpose()?;
    let country = match country {
        Some(c) if c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()) => Some(c.to_ascii_uppercase()),
        Some(_) => return Err(TokenError::Malformed("country is not a two-letter code")),
        None => None,
    };
    let kid = kid.filter(|k| !k.is_empty()).ok_or(TokenError::Malformed("kid is missing"))?;
    let sig = sig.filter(|s| s.len() == 64).ok_or(TokenError::Malformed("sig must be 64 hex digits"))?;
    Ok(Parsed { kid, sig, claims: Claims { exp, nbf, country }, others: others.join("&") })
}

/// The `[tokens]` table of a serving role's config.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenSettings {
    /// Refuse requests without a valid token (403).
    pub required: bool,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub skew_secs: u64,
    /// Request header carrying the client's country (set by a geo-IP front or trusted LB).
    pub country_header: String,
    /// Key id -> secret (hex, at least 16 bytes). Several keys allow rotation.
    pub keys: std::collections::BTreeMap<String, String>,
}

impl Default for TokenSettings {
    fn default() -> Self {
        TokenSettings {
            required: false,
            skew_secs: 30,
            country_header: "x-client-country".into(),
            keys: Default::default(),
        }
    }
}

impl TokenSettings {
    /// Build the verifier, or name the bad field.
    pub fn verifier(&self) -> Result<Verifier, crate::config::FieldError> {
        let mut keys = Vec::new();
        for (id, secret) in &self.keys {
            keys.push(
                Key::from_hex(id.clone(), secret)
                    .map_err(|m| crate::config::FieldError::new(format!("tokens.keys.{id}"), m))?,
            );
        }
        crate::config::ensure(
            !self.required || !keys.is_empty(),
            "tokens.keys",
            "tokens.required is true but no key is configured",
        )?;
        crate::config::ensure(self.skew_secs <= 600, "tokens.skew_secs", "must be at most 600")?;
        crate::config::ensure(
            http::HeaderName::from_bytes(self.country_header.as_bytes()).is_ok(),
            "tokens.country_header",
            "is not a valid header name",
        )?;
        Ok(Verifier::new(keys, self.skew_secs))
    }
}

/// Equality that takes the same time wherever the inputs differ (the length is not
/// secret): for comparing bearer tokens.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> Key {
        Key::new(id, vec![7u8; 32]).unwrap()
    }

    const PATH: &str = "/a/abc/high.ogg";

    #[test]
    fn signed_urls_verify_and_tampering_fails() {
        let k = key("k1");
        let v = Verifier::new([k.clone()], 30);
        let claims = Claims { exp: 1_000, nbf: None, country: None };
        let q = k.sign("GET", PATH, &claims);
        assert_eq!(v.verify("GET", PATH, Some(&q), 900, None), Ok(claims.clone()));
        assert_eq!(v.verify("HEAD", PATH, Some(&q), 900, None), Ok(claims));
        assert_eq!(v.verify("GET", "/a/abc/low.ogg", Some(&q), 900, None), Err(TokenError::BadSignature));
        assert_eq!(v.verify("POST", PATH, Some(&q), 900, None), Err(TokenError::BadSignature));
        let longer = q.replace("exp=1000", "exp=9999");
        assert_eq!(v.verify("GET", PATH, Some(&longer), 900, None), Err(TokenError::BadSignature));
        // The token's own parameters may come in any order...
        let shuffled = q.split('&').rev().collect::<Vec<_>>().join("&");
        assert!(v.verify("GET", PATH, Some(&shuffled), 900, None).is_ok());
        // ...but the signature covers the whole query: nothing can be added (cache
        // busting), and what was signed with the URL cannot be changed or dropped.
        for added in [format!("{q}&x=1"), format!("x=1&{q}"), format!("{q}&x")] {
            assert_eq!(v.verify("GET", PATH, Some(&added), 900, None), Err(TokenError::BadSignature), "{added}");
        }
        let with = k.sign_query("GET", PATH, "tier=high&v=2", &Claims { exp: 1_000, ..Default::default() });
        assert!(with.starts_with("tier=high&v=2&exp=1000&"));
        assert!(v.verify("GET", PATH, Some(&with), 900, None).is_ok());
        for changed in [with.replace("v=2", "v=3"), with.replace("tier=high&", ""), with.replace("&v=2", "")] {
            assert_eq!(v.verify("GET", PATH, Some(&changed), 900, None), Err(TokenError::BadSignature), "{changed}");
        }
    }

    #[test]
    fn expiry_and_not_before_allow_bounded_skew() {
        let k = key("k1");
        let v = Verifier::new([k.clone()], 30);
        let q = k.sign("GET", PATH, &Claims { exp: 1_000, nbf: Some(500), country: None });
        assert!(v.verify("GET", PATH, Some(&q), 1_030, None).is_ok());
        assert_eq!(v.verify("GET", PATH, Some(&q), 1_031, None), Err(TokenError::Expired));
        assert!(v.verify("GET", PATH, Some(&q), 470, None).is_ok());
        assert_eq!(v.verify("GET", PATH, Some(&q), 469, None), Err(TokenError::NotYetValid(500)));
    }

    #[test]
    fn country_constraint() {
        let k = key("k1");
        let v = Verifier::new([k.clone()], 0);
        let q = k.sign("GET", PATH, &Claims { exp: 1_000, nbf: None, country: Some("SE".into()) });
        assert!(v.verify("GET", PATH, Some(&q), 10, Some("se")).is_ok());
        assert!(matches!(v.verify("GET", PATH, Some(&q), 10, Some("US")), Err(TokenError::CountryMismatch { .. })));
        assert!(matches!(v.verify("GET", PATH, Some(&q), 10, None), Err(TokenError::CountryMismatch { .. })));
    }

    #[test]
    fn keys_rotate_by_id() {
        let (old, new) = (key("old"), Key::new("new", vec![9u8; 32]).unwrap());
        let claims = Claims { exp: 1_000, ..Default::default() };
        let both = Verifier::new([old.clone(), new.clone()], 0);
        assert!(both.verify("GET", PATH, Some(&old.sign("GET", PATH, &claims)), 1, None).is_ok());
        assert!(both.verify("GET", PATH, Some(&new.sign("GET", PATH, &claims)), 1, None).is_ok());
        let only_new = Verifier::new([new], 0);
        assert_eq!(
            only_new.verify("GET", PATH, Some(&old.sign("GET", PATH, &claims)), 1, None),
            Err(TokenError::UnknownKey("old".into()))
        );
        // Same id, different secret: the signature must not verify.
        let forged = Key::new("old", vec![1u8; 32]).unwrap().sign("GET", PATH, &claims);
        assert_eq!(both.verify("GET", PATH, Some(&forged), 1, None), Err(TokenError::BadSignature));
    }

    #[test]
    fn malformed_tokens_are_named() {
        let v = Verifier::new([key("k1")], 0);
        assert_eq!(v.verify("GET", PATH, None, 1, None), Err(TokenError::Missing));
        assert_eq!(v.verify("GET", PATH, Some("a=b"), 1, None), Err(TokenError::Missing));
        for q in
            ["exp=x&kid=k1&sig=00", "exp=1&kid=k1", "exp=1&exp=2&kid=k1&sig=00", "kid=k1&sig=aa", "exp=1&kid=k1&sig=zz"]
        {
            assert!(matches!(v.verify("GET", PATH, Some(q), 1, None), Err(TokenError::Malformed(_))), "{q}");
        }
        assert!(Key::new("k", vec![0; 8]).is_err());
        assert!(Key::new("bad id", vec![0; 32]).is_err());
    }
}

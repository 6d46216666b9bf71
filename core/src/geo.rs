//! Where a request comes from, for country-bound signed URLs. The country header is
//! believed only from configured trusted peers (a load balancer in front that sets it);
//! anything else's client address is looked up in a GeoIP database in the MaxMind
//! format, and a client that sends the header itself has it removed, so it is never
//! trusted by this edge nor passed upstream.

use std::net::IpAddr;
use std::path::Path;

use crate::config::FieldError;
use http::{HeaderMap, HeaderName};
use ipnet::IpNet;
use maxminddb::PathElement;

pub struct Geo {
    header: HeaderName,
    trusted: Vec<IpNet>,
    db: Option<maxminddb::Reader<Vec<u8>>>,
    /// The country of a client neither source places, if the operator names one.
    fallback: Option<String>,
}

impl Geo {
    /// `trusted`: CIDRs (or single addresses) of peers whose country header is believed;
    /// `db`: a MaxMind-format database file (GeoLite2/GeoIP2 Country or City), or empty;
    /// `fallback`: the country of clients neither places (empty: unknown).
    pub fn new(header: HeaderName, trusted: &[String], db: &str, fallback: &str) -> Result<Self, FieldError> {
        let trusted = trusted
            .iter()
            .enumerate()
            .map(|(i, t)| {
                t.parse::<IpNet>().or_else(|_| t.parse::<IpAddr>().map(IpNet::from)).map_err(|_| {
                    FieldError::new(format!("trusted_proxies[{i}]"), format!("{t:?} is not an address or CIDR"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let db = if db.is_empty() {
            None
        } else {
            let reader = maxminddb::Reader::open_readfile(Path::new(db))
                .map_err(|e| FieldError::new("geoip_db", format!("{db}: {e}")))?;
            tracing::info!(path = db, kind = %reader.metadata.database_type, "GeoIP database loaded");
            Some(reader)
        };
        let fallback = match fallback {
            "" => None,
            f => Some(
                country_code(f)
                    .filter(|c| c == f)
                    .ok_or_else(|| FieldError::new("unknown_country", format!("{f:?} is not a code such as SE")))?,
            ),
        };
        Ok(Geo { header, trusted, db, fallback })
    }

    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.trusted.iter().any(|n| n.contains(&ip))
    }

    /// Remove the country header from a request an untrusted peer sent.
    pub fn strip_untrusted(&self, peer: IpAddr, headers: &mut HeaderMap) {
        if !self.is_trusted(peer) && headers.remove(&self.header).is_some() {
            metrics::counter!("untrusted_country_headers_total").increment(1);
        }
    }

    /// The request's country (two upper-case letters), or `None` when unknown: a trusted
    /// peer's header, else the database's answer for the client's address (behind a
    /// trusted peer, the nearest untrusted address in `X-Forwarded-For`), else the
    /// configured fallback.
    pub fn country(&self, peer: IpAddr, headers: &HeaderMap) -> Option<String> {
        self.located(peer, headers).or_else(|| self.fallback.clone())
    }

    fn located(&self, peer: IpAddr, headers: &HeaderMap) -> Option<String> {
        if self.is_trusted(peer) {
            if let Some(c) = headers.get(&self.header).and_then(|v| v.to_str().ok()).and_then(country_code) {
                return Some(c);
            }
        }
        let client = canonical(self.client_addr(peer, headers));
        let db = self.db.as_ref()?;
        let path = [PathElement::Key("country"), PathElement::Key("iso_code")];
        let found = db.lookup(client).and_then(|r| r.decode_path::<String>(&path));
        let result = match found {
            Ok(Some(c)) => country_code(&c),
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(%client, error = %e, "GeoIP lookup failed");
                None
            }
        };
        metrics::counter!("geoip_lookups_total", "result" => if result.is_some() { "found" } else { "unknown" })
            .increment(1);
        result
    }

    /// The client: the peer, or behind trusted peers the rightmost `X-Forwarded-For`
    /// address that is not itself a trusted one (entries further left are the client's
    /// own claims).
    fn client_addr(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.is_trusted(peer) {
            return peer;
        }
        let hops = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>();
        let mut client = peer;
        for hop in hops.iter().flat_map(|v| v.split(',')).rev() {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) if self.is_trusted(ip) => client = ip,
                Ok(ip) => return ip,
                Err(_) => break,
            }
        }
        client
    }
}

/// IPv4 seen as IPv6 (`::ffff:a.b.c.d`, from a dual-stack listener) as the IPv4 it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Whether `s` is an ISO 3166-1 alpha-2 code as Segue stores them: two upper-case
/// ASCII letters.
pub fn is_country_code(s: &str) -> bool {
    s.len() == 2 && s.bytes().all(|b| b.is_ascii_uppercase())
}

fn country_code(s: &str) -> Option<String> {
    (s.len() == 2 && s.bytes().all(|b| b.is_ascii_alphabetic())).then(|| s.to_ascii_uppercase())
}

//! TLS for every listener that needs it, with rustls (no OpenSSL): certificates from PEM
//! files, several per listener chosen by SNI (exact names and `*.` wildcards; the first
//! certificate answers clients that send no or an unknown name), TLS 1.2 and 1.3 only,
//! ALPN `h2` then `http/1.1`. The config is rebuilt from the files on reload, and each
//! new connection takes the current one, so established connections are untouched.

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::Deserialize;

use crate::error::Error;

/// One `[[tls_certs]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertSettings {
    /// PEM file: the certificate chain, leaf first.
    pub cert: String,
    /// PEM file: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
    /// SNI names this certificate answers (`pop1.example.com`, `*.example.com`). Empty:
    /// only as the default (first entry).
    #[serde(default)]
    pub names: Vec<String>,
}

static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
static TLS12_AND_13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The current TLS config of a listener; swapped whole on reload.
pub type SharedConfig = Arc<RwLock<Arc<rustls::ServerConfig>>>;

#[derive(Debug)]
struct SniResolver {
    certs: Vec<(Vec<String>, Arc<CertifiedKey>)>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(sni) = hello.server_name() {
            let sni = sni.to_ascii_lowercase();
            for (names, key) in &self.certs {
                if names.iter().any(|n| name_matches(n, &sni)) {
                    return Some(key.clone());
                }
            }
        }
        self.certs.first().map(|(_, k)| k.clone())
    }
}

/// `name` is exact, or `*.rest` matching exactly one more label in front of `rest`.
fn name_matches(name: &str, sni: &str) -> bool {
    let name = name.to_ascii_lowercase();
    match name.strip_prefix("*.") {
        Some(rest) => sni.split_once('.').is_some_and(|(label, tail)| !label.is_empty() && tail == rest),
        None => name == sni,
    }
}

fn config_error(field: &str, file: &str, message: impl std::fmt::Display) -> Error {
    Error::Config { file: file.into(), field: field.into(), message: message.to_string() }
}

fn load_key(i: usize, c: &CertSettings, provider: &rustls::crypto::CryptoProvider) -> Result<CertifiedKey, Error> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(Path::new(&c.cert))
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| config_error(&format!("tls_certs[{i}].cert"), &c.cert, e))?;
    if chain.is_empty() {
        return Err(config_error(&format!("tls_certs[{i}].cert"), &c.cert, "no certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(Path::new(&c.key))
        .map_err(|e| config_error(&format!("tls_certs[{i}].key"), &c.key, e))?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| config_error(&format!("tls_certs[{i}].key"), &c.key, e))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| {
        config_error(&format!("tls_certs[{i}]"), &c.cert, format!("key does not match certificate: {e}"))
    })?;
    Ok(certified)
}

/// Build a server config from the certificate files (every file read now, so a broken
/// one is reported with its path before anything changes).
pub fn server_config(certs: &[CertSettings]) -> Result<Arc<rustls::ServerConfig>, Error> {
    server_config_for(certs, &[b"h2", b"http/1.1"], false)
}

/// The same certificates for another protocol: `alpn` offered, TLS 1.3 only when
/// `tls13_only` (QUIC requires it).
pub fn server_config_for(
    certs: &[CertSettings],
    alpn: &[&[u8]],
    tls13_only: bool,
) -> Result<Arc<rustls::ServerConfig>, Error> {
    if certs.is_empty() {
        return Err(config_error("tls_certs", "tls", "at least one certificate is required"));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut loaded = Vec::with_capacity(certs.len());
    for (i, c) in certs.iter().enumerate() {
        loaded.push((c.names.clone(), Arc::new(load_key(i, c, &provider)?)));
    }
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(if tls13_only { TLS13_ONLY } else { TLS12_AND_13 })
        .map_err(|e| config_error("tls_certs", "tls", e))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { certs: loaded }));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let (ticketer, sessions) = resumption()?;
    config.ticketer = ticketer;
    config.session_storage = sessions;
    Ok(Arc::new(config))
}

/// Sessions the stateful cache keeps (TLS 1.2 session ids; a few hundred bytes each).
const SESSION_CACHE_ENTRIES: usize = 32_768;

type Resumption = (Arc<dyn rustls::server::ProducesTickets>, Arc<dyn rustls::server::StoresServerSessions>);

/// Session resumption state shared by every config this process builds, so a
/// certificate reload (SIGHUP) does not end it: session tickets under a rotating key (a
/// new one every 6 hours, the one before still accepted; never written anywhere) and a
/// stateful session cache. A resumed handshake skips the certificate exchange and the
/// key agreement's signature: the CPU a POP spends on reconnecting listeners.
fn resumption() -> Result<Resumption, Error> {
    static SHARED: std::sync::OnceLock<Resumption> = std::sync::OnceLock::new();
    if let Some(r) = SHARED.get() {
        return Ok(r.clone());
    }
    let ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| config_error("tls", "ticket key", e))?;
    let sessions: Arc<dyn rustls::server::StoresServerSessions> =
        rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
    Ok(SHARED.get_or_init(|| (ticketer, sessions)).clone())
}

/// How this process connects to its TLS upstreams (parent POPs, origins, the control
/// plane): whom it trusts and the certificate it may present.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientSettings {
    /// PEM file of the CAs trusted for `https://` upstreams. Empty (the default): the
    /// system's trusted roots.
    pub ca_file: String,
    /// PEM certificate chain and key presented to servers that ask for one (mutual
    /// TLS). Empty (the default): none.
    pub client_cert: String,
    pub client_key: String,
}

/// The CA certificates to trust: those of PEM file `ca_file`, or the system's when it is
/// empty. `field` names the setting in errors.
pub fn trusted_roots(ca_file: &str, field: &str) -> Result<rustls::RootCertStore, Error> {
    let mut roots = rustls::RootCertStore::empty();
    if ca_file.is_empty() {
        let native = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(native.certs);
        if added == 0 {
            return Err(config_error(field, "system trust store", "no trusted CA certificates found"));
        }
    } else {
        let certs = CertificateDer::pem_file_iter(Path::new(ca_file))
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| config_error(field, ca_file, e))?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(config_error(field, ca_file, "no usable CA certificate"));
        }
    }
    Ok(roots)
}

/// The client TLS config of `settings` (TLS 1.2 and 1.3; ALPN is the caller's).
pub fn client_config(s: &ClientSettings) -> Result<Arc<rustls::ClientConfig>, Error> {
    let field = |name: &str| format!("upstream_tls.{name}");
    let roots = trusted_roots(&s.ca_file, &field("ca_file"))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(TLS12_AND_13)
        .map_err(|e| config_error("upstream_tls", "tls", e))?
        .with_root_certificates(roots);
    let config = match (s.client_cert.is_empty(), s.client_key.is_empty()) {
        (true, true) => builder.with_no_client_auth(),
        (false, false) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(Path::new(&s.client_cert))
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| config_error(&field("client_cert"), &s.client_cert, e))?;
            let key = rustls::pki_types::PrivateKeyDer::from_pem_file(Path::new(&s.client_key))
                .map_err(|e| config_error(&field("client_key"), &s.client_key, e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| config_error(&field("client_cert"), &s.client_cert, e))?
        }
        _ => {
            return Err(config_error(&field("client_cert"), "tls", "give both client_cert and client_key, or neither"))
        }
    };
    Ok(Arc::new(config))
}

/// Build the shared, reloadable config.
pub fn shared_config(certs: &[CertSettings]) -> Result<SharedConfig, Error> {
    Ok(Arc::new(RwLock::new(server_config(certs)?)))
}

/// Re-read the certificate files into `shared`; on error the running config stays.
pub fn reload(shared: &SharedConfig, certs: &[CertSettings]) -> Result<(), Error> {
    let fresh = server_config(certs)?;
    *shared.write().unwrap_or_else(|p| p.into_inner()) = fresh;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::name_matches;

    #[test]
    fn sni_names() {
        assert!(name_matches("pop1.example.com", "pop1.example.com"));
        assert!(name_matches("POP1.example.com", "pop1.example.com"));
        assert!(name_matches("*.example.com", "pop1.example.com"));
        assert!(!name_matches("*.example.com", "a.b.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(!name_matches("pop1.example.com", "pop2.example.com"));
    }
}

//! TLS for listeners: server certificate and key, optional or required client
//! certificates against a CA, the client certificate's Common Name as username, and
//! reloading the files (SIGHUP) without dropping connections.

use crate::config::{TlsSettings, TlsVersion};
use parking_lot::RwLock;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// Why a TLS configuration could not be built. Messages name the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn file_error(path: &Path, message: impl Into<String>) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, format!("cannot read certificates: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(path, format!("bad PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(path, "no certificate in the file"));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| file_error(path, format!("cannot read the private key: {e}")))
}

/// Whether `name` is how OpenSSL names a CA file in a hashed directory (`openssl rehash`,
/// `c_rehash`): the subject hash in 8 hex digits, a dot and a sequence number (`5ed36f99.0`).
/// CRLs (`5ed36f99.r0`) do not match.
fn is_openssl_hash_name(name: &str) -> bool {
    let Some((hash, n)) = name.split_once('.') else {
        return false;
    };
    hash.len() == 8
        && hash.bytes().all(|b| b.is_ascii_hexdigit())
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit())
}

/// The CA files of a `capath` directory: those OpenSSL (and so Mosquitto) reads, named by
/// subject hash, and every `*.pem` / `*.crt` file. A hash name is usually a link to one of
/// the others (`openssl rehash`), so files are taken once each, by their resolved path.
fn capath_files(dir: &Path) -> Result<Vec<PathBuf>, TlsError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| file_error(dir, format!("cannot read directory: {e}")))?;
    let mut files = std::collections::BTreeMap::new();
    for entry in entries.flatten() {
        let p = entry.path();
        let by_extension = matches!(p.extension().and_then(|e| e.to_str()), Some("pem" | "crt"));
        let by_hash = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(is_openssl_hash_name);
        if by_extension || by_hash {
            let resolved = std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone());
            files.entry(resolved).or_insert(p);
        }
    }
    Ok(files.into_values().collect())
}

/// The CA certificates client certificates are checked against: `cafile` and the CA files
/// of `capath` ([`capath_files`]).
fn load_roots(settings: &TlsSettings) -> Result<Option<RootCertStore>, TlsError> {
    let mut files = Vec::new();
    if let Some(f) = &settings.cafile {
        files.push(f.clone());
    }
    if let Some(dir) = &settings.capath {
        files.extend(capath_files(dir)?);
    }
    if files.is_empty() {
        return Ok(None);
    }
    let mut roots = RootCertStore::empty();
    for f in &files {
        for cert in load_certs(f)? {
            roots
                .add(cert)
                .map_err(|e| file_error(f, format!("unusable CA certificate: {e}")))?;
        }
    }
    Ok(Some(roots))
}

/// TLS 1.2 suites by their OpenSSL names (what Mosquitto's `ciphers` takes); rustls offers
/// only these (ECDHE with AEAD).
const TLS12_SUITES: &[(&str, rustls::CipherSuite)] = &[
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        rustls::CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
];

/// TLS 1.3 suites by their IANA names (what Mosquitto's `ciphers_tls1.3` takes).
const TLS13_SUITES: &[(&str, rustls::CipherSuite)] = &[
    (
        "TLS_AES_128_GCM_SHA256",
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
    ),
    (
        "TLS_AES_256_GCM_SHA384",
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
    ),
    (
        "TLS_CHACHA20_POLY1305_SHA256",
        rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    ),
];

/// Reads a cipher list: names separated by `:`, `,` or spaces, as OpenSSL does. The
/// keywords `ALL`, `DEFAULT` and `HIGH` stand for every suite rustls offers (all of them
/// are "high"); `!NAME` or `-NAME` takes a suite out. A name that is not one of the suites
/// rustls offers is an error: ignoring it could leave a suite on that the list meant to
/// remove, or none of those it asked for.
fn select_suites(
    list: &str,
    known: &[(&str, rustls::CipherSuite)],
    key: &str,
) -> Result<Vec<rustls::CipherSuite>, TlsError> {
    let mut chosen: Vec<rustls::CipherSuite> = Vec::new();
    for word in list
        .split([':', ',', ' '])
        .map(str::trim)
        .filter(|w| !w.is_empty())
    {
        let (remove, name) = match word.strip_prefix(['!', '-']) {
            Some(name) => (true, name),
            None => (false, word.strip_prefix('+').unwrap_or(word)),
        };
        let suites: Vec<rustls::CipherSuite> = match name {
            "ALL" | "DEFAULT" | "HIGH" => known.iter().map(|(_, s)| *s).collect(),
            _ => match known.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
                Some((_, suite)) => vec![*suite],
                None => {
                    let offered: Vec<&str> = known.iter().map(|(n, _)| *n).collect();
                    return Err(TlsError::Config(format!(
                        "{key}: unknown or unsupported cipher suite '{name}' (offered: {})",
                        offered.join(", ")
                    )));
                }
            },
        };
        for suite in suites {
            if remove {
                chosen.retain(|s| *s != suite);
            } else if !chosen.contains(&suite) {
                chosen.push(suite);
            }
        }
    }
    if chosen.is_empty() {
        return Err(TlsError::Config(format!(
            "{key}: '{list}' selects no cipher suite"
        )));
    }
    Ok(chosen)
}

/// The cipher suites a listener offers: rustls's, narrowed by `ciphers` (TLS 1.2) and
/// `ciphers_tls1.3`, in the order the lists give (the server's preference).
fn cipher_suites(settings: &TlsSettings) -> Result<Vec<rustls::SupportedCipherSuite>, TlsError> {
    let all = rustls::crypto::ring::default_provider().cipher_suites;
    let pick = |list: &Option<String>, known, key, tls13: bool| -> Result<Vec<_>, TlsError> {
        let of_version = all.iter().filter(|s| s.tls13().is_some() == tls13);
        match list {
            None => Ok(of_version.copied().collect()),
            Some(list) => Ok(select_suites(list, known, key)?
                .into_iter()
                .filter_map(|want| of_version.clone().find(|s| s.suite() == want).copied())
                .collect()),
        }
    };
    let mut suites = pick(
        &settings.ciphers_tls13,
        TLS13_SUITES,
        "ciphers_tls1.3",
        true,
    )?;
    suites.extend(pick(&settings.ciphers, TLS12_SUITES, "ciphers", false)?);
    Ok(suites)
}

/// Builds the rustls server configuration for one listener.
pub fn server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::CryptoProvider {
        cipher_suites: cipher_suites(settings)?,
        ..rustls::crypto::ring::default_provider()
    });
    let versions: &[&rustls::SupportedProtocolVersion] = match settings.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match load_roots(settings)? {
        Some(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if settings.require_certificate {
                verifier.build()
            } else {
                verifier.allow_unauthenticated().build()
            }
            .map_err(|e| TlsError::Config(format!("client certificate verifier: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None if settings.require_certificate || settings.use_identity_as_username => {
            return Err(TlsError::Config(
                "require_certificate and use_identity_as_username need cafile or capath".into(),
            ))
        }
        None => builder.with_no_client_auth(),
    };
    let certs = load_certs(&settings.certfile)?;
    let key = load_key(&settings.keyfile)?;
    let config = builder.with_single_cert(certs, key).map_err(|e| {
        file_error(
            &settings.keyfile,
            format!("key does not fit the certificate: {e}"),
        )
    })?;
    Ok(Arc::new(config))
}

/// A listener's TLS acceptor, replaceable at run time: new handshakes use the new files,
/// established connections keep theirs.
pub struct TlsListener {
    pub settings: TlsSettings,
    acceptor: RwLock<TlsAcceptor>,
}

impl TlsListener {
    pub fn new(settings: TlsSettings) -> Result<TlsListener, TlsError> {
        let config = server_config(&settings)?;
        Ok(TlsListener {
            settings,
            acceptor: RwLock::new(TlsAcceptor::from(config)),
        })
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.read().clone()
    }

    /// Reads the certificate, key and CA files again; on error the old ones stay.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.settings)?;
        *self.acceptor.write() = TlsAcceptor::from(config);
        Ok(())
    }
}

/// The Common Name of a client certificate (for `use_identity_as_username`).
pub fn certificate_common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::is_openssl_hash_name;

    #[test]
    fn openssl_hash_names_are_recognised() {
        assert!(is_openssl_hash_name("5ed36f99.0"));
        assert!(is_openssl_hash_name("ABCDEF01.12"));
        assert!(!is_openssl_hash_name("5ed36f99.r0"), "a CRL");
        assert!(!is_openssl_hash_name("5ed36f9.0"));
        assert!(!is_openssl_hash_name("5ed36f99"));
        assert!(!is_openssl_hash_name("5ed36f99."));
        assert!(!is_openssl_hash_name("ca.pem"));
    }
}

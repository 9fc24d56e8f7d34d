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

/// Builds the rustls server configuration for one listener.
pub fn server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
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

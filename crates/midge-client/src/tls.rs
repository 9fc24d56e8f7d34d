//! MQTT over TLS (rustls with the ring provider): [`TlsOptions`] in Mosquitto's terms
//! (CA file or directory, client certificate and key, `insecure`, TLS version, ALPN) and
//! [`TlsConnector`], a [`Connector`] that runs the TLS handshake over a
//! [`TcpConnector`]'s stream.

use crate::transport::{BoxTransport, ConnectFuture, Connector, TcpConnector};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The system's CA bundle on Debian and most Linux distributions.
pub const OS_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Lowest and highest TLS version to offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersion {
    /// TLS 1.2 or 1.3, whichever the server prefers (the default).
    #[default]
    Any,
    Tls12,
    Tls13,
}

/// How to set up TLS, in the words of Mosquitto's `--cafile`, `--capath`, `--cert`,
/// `--key`, `--insecure`, `--tls-version` and `--tls-alpn`.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// PEM file of CA certificates the server's certificate must chain to.
    pub ca_file: Option<PathBuf>,
    /// Directory of PEM CA certificates (`*.pem`, `*.crt`).
    pub ca_path: Option<PathBuf>,
    /// Also trust the system's CA bundle ([`OS_CA_BUNDLE`]).
    pub use_os_certs: bool,
    /// Client certificate chain (PEM), for servers that ask for one.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub key_file: Option<PathBuf>,
    /// Accept a server certificate whose name does not match the host (the chain is still
    /// checked). Insecure: anyone with a certificate from the same CA can pose as the server.
    pub insecure: bool,
    pub version: TlsVersion,
    /// ALPN protocol names to offer.
    pub alpn: Vec<Vec<u8>>,
}

/// Why a TLS set-up failed (before any connection).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    File { path: PathBuf, source: io::Error },
    #[error("no certificate found in {0}")]
    NoCertificate(PathBuf),
    #[error("no private key found in {0}")]
    NoKey(PathBuf),
    #[error("no trusted CA certificate: give a CA file or directory, or use the OS certificates")]
    NoTrustAnchor,
    #[error("a client certificate needs its key, and a key its certificate")]
    CertWithoutKey,
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    #[error("invalid server name {0:?}")]
    ServerName(String),
}

impl TlsOptions {
    /// Builds the rustls client configuration.
    pub fn client_config(&self) -> Result<ClientConfig, TlsError> {
        let roots = self.root_store()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] = match self.version {
            TlsVersion::Any => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::Tls12 => &[&rustls::version::TLS12],
            TlsVersion::Tls13 => &[&rustls::version::TLS13],
        };
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)?;
        let builder = if self.insecure {
            let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyName(inner)))
        } else {
            builder.with_root_certificates(roots)
        };
        let mut config = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                builder.with_client_auth_cert(read_certs(cert)?, read_key(key)?)?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => return Err(TlsError::CertWithoutKey),
        };
        config.alpn_protocols = self.alpn.clone();
        Ok(config)
    }

    fn root_store(&self) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        if let Some(file) = &self.ca_file {
            for cert in read_certs(file)? {
                roots.add(cert)?;
            }
        }
        if let Some(dir) = &self.ca_path {
            let entries = std::fs::read_dir(dir).map_err(|source| TlsError::File {
                path: dir.clone(),
                source,
            })?;
            for entry in entries.flatten() {
                let path = entry.path();
                let is_cert = path.extension().is_some_and(|e| e == "pem" || e == "crt");
                if is_cert {
                    // A directory may hold files that are not certificates: skip those.
                    for cert in read_certs(&path).unwrap_or_default() {
                        let _ = roots.add(cert);
                    }
                }
            }
        }
        if self.use_os_certs {
            let bundle = Path::new(OS_CA_BUNDLE);
            for cert in read_certs(bundle)? {
                let _ = roots.add(cert);
            }
        }
        if roots.is_empty() {
            return Err(TlsError::NoTrustAnchor);
        }
        Ok(roots)
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| TlsError::File {
        path: path.to_owned(),
        source: io::Error::other(e.to_string()),
    })?;
    let certs: Vec<_> = iter.filter_map(Result::ok).collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    if let Err(source) = std::fs::metadata(path) {
        return Err(TlsError::File {
            path: path.to_owned(),
            source,
        });
    }
    PrivateKeyDer::from_pem_file(path).map_err(|_| TlsError::NoKey(path.to_owned()))
}

/// `--insecure`: the usual checks, except that the name need not match.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// TLS over TCP: connects with the inner [`TcpConnector`], then runs the handshake,
/// checking the certificate against the host name (or IP address) connected to.
pub struct TlsConnector {
    tcp: TcpConnector,
    server_name: ServerName<'static>,
    tls: tokio_rustls::TlsConnector,
}

impl TlsConnector {
    pub fn new(tcp: TcpConnector, config: ClientConfig) -> Result<Self, TlsError> {
        let server_name = ServerName::try_from(tcp.host.clone())
            .map_err(|_| TlsError::ServerName(tcp.host.clone()))?;
        Ok(TlsConnector {
            tcp,
            server_name,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }
}

impl Connector for TlsConnector {
    fn connect(&self) -> ConnectFuture<'_> {
        Box::pin(async move {
            let tcp = self.tcp.connect().await?;
            let stream = self.tls.connect(self.server_name.clone(), tcp).await?;
            Ok(Box::new(stream) as BoxTransport)
        })
    }

    fn describe(&self) -> String {
        format!("{} (TLS)", self.tcp.describe())
    }
}

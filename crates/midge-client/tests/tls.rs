//! The client over TLS against the in-process broker's TLS listener. Certificates are
//! generated at test time (rcgen).

use midge_broker::{Broker, Config, ListenerConfig, TlsSettings, TlsVersion as BrokerTls};
use midge_client::tls::{TlsError, TlsVersion};
use midge_client::{Client, ConnectOptions, Error, QoS, TlsOptions};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::path::PathBuf;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(5);

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let pem = params.self_signed(&key).expect("self-signed").pem();
        Ca { params, key, pem }
    }

    /// (certificate PEM, key PEM) for the names.
    fn leaf(&self, cn: &str, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).expect("signed");
        (cert.pem(), key.serialize_pem())
    }
}

struct Files(tempfile::TempDir);

impl Files {
    fn new() -> Files {
        Files(tempfile::tempdir().expect("temp dir"))
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    }
}

async fn tls_broker(files: &Files, ca: &Ca, names: &[&str], require_cert: bool) -> (Broker, u16) {
    let (cert, key) = ca.leaf("server", names);
    let mut listener = ListenerConfig::tcp("127.0.0.1:0".parse().expect("addr"), true);
    listener.tls = Some(TlsSettings {
        certfile: files.write("server.pem", &cert),
        keyfile: files.write("server.key", &key),
        cafile: Some(files.write("ca.pem", &ca.pem)),
        capath: None,
        require_certificate: require_cert,
        use_identity_as_username: false,
        min_version: BrokerTls::Tls12,
        ciphers: None,
        ciphers_tls13: None,
    });
    let config = Config {
        listeners: vec![listener],
        sys_interval: Duration::ZERO,
        ..Config::default()
    };
    let broker = Broker::start(config).await.expect("broker starts");
    let port = broker.local_addrs()[0].port();
    (broker, port)
}

#[tokio::test]
async fn publish_and_receive_over_tls_at_each_version() {
    let files = Files::new();
    let ca = Ca::new("test CA");
    let (_broker, port) = tls_broker(&files, &ca, &["localhost", "127.0.0.1"], false).await;
    for version in [TlsVersion::Any, TlsVersion::Tls12, TlsVersion::Tls13] {
        let tls = TlsOptions {
            ca_file: Some(files.0.path().join("ca.pem")),
            version,
            ..TlsOptions::default()
        };
        let options = ConnectOptions::new_tls("127.0.0.1", port, &tls).expect("tls config");
        let (client, mut messages) = Client::connect(options).await.expect("connects over TLS");
        client
            .subscribe("secure", QoS::AtLeastOnce)
            .await
            .expect("suback");
        client
            .publish("secure", "sealed", QoS::ExactlyOnce, false)
            .await
            .expect("acknowledged");
        let m = tokio::time::timeout(WAIT, messages.recv())
            .await
            .expect("in time")
            .expect("message");
        assert_eq!(m.payload, "sealed".as_bytes());
        client.disconnect().await.expect("disconnects");
    }
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused() {
    let files = Files::new();
    let (_broker, port) = tls_broker(&files, &Ca::new("real CA"), &["127.0.0.1"], false).await;
    let stranger = files.write("other-ca.pem", &Ca::new("other CA").pem);
    let tls = TlsOptions {
        ca_file: Some(stranger),
        ..TlsOptions::default()
    };
    let options = ConnectOptions::new_tls("127.0.0.1", port, &tls).expect("tls config");
    let err = Client::connect(options).await;
    assert!(matches!(err, Err(Error::Io(_))), "{err:?}");
}

#[tokio::test]
async fn insecure_accepts_a_name_mismatch_but_not_an_unknown_ca() {
    let files = Files::new();
    let ca = Ca::new("test CA");
    let (_broker, port) = tls_broker(&files, &ca, &["elsewhere.example"], false).await;
    let mut tls = TlsOptions {
        ca_file: Some(files.0.path().join("ca.pem")),
        ..TlsOptions::default()
    };
    let strict = ConnectOptions::new_tls("127.0.0.1", port, &tls).expect("tls config");
    assert!(
        Client::connect(strict).await.is_err(),
        "name mismatch accepted"
    );
    tls.insecure = true;
    let lax = ConnectOptions::new_tls("127.0.0.1", port, &tls).expect("tls config");
    let (client, _) = Client::connect(lax).await.expect("insecure connects");
    client.disconnect().await.expect("disconnects");

    tls.ca_file = Some(files.write("other.pem", &Ca::new("other").pem));
    let unknown = ConnectOptions::new_tls("127.0.0.1", port, &tls).expect("tls config");
    assert!(
        Client::connect(unknown).await.is_err(),
        "unknown CA accepted"
    );
}

#[tokio::test]
async fn client_certificate_for_a_server_that_requires_one() {
    let files = Files::new();
    let ca = Ca::new("test CA");
    let (_broker, port) = tls_broker(&files, &ca, &["127.0.0.1"], true).await;
    let mut tls = TlsOptions {
        ca_file: Some(files.0.path().join("ca.pem")),
        ..TlsOptions::default()
    };
    let without = ConnectOptions::new_tls("127.0.0.1", port, &tls).expect("tls config");
    assert!(
        Client::connect(without).await.is_err(),
        "connected without a certificate"
    );
    let (cert, key) = ca.leaf("device-7", &["device-7"]);
    tls.cert_file = Some(files.write("client.pem", &cert));
    tls.key_file = Some(files.write("client.key", &key));
    let with = ConnectOptions::new_tls("127.0.0.1", port, &tls).expect("tls config");
    let (client, _) = Client::connect(with)
        .await
        .expect("connects with a certificate");
    client.disconnect().await.expect("disconnects");
}

#[test]
fn configuration_errors_are_reported_before_connecting() {
    let missing = TlsOptions {
        ca_file: Some("/nonexistent/ca.pem".into()),
        ..TlsOptions::default()
    };
    assert!(matches!(
        missing.client_config(),
        Err(TlsError::File { .. })
    ));
    assert!(matches!(
        TlsOptions::default().client_config(),
        Err(TlsError::NoTrustAnchor)
    ));
    let files = Files::new();
    let half = TlsOptions {
        ca_file: Some(files.write("ca.pem", &Ca::new("ca").pem)),
        cert_file: Some(files.0.path().join("client.pem")),
        ..TlsOptions::default()
    };
    assert!(matches!(
        half.client_config(),
        Err(TlsError::CertWithoutKey)
    ));
}

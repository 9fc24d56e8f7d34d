//! TLS listeners: MQTT over TLS 1.2/1.3, optional and required client certificates,
//! `use_identity_as_username`, certificate reload without dropping connections, and
//! Mosquitto's `mosquitto_pub`/`mosquitto_sub` talking to Midge over TLS.
//!
//! Certificates are generated at test time with rcgen; nothing is checked in.

mod common;

use bytes::BytesMut;
use common::TempDir;
use midge_broker::{Broker, Config, ListenerConfig, TlsSettings, TlsVersion};
use midge_proto::{
    decode, encode, ByteStr, Connect, Packet, ProtocolVersion, Publish, QoS, ReasonCode,
};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const V5: ProtocolVersion = ProtocolVersion::V5;

/// A test PKI: a CA, a server certificate for localhost/127.0.0.1 and client certificates.
struct Pki {
    ca_pem: String,
    ca_params: CertificateParams,
    ca_key: KeyPair,
}

struct Leaf {
    cert_pem: String,
    key_pem: String,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let ca_key = KeyPair::generate().expect("key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, name);
        let ca = ca_params.self_signed(&ca_key).expect("CA");
        Pki {
            ca_pem: ca.pem(),
            ca_params,
            ca_key,
        }
    }

    fn leaf(&self, common_name: &str, sans: &[&str]) -> Leaf {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer).expect("signed");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write");
}

/// Writes CA, server cert and key; returns TLS settings for them.
fn server_files(dir: &TempDir, pki: &Pki) -> TlsSettings {
    let server = pki.leaf("localhost", &["localhost", "127.0.0.1"]);
    write(&dir.path("ca.pem"), &pki.ca_pem);
    write(&dir.path("server.pem"), &server.cert_pem);
    write(&dir.path("server.key"), &server.key_pem);
    TlsSettings {
        certfile: dir.path("server.pem"),
        keyfile: dir.path("server.key"),
        cafile: Some(dir.path("ca.pem")),
        capath: None,
        require_certificate: false,
        use_identity_as_username: false,
        min_version: TlsVersion::Tls12,
        ciphers: None,
        ciphers_tls13: None,
    }
}

async fn start(tls: TlsSettings, tweak: impl FnOnce(&mut Config)) -> Broker {
    let mut listener = ListenerConfig::tcp("127.0.0.1:0".parse().expect("addr"), true);
    listener.tls = Some(tls);
    let mut config = Config {
        listeners: vec![listener],
        sys_interval: Duration::ZERO,
        ..Config::default()
    };
    tweak(&mut config);
    Broker::start(config).await.expect("broker starts")
}

fn connector(ca_pem: &str, client: Option<&Leaf>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let config = match client {
        Some(leaf) => {
            let certs: Vec<CertificateDer<'static>> =
                rustls_pki_types::pem::PemObject::pem_slice_iter(leaf.cert_pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .expect("cert");
            let key = <PrivateKeyDer<'static> as rustls_pki_types::pem::PemObject>::from_pem_slice(
                leaf.key_pem.as_bytes(),
            )
            .expect("key");
            builder
                .with_client_auth_cert(certs, key)
                .expect("client auth")
        }
        None => builder.with_no_client_auth(),
    };
    TlsConnector::from(Arc::new(config))
}

/// A minimal MQTT 5 client over TLS.
struct TlsClient {
    stream: tokio_rustls::client::TlsStream<TcpStream>,
    buf: BytesMut,
}

impl TlsClient {
    async fn open(
        addr: std::net::SocketAddr,
        connector: &TlsConnector,
    ) -> std::io::Result<TlsClient> {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("localhost").expect("name");
        let stream = connector.connect(name, tcp).await?;
        Ok(TlsClient {
            stream,
            buf: BytesMut::new(),
        })
    }

    async fn send(&mut self, p: &Packet) {
        let mut out = BytesMut::new();
        encode(p, V5, &mut out);
        self.stream.write_all(&out).await.expect("write");
        self.stream.flush().await.expect("flush");
    }

    /// The next packet, or `None` when the connection closed.
    async fn recv(&mut self) -> Option<Packet> {
        loop {
            if let Some(p) = decode(&mut self.buf, V5, 1 << 20).expect("valid packet") {
                return Some(p);
            }
            let n =
                tokio::time::timeout(Duration::from_secs(5), self.stream.read_buf(&mut self.buf))
                    .await
                    .expect("no answer within 5 s")
                    .ok()?;
            if n == 0 {
                return None;
            }
        }
    }

    async fn connect(&mut self, client_id: &str, username: Option<&str>) -> ReasonCode {
        let connect = Connect {
            protocol: V5,
            clean_start: true,
            keep_alive: 30,
            client_id: ByteStr::from(client_id),
            will: None,
            username: username.map(ByteStr::from),
            password: None,
            properties: Default::default(),
        };
        self.send(&Packet::Connect(Box::new(connect))).await;
        match self.recv().await {
            Some(Packet::ConnAck(a)) => a.reason_code,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    async fn subscribe(&mut self, filter: &str) {
        let sub = midge_proto::Subscribe {
            packet_id: 1,
            filters: vec![(ByteStr::from(filter), Default::default())],
            properties: Default::default(),
        };
        self.send(&Packet::Subscribe(sub)).await;
        assert!(matches!(self.recv().await, Some(Packet::SubAck(_))));
    }

    async fn publish(&mut self, topic: &str, payload: &str) {
        let p = Publish {
            topic: ByteStr::from(topic),
            payload: bytes::Bytes::copy_from_slice(payload.as_bytes()),
            qos: QoS::AtMostOnce,
            ..Default::default()
        };
        self.send(&Packet::Publish(p)).await;
    }

    async fn ping(&mut self) -> bool {
        self.send(&Packet::PingReq).await;
        matches!(self.recv().await, Some(Packet::PingResp))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_over_tls_round_trip() {
    let dir = TempDir::new("roundtrip");
    let pki = Pki::new("Midge Test CA");
    let broker = start(server_files(&dir, &pki), |_| {}).await;
    let addr = broker.local_addrs()[0];
    let conn = connector(&pki.ca_pem, None);
    let mut sub = TlsClient::open(addr, &conn).await.expect("TLS handshake");
    assert_eq!(sub.connect("tls-sub", None).await, ReasonCode::SUCCESS);
    sub.subscribe("secure/#").await;
    let mut publ = TlsClient::open(addr, &conn).await.expect("TLS handshake");
    assert_eq!(publ.connect("tls-pub", None).await, ReasonCode::SUCCESS);
    publ.publish("secure/a", "over tls").await;
    match sub.recv().await {
        Some(Packet::Publish(p)) => assert_eq!(&p.payload[..], b"over tls"),
        other => panic!("expected PUBLISH, got {other:?}"),
    }
    // A client that does not trust this CA cannot connect.
    let other = Pki::new("Someone Else");
    assert!(TlsClient::open(addr, &connector(&other.ca_pem, None))
        .await
        .is_err());
    broker.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_client_certificate_and_identity_as_username() {
    let dir = TempDir::new("identity");
    let pki = Pki::new("Midge Test CA");
    let mut tls = server_files(&dir, &pki);
    tls.require_certificate = true;
    tls.use_identity_as_username = true;
    write(
        &dir.path("acl"),
        "user sensor-7\ntopic readwrite sensors/7/#\n",
    );
    let acl = dir.path("acl");
    let broker = start(tls, |c| {
        c.acl_file = Some(acl);
        if let Some(l) = c.listeners.first_mut() {
            l.allow_anonymous = false;
        }
    })
    .await;
    let addr = broker.local_addrs()[0];

    // No client certificate: the handshake (or the first read) fails.
    let anonymous = TlsClient::open(addr, &connector(&pki.ca_pem, None)).await;
    if let Ok(mut c) = anonymous {
        // TLS 1.3 reports the refusal only on the first read.
        c.send(&Packet::PingReq).await;
        assert!(
            c.recv_or_error().await.is_none(),
            "a client without a certificate was served"
        );
    }

    // With a certificate for CN=sensor-7 the username is "sensor-7", whatever CONNECT says.
    let leaf = pki.leaf("sensor-7", &[]);
    let mut c = TlsClient::open(addr, &connector(&pki.ca_pem, Some(&leaf)))
        .await
        .expect("handshake with a client certificate");
    assert_eq!(c.connect("dev-7", Some("admin")).await, ReasonCode::SUCCESS);
    c.subscribe("sensors/7/#").await;
    c.publish("sensors/7/temp", "21.5").await;
    match c.recv().await {
        Some(Packet::Publish(p)) => assert_eq!(&*p.topic, "sensors/7/temp"),
        other => panic!("the ACL of user sensor-7 should allow this: {other:?}"),
    }
    // Not allowed to other sensors' topics: nothing arrives (a PINGRESP proves the order).
    c.subscribe("sensors/8/#").await;
    c.publish("sensors/8/temp", "x").await;
    assert!(
        c.ping().await,
        "only PINGRESP expected, the publish must be dropped"
    );
    broker.shutdown(Duration::from_secs(1)).await;
}

impl TlsClient {
    /// The next packet, `None` on close or on a TLS error (a refused certificate).
    async fn recv_or_error(&mut self) -> Option<Packet> {
        loop {
            if let Ok(Some(p)) = decode(&mut self.buf, V5, 1 << 20) {
                return Some(p);
            }
            match tokio::time::timeout(Duration::from_secs(5), self.stream.read_buf(&mut self.buf))
                .await
            {
                Ok(Ok(0)) | Ok(Err(_)) => return None,
                Ok(Ok(_)) => {}
                Err(_) => panic!("no answer within 5 s"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_without_dropping_connections() {
    let dir = TempDir::new("reload");
    let pki = Pki::new("Old CA");
    let broker = start(server_files(&dir, &pki), |_| {}).await;
    let addr = broker.local_addrs()[0];
    let mut old = TlsClient::open(addr, &connector(&pki.ca_pem, None))
        .await
        .expect("handshake");
    assert_eq!(
        old.connect("before-reload", None).await,
        ReasonCode::SUCCESS
    );

    // New CA and server certificate on disk, then reload.
    let new_pki = Pki::new("New CA");
    server_files(&dir, &new_pki);
    broker.reload_security();

    // The established connection goes on; new handshakes use the new certificate.
    assert!(old.ping().await);
    assert!(TlsClient::open(addr, &connector(&pki.ca_pem, None))
        .await
        .is_err());
    let mut fresh = TlsClient::open(addr, &connector(&new_pki.ca_pem, None))
        .await
        .expect("handshake with the new certificate");
    assert_eq!(
        fresh.connect("after-reload", None).await,
        ReasonCode::SUCCESS
    );

    // A broken key file is not loaded: the new certificate stays in force.
    write(&dir.path("server.key"), "not a key");
    broker.reload_security();
    assert!(TlsClient::open(addr, &connector(&new_pki.ca_pem, None))
        .await
        .is_ok());
    broker.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_talk_to_midge_over_tls() {
    let dir = TempDir::new("interop");
    let pki = Pki::new("Midge Test CA");
    let broker = start(server_files(&dir, &pki), |_| {}).await;
    let port = broker.local_addrs()[0].port().to_string();
    let ca = dir.path("ca.pem");
    // A retained message (MQTT 5 client) is there before the subscriber (3.1.1) arrives,
    // so no timing is involved.
    let status = Command::new("mosquitto_pub")
        .args(["-h", "localhost", "-p", &port, "--cafile"])
        .arg(&ca)
        .args([
            "-t",
            "interop/tls",
            "-m",
            "hello over tls",
            "-r",
            "-q",
            "1",
            "-V",
            "mqttv5",
        ])
        .status()
        .expect("mosquitto_pub runs (installed by .ci/run)");
    assert!(status.success(), "mosquitto_pub over TLS failed");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("mosquitto_sub")
            .args(["-h", "localhost", "-p", &port, "--cafile"])
            .arg(&ca)
            .args(["-t", "interop/tls", "-C", "1", "-W", "10", "-V", "mqttv311"])
            .output()
            .expect("mosquitto_sub runs")
    })
    .await
    .expect("joined");
    assert!(out.status.success(), "mosquitto_sub failed: {out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello over tls"
    );
    broker.shutdown(Duration::from_secs(1)).await;
}

// ------------------------------------------------------------------- capath

/// Runs `openssl` (Debian's, in the machine image) and returns its standard output.
fn openssl(args: &[&str], path: &Path) -> String {
    let out = Command::new("openssl")
        .args(args)
        .arg(path)
        .output()
        .expect("openssl runs");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A broker whose TLS listener requires a client certificate signed by a CA of `capath`
/// (and has no `cafile`); its server certificate comes from `server`.
async fn capath_broker(dir: &TempDir, server: &Pki, capath: &Path) -> Broker {
    let mut tls = server_files(dir, server);
    tls.cafile = None;
    tls.capath = Some(capath.to_owned());
    tls.require_certificate = true;
    start(tls, |_| {}).await
}

/// Whether the broker takes a TLS client presenting `leaf` (or no certificate) as far as a
/// successful CONNACK.
async fn served_with(addr: std::net::SocketAddr, server_ca: &str, leaf: Option<&Leaf>) -> bool {
    let Ok(mut c) = TlsClient::open(addr, &connector(server_ca, leaf)).await else {
        return false;
    };
    let connect = Connect {
        protocol: V5,
        clean_start: true,
        keep_alive: 30,
        client_id: ByteStr::from("capath-client"),
        will: None,
        username: None,
        password: None,
        properties: Default::default(),
    };
    let mut out = BytesMut::new();
    encode(&Packet::Connect(Box::new(connect)), V5, &mut out);
    // With TLS 1.3 a refused certificate shows only once the client writes or reads.
    if c.stream.write_all(&out).await.is_err() || c.stream.flush().await.is_err() {
        return false;
    }
    matches!(
        c.recv_or_error().await,
        Some(Packet::ConnAck(a)) if a.reason_code == ReasonCode::SUCCESS
    )
}

/// Two CAs in `capath`, a third unknown: certificates of the first two are accepted, the
/// others (and none at all, with `require_certificate`) refused.
async fn assert_capath_trusts_exactly(dir: &TempDir, capath: &Path, one: &Pki, two: &Pki) {
    let server = Pki::new("Server CA");
    let broker = capath_broker(dir, &server, capath).await;
    let addr = broker.local_addrs()[0];
    let stranger = Pki::new("Unknown CA");
    for (who, leaf, trusted) in [
        ("CA One", Some(one.leaf("client-one", &[])), true),
        ("CA Two", Some(two.leaf("client-two", &[])), true),
        ("an unknown CA", Some(stranger.leaf("client-x", &[])), false),
        ("no certificate", None, false),
    ] {
        assert_eq!(
            served_with(addr, &server.ca_pem, leaf.as_ref()).await,
            trusted,
            "client certificate from {who}"
        );
    }
    broker.shutdown(Duration::from_secs(1)).await;
}

/// mosquitto.conf(5), `capath`: "the certificate files must have ".crt" as the file ending
/// and you must run "openssl rehash <path to capath>" each time you add/remove a
/// certificate." A directory prepared that way (`.crt` and `.pem` files plus the hash
/// links) works unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capath_prepared_with_openssl_rehash_trusts_each_ca_in_it() {
    let dir = TempDir::new("capath-rehash");
    let capath = dir.path("capath");
    std::fs::create_dir(&capath).expect("capath dir");
    let (one, two) = (Pki::new("CA One"), Pki::new("CA Two"));
    write(&capath.join("one.crt"), &one.ca_pem);
    write(&capath.join("two.pem"), &two.ca_pem);
    openssl(&["rehash"], &capath);
    assert_capath_trusts_exactly(&dir, &capath, &one, &two).await;
}

/// OpenSSL finds a `capath` CA by the file name `<subject hash>.<n>` alone, so a directory
/// may hold nothing else (CA files copied in under their hash names, as
/// `cp ca.pem $(openssl x509 -hash -noout -in ca.pem).0`). Mosquitto reads such a directory;
/// so must Midge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capath_with_only_hash_named_files_trusts_each_ca_in_it() {
    let dir = TempDir::new("capath-hashed");
    let capath = dir.path("capath");
    std::fs::create_dir(&capath).expect("capath dir");
    let (one, two) = (Pki::new("CA One"), Pki::new("CA Two"));
    for (pki, name) in [(&one, "one"), (&two, "two")] {
        let staged = dir.path(name);
        write(&staged, &pki.ca_pem);
        let hash = openssl(&["x509", "-hash", "-noout", "-in"], &staged);
        assert_eq!(hash.len(), 8, "subject hash {hash:?}");
        write(&capath.join(format!("{hash}.0")), &pki.ca_pem);
    }
    assert_capath_trusts_exactly(&dir, &capath, &one, &two).await;
}

/// A client offering only `suites`, at the given TLS versions.
fn connector_with(
    ca_pem: &str,
    suites: &[rustls::CipherSuite],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA");
    }
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .retain(|s| suites.contains(&s.suite()));
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// Mosquitto's `ciphers` (TLS 1.2, OpenSSL names) and `ciphers_tls1.3` narrow what a
/// listener offers: a client offering only a suite left out cannot connect, one offering a
/// listed suite can; an unknown name stops the broker from starting, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ciphers_and_ciphers_tls13_narrow_the_offered_suites() {
    use rustls::CipherSuite as S;
    let dir = TempDir::new("ciphers");
    let pki = Pki::new("Midge Test CA");
    let mut tls = server_files(&dir, &pki);
    tls.ciphers = Some("ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384".into());
    tls.ciphers_tls13 = Some("TLS_CHACHA20_POLY1305_SHA256".into());
    let broker = start(tls.clone(), |_| {}).await;
    let addr = broker.local_addrs()[0];
    let v12: &[&'static rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
    let v13: &[&'static rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    let cases = [
        (
            "TLS 1.2 AES-256",
            &[
                S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            ][..],
            v12,
            true,
        ),
        (
            "TLS 1.2 AES-128",
            &[
                S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            ][..],
            v12,
            false,
        ),
        (
            "TLS 1.3 ChaCha20",
            &[S::TLS13_CHACHA20_POLY1305_SHA256][..],
            v13,
            true,
        ),
        (
            "TLS 1.3 AES-128",
            &[S::TLS13_AES_128_GCM_SHA256][..],
            v13,
            false,
        ),
    ];
    for (name, suites, versions, works) in cases {
        let conn = connector_with(&pki.ca_pem, suites, versions);
        match TlsClient::open(addr, &conn).await {
            Ok(mut c) if works => {
                assert_eq!(c.connect(name, None).await, ReasonCode::SUCCESS, "{name}")
            }
            Ok(_) => panic!("{name}: handshake succeeded with a suite left out"),
            Err(e) => assert!(!works, "{name}: {e}"),
        }
    }
    broker.shutdown(Duration::from_secs(1)).await;

    let mut bad = tls;
    bad.ciphers = Some("ECDHE-RSA-AES256-GCM-SHA384:RC4-SHA".into());
    let mut listener = ListenerConfig::tcp("127.0.0.1:0".parse().expect("addr"), true);
    listener.tls = Some(bad);
    let err = Broker::start(Config {
        listeners: vec![listener],
        sys_interval: Duration::ZERO,
        ..Config::default()
    })
    .await
    .err()
    .expect("an unknown suite is refused");
    assert!(err.to_string().contains("'RC4-SHA'"), "{err}");
}

/// A TCP connection to a TLS listener that never starts its handshake, and one that has
/// finished it but not sent CONNECT, do not hold a shutdown until the connect timeout
/// (here a minute, past the grace): both are closed at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_before_connect_do_not_hold_a_shutdown() {
    let dir = TempDir::new("shutdown-handshake");
    let pki = Pki::new("Midge Test CA");
    let broker = start(server_files(&dir, &pki), |c| {
        c.connect_timeout = Duration::from_secs(60)
    })
    .await;
    let addr = broker.local_addrs()[0];
    let mut silent = TcpStream::connect(addr).await.expect("tcp");
    let conn = connector(&pki.ca_pem, None);
    let mut handshaken = TlsClient::open(addr, &conn).await.expect("TLS handshake");
    // Accepted in order: a later client's CONNACK shows both earlier ones were accepted.
    let mut later = TlsClient::open(addr, &conn).await.expect("TLS handshake");
    assert_eq!(later.connect("later", None).await, ReasonCode::SUCCESS);
    let shut = tokio::time::timeout(
        Duration::from_secs(10),
        broker.shutdown(Duration::from_secs(30)),
    );
    assert!(
        shut.await.is_ok(),
        "the shutdown waited for a connection before CONNECT"
    );
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(handshaken.recv().await.is_none(), "closed without a packet");
}

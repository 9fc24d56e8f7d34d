//! Issue 5 end to end on the real `midge` binary started with a `mosquitto.conf`:
//! Mosquitto's own `mosquitto_pub`/`mosquitto_sub` over TLS with a password file made by
//! Debian's `mosquitto_passwd`, and SIGHUP reloading the password and ACL files (a broken
//! file keeps the old rules, and the log says why).
//!
//! Nothing sleeps to synchronise: the broker is ready when it logs "midge <version> running",
//! a reload is done when it logs its outcome, a subscriber is ready when its `-d` output says
//! "Subscribed". Every wait has a deadline ([`WAIT`]) and every child process is killed on
//! drop, so a failure cannot hang the run.

mod support;

use bytes::BytesMut;
use midge_proto::{
    decode, encode, ByteStr, Connect, Packet, ProtocolVersion, Publish, QoS, ReasonCode, Subscribe,
};
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use support::{free_port, mosquitto_sub, run, text, write_tls_files, Proc, MIDGE, WAIT};

const V5: ProtocolVersion = ProtocolVersion::V5;

/// `midge -c <conf>` with info logging, once it logs that it is running.
fn start_midge(conf: &Path) -> Proc {
    let conf = conf.to_str().expect("utf-8 path");
    let mut midge = Proc::spawn_with(MIDGE, &["-c", conf], &[("RUST_LOG", "info")], true);
    midge.wait_for(&format!("midge {} running", env!("CARGO_PKG_VERSION")));
    midge
}

/// Debian's `mosquitto_passwd -b` (with `-c` to create the file).
fn mosquitto_passwd(file: &Path, create: bool, user: &str, password: &str) {
    let file = file.to_str().expect("utf-8 path");
    let mut args = vec!["-b", file, user, password];
    if create {
        args.insert(0, "-c");
    }
    let out = run("mosquitto_passwd", &args);
    assert!(out.status.success(), "mosquitto_passwd: {out:?}");
}

/// Issue 5's interop case: one `mosquitto.conf` with a TLS listener (`cafile`, `certfile`,
/// `keyfile`), a `password_file` made by `mosquitto_passwd` and `allow_anonymous false`;
/// `midge -c` runs it, and Mosquitto's own clients talk through it unchanged, in 3.1.1 and
/// 5.0. A wrong password is refused as Mosquitto 2.0.11 refuses it in 3.1.1 (same output,
/// exit code 5); in 5.0 Midge answers 0x86 Bad User Name or Password where Mosquitto answers
/// 0x87, so `mosquitto_pub` names that and exits with 134.
#[test]
fn mosquitto_tools_over_tls_with_a_mosquitto_passwd_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    write_tls_files(d);
    let passwd = d.join("passwd");
    mosquitto_passwd(&passwd, true, "alice", "wonder land");
    let port = free_port();
    let conf = d.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n\
             password_file {pw}\nallow_anonymous false\n",
            ca = d.join("ca.pem").display(),
            cert = d.join("server.pem").display(),
            key = d.join("server.key").display(),
            pw = passwd.display()
        ),
    )
    .expect("conf");
    let _midge = start_midge(&conf);
    let port = port.to_string();
    let ca = d.join("ca.pem");
    let ca = ca.to_str().expect("utf-8 path");
    let tls = ["-h", "localhost", "-p", &port, "--cafile", ca];

    for version in ["mqttv311", "mqttv5"] {
        let topic = format!("secure/{version}");
        let payload = format!("hello over tls with a password ({version})");
        let mut alice = tls.to_vec();
        alice.extend([
            "-u",
            "alice",
            "-P",
            "wonder land",
            "-V",
            version,
            "-t",
            &topic,
        ]);
        let mut sub_args = alice.clone();
        sub_args.extend(["-q", "1", "-C", "1", "-d"]);
        let mut sub = mosquitto_sub(&sub_args);
        sub.wait_for("Subscribed");
        let mut pub_args = alice.clone();
        pub_args.extend(["-m", &payload, "-q", "1"]);
        let out = run("mosquitto_pub", &pub_args);
        assert!(
            out.status.success(),
            "{version}: mosquitto_pub: {}",
            text(&out.stderr)
        );
        sub.wait_for(&payload);
        assert_eq!(sub.wait_exit(), Some(0), "{version}: mosquitto_sub -C 1");

        // A wrong password: refused, and the tool says so.
        let mut wrong = tls.to_vec();
        wrong.extend([
            "-u",
            "alice",
            "-P",
            "wonderland",
            "-V",
            version,
            "-t",
            &topic,
            "-m",
            "x",
        ]);
        let out = run("mosquitto_pub", &wrong);
        let (code, err) = (out.status.code(), text(&out.stderr));
        if version == "mqttv311" {
            assert_eq!(
                (code, err.as_str()),
                (
                    Some(5),
                    "Connection error: Connection Refused: not authorised.\n\
                     Error: The connection was refused.\n"
                ),
                "{version}: wrong password"
            );
        } else {
            assert_eq!(code, Some(134), "{version}: wrong password: {err}");
            assert!(
                err.starts_with("Connection error: Bad User Name or Password\n"),
                "{version}: wrong password: {err}"
            );
        }
    }
}

// ------------------------------------------------------------------ SIGHUP

/// A minimal blocking MQTT 5 client with a read deadline of [`WAIT`].
struct Client {
    stream: TcpStream,
    buf: BytesMut,
    /// Packets read while waiting for another kind.
    pending: VecDeque<Packet>,
    next_id: u16,
}

impl Client {
    /// Connects as `user`/`password`; the client and the CONNACK reason code.
    fn connect(port: u16, id: &str, user: &str, password: &str) -> (Client, ReasonCode) {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("tcp connect");
        stream.set_read_timeout(Some(WAIT)).expect("read timeout");
        let mut c = Client {
            stream,
            buf: BytesMut::new(),
            pending: VecDeque::new(),
            next_id: 0,
        };
        c.send(&Packet::Connect(Box::new(Connect {
            protocol: V5,
            clean_start: true,
            keep_alive: 60,
            client_id: ByteStr::from(id),
            will: None,
            username: Some(ByteStr::from(user)),
            password: Some(bytes::Bytes::copy_from_slice(password.as_bytes())),
            properties: Default::default(),
        })));
        match c.recv() {
            Some(Packet::ConnAck(a)) => (c, a.reason_code),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    fn send(&mut self, p: &Packet) {
        let mut out = BytesMut::new();
        encode(p, V5, &mut out);
        self.stream.write_all(&out).expect("write to midge");
    }

    /// The next packet; `None` when the broker closed the connection. Fails after [`WAIT`].
    fn recv(&mut self) -> Option<Packet> {
        if let Some(p) = self.pending.pop_front() {
            return Some(p);
        }
        loop {
            if let Some(p) = decode(&mut self.buf, V5, 1 << 20).expect("a valid packet") {
                return Some(p);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    panic!("no packet from midge within {WAIT:?}")
                }
                Err(_) => return None,
            }
        }
    }

    /// Reads until a packet satisfying `want`; others are kept for later.
    fn wait_for(&mut self, want: impl Fn(&Packet) -> bool) -> Packet {
        let mut skipped = VecDeque::new();
        loop {
            let p = match self.recv() {
                Some(p) => p,
                None => panic!("connection closed; had {skipped:?}"),
            };
            if want(&p) {
                skipped.extend(self.pending.drain(..));
                self.pending = skipped;
                return p;
            }
            skipped.push_back(p);
        }
    }

    fn next_packet_id(&mut self) -> u16 {
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.next_id
    }

    /// SUBSCRIBE at QoS 1; the SUBACK reason code.
    fn subscribe(&mut self, filter: &str) -> ReasonCode {
        let id = self.next_packet_id();
        let opts = midge_proto::SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            ..Default::default()
        };
        self.send(&Packet::Subscribe(Subscribe {
            packet_id: id,
            filters: vec![(ByteStr::from(filter), opts)],
            properties: Default::default(),
        }));
        match self.wait_for(|p| matches!(p, Packet::SubAck(a) if a.packet_id == id)) {
            Packet::SubAck(a) => a.reason_codes.first().copied().expect("one code"),
            _ => unreachable!(),
        }
    }

    /// PUBLISH at QoS 1; the PUBACK reason code.
    fn publish(&mut self, topic: &str, payload: &str) -> ReasonCode {
        let id = self.next_packet_id();
        self.send(&Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            topic: ByteStr::from(topic),
            packet_id: id,
            payload: bytes::Bytes::copy_from_slice(payload.as_bytes()),
            ..Default::default()
        }));
        match self.wait_for(|p| matches!(p, Packet::PubAck(a) if a.packet_id == id)) {
            Packet::PubAck(a) => a.reason_code,
            _ => unreachable!(),
        }
    }

    /// The next PUBLISH (acknowledged).
    fn recv_publish(&mut self) -> Publish {
        match self.wait_for(|p| matches!(p, Packet::Publish(_))) {
            Packet::Publish(p) => {
                if p.qos == QoS::AtLeastOnce {
                    self.send(&Packet::PubAck(midge_proto::PubResp::new(p.packet_id)));
                }
                p
            }
            _ => unreachable!(),
        }
    }

    /// PINGREQ -> PINGRESP: the connection is alive and served.
    fn ping(&mut self) {
        self.send(&Packet::PingReq);
        self.wait_for(|p| matches!(p, Packet::PingResp));
    }
}

/// A broker on a plain TCP listener with `passwd` (alice/wonderland) and `acl`.
struct Secured {
    _dir: tempfile::TempDir,
    passwd: PathBuf,
    acl: PathBuf,
    port: u16,
    midge: Proc,
}

fn secured(acl: &str) -> Secured {
    let dir = tempfile::tempdir().expect("temp dir");
    let passwd = dir.path().join("passwd");
    mosquitto_passwd(&passwd, true, "alice", "wonderland");
    let acl_path = dir.path().join("acl");
    std::fs::write(&acl_path, acl).expect("acl");
    let port = free_port();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\npassword_file {}\nacl_file {}\nallow_anonymous false\n",
            passwd.display(),
            acl_path.display()
        ),
    )
    .expect("conf");
    let midge = start_midge(&conf);
    Secured {
        _dir: dir,
        passwd,
        acl: acl_path,
        port,
        midge,
    }
}

const ACL_BEFORE: &str = "user alice\ntopic readwrite alice/#\n";
const ACL_AFTER: &str = "\
user alice
topic readwrite alice/#
topic readwrite team/#
user bob
topic read team/#
";

/// SIGHUP makes the running binary read its password and ACL files again, as Mosquitto
/// does: a user added with `mosquitto_passwd` can log in, the new ACL applies (to the
/// connection that was open before too), and that connection is not dropped.
#[test]
fn sighup_reloads_password_and_acl_files_without_dropping_connections() {
    let mut s = secured(ACL_BEFORE);
    let (mut alice, rc) = Client::connect(s.port, "alice-1", "alice", "wonderland");
    assert_eq!(rc, ReasonCode::SUCCESS);
    assert_eq!(
        alice.publish("team/plan", "before"),
        ReasonCode::NOT_AUTHORIZED
    );
    let (_, rc) = Client::connect(s.port, "bob-1", "bob", "builder");
    assert_eq!(rc, ReasonCode::BAD_USER_NAME_OR_PASSWORD, "bob before");

    mosquitto_passwd(&s.passwd, false, "bob", "builder");
    std::fs::write(&s.acl, ACL_AFTER).expect("acl");
    s.midge.signal("-HUP");
    s.midge.wait_for("SIGHUP: reloading security files");
    s.midge.wait_for("reloaded password file");
    s.midge.wait_for("reloaded ACL file");

    alice.ping();
    let (mut bob, rc) = Client::connect(s.port, "bob-2", "bob", "builder");
    assert_eq!(rc, ReasonCode::SUCCESS, "bob after the reload");
    assert_eq!(bob.subscribe("team/#"), ReasonCode::GRANTED_QOS_1);
    assert_eq!(alice.publish("team/plan", "after"), ReasonCode::SUCCESS);
    let p = bob.recv_publish();
    assert_eq!((&*p.topic, &p.payload[..]), ("team/plan", &b"after"[..]));
}

/// A file that no longer parses is not loaded on SIGHUP: the old rules stay in force for
/// open and new connections, and the log names the file, the line and the fault. The same
/// goes for a broken password file.
#[test]
fn sighup_with_broken_files_keeps_the_old_rules_and_logs_why() {
    let mut s = secured(ACL_AFTER);
    let (mut alice, rc) = Client::connect(s.port, "alice-1", "alice", "wonderland");
    assert_eq!(rc, ReasonCode::SUCCESS);
    assert_eq!(alice.subscribe("team/#"), ReasonCode::GRANTED_QOS_1);

    // Line 3 is not ACL syntax; the rest would take team/# away from alice.
    std::fs::write(
        &s.acl,
        "user alice\ntopic readwrite alice/#\nbogus team/#\n",
    )
    .expect("acl");
    s.midge.signal("-HUP");
    let line = s.midge.wait_for("ACL file not reloaded");
    let acl = s.acl.display().to_string();
    assert!(
        line.contains("keeping the old one")
            && line.contains(&format!("{acl}:3:"))
            && line.contains("unknown keyword 'bogus'"),
        "{line}"
    );
    alice.ping();
    assert_eq!(alice.publish("team/x", "old rules"), ReasonCode::SUCCESS);
    assert_eq!(&*alice.recv_publish().topic, "team/x");
    let (mut again, rc) = Client::connect(s.port, "alice-2", "alice", "wonderland");
    assert_eq!(rc, ReasonCode::SUCCESS);
    assert_eq!(again.publish("team/y", "old rules"), ReasonCode::SUCCESS);

    // A password file that no longer parses: alice still logs in with the old one.
    std::fs::write(&s.passwd, "alice:not-a-hash\n").expect("passwd");
    s.midge.signal("-HUP");
    let line = s.midge.wait_for("password file not reloaded");
    let passwd = s.passwd.display().to_string();
    assert!(
        line.contains("keeping the old one") && line.contains(&format!("{passwd}:1:")),
        "{line}"
    );
    let (_c, rc) = Client::connect(s.port, "alice-3", "alice", "wonderland");
    assert_eq!(rc, ReasonCode::SUCCESS, "alice with the old password file");
    alice.ping();
}

/// MQTT 5 enhanced authentication end to end: credentials made by `midge passwd -H
/// scram-sha-256`, the binary started with a TOML `scram_file`, Midge's own client logging
/// in with SCRAM-SHA-256 (wrong password refused with 0x87), re-authenticating, and a user
/// added to the file and SIGHUP letting that user in.
#[test]
fn scram_login_with_midge_passwd_credentials_and_midge_client() {
    use midge_client::{Client as MqttClient, ConnectOptions, Error, QoS as Q, ScramSha256};
    let dir = tempfile::tempdir().expect("temp dir");
    let scram = dir.path().join("scram");
    let scram_s = scram.to_str().expect("utf-8 path");
    let made = run(
        MIDGE,
        &[
            "passwd",
            "-H",
            "scram-sha-256",
            "-c",
            "-b",
            scram_s,
            "alice",
            "wonderland",
        ],
    );
    assert!(made.status.success(), "{}", text(&made.stderr));
    let port = free_port();
    let conf = dir.path().join("midge.toml");
    std::fs::write(
        &conf,
        format!(
            "persistence = false\nscram_file = \"{scram_s}\"\nauth_failures_before_delay = 0\n\
             [[listener]]\nport = {port}\nbind_address = \"127.0.0.1\"\nallow_anonymous = false\n"
        ),
    )
    .expect("config");
    let mut midge = start_midge(&conf);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let connect = |id: &str, user: &str, password: &str| {
        let options = ConnectOptions::new("127.0.0.1", port)
            .client_id(id)
            .authenticator(ScramSha256::new(user, password));
        runtime.block_on(async {
            tokio::time::timeout(WAIT, MqttClient::connect(options))
                .await
                .expect("connect finishes in time")
        })
    };

    let (alice, mut messages) = connect("alice-1", "alice", "wonderland").expect("alice logs in");
    runtime.block_on(async {
        alice
            .subscribe("scram/#", Q::AtLeastOnce)
            .await
            .expect("subscribe");
        tokio::time::timeout(WAIT, alice.reauthenticate())
            .await
            .expect("in time")
            .expect("re-authenticated");
        alice
            .publish("scram/t", "hello", Q::AtLeastOnce, false)
            .await
            .expect("publish");
        let m = tokio::time::timeout(WAIT, messages.recv())
            .await
            .expect("in time")
            .expect("message");
        assert_eq!(
            (m.topic.as_ref(), &m.payload[..]),
            ("scram/t", &b"hello"[..])
        );
    });

    for (user, password) in [("alice", "looking-glass"), ("bob", "builder")] {
        match connect("refused", user, password) {
            Err(Error::ConnectionRefused { reason_code, .. }) => {
                assert_eq!(reason_code, ReasonCode::NOT_AUTHORIZED, "{user}")
            }
            other => panic!("{user}: expected CONNACK 0x87, got {:?}", other.err()),
        }
    }

    let added = run(
        MIDGE,
        &[
            "passwd",
            "-H",
            "scram-sha-256",
            "-b",
            scram_s,
            "bob",
            "builder",
        ],
    );
    assert!(added.status.success(), "{}", text(&added.stderr));
    midge.signal("-HUP");
    midge.wait_for("reloaded SCRAM credentials file");
    let (bob, _) = connect("bob-1", "bob", "builder").expect("bob logs in after SIGHUP");
    runtime.block_on(async {
        bob.disconnect().await.expect("disconnect");
        alice.disconnect().await.expect("disconnect");
    });
}

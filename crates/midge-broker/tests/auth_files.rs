//! Mosquitto's security files, read by `midge_broker::auth`, checked against Mosquitto itself:
//! password files written by Debian's real `mosquitto_passwd`, fixed vectors computed outside
//! Rust, an ACL matrix whose expectations cite mosquitto.conf(5), and the same matrix run
//! through a real `mosquitto` broker to prove Midge decides as Mosquitto does.
//!
//! The Mosquitto tools must be installed (`.ci/run` installs them); these tests fail, never
//! skip, when they are missing.

mod common;

use bytes::Bytes;
use common::{TestClient, V311};
use midge_broker::auth::{
    AclFile, AuthResult, Authenticator, Authorizer, ClientInfo, PasswordFile, PasswordHash,
    SubscribeCheck,
};
use midge_proto::{ByteStr, Packet, QoS, ReasonCode};
use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- helpers

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("midge-auth-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs Debian's `mosquitto_passwd`; panics (never skips) when it is missing or fails.
fn mosquitto_passwd(args: &[&str]) {
    let output = Command::new("mosquitto_passwd")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("mosquitto_passwd must be installed (apt-get install mosquitto)");
    assert!(
        output.status.success(),
        "mosquitto_passwd {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A real Mosquitto broker on a free loopback port, killed on drop.
struct Mosquitto {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Mosquitto {
    fn start(dir: &TempDir, settings: &str) -> Mosquitto {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let conf = dir.path("mosquitto.conf");
        // `user root` keeps Mosquitto from switching to the `mosquitto` user, which could not
        // read our temp files.
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nuser root\n{settings}\n"),
        )
        .expect("write mosquitto.conf");
        let log = dir.path("mosquitto.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let binary = ["/usr/sbin/mosquitto", "mosquitto"]
            .into_iter()
            .find(|b| Path::new(b).exists())
            .unwrap_or("mosquitto");
        let child = Command::new(binary)
            .arg("-c")
            .arg(&conf)
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file)
            .spawn()
            .expect("mosquitto must be installed (apt-get install mosquitto)");
        let mut broker = Mosquitto {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
        };
        broker.wait_until_listening();
        broker
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(self.addr).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("mosquitto exited ({status}): {}", self.log_text());
            }
            assert!(Instant::now() < deadline, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn connect_as(addr: SocketAddr, client_id: &str, login: Option<(&str, &str)>) -> TestClient {
    let (client, ack) = TestClient::connect(addr, V311, |c| {
        c.client_id = ByteStr::from(client_id);
        if let Some((user, password)) = login {
            c.username = Some(ByteStr::from(user));
            c.password = Some(Bytes::copy_from_slice(password.as_bytes()));
        }
    })
    .await;
    assert_eq!(
        ack.reason_code,
        ReasonCode::SUCCESS,
        "CONNACK for {client_id}"
    );
    client
}

// ---------------------------------------------------------------- password files

#[test]
fn pbkdf2_entries_written_by_mosquitto_passwd_verify() {
    let dir = TempDir::new("pbkdf2");
    let file = dir.path("pw");
    let f = file.to_str().expect("utf-8 path");
    let users = [
        ("alice", "secret"),
        ("bob", "pass word with spaces"),
        ("carol", "ünïcødé:and:colons"),
        ("dave", "x"),
    ];
    mosquitto_passwd(&["-c", "-b", f, users[0].0, users[0].1]);
    for (user, password) in &users[1..] {
        mosquitto_passwd(&["-b", f, user, password]);
    }
    // -I sets the iteration count, which the entry carries.
    mosquitto_passwd(&["-I", "1000", "-b", f, "erin", "erin's"]);

    let pw = PasswordFile::load(&file).expect("load");
    assert_eq!(pw.len(), 5);
    for (user, password) in users.iter().chain(&[("erin", "erin's")]) {
        assert_eq!(
            pw.get(user).map(PasswordHash::kind),
            Some(midge_broker::auth::HashKind::Sha512Pbkdf2)
        );
        assert!(pw.verify(user, password.as_bytes()), "{user}");
        assert!(!pw.verify(user, b"wrong"), "{user}");
    }
    assert!(matches!(
        pw.get("erin"),
        Some(PasswordHash::Sha512Pbkdf2 {
            iterations: 1000,
            ..
        })
    ));
    // A password is checked for its own user only.
    assert!(!pw.verify("alice", b"x"));
}

#[test]
fn sha512_entries_written_by_mosquitto_passwd_verify() {
    let dir = TempDir::new("sha512");
    let file = dir.path("pw");
    let f = file.to_str().expect("utf-8 path");
    mosquitto_passwd(&["-H", "sha512", "-c", "-b", f, "legacy", "old secret"]);
    let pw = PasswordFile::load(&file).expect("load");
    assert!(matches!(
        pw.get("legacy"),
        Some(PasswordHash::Sha512 { .. })
    ));
    assert!(pw.verify("legacy", b"old secret"));
    assert!(!pw.verify("legacy", b"old secret "));
}

#[test]
fn plain_text_file_upgraded_by_mosquitto_passwd_verifies() {
    let dir = TempDir::new("upgrade");
    let file = dir.path("pw");
    std::fs::write(&file, "alice:first\nbob:second\n").expect("write");
    // Before the upgrade, plain text is refused with the line named.
    let err = PasswordFile::load(&file).expect_err("plain text");
    assert!(err.to_string().contains("pw:1:"), "{err}");
    mosquitto_passwd(&["-U", file.to_str().expect("utf-8 path")]);
    let pw = PasswordFile::load(&file).expect("load");
    assert!(pw.verify("alice", b"first"));
    assert!(pw.verify("bob", b"second"));
}

/// Computed with Python's hashlib, independently of this crate:
/// `hashlib.sha512(pw + salt)` and `hashlib.pbkdf2_hmac("sha512", pw, salt, 1000)` with
/// pw = "pässwörd with spaces" (UTF-8) and salt = b"midge-salt12".
#[test]
fn fixed_vectors_computed_per_mosquitto_algorithm_verify() {
    let password = "pässwörd with spaces".as_bytes();
    let sha512 = PasswordHash::parse(
        "$6$bWlkZ2Utc2FsdDEy$l/emkzlFv2uOgaM3Pu+p9cq5fLq1hS7HDNzEW3Q5goOlJXdvOcQHbzRGdfjTIRwmZjjJi2UniM9T4p7k9ZtFyg==",
    )
    .expect("$6$ vector");
    assert!(sha512.verify(password));
    assert!(!sha512.verify(b"passwoerd with spaces"));
    let pbkdf2 = PasswordHash::parse(
        "$7$1000$bWlkZ2Utc2FsdDEy$CDkahlkS56Ofnlh/14GP+gYxa/W3rhi3WPiEDSWsQJfMS/aA5wRlExUKum6efjiY7mHa7IEyMwAAovTjacO6+w==",
    )
    .expect("$7$ vector");
    assert!(pbkdf2.verify(password));
    assert!(!pbkdf2.verify(b""));
}

/// The reference implementation's test vector (phc-winner-argon2 `src/test.c`,
/// password "password", salt "somesalt", t=2, m=256 KiB, p=1).
#[test]
fn argon2id_reference_vector_verifies() {
    let hash = PasswordHash::parse(
        "$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
    )
    .expect("argon2id vector");
    assert!(hash.verify(b"password"));
    assert!(!hash.verify(b"passwore"));
}

#[test]
fn one_file_mixes_all_three_formats() {
    let dir = TempDir::new("mixed");
    let file = dir.path("pw");
    let f = file.to_str().expect("utf-8 path");
    mosquitto_passwd(&["-c", "-b", f, "new", "n"]);
    mosquitto_passwd(&["-H", "sha512", "-b", f, "old", "o"]);
    let argon =
        PasswordHash::generate(midge_broker::auth::HashKind::Argon2id, b"a", 0).expect("argon2id");
    let mut text = std::fs::read_to_string(&file).expect("read");
    text.push_str(&format!("# added by midge passwd\nmidge:{argon}\n"));
    std::fs::write(&file, text).expect("write");

    let pw = PasswordFile::load(&file).expect("load");
    let auth = |u: &str, p: &str| pw.authenticate(Some(u), Some(p.as_bytes()), "id");
    assert_eq!(auth("new", "n"), AuthResult::Allowed);
    assert_eq!(auth("old", "o"), AuthResult::Allowed);
    assert_eq!(auth("midge", "a"), AuthResult::Allowed);
    assert_eq!(auth("midge", "n"), AuthResult::BadCredentials);
    assert_eq!(auth("nobody", "n"), AuthResult::BadCredentials);
}

// ---------------------------------------------------------------- ACL matrix

/// One ACL file exercising every rule kind. Users: alice and bob have sections, carol has
/// none (patterns only), admin may do everything; anonymous clients get the first section.
const ACL: &str = "\
# Anonymous clients: the rules before any `user` line (mosquitto.conf(5), acl_file).
topic read public/#
topic deny public/secret

user alice
topic readwrite alice/#
topic deny alice/private
topic read shared/+/status
topic write cmd/alice

user bob
topic read shared/#
topic write shared/bob/status

user admin
topic readwrite #

# Patterns apply to every client; %c is the client id, %u the username.
pattern readwrite devices/%c/#
pattern read inbox/%u
pattern deny devices/%c/locked
pattern read sync/%c
";

/// (username, client id) of each tested client.
const CLIENTS: [(Option<&str>, &str); 5] = [
    (None, "anon1"),
    (Some("alice"), "dev1"),
    (Some("bob"), "dev2"),
    (Some("carol"), "dev3"),
    (Some("admin"), "adm"),
];

const TOPICS: [&str; 17] = [
    "public/news",
    "public/secret",
    "alice/notes",
    "alice/private",
    "shared/a/status",
    "shared/a/data",
    "shared/bob/status",
    "cmd/alice",
    "devices/dev1/temp",
    "devices/dev2/temp",
    "devices/dev3/temp",
    "devices/dev1/locked",
    "devices/adm/locked",
    "inbox/alice",
    "inbox/carol",
    "other/topic",
    "public",
];

fn acl() -> AclFile {
    AclFile::parse(Path::new("matrix.acl"), ACL.as_bytes()).expect("matrix ACL parses")
}

fn client(username: Option<&'static str>, client_id: &'static str) -> ClientInfo<'static> {
    ClientInfo::new(client_id, username)
}

/// Each expectation states the documented behaviour it rests on (mosquitto.conf(5),
/// `acl_file`, and `mosquitto_acl_check_default` in Mosquitto's src/security_default.c).
#[test]
fn acl_matrix_follows_mosquitto_documented_rules() {
    let acl = acl();
    let anon = client(None, "anon1");
    let alice = client(Some("alice"), "dev1");
    let bob = client(Some("bob"), "dev2");
    let carol = client(Some("carol"), "dev3");
    let admin = client(Some("admin"), "adm");

    // "The first set of topics are applied to anonymous clients": read only, so no writes.
    assert!(acl.can_receive(&anon, "public/news"));
    assert!(!acl.can_publish(&anon, "public/news"));
    // "deny ... explicitly deny access to a topic that would otherwise be granted by a
    // broader read/write/readwrite statement."
    assert!(!acl.can_receive(&anon, "public/secret"));
    // `public/#` also matches its parent `public` (MQTT 4.7.1.2).
    assert!(acl.can_receive(&anon, "public"));
    // Anonymous rules do not apply to users, user rules do not apply to anonymous clients.
    assert!(!acl.can_receive(&alice, "public/news"));
    assert!(!acl.can_receive(&anon, "alice/notes"));

    // A user's own section; "readwrite" grants both, "read"/"write" one each.
    assert!(acl.can_publish(&alice, "alice/notes") && acl.can_receive(&alice, "alice/notes"));
    assert!(!acl.can_publish(&alice, "alice/private"));
    assert!(!acl.can_receive(&alice, "alice/private"));
    assert!(acl.can_receive(&alice, "shared/a/status"));
    assert!(!acl.can_publish(&alice, "shared/a/status"));
    assert!(!acl.can_receive(&alice, "shared/a/data"));
    assert!(acl.can_publish(&alice, "cmd/alice") && !acl.can_receive(&alice, "cmd/alice"));
    // "The username referred to here is the same as in password_file. It is not the clientid."
    assert!(!acl.can_publish(&bob, "alice/notes"));
    assert!(acl.can_publish(&bob, "shared/bob/status"));

    // "Pattern ACLs apply to all users even if the user keyword has previously been given."
    assert!(acl.can_publish(&alice, "devices/dev1/temp"));
    assert!(acl.can_publish(&carol, "devices/dev3/temp"));
    assert!(acl.can_publish(&anon, "devices/anon1/x"));
    assert!(!acl.can_publish(&alice, "devices/dev2/temp"));
    assert!(acl.can_receive(&carol, "inbox/carol"));
    assert!(!acl.can_receive(&carol, "inbox/alice"));
    // %u never matches a client without a username.
    assert!(!acl.can_receive(&anon, "inbox/"));
    // Deny patterns come before grant patterns.
    assert!(!acl.can_publish(&alice, "devices/dev1/locked"));
    // ...but the client's own topic rules are checked first: admin's `readwrite #` allows
    // what the deny pattern would refuse (user list, then patterns, in security_default.c).
    assert!(acl.can_publish(&admin, "devices/adm/locked"));

    // A user with no section and no matching pattern gets nothing ("only the topics listed
    // will have access").
    assert!(!acl.can_receive(&carol, "other/topic"));
    assert!(!acl.can_publish(&carol, "public/news"));

    // `#` does not reach `$SYS` (wildcards never match `$` topics at the first level).
    assert!(!acl.can_receive(&admin, "$SYS/broker/uptime"));

    // A client id with a wildcard cannot use patterns (CVE-2017-7650).
    let sneaky = client(Some("carol"), "+");
    assert!(!acl.can_publish(&sneaky, "devices/+/temp"));
    assert!(!acl.can_receive(&sneaky, "sync/+"));
}

#[test]
fn subscribe_checks_filters_with_wildcards() {
    let acl = acl();
    let alice = client(Some("alice"), "dev1");
    let carol = client(Some("carol"), "dev3");
    let anon = client(None, "anon1");
    // Overlaps (default): granted when something under the filter is readable...
    assert!(acl.can_subscribe(&anon, "public/#"));
    assert!(acl.can_subscribe(&anon, "#"));
    assert!(acl.can_subscribe(&alice, "shared/+/+"));
    assert!(acl.can_subscribe(&carol, "devices/+/temp"));
    // ...refused when nothing could ever be delivered...
    assert!(!acl.can_subscribe(&anon, "alice/#"));
    assert!(!acl.can_subscribe(&alice, "cmd/alice"));
    assert!(!acl.can_subscribe(&carol, "devices/dev1/#"));
    // ...and when a deny rule covers the whole filter.
    assert!(!acl.can_subscribe(&anon, "public/secret"));
    assert!(!acl.can_subscribe(&alice, "alice/private"));
    assert!(!acl.can_subscribe(&alice, "devices/dev1/locked"));

    // Covers: one read rule must match every topic the filter matches.
    let strict = acl.clone().with_subscribe_check(SubscribeCheck::Covers);
    assert!(strict.can_subscribe(&anon, "public/#"));
    assert!(strict.can_subscribe(&alice, "shared/+/status"));
    assert!(!strict.can_subscribe(&anon, "#"));
    assert!(!strict.can_subscribe(&alice, "shared/+/+"));
    assert!(strict.can_subscribe(&carol, "devices/dev3/#"));
    assert!(!strict.can_subscribe(&carol, "devices/+/temp"));
}

/// Runs the matrix through a real Mosquitto with the same ACL file and compares every
/// publish and delivery decision with `AclFile`'s.
#[tokio::test]
async fn acl_decisions_match_a_real_mosquitto() {
    let dir = TempDir::new("acl-mosquitto");
    let pw = dir.path("pw");
    let f = pw.to_str().expect("utf-8 path");
    mosquitto_passwd(&["-c", "-b", f, "alice", "a"]);
    for user in ["bob", "carol", "admin"] {
        mosquitto_passwd(&["-b", f, user, &user[..1]]);
    }
    let acl_path = dir.path("acl");
    std::fs::write(&acl_path, ACL).expect("write acl");
    let broker = Mosquitto::start(
        &dir,
        &format!(
            "allow_anonymous true\npassword_file {}\nacl_file {}",
            pw.display(),
            acl_path.display()
        ),
    );
    let acl = AclFile::load(&acl_path).expect("load acl");
    let login = |user: Option<&'static str>| user.map(|u| (u, &u[..1]));

    // The admin reads and writes everything the test uses.
    let mut admin = connect_as(broker.addr, "oracle", Some(("admin", "a"))).await;
    admin.subscribe("#", QoS::AtLeastOnce).await;

    for (username, client_id) in CLIENTS {
        let who = client(username, client_id);
        let mut c = connect_as(broker.addr, client_id, login(username)).await;
        // Mosquitto 2.0 grants every subscription and filters each message on delivery.
        c.subscribe("#", QoS::AtLeastOnce).await;

        // Writes: the client publishes everything; the admin sees what Mosquitto let through.
        for topic in TOPICS {
            c.publish(topic, client_id, QoS::AtLeastOnce).await;
        }
        let sentinel = format!("done/{client_id}");
        admin.publish(&sentinel, "", QoS::AtLeastOnce).await;
        let written = collect_until(&mut admin, &sentinel, Some(client_id)).await;
        let expected: BTreeSet<String> = TOPICS
            .iter()
            .filter(|t| acl.can_publish(&who, t))
            .map(|t| t.to_string())
            .collect();
        assert_eq!(written, expected, "publish decisions for {client_id}");

        // Reads: the admin publishes everything; the client gets what Mosquitto delivered.
        // Drop what the client received from its own publishes first.
        let sync = format!("sync/{client_id}");
        admin.publish(&sync, "", QoS::AtLeastOnce).await;
        collect_until(&mut c, &sync, None).await;
        for topic in TOPICS {
            admin.publish(topic, "oracle", QoS::AtLeastOnce).await;
        }
        admin.publish(&sync, "", QoS::AtLeastOnce).await;
        let read = collect_until(&mut c, &sync, Some("oracle")).await;
        let expected: BTreeSet<String> = TOPICS
            .iter()
            .filter(|t| acl.can_receive(&who, t))
            .map(|t| t.to_string())
            .collect();
        assert_eq!(read, expected, "delivery decisions for {client_id}");
        // The admin's own copies of its publishes.
        admin.publish(&sentinel, "", QoS::AtLeastOnce).await;
        collect_until(&mut admin, &sentinel, None).await;
        c.disconnect().await;
    }
    drop(broker);
}

/// Topics of PUBLISHes received (with `payload`, if given) until one on `sentinel`.
async fn collect_until(
    client: &mut TestClient,
    sentinel: &str,
    payload: Option<&str>,
) -> BTreeSet<String> {
    let mut topics = BTreeSet::new();
    loop {
        let packet = client.recv().await;
        let Packet::Publish(p) = packet else {
            continue;
        };
        client.ack(&p).await;
        let topic = p.topic.as_str();
        if topic == sentinel {
            return topics;
        }
        if payload.is_none_or(|want| p.payload.as_ref() == want.as_bytes()) {
            topics.insert(topic.to_owned());
        }
    }
}
